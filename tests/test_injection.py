"""The shared injection mechanism is exact: below m it is the backbone's own forward; with the
prompt masked out, the output equals the plain backbone's."""

import pytest
import torch

from idspam.backbone import load_backbone, load_config
from idspam.config import ModelConfig
from idspam.injection import InjectionEngine

SENTENCES = [("A short one.",), ("A considerably longer sentence, so that the batch has padding in it.",)]


def encoders():
    tiny = ModelConfig(name="tiny", name_or_path="x", pretrained=False, arch={
        "model_type": "roberta", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 4,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 514, "pad_token_id": 0})
    # a random RoBERTa, and the pretrained MiniLM (BERT) with both attention implementations
    return [pytest.param(cfg, id=f"{cfg.name}-{cfg.attn_implementation}")
            for cfg in (tiny, ModelConfig(attn_implementation="eager"), ModelConfig())]


@pytest.fixture(params=encoders())
def encoder_batch(request):
    from idspam.backbone import load_tokenizer

    cfg = request.param
    torch.manual_seed(0)
    base = load_backbone(cfg, load_config(cfg)).base.eval()
    tok = load_tokenizer(ModelConfig(tokenizer=None))  # packaged MiniLM vocabulary fits both
    batch = tok([s for (s,) in SENTENCES], padding=True, return_tensors="pt")
    return base, InjectionEngine(base), batch


def layers_to_check(n):
    return [0, n // 2, n - 1]


def test_lower_stack_equals_backbone_hidden_states(encoder_batch):
    base, enc, batch = encoder_batch
    with torch.no_grad():
        ref = base(**batch, output_hidden_states=True).hidden_states  # ref[m] enters layer m
    for m in layers_to_check(enc.num_layers):
        states = enc.lower(batch["input_ids"], batch["attention_mask"], m, batch.get("token_type_ids"))
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(states.hidden[real], ref[m][real], atol=1e-6, rtol=0)


def test_masked_prompt_leaves_output_unchanged(encoder_batch):
    base, enc, batch = encoder_batch
    with torch.no_grad():
        ref = base(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    for m in layers_to_check(enc.num_layers):
        states = enc.lower(batch["input_ids"], batch["attention_mask"], m, batch.get("token_type_ids"))
        prompt = torch.randn(2, 5, enc.hidden_size) * 3
        with torch.no_grad():
            masked = enc.upper(states.hidden, batch["attention_mask"], m, prompt, prompt_mask=torch.zeros(2, 5))
            live = enc.upper(states.hidden, batch["attention_mask"], m, prompt)
        assert masked.shape == ref.shape  # prompt positions are stripped from the output
        torch.testing.assert_close(masked[real], ref[real], atol=1e-5, rtol=0)
        assert (live[real] - ref[real]).abs().max() > 1e-3, f"an attended prompt must change the output (m={m})"


def test_prompt_attends_and_positions_are_unchanged(encoder_batch):
    """The prompt is seen by the real tokens; the real tokens' position embeddings are those of the plain
    input (the embedding output, i.e. what enters layer 0, is identical with and without a prompt)."""
    base, enc, batch = encoder_batch
    with torch.no_grad():
        plain = base.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
    seen = {}

    def capture(module, args, kwargs, output):
        seen["input"] = args[0] if args else kwargs["hidden_states"]

    handle = enc.layers[0].register_forward_hook(capture, with_kwargs=True)
    try:
        enc(batch["input_ids"], batch["attention_mask"], 0, lambda s: torch.ones(2, 3, enc.hidden_size),
            batch.get("token_type_ids"))
    finally:
        handle.remove()
    torch.testing.assert_close(seen["input"][:, 3:], plain)
    torch.testing.assert_close(seen["input"][:, :3], torch.ones(2, 3, enc.hidden_size))


def test_layer_out_of_range_is_refused(encoder_batch):
    from idspam.errors import UserError

    _, enc, batch = encoder_batch
    with pytest.raises(UserError, match=rf"layer={enc.num_layers} is out of range; valid: 0..{enc.num_layers - 1}"):
        enc.lower(batch["input_ids"], batch["attention_mask"], enc.num_layers)
