"""The step benchmark's rows: one training step (forward, backward, AdamW) per method, ours and PEFT's,
on a random batch, plus the frozen `inference` forward; timed interleaved after warm-up, peak memory in a
fresh subprocess per row. `main.py` says what the figures mean and how to run them."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from .common import PRECISIONS, Row, model_config, peak_memory_mb, sync


def rows_for(num_layers: int) -> list[tuple[str, str, dict]]:
    """(row name, kind, options); ours use the run's own model code, `peft_*` PEFT's own models."""
    mid = num_layers // 2
    return [
        ("inference", "inference", {}),
        ("idspam m=0", "ours", {"method": "idspam", "layer": 0}),
        (f"idspam m={mid}", "ours", {"method": "idspam", "layer": mid}),
        (f"idspam m={num_layers - 1}", "ours", {"method": "idspam", "layer": num_layers - 1}),
        (f"idspam m={mid} cache_lower", "ours", {"method": "idspam", "layer": mid, "cache": True}),
        (f"idspam m={mid} pruned", "ours", {"method": "idspam", "layer": mid, "prune": True}),
        (f"idspam m={mid} cache_lower pruned", "ours",
         {"method": "idspam", "layer": mid, "cache": True, "prune": True}),
        (f"lpt m={mid}", "ours", {"method": "lpt", "layer": mid}),
        ("prompt_tuning (ours)", "ours", {"method": "prompt_tuning", "layer": 0}),
        ("lora (ours, peft inside)", "ours", {"method": "lora", "layer": 0}),
        ("finetune", "ours", {"method": "finetune", "layer": 0}),
        ("peft prompt_tuning", "peft", {"peft": "prompt_tuning"}),
        ("peft lora", "peft", {"peft": "lora"}),
    ]


def build_row(name: str, kind: str, options: dict, args: dict, shared: dict) -> Row:
    """A row's step function; `shared` holds the frozen backbone the rows that do not change it share."""
    from ...backbone import load_backbone
    from ...heads import ClassificationHead
    from ...injection import InjectionEngine
    from ...methods import method_config
    from ...model import PromptModel
    from ...runner.lower_cache import LowerCache

    device, dtype = torch.device(args["device"]), PRECISIONS[args["precision"]]
    batch, labels = shared["batch"], shared["labels"]
    model_cfg, config = shared["model_cfg"], shared["config"]

    def fresh_backbone():
        torch.manual_seed(int(args["seed"]))
        return load_backbone(model_cfg, config).base.to(device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    if kind == "inference":
        base = shared.setdefault("frozen", fresh_backbone()).eval()

        def step():
            with torch.inference_mode(), autocast():
                base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return Row(name, step)

    if kind == "peft":
        from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(int(args["seed"]))
        import copy

        two = copy.deepcopy(config)
        two.num_labels = 2
        if two.pad_token_id is None:  # decoders' sequence classifiers look for the last non-pad token
            two.pad_token_id = 0
        hf = AutoModelForSequenceClassification.from_config(two).to(device)
        peft_cfg = (PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10)
                    if options["peft"] == "prompt_tuning" else
                    LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))  # PEFT's targets
        model = get_peft_model(hf, peft_cfg).train()
        forward = lambda: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],  # noqa: E731
                                labels=labels).loss
    else:
        method_name = options["method"]
        mutates = method_name in ("lora", "finetune")
        base = fresh_backbone() if mutates else shared.setdefault("frozen", fresh_backbone())
        engine = InjectionEngine(base)
        node = {"name": method_name}
        if method_name in ("prompt_tuning", "lora", "finetune"):
            node["layer"] = options["layer"]
        cfg = method_config(node)
        method = cfg.build(engine.hidden_size).to(device)
        method.attach(engine)
        head = ClassificationHead(engine.hidden_size, 2, read_at="last" if engine.causal else "first")
        model = PromptModel(engine, method, head.to(device), options["layer"],
                            prune_last_layer=options.get("prune", False)).train()
        if options.get("cache"):  # epochs >= 2: every example's lower-stack output is already cached
            lengths = batch["attention_mask"].sum(1).tolist()
            model.lower_cache = LowerCache(lengths, engine.hidden_size, embeddings_are_hidden=options["layer"] == 0,
                                           store_embeddings=options["layer"] > 0 and cfg.reads_embedding_output)
            with torch.no_grad():
                model({**batch, "index": shared["index"]})
            shared["cache_bytes_per_token"] = model.lower_cache.nbytes() / sum(lengths)  # reported beside the table
        full = {**batch, "index": shared["index"]} if options.get("cache") else batch
        forward = lambda: nn.functional.cross_entropy(model(full).float(), labels)  # noqa: E731

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = forward()
        loss.backward()
        optimizer.step()
    return Row(name, train_step)


