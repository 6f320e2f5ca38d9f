"""Decoding with the prompt at layer m through Hugging Face's `generate`: without a prompt it is the plain
model's generation (scores included); with an input-dependent prompt the cached decode gives the tokens a
full recomputation of every step gives; strategies, EOS and beams work; padding on either side."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from idspam.generation import InjectedCausalLM, generate, left_padded
from idspam.heads import VerbalizerHead
from idspam.injection import InjectionEngine, real_positions
from idspam.methods import build_method, method_config
from idspam.model import PromptModel

from .test_decoders import DECODERS, batch
from .tiny_decoders import FAMILY_ATTN, pad, rows
from .tiny_decoders import causal_lm as tiny_lm


def causal_lm(model_type: str, attn: str = "sdpa"):
    arch = dict(DECODERS[model_type])
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def prompt_model(lm, method: str, layer: int = 2) -> PromptModel:
    engine = InjectionEngine(getattr(lm, lm.base_model_prefix))
    torch.manual_seed(1)
    m = build_method(method_config({"name": method}), engine.hidden_size)
    m.attach(engine)
    with torch.no_grad():  # a prompt large enough to matter
        for p in m.parameters():
            p.mul_(3.0)
    return PromptModel(engine, m, VerbalizerHead(lm.lm_head, [1, 2], "last"), layer).eval()


@pytest.mark.parametrize("model_type,attn,side", [
    ("gpt2", "sdpa", "left"), ("llama", "sdpa", "left"), ("llama", "eager", "right"), ("qwen2", "eager", "left"),
    ("mistral", "sdpa", "right"), ("gemma2", "eager", "left")])
def test_without_a_prompt_generation_is_the_plain_models(model_type, attn, side):
    """LoRA at its initialisation (B = 0) is the backbone: tokens and every step's scores equal HF's."""
    lm = causal_lm(model_type, attn)
    model = prompt_model(lm, "lora")
    ids, mask = batch(side)
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    ref = lm.generate(**dict(zip(("input_ids", "attention_mask"), batch("left"), strict=True)), **kw)
    ours = generate(model, ids, mask, **kw)  # right padding: moved to the left first
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)
    assert torch.equal(ours.sequences[:, ids.shape[1]:], ref.sequences[:, ids.shape[1]:])


def recompute_greedy(model: PromptModel, ids, mask, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step from scratch: the prompt written from the input alone, the whole sequence run again."""
    engine, m = model.engine, model.layer
    ids, mask = left_padded(ids, mask)
    with torch.no_grad():
        prompt = model.method(engine.lower(ids, mask, m))
        seq, seq_mask, out, logits = ids, mask, [], []
        for _ in range(steps):
            states = engine.lower(seq, seq_mask, m)
            hidden = engine.upper(states.hidden, seq_mask, m, prompt)
            logits.append(model.head.lm_head(hidden[:, -1]))
            token = logits[-1].argmax(-1, keepdim=True)
            out.append(token)
            seq, seq_mask = torch.cat([seq, token], 1), torch.cat([seq_mask, torch.ones_like(token)], 1)
    return torch.cat(out, 1), torch.stack(logits)


@pytest.mark.parametrize("model_type,method,side", [
    ("gpt2", "idspam", "left"), ("llama", "idspam", "right"), ("qwen2", "idspam", "left"), ("llama", "lpt", "left"),
    ("gpt2", "lpt", "left"), ("llama", "prompt_tuning", "left"), ("gpt2", "prompt_tuning", "left")])
