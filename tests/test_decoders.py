"""The injection engine on decoders is exact: without a prompt its final hidden states are the Hugging Face
model's own (right and left padding, eager and sdpa attention, sliding windows); a prompt whose mask is
all zeros leaves every real token unchanged; nothing below m builds a graph."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from idspam.errors import UserError
from idspam.injection import InjectionEngine, real_positions

COMMON = dict(vocab_size=211, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
DECODERS = {
    "gpt2": dict(model_type="gpt2", vocab_size=211, n_embd=32, n_layer=4, n_head=4, n_positions=128,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "llama": dict(model_type="llama", num_key_value_heads=2, **COMMON),
    # a window shorter than the inputs, on every second layer: the per-layer-type masks matter
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2, use_sliding_window=True, sliding_window=4,
                  max_window_layers=2, layer_types=["full_attention", "sliding_attention"] * 2, **COMMON),
    "qwen3": dict(model_type="qwen3", num_key_value_heads=2, head_dim=8, **COMMON),
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=5, **COMMON),
    "gemma": dict(model_type="gemma", num_key_value_heads=1, head_dim=8, **COMMON),
    "gemma2": dict(model_type="gemma2", num_key_value_heads=2, head_dim=8, sliding_window=4,
                   query_pre_attn_scalar=8, **COMMON),
}


def tiny(model_type: str, attn: str = "sdpa", lm: bool = False):
    arch = dict(DECODERS[model_type])
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(0)
    loader = AutoModelForCausalLM if lm else AutoModel
    return loader.from_config(config, attn_implementation=attn).eval()


def batch(side: str, lengths=(9, 5, 12)):
    """The same token rows, padded on `side` with pad id 0."""
    torch.manual_seed(1)
    L = max(lengths)
    tokens = torch.randint(3, 211, (len(lengths), L))
    ids = torch.zeros(len(lengths), L, dtype=torch.long)
    mask = torch.zeros(len(lengths), L, dtype=torch.long)
    for row, n in enumerate(lengths):
        where = slice(0, n) if side == "right" else slice(L - n, L)
        ids[row, where], mask[row, where] = tokens[row, :n], 1
    return ids, mask


CASES = [pytest.param(mt, side, attn, id=f"{mt}-{side}-{attn}")
         for mt in DECODERS for side in ("right", "left") for attn in ("eager", "sdpa")
         if not (mt == "gemma2" and attn == "sdpa")]  # Gemma2 softcaps attention: eager only in transformers


@pytest.mark.parametrize("model_type,side,attn", CASES)
def test_engine_equals_hugging_face(model_type, side, attn):
    base = tiny(model_type, attn)
    ids, mask = batch(side)
    with torch.no_grad():  # the reference as `generate` calls it: positions from the mask
        ref = base(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).last_hidden_state
    engine = InjectionEngine(base)
    real = mask.bool()
    for m in (0, 2, 3):
        with torch.no_grad():
            states = engine.lower(ids, mask, m)
            plain = engine.upper(states.hidden, mask, m)
            prompt = torch.randn(3, 4, engine.hidden_size) * 2
            masked = engine.upper(states.hidden, mask, m, prompt, prompt_mask=torch.zeros(3, 4))
            live = engine.upper(states.hidden, mask, m, prompt)
        torch.testing.assert_close(plain[real], ref[real], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(masked[real], ref[real], atol=2e-5, rtol=1e-4)
        assert (live[real] - ref[real]).abs().max() > 1e-3, "an attended prompt must change the output"


@pytest.mark.parametrize("positions", ["before", "zero"])
def test_prompt_positions_option_keeps_real_tokens_exact(positions):
    base = tiny("llama")
    ids, mask = batch("left")
    engine = InjectionEngine(base, prompt_positions=positions)
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).last_hidden_state
        states = engine.lower(ids, mask, 2)
        masked = engine.upper(states.hidden, mask, 2, torch.randn(3, 4, 32), prompt_mask=torch.zeros(3, 4))
    torch.testing.assert_close(masked[mask.bool()], ref[mask.bool()], atol=2e-5, rtol=1e-4)
    assert engine.prompt_position_ids(4, mask).tolist()[0] == ([-4, -3, -2, -1] if positions == "before" else [0] * 4)


def test_prompt_is_seen_by_real_tokens_and_sees_no_input_under_a_causal_mask():
    base = tiny("llama")
    ids, mask = batch("right")
    engine = InjectionEngine(base)
    states = engine.lower(ids, mask, 1)
    prompt = torch.randn(3, 4, 32, requires_grad=True)
    out = engine.upper(states.hidden, mask, 1, prompt)
    out[0, 0].sum().backward()  # the first real token reads the prompt
    assert prompt.grad[0].abs().sum() > 0 and prompt.grad[1:].abs().sum() == 0


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_no_graph_below_m(model_type):
    base = tiny(model_type)
    ids, mask = batch("left")
    engine = InjectionEngine(base)
    states = engine.lower(ids, mask, 2)
    assert not states.hidden.requires_grad and states.hidden.grad_fn is None


def test_unsupported_architecture_is_one_line():
    config = AutoConfig.for_model("gpt_neo", vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                  attention_types=[[["global"], 2]])
    with pytest.raises(UserError, match=r"GPTNeoModel \(model_type 'gpt_neo'\) is not a model this project can "
                                        r"inject into; supported families: .*GPT-2.*Llama"):
        InjectionEngine(AutoModel.from_config(config))


def test_summary_token_is_last_real_token_on_decoders():
    base = tiny("gpt2")
    engine = InjectionEngine(base)
    for side in ("right", "left"):
        ids, mask = batch(side)
        with torch.no_grad():
            states = engine.lower(ids, mask, 2)
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        expected = states.hidden[torch.arange(3), last]
        torch.testing.assert_close(states.summary_token(), expected)
        if side == "right":
            assert last.tolist() == [8, 4, 11]
        else:
            assert last.tolist() == [11, 11, 11]


# --- heads -------------------------------------------------------------------------------------------


def test_last_token_head_reads_the_same_token_under_either_padding_with_a_prompt():
    """Same inputs padded right and left, a prompt at m: the head reads each row's last real token, so the
    logits agree (the engine gives real tokens the same positions and the head finds the same token)."""
    from idspam.heads import ClassificationHead

    for model_type in ("gpt2", "llama", "qwen2"):
        base = tiny(model_type)
        engine = InjectionEngine(base)
        head = ClassificationHead(32, 3, dropout=0.0, read_at="last")
        prompt = torch.randn(3, 4, 32)
        logits = {}
        for side in ("right", "left"):
            ids, mask = batch(side)
            with torch.no_grad():
                hidden = engine(ids, mask, 2, lambda s, p=prompt: p)
                logits[side] = head(hidden, {"input_ids": ids, "attention_mask": mask})
        torch.testing.assert_close(logits["right"], logits["left"], atol=3e-5, rtol=1e-4)


def test_last_token_head_picks_the_last_real_position():
    from idspam.heads import read_positions

    ids, mask = batch("right")
    assert read_positions({"input_ids": ids, "attention_mask": mask}, "last").tolist() == [8, 4, 11]
    ids, mask = batch("left")
    assert read_positions({"input_ids": ids, "attention_mask": mask}, "last").tolist() == [11, 11, 11]
    mask = torch.tensor([[1, 1, 0, 0]])  # a pad id equal to eos at the end changes nothing: the mask decides
    assert read_positions({"input_ids": torch.tensor([[5, 2, 2, 2]]), "attention_mask": mask}, "last").tolist() == [1]


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_lm_verbalizer_equals_the_causal_lm_next_token_logits(model_type, side):
    """head=lm: the frozen LM head at the last real token, read at the label words, is the HF causal LM's
    next-token distribution there (Gemma2's final logit softcapping included)."""
    from idspam.heads import VerbalizerHead

    arch = dict(DECODERS[model_type])
    if model_type == "gemma2":
        arch["final_logit_softcapping"] = 2.0  # small, so the cap visibly bends the logits
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    ids, mask = batch(side)
    words = [7, 42, 100]
    with torch.no_grad():
        ref = lm(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).logits
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        expected = ref[torch.arange(3), last][:, words]
        engine = InjectionEngine(getattr(lm, lm.base_model_prefix))
        head = VerbalizerHead(lm.lm_head, words, "last", softcap=getattr(config, "final_logit_softcapping", None))
        got = head(engine(ids, mask, 2), {"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


# --- last-layer pruning -------------------------------------------------------------------------------


def _encoder(attn: str):
    config = AutoConfig.for_model("roberta", vocab_size=211, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    return AutoModel.from_config(config, attn_implementation=attn).eval()


PRUNE_CASES = [pytest.param(mt, side, attn, id=f"{mt}-{side}-{attn}")
               for mt in ("roberta", "gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma2")
               for side in ("right", "left") for attn in ("eager", "sdpa") if not (mt == "gemma2" and attn == "sdpa")]


@pytest.mark.parametrize("model_type,side,attn", PRUNE_CASES)
def test_last_layer_at_the_head_positions_equals_the_full_layer(model_type, side, attn):
    """Keys and values from every token, the rest only at the rows a head reads: the same states there,
    with a prompt, at every injection layer (m = N-1: the injection layer is the pruned one)."""
    base = _encoder(attn) if model_type == "roberta" else tiny(model_type, attn)
    engine = InjectionEngine(base)
    ids, mask = batch(side)
    if model_type == "roberta":
        ids = ids.clamp_min(2) * mask  # RoBERTa positions count from the pad id
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    for rows in (last, torch.tensor([0, 3, 1])):  # the decoder head's rows, and arbitrary ones
        for m in (0, 3):
            with torch.no_grad():
                states = engine.lower(ids, mask, m)
                prompt = torch.randn(3, 4, 32)
                full = engine.upper(states.hidden, mask, m, prompt)
                pruned = engine.upper(states.hidden, mask, m, prompt, rows=rows)
            assert pruned.shape == (3, 1, 32)
            real = mask[torch.arange(3), rows].bool()  # a padding row's output is never read
            torch.testing.assert_close(pruned[real, 0], full[torch.arange(3), rows][real], atol=2e-5, rtol=1e-4)


def test_pruned_gradients_equal_the_full_ones():
    base = tiny("llama")
    engine = InjectionEngine(base)
    ids, mask = batch("left")
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    states = engine.lower(ids, mask, 2)
    grads = []
    for pruned in (False, True):
        prompt = (torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(0))).requires_grad_()
        out = engine.upper(states.hidden, mask, 2, prompt, rows=last if pruned else None)
        at = out[:, 0] if pruned else out[torch.arange(3), last]
        at.pow(2).sum().backward()
        grads.append(prompt.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