def setup(args: dict) -> dict:
    model_cfg, config = model_config(args["model"])
    device = torch.device(args["device"])
    b, length = int(args["batch"]), int(args["length"])
    gen = torch.Generator().manual_seed(int(args["seed"]))
    ids = torch.randint(5, min(config.vocab_size, 30000), (b, length), generator=gen)
    return {"model_cfg": model_cfg, "config": config,
            "batch": {"input_ids": ids.to(device), "attention_mask": torch.ones(b, length, dtype=torch.long,
                                                                                 device=device)},
            "labels": torch.randint(0, 2, (b,), generator=gen).to(device),
            "index": torch.arange(b, device=device)}


def memory_in_subprocess(name: str, args: dict) -> float:
    """Each row in a fresh process, so one row's freed memory does not hide another's peak."""
    from .common import to_argv

    argv = [sys.executable, "-m", "idspam.tools.bench", *to_argv(args), "--memory-row", name]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"memory of {name!r}: {proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict], args: dict) -> str:
    anchor = next(r for r in results if r["row"] == "peft prompt_tuning")
    inference = next(r for r in results if r["row"] == "inference")
    lines = [f"model={args['model']} batch={args['batch']} length={args['length']} device={args['device']} "
             f"precision={args['precision']}; median of {args['repeats']} repeats of {args['steps']} steps", "",
             "| row | train examples/s (min-max) | vs peft prompt tuning (min-max) | vs inference | peak memory MB "
             "| vs peft prompt tuning |",
             "|---|---|---|---|---|---|"]
    for r in results:
        memory = r["peak_memory_mb"]
        mem_ratio = (f"{memory / anchor['peak_memory_mb']:.2f}x" if memory is not None and anchor["peak_memory_mb"]
                     else "")
        # the ratio's spread: this row's slowest and fastest repeat against the anchor's median
        spread = (f" ({r['min_examples_per_second'] / anchor['examples_per_second']:.2f}-"
                  f"{r['max_examples_per_second'] / anchor['examples_per_second']:.2f})"
                  if "min_examples_per_second" in r else "")
        throughput = (f"{r['examples_per_second']:.2f} ({r['min_examples_per_second']:.2f}-"
                      f"{r['max_examples_per_second']:.2f})" if "min_examples_per_second" in r
                      else f"{r['examples_per_second']:.2f}")
        lines.append(f"| {r['row']} | {throughput} | "
                     f"{r['examples_per_second'] / anchor['examples_per_second']:.2f}x{spread} | "
                     f"{r['examples_per_second'] / inference['examples_per_second']:.2f}x | "
                     f"{'' if memory is None else f'{memory:.0f}'} | {mem_ratio} |")
    lines += [f"\n{r['row']}: {r['cache_bytes_per_token']:.1f} cache bytes per real token"
              for r in results if "cache_bytes_per_token" in r]
    return "\n".join(lines)


def run(args: dict) -> list[dict]:
    torch.manual_seed(int(args["seed"]))
    shared = setup(args)
    specs = rows_for(shared["config"].num_hidden_layers)
    if args["rows"]:
        wanted = set(args["rows"].split(","))
        specs = [s for s in specs if s[0] in wanted or s[0] in ("inference", "peft prompt_tuning")]
    from tqdm.auto import tqdm

    rows = [build_row(name, kind, options, args, shared) for name, kind, options in tqdm(specs, desc="build")]
    steps, b = int(args["steps"]), int(args["batch"])
    for row in rows:  # warm-up
        for _ in range(int(args["warmup"])):
            row.step()
    for _ in tqdm(range(int(args["repeats"])), desc="repeats"):
        for row in rows:  # interleaved: drifts of the machine hit every row alike
            sync(args["device"])
            start = time.perf_counter()
            for _ in range(steps):
                row.step()
            sync(args["device"])
            row.times.append((time.perf_counter() - start) / steps)
    results = []
    for row in tqdm(rows, desc="memory"):
        if args["memory"] == "subprocess":
            memory = memory_in_subprocess(row.name, args)
        elif args["memory"] == "off":
            memory = None
        else:
            memory = peak_memory_mb(row, args)
        median = statistics.median(row.times)
        results.append({"row": row.name, "examples_per_second": b / median, "seconds_per_step": median,
                        "min_examples_per_second": b / max(row.times), "max_examples_per_second": b / min(row.times),
                        "peak_memory_mb": memory})
    for r in results:  # the compact cache's bytes per real token (`--e2e` reports a real data set's)
        if "cache_lower" in r["row"] and "cache_bytes_per_token" in shared:
            r["cache_bytes_per_token"] = shared["cache_bytes_per_token"]
    return results