def test_cached_decoding_equals_recomputing_every_step(model_type, method, side):
    lm = causal_lm(model_type)
    model = prompt_model(lm, method, layer=0 if method == "prompt_tuning" else 2)  # prompt tuning: at the input
    ids, mask = batch(side)
    ours = generate(model, ids, mask, max_new_tokens=7, do_sample=False, eos_token_id=None, pad_token_id=0,
                    output_scores=True, return_dict_in_generate=True)
    tokens, logits = recompute_greedy(model, ids, mask, 7)
    assert torch.equal(ours.sequences[:, ids.shape[1]:], tokens)
    torch.testing.assert_close(torch.stack(ours.scores), logits, atol=1e-4, rtol=1e-4)
    kw = dict(max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    left_ids, left_mask = left_padded(ids, mask)
    plain = lm.generate(input_ids=left_ids, attention_mask=left_mask, **kw).scores[0]
    assert (generate(model, ids, mask, **kw).scores[0] - plain).abs().max() > 1e-2, "the prompt must matter"


def test_the_prompt_is_written_once_from_the_input():
    lm = causal_lm("llama")
    model = prompt_model(lm, "idspam")
    calls = []
    model.method.register_forward_hook(lambda mod, args, out: calls.append(args[0].input_ids.shape))
    ids, mask = batch("left")
    generate(model, ids, mask, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert calls == [ids.shape]


def test_strategies_eos_and_beams():
    lm = causal_lm("llama")
    model = prompt_model(lm, "idspam")
    ids, mask = batch("left")
    greedy = generate(model, ids, mask, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    eos = int(greedy[0, 1])  # the second token of row 0 as EOS: row 0 stops there, padded after it
    stopped = generate(model, ids, mask, max_new_tokens=5, do_sample=False, eos_token_id=eos, pad_token_id=0)
    first_eos = (stopped[0] == eos).int().argmax()
    assert stopped[0, first_eos] == eos and (stopped[0, first_eos + 1:] == 0).all()
    torch.manual_seed(0)
    sampled = generate(model, ids, mask, max_new_tokens=5, do_sample=True, top_k=20, temperature=0.7,
                       eos_token_id=None, pad_token_id=0)
    beams = generate(model, ids, mask, max_new_tokens=5, num_beams=3, num_return_sequences=2, do_sample=False,
                     eos_token_id=None, pad_token_id=0)
    vocab = lm.config.vocab_size
    assert sampled.shape == (3, 5) and beams.shape == (6, 5)
    assert ((0 <= sampled) & (sampled < vocab)).all() and ((0 <= beams) & (beams < vocab)).all()


def test_generation_refuses_an_encoder():
    from idspam.errors import UserError

    config = AutoConfig.for_model("roberta", vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32)
    from transformers import AutoModel

    engine = InjectionEngine(AutoModel.from_config(config))
    model = PromptModel(engine, build_method(method_config({"name": "lora"}), 16), torch.nn.Identity(), 0)
    with pytest.raises(UserError, match="generation needs a decoder"):
        generate(model, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                 lm_head=torch.nn.Linear(16, 50))


def test_right_padding_is_moved_to_the_left():
    ids, mask = batch("right")
    left_ids, left_mask = left_padded(ids, mask)
    expected_ids, expected_mask = batch("left")
    assert torch.equal(left_ids, expected_ids) and torch.equal(left_mask, expected_mask)


# --- every family, both attention implementations, unpadded and padded batches, greedy and beam ---------------

def generation_cases(generator: torch.Generator):
    """(name, ids, mask): a single unpadded input, equal-length rows, very different lengths padded left and
    right (transformers drops an all-ones mask: the first two take that path)."""
    single = rows([7], generator)
    equal = rows([6, 6, 6], generator)
    mixed = rows([2, 12, 5], generator)
    return [("single", *pad(single, "left")), ("equal", *pad(equal, "left")), ("padded-left", *pad(mixed, "left")),
            ("padded-right", *pad(mixed, "right"))]


KW = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
          return_dict_in_generate=True)


def assert_same_generation(ours, ref, width: int, what: str):
    assert torch.equal(ours.sequences[:, width:], ref.sequences[:, width:]), what
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(ref.scores), atol=2e-4, rtol=1e-4,
                               msg=lambda m, what=what: f"{what}: {m}")


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_without_a_prompt_greedy_and_beam_are_hugging_faces_generate(family, attn):
    """Tokens and every step's scores equal `*ForCausalLM.generate`'s (Gemma2's final softcap included)."""
    lm = tiny_lm(family, attn)
    model = prompt_model(lm, "lora")  # LoRA at its initialisation: no prompt, the backbone itself
    for name, ids, mask in generation_cases(torch.Generator().manual_seed(5)):
        left_ids, left_mask = left_padded(ids, mask)
        for beams in (1, 3):
            ref = lm.generate(input_ids=left_ids, attention_mask=left_mask, num_beams=beams, **KW)
            ours = generate(model, ids, mask, num_beams=beams, **KW)
            assert_same_generation(ours, ref, ids.shape[1], f"{family}/{attn}/{name}/beams={beams}")


class Recomputed(InjectedCausalLM):
    """The reference: no cache, the whole sequence run again at every step, the prompt written once from the
    first `width` columns (the input)."""

    def __init__(self, model, lm_head, width: int):
        super().__init__(model, lm_head)
        self.width = width

    def forward(self, input_ids, attention_mask=None, **kwargs):
        engine, m, method = self.prompt_model.engine, self.prompt_model.layer, self.prompt_model.method
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        prompt = method(engine.lower(input_ids[:, :self.width], mask[:, :self.width], m))
        hidden = engine.upper(engine.lower(input_ids, mask, m).hidden, mask, m, prompt)
        return CausalLMOutputWithPast(logits=engine.family.final_logits(engine.config, self.lm_head(hidden)).float())


PROMPTED = [("idspam", 1), ("lpt", 1), ("prompt_tuning", 1), ("prompt_tuning", 0)]


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_with_a_prompt_cached_greedy_and_beam_equal_recomputing_every_step(family, attn):
    """ID-SPAM, LPT and prompt tuning at m > 0 (and prompt tuning at m = 0, where layer 0's cache holds the
    prompt): the key/value-cached decode gives the tokens and scores of recomputing every step."""
    lm = tiny_lm(family, attn)
    plain = prompt_model(lm, "lora")
    effect = 0.0  # how much the prompt moved the first scores (a window may hide it from a long row's end)
    for i, (name, ids, mask) in enumerate(generation_cases(torch.Generator().manual_seed(6))):
        # every method meets every case across the families (m = 0 on unpadded rows: the cache-length rule)
        method, layer = PROMPTED[(i + FAMILY_ATTN.index((family, attn))) % len(PROMPTED)]
        model = prompt_model(lm, method, layer)
        left_ids, left_mask = left_padded(ids, mask)
        reference = Recomputed(model, lm.lm_head, ids.shape[1]).eval()
        for beams in (1, 3):
            ref = reference.generate(input_ids=left_ids, attention_mask=left_mask, num_beams=beams, use_cache=False,
                                     **KW)
            ours = generate(model, ids, mask, num_beams=beams, **KW)
            assert_same_generation(ours, ref, ids.shape[1], f"{family}/{attn}/{name}/{method}@{layer}/beams={beams}")
        unprompted = generate(plain, ids, mask, **{**KW, "max_new_tokens": 1}).scores[0]
        prompted = generate(model, ids, mask, **{**KW, "max_new_tokens": 1}).scores[0]
        effect = max(effect, float((prompted - unprompted).abs().max()))
    assert effect > 1e-2, "the prompt must matter"


def test_gemma2_generation_logits_are_the_causal_lms():
    """Gemma2ForCausalLM caps its final logits (cap 3.0 here, logits well beyond it): generation does too."""
    lm = tiny_lm("gemma2", "eager")
    model = prompt_model(lm, "lora")
    ids, mask = pad(rows([9, 4], torch.Generator().manual_seed(2)), "left")
    wrapper = InjectedCausalLM(model, lm.lm_head).eval()
    with torch.no_grad():
        ours = wrapper(input_ids=ids, attention_mask=mask).logits
        ref = lm(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).logits
        raw = lm.lm_head(lm.model(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask))[0])
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=1e-4)
    assert (ref[real] - raw[real]).abs().max() > 0.5, "the cap must matter"
