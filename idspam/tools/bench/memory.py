"""Peak training memory at real shapes, one fresh process per row (`idspam-bench --memory-rows`).

    idspam-bench --memory-rows --model llama_3_2_1b --batch 8 --length 512 \\
        --rows "idspam m=8 nf4 ckpt,peft lora nf4,peft prompt_tuning nf4"

A row is `<method> [m=K] <precision> [ckpt] [cache]`: method `idspam` (m defaults to N/2), `peft lora` (r=8 on
PEFT's default targets, q/v on Llama/Qwen: QLoRA under nf4) or `peft prompt_tuning` (10 virtual tokens);
precision `fp32`, `bf16`, `nf4`, `fp4` or `int8` (4/8-bit: the frozen linear layers through bitsandbytes, compute
in bf16); `ckpt`: activation checkpointing (ours: layers m..N-1, PEFT's: Hugging Face gradient checkpointing);
`cache`: the lower stack's output is already cached (epochs >= 2 of `cache_lower=true`), so the step runs
layers m..N-1 only. The backbone has random weights built from the config (quantized rows: built, saved and
reloaded through `BitsAndBytesConfig`, as `model.pretrained=false` runs do).

Each row runs in its own process: the model is loaded, `--warmup` untimed training steps run (forward,
backward, AdamW; the first step's one-off work, see `measure_row`), then the peak is reset and `--steps`
timed steps run on a random batch. Reported: `weights_mb` (resident after loading), `first_step_mb` (the
warm-up's peak above the weights), `peak_mb` (the peak during the timed steps: on CPU the process's peak RSS,
VmHWM after resetting it, with glibc's mmap threshold fixed, see CHILD_MALLOC; on CUDA
`torch.cuda.max_memory_allocated`), `step_mb` = peak - weights (activations, gradients, optimizer state), and
the median seconds per timed step. On CPU `timed_start_mb` is the RSS when the timed window opens, the floor of
its peak: the warm-up can free pages that were resident at load (seen in a test worker that had run other tests:
peak 790.6 against weights 790.7 MB), so for a step smaller than what was freed `peak_mb` reads below `weights_mb`
and `step_mb` is negative.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from ...errors import UserError

PRECISION_WORDS = ("fp32", "bf16", "nf4", "fp4", "int8")
QUANTIZED = {"nf4": "nf4", "fp4": "fp4", "int8": "int8"}
# glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, so later blocks of a few MB come
# from the heap and stay resident when freed: the peak RSS then reads the heap's high-water mark, not the live
# memory (Qwen2.5-0.5B nf4, ID-SPAM m=12 at 2 x 128: first step 626 MB, steady 357 MB; with the threshold fixed
# at 1 MB, 250 and 297 MB). Rows' processes run with it fixed, so freed blocks of 1 MB and more go back at once.
CHILD_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}
DEFAULT_ROWS = ("idspam m=mid bf16,idspam m=mid bf16 ckpt,idspam m=mid bf16 cache,peft prompt_tuning bf16,"
                "peft lora bf16,idspam m=mid nf4,idspam m=mid nf4 ckpt,idspam m=mid nf4 cache,"
                "peft prompt_tuning nf4,peft lora nf4")


def parse_row(text: str, num_layers: int) -> dict:
    """`idspam m=16 nf4 ckpt` -> {"method": "idspam", "layer": 16, "precision": "nf4", "ckpt": True, ...}."""
    words = text.split()
    row = {"name": text.strip(), "layer": num_layers // 2, "precision": "bf16", "ckpt": False, "cache": False}
    if words[:1] == ["idspam"]:
        row["method"], rest = "idspam", words[1:]
    elif words[:2] in (["peft", "lora"], ["peft", "prompt_tuning"]):
        row["method"], rest = " ".join(words[:2]), words[2:]
    else:
        raise UserError(f"memory row {text!r}: starts with idspam, 'peft lora' or 'peft prompt_tuning'")
    for word in rest:
        if word.startswith("m="):
            row["layer"] = num_layers // 2 if word == "m=mid" else int(word[2:])
            if not 0 <= row["layer"] < num_layers:
                raise UserError(f"memory row {text!r}: m={row['layer']} is out of range; valid: 0..{num_layers - 1}")
        elif word in PRECISION_WORDS:
            row["precision"] = word
        elif word in ("ckpt", "cache"):
            row[word] = True
        else:
            raise UserError(f"memory row {text!r}: unknown word {word!r}; valid: m=K, {', '.join(PRECISION_WORDS)}, "
                            "ckpt, cache")
    if row["cache"] and row["method"] != "idspam":
        raise UserError(f"memory row {text!r}: cache applies to idspam rows only")
    row["name"] = " ".join(words).replace("m=mid", f"m={row['layer']}")
    return row


def _backbone(loader, model_cfg, config, precision: str, device: torch.device):
    """Random weights of `loader` (AutoModel / AutoModelForSequenceClassification), quantized or not."""
    import tempfile
    from dataclasses import replace

    from transformers import BitsAndBytesConfig

    from ...backbone import DTYPES, quantized_device_map

    dtype = DTYPES["float32" if precision == "fp32" else "bfloat16"]
    if precision not in QUANTIZED:
        return loader.from_config(config, dtype=dtype, attn_implementation=model_cfg.attn_implementation).to(device)
    cfg = replace(model_cfg, quantization=QUANTIZED[precision], dtype="bfloat16")
    skip = ["score", "lm_head"]  # PEFT's classifier head trains: never quantized
    quant = (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip) if precision == "int8" else
             BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.quantization, bnb_4bit_compute_dtype=dtype,
                                llm_int8_skip_modules=skip))
    with tempfile.TemporaryDirectory(prefix="idspam-bench-") as folder:
        random_checkpoint(loader, config, folder, dtype)
        return loader.from_pretrained(folder, dtype=dtype, quantization_config=quant,
                                      attn_implementation=model_cfg.attn_implementation,
                                      device_map=quantized_device_map())


def random_checkpoint(loader, config, folder: str, dtype, shard_mb: float = 512) -> None:
    """A checkpoint of random weights in `folder`, written shard by shard: the model's tensors (names and shapes
    from the model built on the meta device) drawn from N(0, initializer_range), norms' weights 1, biases 0.
    Never more than one shard of unquantized weights is in memory, so an 8B backbone is quantized on a host
    that could not hold it in bf16 (building the model and `save_pretrained` would need it whole, twice)."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in loader.from_config(config).state_dict().items()}
    std = float(getattr(config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**63)
    shards, shard, size, index = [], {}, 0, {}

    def flush():
        nonlocal shard, size
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
            shards.append(name)
            index.update(dict.fromkeys(shard, name))
            shard, size = {}, 0

    for key, (shape, kept) in shapes.items():
        tensor_dtype = dtype if kept.is_floating_point else kept
        if len(shape) < 2:
            value = (torch.ones if "norm" in key else torch.zeros)(shape, dtype=tensor_dtype)
        else:
            value = torch.empty(shape, dtype=tensor_dtype).normal_(0.0, std, generator=generator)
        shard[key] = value
        size += value.numel() * value.element_size()
        if size >= shard_mb * 2**20:
            flush()
    flush()
    config.save_pretrained(folder)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": index}, fh)


def build_step(row: dict, args: dict):
    """(train step, batch) of one row on a freshly built backbone."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from ...heads import ClassificationHead
    from ...injection import InjectionEngine
    from ...methods import method_config
    from ...model import PromptModel
    from .common import model_config

    model_cfg, config = model_config(args["model"])
    device = torch.device(args["device"])
    torch.manual_seed(int(args["seed"]))
    b, length = int(args["batch"]), int(args["length"])
    ids = torch.randint(5, min(config.vocab_size, 30000), (b, length)).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (b,)).to(device)
    if row["method"].startswith("peft"):
        from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model

        config.num_labels = 2
        config.pad_token_id = 0 if config.pad_token_id is None else config.pad_token_id
        hf = _backbone(AutoModelForSequenceClassification, model_cfg, config, row["precision"], device)
        hf.requires_grad_(False)
        if row["ckpt"]:
            hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            hf.enable_input_require_grads()
        peft_cfg = (PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10)
                    if row["method"] == "peft prompt_tuning" else
                    LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))
        model = get_peft_model(hf, peft_cfg).train()
        forward = lambda: model(**batch, labels=labels).loss  # noqa: E731
    else:
        base = _backbone(AutoModel, model_cfg, config, row["precision"], device)
        base.requires_grad_(False)
        engine = InjectionEngine(base, activation_checkpointing=row["ckpt"])
        method = method_config({"name": "idspam"}).build(engine.hidden_size).to(device)
        method.attach(engine)
        head = ClassificationHead(engine.hidden_size, 2, read_at="last").to(device)
        model = PromptModel(engine, method, head, row["layer"], prune_last_layer=True).train()
        if row["cache"]:  # the lower stack's output, as a cache would hand it back
            with torch.no_grad():
                states = model.lower_states(batch)
            model.lower_states = lambda batch, split=None: states
        forward = lambda: nn.functional.cross_entropy(model(batch).float(), labels)  # noqa: E731
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=row["precision"] != "fp32")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward()
        loss.backward()
        optimizer.step()
    return step, model


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process (Linux); False where it cannot. The heap that
    building the weights freed goes back to the kernel first (glibc `malloc_trim`): left resident, the step's
    allocations would reuse it unseen and the step's peak would read too low."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_mb(*keys: str) -> dict:
    """Fields of /proc/self/status in MiB."""
    found = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in keys:
                found[key] = int(line.split()[1]) / 1024
    return found


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_row(row: dict, args: dict) -> dict:
    """One row, in this process: weights, the warm-up steps' peak, the steady peak and seconds per step.

    `warmup` untimed steps run before the peak is reset (default 1). The first step does one-off work the
    later ones do not: AdamW creates its state, and glibc keeps the freed heap resident (before the engine kept
    bitsandbytes' CPU 4-bit layers unpacked, `injection.unpack_cpu_4bit_weights`, the first graph-free call also
    repacked each weight below m through transient int32 copies). `first_step_mb` reports that first peak;
    `step_mb` is the steady step's (its peak above the weights loaded, so AdamW's state counts in it)."""
    cuda = args["device"].startswith("cuda")
    step, model = build_step(row, args)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def reset() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif not _reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux only")

    def peak() -> float:
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return _peak_rss_mb()

    reset()
    weights = torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mb()
    resident = {} if cuda else _status_mb("RssAnon", "RssFile")  # file: libraries, mapped checkpoint pages
    warmup = int(args.get("warmup", 1))
    for _ in range(warmup):
        step()
    first = peak() if warmup else None
    reset()
    start_rss = None if cuda else _rss_mb()  # the timed window's floor: its peak is at least this
    times = []
    for _ in range(int(args["steps"])):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    top = peak()
    timed = times[1:] if not warmup and len(times) > 1 else times
    return {"row": row["name"], **{k: row[k] for k in ("method", "layer", "precision", "ckpt", "cache")},
            "trained_parameters": trained, "weights_mb": round(weights, 1), "peak_mb": round(top, 1),
            "step_mb": round(top - weights, 1), "timed_start_mb": None if cuda else round(start_rss, 1),
            "first_step_mb": None if first is None else round(first - weights, 1),
            "seconds_per_step": round(statistics.median(timed), 3),
            "examples_per_second": round(int(args["batch"]) / statistics.median(timed), 3),
            "memory": "cuda max_memory_allocated" if cuda else "peak RSS (VmHWM)", "steps": len(times),
            **{f"weights_{k[3:].lower()}_mb": round(v, 1) for k, v in resident.items()},
            "warmup_steps": warmup, "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "batch": int(args["batch"]), "length": int(args["length"])}


def run_rows(args: dict) -> list[dict]:
    """Every row in a fresh process (one row's freed memory never hides another's peak); a row that fails
    (out of memory, past `--row-timeout`) is reported with its error, the others still run."""
    from .common import model_config, to_argv

    num_layers = model_config(args["model"])[1].num_hidden_layers
    rows = [parse_row(text, num_layers) for text in (args["rows"] or DEFAULT_ROWS).split(",") if text.strip()]
    results = []
    for row in rows:
        child = {k: v for k, v in args.items() if k not in ("rows", "memory_rows")}
        argv = [sys.executable, "-m", "idspam.tools.bench", *to_argv(child), "--memory-rows", "--rows", row["name"],
                "--memory-child"]
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=int(args.get("row_timeout", 3600)),
                                  env={**os.environ, **CHILD_MALLOC})
        except subprocess.TimeoutExpired:
            results.append({"row": row["name"], "error": f"past --row-timeout {args.get('row_timeout')} s"})
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ["killed"])[-1]
            results.append({"row": row["name"], "error": f"exit {proc.returncode}: {tail[:300]}"})
        else:
            results.append({**json.loads(lines[-1]), "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def child(args: dict) -> None:
    from .common import model_config

    row = parse_row(args["rows"], model_config(args["model"])[1].num_hidden_layers)
    print(json.dumps(measure_row(row, args)))


def memory_table(results: list[dict], args: dict) -> str:
    lines = [f"model={args['model']} batch={args['batch']} length={args['length']} device={args['device']}, "
             f"{args['steps']} steps per row, each row in a fresh process", "",
             "| row | trained params | weights MB | peak MB | step MB (peak - weights) | s/step | examples/s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | did not run: {r['error']} | | | | | |")
        else:
            lines.append(f"| {r['row']} | {r['trained_parameters']:,} | {r['weights_mb']:.0f} | {r['peak_mb']:.0f} | "
                         f"{r['step_mb']:.0f} | {r['seconds_per_step']:.2f} | {r['examples_per_second']:.2f} |")
    return "\n".join(lines)
