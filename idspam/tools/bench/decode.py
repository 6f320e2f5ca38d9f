"""Decode speed: tokens per second of `generate` with the prompt at layer m, against the same decoder with
PEFT's prompt tuning and with no prompt, in one process, interleaved (random weights, greedy, a fixed
number of new tokens: no early stop).

    idspam-bench --decode --model gpt2
    idspam-bench --decode --model llama_small --batch 8 --length 64 --new-tokens 32
"""

from __future__ import annotations

import statistics
import time

import torch


def decode_rows(args: dict) -> list[dict]:
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from ...generation import generate
    from ...heads import VerbalizerHead
    from ...injection import InjectionEngine
    from ...methods import method_config
    from ...model import PromptModel
    from .common import model_config, sync

    model_cfg, config = model_config(args["model"])
    device = torch.device(args["device"])
    torch.manual_seed(int(args["seed"]))
    lm = AutoModelForCausalLM.from_config(config, attn_implementation=model_cfg.attn_implementation).to(device).eval()
    lm.requires_grad_(False)
    b, length, new = int(args["batch"]), int(args["length"]), int(args["new_tokens"])
    gen = torch.Generator().manual_seed(int(args["seed"]))
    ids = torch.randint(5, min(config.vocab_size, 30000), (b, length), generator=gen).to(device)
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    engine = InjectionEngine(getattr(lm, lm.base_model_prefix))
    mid = engine.num_layers // 2
    method = method_config({"name": "idspam"}).build(engine.hidden_size).to(device)
    method.attach(engine)
    ours = PromptModel(engine, method, VerbalizerHead(lm.lm_head, [0, 1], "last"), mid).eval()
    peft_lm = AutoModelForCausalLM.from_config(config, attn_implementation=model_cfg.attn_implementation).to(device)
    peft_model = get_peft_model(peft_lm, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=10)).eval()

    rows = {
        "no prompt (HF generate)": lambda: lm.generate(input_ids=ids, attention_mask=mask, **kw),
        "peft prompt_tuning": lambda: peft_model.generate(input_ids=ids, attention_mask=mask, **kw),
        f"idspam m={mid}": lambda: generate(ours, ids, mask, **kw),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    with torch.inference_mode():
        for step in rows.values():  # warm-up
            step()
        for _ in range(int(args["repeats"])):
            for name, step in rows.items():  # interleaved
                sync(args["device"])
                start = time.perf_counter()
                step()
                sync(args["device"])
                times[name].append(time.perf_counter() - start)
    tokens = b * new
    return [{"row": name, "tokens_per_second": tokens / statistics.median(t), "min_tokens_per_second": tokens / max(t),
             "max_tokens_per_second": tokens / min(t)} for name, t in times.items()]


def decode_table(results: list[dict], args: dict) -> str:
    plain = next(r for r in results if r["row"].startswith("no prompt"))
    peft = next(r for r in results if r["row"] == "peft prompt_tuning")
    lines = [f"decode: model={args['model']} batch={args['batch']} input length={args['length']} "
             f"new tokens={args['new_tokens']} device={args['device']}; greedy; median of {args['repeats']} "
             "interleaved repeats (min-max)", "",
             "| row | tokens/s (min-max) | vs no prompt | vs peft prompt tuning |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['tokens_per_second']:.1f} ({r['min_tokens_per_second']:.1f}-"
                     f"{r['max_tokens_per_second']:.1f}) | "
                     f"{r['tokens_per_second'] / plain['tokens_per_second']:.2f}x | "
                     f"{r['tokens_per_second'] / peft['tokens_per_second']:.2f}x |")
    return "\n".join(lines)
