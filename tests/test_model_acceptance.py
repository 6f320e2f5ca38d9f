"""Every entry point accepts exactly the families tested exact and refuses the rest in one line that names the
class and the supported families: the runner (before any weights load), `idspam.wrap`, PEFT's
`get_peft_model` and the `InjectionEngine` itself. The engine follows each model class's own behaviour, not
the config's fields (a MistralConfig with `layer_types` still builds one mask in `MistralModel`). The pruned
last layer sees no later token, whatever attention implementation and padding."""

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from idspam.errors import UserError
from idspam.injection import InjectionEngine, real_positions

from .test_decoder_runs import FAST
from .tiny_decoders import pad, rows

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=64)
REFUSED = {
    "mpnet": dict(SMALL),  # relative position bias the BERT family would skip: silently wrong
    "deberta-v2": dict(SMALL),  # layers take other keywords
    "esm": dict(SMALL, pad_token_id=1, mask_token_id=2),  # embeddings take no token_type_ids
    "distilbert": dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=64),
}
MESSAGE = r"is not a model this project can inject into; supported families: encoder .*GPT-2: gpt2.*llama"


class LooksLikeAnEncoder(nn.Module):
    """An arbitrary module with `.embeddings` and `.encoder.layer` (and a BERT config): not a BertModel."""

    def __init__(self):
        super().__init__()
        self.config = AutoConfig.for_model("bert", **SMALL)
        self.embeddings = nn.Embedding(100, 32)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Linear(32, 32)])


def refused_models():
    for model_type, arch in REFUSED.items():
        config = AutoConfig.for_model(model_type, **arch)
        torch.manual_seed(0)
        yield pytest.param(lambda c=config: AutoModel.from_config(c), type(AutoModel.from_config(config)).__name__,
                           id=model_type)
    yield pytest.param(LooksLikeAnEncoder, "LooksLikeAnEncoder", id="arbitrary-module")


@pytest.mark.parametrize("build,name", list(refused_models()))
def test_unsupported_encoders_are_refused_by_the_engine_wrap_and_get_peft_model(build, name):
    import peft

    import idspam

    with pytest.raises(UserError, match=rf"^{name} \(model_type .*\) {MESSAGE}") as info:
        InjectionEngine(build())
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=rf"^{name} .*{MESSAGE}"):
        idspam.wrap(build(), "idspam", layer=0)
    with pytest.raises(UserError, match=rf"^{name} .*{MESSAGE}"):
        peft.get_peft_model(build(), idspam.IDSPAMConfig(layer=0))


@pytest.mark.parametrize("model_type", list(REFUSED))
def test_unsupported_encoders_are_refused_by_the_runner_before_any_weights(compose_cfg, model_type, monkeypatch):
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr("idspam.backbone.load_backbone", no_weights)
    with pytest.raises(UserError, match=rf"model_type '{model_type}'\), which idspam cannot inject into; supported "
                                        r"model types by family: encoder .*bert, roberta"):
        train(compose_cfg("model=tiny", f"model.arch.model_type={model_type}", *FAST))


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta"])
def test_supported_encoders_are_exact(model_type):
    """The accepted encoders: without a prompt the engine is the model's own output (padded rows)."""
    config = AutoConfig.for_model(model_type, **SMALL, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    base = model.base_model
    ids, mask = pad(rows([9, 4], torch.Generator().manual_seed(0)), "right")
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = InjectionEngine(base)(ids, mask, 1)
    torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], atol=2e-5, rtol=1e-4)


def test_mistral_with_layer_types_follows_mistral_model():
    """MistralModel builds one mask (sliding when `sliding_window` is set) and ignores `layer_types`."""
    config = AutoConfig.for_model("mistral", **SMALL, num_key_value_heads=2, sliding_window=3,
                                  layer_types=["full_attention", "sliding_attention"], pad_token_id=0)
    torch.manual_seed(0)
    base = AutoModel.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in base.parameters():
            p.mul_(3.0) if p.dim() == 2 else None
    ids, mask = pad(rows([12, 5], torch.Generator().manual_seed(1)), "left")
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).last_hidden_state
        ours = InjectionEngine(base)(ids, mask, 1)
        base.config.layer_types = ["full_attention"] * 2  # what the engine would do if it read the field
        full = base(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=2e-5, rtol=1e-4)
    assert torch.allclose(full, ref), "MistralModel ignores layer_types"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_pruned_last_layer_at_an_earlier_row_of_an_unpadded_batch_sees_no_later_token(attn):
    """sdpa drops the mask of an unpadded causal batch (is_causal); a pruned row other than the last must
    still be masked causally."""
    from .tiny_decoders import causal_lm

    lm = causal_lm("llama", attn)
    engine = InjectionEngine(lm.model)
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    at = torch.tensor([2, 5])
    with torch.no_grad():
        states = engine.lower(ids, mask, 1)
        full = engine.upper(states.hidden, mask, 1)
        pruned = engine.upper(states.hidden, mask, 1, rows=at)
    torch.testing.assert_close(pruned[:, 0], full[torch.arange(2), at], atol=2e-5, rtol=1e-4)
