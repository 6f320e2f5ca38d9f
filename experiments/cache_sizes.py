"""Size of the cache_lower cache for the paper's large tasks, before (dense) and after (compact).

    python experiments/cache_sizes.py ../shared/data          # prints the README's markdown table

Real tokens per training example come from the files under the data dir, tokenised by the project's
own task code (the task's text columns, truncation at --max-length) with the packaged MiniLM
WordPiece tokenizer, which stands in for RoBERTa's and GPT-2's BPE tokenizers (not on disk offline;
BPE token counts differ by some percent). Where a training file is absent (MNLI, QQP, QNLI train),
the published training-set size is multiplied by the mean length measured on the task's dev split
(MNLI: dev-matched; QNLI: dev); QQP has no file at all on disk, so its mean length is MRPC's train
split (sentence pairs too), a stand-in, marked as such.

Dense (before): examples x max_length x hidden x 4 bytes, twice (hidden states and embedding output).
Compact (now): real tokens x hidden x bytes of the storage dtype, hidden states only (ID-SPAM with
embedding_source=word), plus 8 bytes per example (lengths) and 24 per example (journal record).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PUBLISHED = {"mnli": 392_702, "qqp": 363_846, "qnli": 104_743, "sst2": 67_349, "boolq": 9_427, "multirc": 27_243}
# (task, data subdir, split whose lengths are measured, note)
SOURCES = [
    ("mnli", "glue_data", "validation_matched", "train absent: published size x dev-matched mean length"),
    ("qqp", "glue_data", None, "no QQP file on disk: published size x MRPC train mean length (stand-in)"),
    ("qnli", "glue_data", "validation", "train absent: published size x dev mean length"),
    ("sst2", "glue_data", "train", "train file counted"),
    ("boolq", "superglue", "train", "train file counted"),
    ("multirc", "superglue", "train", "train file counted (one example per answer)"),
]
SHAPES = [("roberta-base", 768), ("roberta-large", 1024), ("GPT-2 Large", 1280)]


def lengths(task: str, split: str, data_dir: Path, max_length: int, tokenizer) -> list[int]:
    from idspam.config import TaskConfig
    from idspam.tasks import get_spec, load_split
    from idspam.text import Tokenize

    cfg = TaskConfig(name=task, max_length=max_length)
    rows = load_split(get_spec(cfg), cfg, split, str(data_dir), seed=0)
    return [len(ids) for ids in Tokenize(tokenizer, max_length, token_types=False)(rows["text"])["input_ids"]]


def gb(n: float) -> str:
    return f"{n / 1e9:,.1f}" if n >= 1e8 else f"{n / 1e9:,.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the shared data folder (with glue_data/, superglue/)")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args(argv)
    from idspam.bench import model_config

    from idspam.backbone import load_config, load_tokenizer

    model = model_config("minilm")[0]
    tokenizer = load_tokenizer(model, load_config(model))
    L = args.max_length
    lines = [f"max_length {L}; sizes in GB (10^9 bytes); dense = before (float32, two parts, padded to max_length); "
             "compact = real tokens, hidden states only", "",
             "| task | train examples | mean real tokens | source | "
             + " | ".join(f"{name} dense | {name} compact fp32 | {name} compact bf16" for name, _ in SHAPES) + " |",
             "|---|---|---|---|" + "---|" * (3 * len(SHAPES))]
    for task, sub, split, note in SOURCES:
        if split is None:
            counted = lengths("mrpc", "train", args.data / sub, L, tokenizer)
        else:
            counted = lengths(task, split, args.data / sub, L, tokenizer)
        mean = sum(counted) / len(counted)
        examples = len(counted) if split == "train" else PUBLISHED[task]
        tokens = sum(counted) if split == "train" else mean * examples
        cells = []
        for _, hidden in SHAPES:
            dense = examples * L * hidden * 4 * 2
            cells += [gb(dense)] + [gb(tokens * hidden * b + examples * 24) for b in (4, 2)]
        lines.append(f"| {task} | {examples:,} | {mean:.1f} | {note} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
