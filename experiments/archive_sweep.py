r"""Copy what the report reads from a sweep dir (no checkpoints, adapters or logs) so it can be committed:

    python experiments/archive_sweep.py outputs/multiruns/cpu_repro/<time> \
        experiments/results/cpu_repro/sweeps/cpu_repro

multirun.yaml and summary.md of the sweep, and results.json and .hydra/overrides.yaml of every job, and its
per-example dev predictions at the best epoch (predictions/epoch<E>.json: the protocol's paired bootstrap).
`python -m idspam report <archived dir>` (or `python -m idspam protocol report`) then gives the same report as on
the original sweep.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def archive(sweep: Path, dest: Path) -> int:
    if not (sweep / "multirun.yaml").is_file():
        raise SystemExit(f"error: {sweep} is not a sweep dir (no multirun.yaml)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("multirun.yaml", "summary.md"):
        if (sweep / name).is_file():
            shutil.copy2(sweep / name, dest / name)
    jobs = 0
    for job in sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        rels = ["results.json", ".hydra/overrides.yaml"]
        if (job / "results.json").is_file():
            best = json.loads((job / "results.json").read_text()).get("best") or {}
            if "epoch" in best:
                rels.append(f"predictions/epoch{best['epoch']}.json")
        for rel in rels:
            if (job / rel).is_file():
                (dest / job.name / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(job / rel, dest / job.name / rel)
        jobs += 1
    return jobs


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(f"archived {archive(Path(sys.argv[1]), Path(sys.argv[2]))} jobs to {sys.argv[2]}")
