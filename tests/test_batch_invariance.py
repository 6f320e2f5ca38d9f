"""A row's outputs never depend on the rows that share its batch: hidden states, LM logits and generated
tokens of a row are the same alone, padded left or right, beside long and short rows, for every decoder
family (sliding-window ones included) under eager and sdpa attention, with a live input-dependent prompt at
a random layer m. Property-style: seeded random batch compositions (lengths 1..L, a batch of one, equal
lengths, either padding side), on models whose masks, windows and softcaps change the outputs."""

import random

import pytest
import torch

from idspam.generation import generate
from idspam.heads import VerbalizerHead
from idspam.injection import InjectionEngine, real_positions
from idspam.methods import build_method, method_config
from idspam.model import PromptModel

from .tiny_decoders import FAMILIES, FAMILY_ATTN, causal_lm, pad, rows

L = 12  # longest row; windows are 4


def prompt_model(lm, method: str, layer: int, seed: int = 1) -> PromptModel:
    engine = InjectionEngine(getattr(lm, lm.base_model_prefix))
    torch.manual_seed(seed)
    m = build_method(method_config({"name": method, "prompt_length": 3}), engine.hidden_size)
    m.attach(engine)
    with torch.no_grad():  # a prompt large enough to matter
        for p in m.parameters():
            p.mul_(3.0)
    return PromptModel(engine, m, VerbalizerHead(lm.lm_head, [1, 2], "last"), layer).eval()


def compositions(seed: int, count: int):
    """(target row length, companion lengths, padding side, extra pad columns): a batch of one, equal lengths,
    and random mixes of long and short rows."""
    rng = random.Random(seed)
    out = [(rng.randint(1, L), [], "left", 0), (5, [5, 5], "right", 0)]
    while len(out) < count:
        out.append((rng.randint(1, L), [rng.randint(1, L) for _ in range(rng.randint(1, 3))],
                    rng.choice(["left", "right"]), rng.choice([0, 0, 3])))
    return out


def logits_of(model: PromptModel, hidden: torch.Tensor) -> torch.Tensor:
    engine = model.engine
    return engine.family.final_logits(engine.config, model.head.lm_head(hidden))


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_forward_of_a_row_is_the_same_in_any_batch(family, attn):
    lm = causal_lm(family, attn)
    generator = torch.Generator().manual_seed(hash(family) % 1000)
    rng = random.Random(7)
    for n, others, side, extra in compositions(seed=len(family), count=6):
        layer = rng.randrange(lm.config.num_hidden_layers)
        model = prompt_model(lm, "idspam", layer)
        target, *companions = rows([n, *others], generator)
        alone_ids, alone_mask = pad([target], "left")
        position = rng.randrange(len(companions) + 1)
        batch_rows = companions[:position] + [target] + companions[position:]
        ids, mask = pad(batch_rows, side, max(len(r) for r in batch_rows) + extra)
        with torch.no_grad():
            alone = model.hidden_states({"input_ids": alone_ids, "attention_mask": alone_mask})[0]
            mixed = model.hidden_states({"input_ids": ids, "attention_mask": mask})[position][mask[position].bool()]
            what = f"{family} m={layer} n={n} beside {others} {side}"
            torch.testing.assert_close(mixed, alone, atol=3e-5, rtol=1e-4, msg=lambda m, what=what: f"{what}: {m}")
            torch.testing.assert_close(logits_of(model, mixed), logits_of(model, alone), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_generated_tokens_of_a_row_are_the_same_in_any_batch(family, attn):
    lm = causal_lm(family, attn)
    generator = torch.Generator().manual_seed(11)
    kw = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    for i, (n, others, side, extra) in enumerate(compositions(seed=3 + len(family), count=4)):
        model = prompt_model(lm, ("idspam", "lpt", "prompt_tuning")[i % 3], layer=1)
        target, *companions = rows([n, *others], generator)
        alone = generate(model, *pad([target], "left"), **kw)
        ids, mask = pad([target, *companions], side, max(n, *[len(r) for r in companions], 1) + extra)
        mixed = generate(model, ids, mask, **kw)
        assert torch.equal(alone.sequences[0, -5:], mixed.sequences[0, -5:]), f"{family} n={n} beside {others}"
        torch.testing.assert_close(torch.stack(mixed.scores)[:, 0], torch.stack(alone.scores)[:, 0],
                                   atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_weights_make_masks_matter(family):
    """The fixtures are strong enough: ignoring padding, a window or a softcap changes the outputs."""
    lm = causal_lm(family)
    token_rows = rows([10, 3], torch.Generator().manual_seed(0))
    ids, mask = pad(token_rows, "left")
    base = getattr(lm, lm.base_model_prefix)
    with torch.no_grad():
        masked = base(input_ids=ids, attention_mask=mask, position_ids=real_positions(mask)).last_hidden_state
        unmasked = base(input_ids=ids, position_ids=real_positions(mask)).last_hidden_state
        assert (masked[1, -3:] - unmasked[1, -3:]).abs().max() > 0.1
        if getattr(lm.config, "sliding_window", None):
            wide = causal_lm(family)
            wide.config.sliding_window = 64
            wide_out = getattr(wide, wide.base_model_prefix)(input_ids=ids[:1]).last_hidden_state
            assert (wide_out[0, -1] - masked[0, -1]).abs().max() > 0.1, "the window must matter"
        if getattr(lm.config, "final_logit_softcapping", None):
            capped = lm(input_ids=ids[:1]).logits
            raw = lm.lm_head(base(input_ids=ids[:1]).last_hidden_state)
            assert (capped - raw).abs().max() > 0.5, "the softcap must matter"
