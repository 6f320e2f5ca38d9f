"""Why whole runs with cache_lower=true and =false agree to float32 rounding but not bit for bit.

    python experiments/cache_lower_drift.py                 # tiny and MiniLM, the demo task, 3 epochs, CPU
    python experiments/cache_lower_drift.py --models minilm --batch-size 1 --samples 64   # no padding: equal

1. The frozen lower stack's rows for one example are not the same in every batch: padded to a longer batch,
   the real tokens' hidden states entering layer m differ in the last bits (the attention's sums over the key
   positions, masked ones included, are blocked differently for another length). This prints the largest
   difference over a few extra padding lengths.
2. An uncached run recomputes the lower stack in every epoch's batches (new compositions, new padded lengths);
   a cached run reads, from the second epoch on, the rows of the batch that computed them in the first. So the
   runs' losses drift apart by float32 rounding from the second epoch on. This trains the same configuration
   both ways (the disk cache, `cache_lower_memory_gb=0`) and prints the per-epoch train-loss difference, the
   largest difference of the trained tensors after the last epoch (last.ckpt) and whether the metrics agree.
   With --batch-size 1 (no padding: every example computed alone, in every epoch) the two runs are bit-identical,
   which is what pins the difference on the padded length.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def padding_drift(model_name: str, out: Path) -> tuple[float, float]:
    import torch

    from idspam.model import load_model, load_parts
    from idspam.runner.checks import validate
    from idspam.runner.compose import compose

    run = validate(compose([f"model={model_name}", f"paths.output_dir={out}"]))
    config, tokenizer = load_parts(run)
    model, _ = load_model(run, config, tokenizer)
    model.eval()
    enc = tokenizer(["The museum tour is the best I have tried."], return_tensors="pt")
    n = int(enc["attention_mask"].sum())
    rows = []
    for extra in (0, 1, 3, 7, 20, 50):
        ids = torch.nn.functional.pad(enc["input_ids"], (0, extra), value=tokenizer.pad_token_id)
        mask = torch.nn.functional.pad(enc["attention_mask"], (0, extra))
        with torch.no_grad():
            rows.append(model.engine.lower(ids, mask, run.layer).hidden[0, :n])
    worst = max((r - rows[0]).abs().max().item() for r in rows)
    return worst, rows[0].abs().max().item()


def run_drift(model_name: str, epochs: int, samples: int, root: Path, batch_size: int = 16) -> dict:
    import torch

    from idspam.runner.compose import compose
    from idspam.runner.train import train

    results, tensors = {}, {}
    for cached in (False, True):
        out = root / f"{model_name}-b{batch_size}-{'cached' if cached else 'plain'}"
        args = [f"model={model_name}", f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}",
                f"task.max_train_samples={samples}",
                "logger=none", f"cache_dir={root / 'cache'}", f"paths.output_dir={out}",
                f"cache_lower={'true' if cached else 'false'}", "cache_lower_memory_gb=0"]
        results[cached] = train(compose(args))
        tensors[cached] = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]  # last epoch
    loss = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(results[False]["epochs"], results[True]["epochs"],
                                                                    strict=True)]
    tensor = max((tensors[False][k].float() - tensors[True][k].float()).abs().max().item() for k in tensors[False])
    metrics = all(a["validation/accuracy"] == b["validation/accuracy"]
                  for a, b in zip(results[False]["epochs"], results[True]["epochs"], strict=True))
    return {"loss_diff_per_epoch": loss, "max_tensor_diff": tensor, "same_metrics": metrics,
            "loss": [e["train_loss"] for e in results[False]["epochs"]]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "minilm"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=128, help="task.max_train_samples (demo task)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="data.batch_size; 1: no padding, every row computed alone: the runs are bit-identical")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models:
            worst, scale = padding_drift(name, root / "probe")
            print(f"{name}: lower-stack rows of one example padded by 0..50 positions: max |diff| {worst:.3g} "
                  f"(values up to {scale:.3g})")
            d = run_drift(name, args.epochs, args.samples, root, args.batch_size)
            print(f"{name}: cache_lower=true (disk) vs false, {args.epochs} epochs, {args.samples} examples, "
                  f"batch size {args.batch_size}: "
                  f"train loss |diff| per epoch {', '.join(f'{x:.2g}' for x in d['loss_diff_per_epoch'])} (loss "
                  f"{', '.join(f'{x:.4f}' for x in d['loss'])}); trained tensors max |diff| "
                  f"{d['max_tensor_diff']:.2g}; same metrics: {d['same_metrics']}")


if __name__ == "__main__":
    main()
