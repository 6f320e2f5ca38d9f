"""`PeftModel.generate` on an idspam adapter writes what `idspam.generation.generate` writes on the same weights:
the prompt written once from the input, the key/value cache (or, with `use_cache=False`, every step recomputed
with the prompt still from the input), greedy and beam, unpadded and padded, sliding-window families too."""

import pytest
import torch
from peft import get_peft_model

import idspam
from idspam.generation import generate
from idspam.tuner.layer import ATTRIBUTE

from .tiny_decoders import causal_lm, pad, rows

CONFIGS = {"idspam": idspam.IDSPAMConfig, "lpt": idspam.LPTConfig, "prompt_tuning": idspam.LayerPromptTuningConfig}
CASES = [("gpt2", "idspam"), ("llama", "lpt"), ("qwen2", "idspam"), ("mistral", "prompt_tuning"),
         ("gemma2", "idspam"), ("qwen3", "lpt")]
KW = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
          return_dict_in_generate=True)


@pytest.mark.parametrize("family,method", CASES)
def test_peft_generate_equals_idspam_generate(family, method):
    lm = causal_lm(family, "eager")
    peft_model = get_peft_model(lm, CONFIGS[method](layer=1, prompt_length=3)).eval()
    layer = getattr(peft_model.base_model.model.base_model, ATTRIBUTE)
    with torch.no_grad():  # a prompt large enough to matter
        for p in layer.idspam_prompt.parameters():
            p.mul_(3.0)
    prompt_model = layer._models["default"]
    generator = torch.Generator().manual_seed(4)
    effect = 0.0  # how much the prompt moves the scores (a window may hide it from a long row's end)
    for ids, mask in (pad(rows([7], generator), "left"), pad(rows([2, 11, 6], generator), "left")):
        for beams in (1, 3):
            ref = generate(prompt_model, ids, mask, lm_head=lm.lm_head, num_beams=beams, **KW)
            ours = peft_model.generate(input_ids=ids, attention_mask=mask, num_beams=beams, **KW)
            what = f"{family}/{method} {tuple(ids.shape)} beams={beams}"
            assert torch.equal(ours.sequences, ref.sequences), what
            torch.testing.assert_close(torch.stack(ours.scores), torch.stack(ref.scores), atol=2e-4, rtol=1e-4)
        greedy = generate(prompt_model, ids, mask, lm_head=lm.lm_head, **KW)
        recomputed = peft_model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **KW)
        assert torch.equal(recomputed.sequences, greedy.sequences), f"{family}/{method} use_cache=False"
        torch.testing.assert_close(torch.stack(recomputed.scores), torch.stack(greedy.scores), atol=2e-4, rtol=1e-4)
        with peft_model.disable_adapter():
            plain = peft_model.generate(input_ids=ids, attention_mask=mask, **KW)
        effect = max(effect, float((torch.stack(plain.scores) - torch.stack(greedy.scores)).abs().max()))
    assert effect > 1e-2, "the prompt must matter"
