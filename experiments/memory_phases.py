"""Peak RSS of one memory row's training steps, phase by phase (forward, backward, AdamW step), in this process.

    MALLOC_MMAP_THRESHOLD_=1048576 python experiments/memory_phases.py "idspam m=mid nf4" qwen2_5_0_5b 2 128

What found the fixed ~0.5 GB "step cost" of the early `idspam-bench --memory-rows` figures (docs/speed.md, Large
backbones): every phase's peak above the loaded weights, with the peak RSS (VmHWM) reset before each step, for
three steps. Run it with and without glibc's mmap threshold fixed to see how much of a step's peak RSS is the
heap glibc keeps after freeing, and how much the first step costs beyond the later ones.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from idspam.tools.bench import memory
    from idspam.tools.bench.common import model_config

    text, model, batch, length = argv[0], argv[1], int(argv[2]), int(argv[3])
    args = {"model": model, "device": "cpu", "seed": 0, "batch": batch, "length": length, "steps": 1}
    row = memory.parse_row(text, model_config(model)[1].num_hidden_layers)
    step, _ = memory.build_step(row, args)
    parts = {n: c.cell_contents for n, c in zip(step.__code__.co_freevars, step.__closure__, strict=True)}
    optimizer, forward, autocast = parts["optimizer"], parts["forward"], parts["autocast"]
    memory._reset_peak_rss()
    weights = memory._rss_mb()
    print(f"{row['name']} {model} {batch} x {length}: weights (RSS after loading) {weights:.0f} MB")
    for i in range(3):
        memory._reset_peak_rss()
        start = memory._rss_mb() - weights
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward()
        after_forward = memory._peak_rss_mb() - weights
        loss.backward()
        after_backward = memory._peak_rss_mb() - weights
        optimizer.step()
        after_step = memory._peak_rss_mb() - weights
        print(f"step {i}: resident at start {start:.0f} MB; peak above the weights: forward {after_forward:.0f}, "
              f"backward {after_backward:.0f}, AdamW {after_step:.0f} MB", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
