"""Tokenise each split once (cached on disk, keyed by everything that affects the result) and serve
batches padded to their own longest sequence."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from .config import RunConfig, TaskConfig
from .errors import UserError
from .tasks import TaskSpec, get_spec, load_split, mlm_verbalizer, source_fingerprint

log = logging.getLogger(__name__)


def decoder_template(template: str) -> str:
    """A verbalizer template for a decoder, which reads the label word as the next token: the text after
    {mask} moves before it, e.g. "{s1} ? {mask} , {s2}" -> "{s1} ? {s2} {mask}"."""
    before, after = template.split("{mask}", 1)
    after = after.strip().strip(".").strip().lstrip(",").strip()
    return f"{before.rstrip()} {after} {{mask}}" if after else f"{before.rstrip()} {{mask}}"


class Tokenize:
    """Text tuples -> input ids. `template` (head=mlm) places the texts around one `<mask>` token; on a
    decoder (head=lm) the template ends where the label word would come (`decoder_template`)."""

    def __init__(self, tokenizer, max_length: int, template: str | None = None, token_types: bool = True,
                 decoder: bool = False):
        """`token_types`: keep the tokenizer's segment ids (only for backbones with more than one type)."""
        self.tok, self.max_length, self.template, self.token_types = tokenizer, max_length, template, token_types
        self.decoder = decoder
        if template is not None and decoder:
            self.template = decoder_template(template)
            self.prefix, self.suffix = self._special_tokens()
            self.suffix = []  # the next token is the label word
        elif template is not None:
            if tokenizer.mask_token_id is None:
                raise UserError(f"head=mlm needs a tokenizer with a mask token; {tokenizer.name_or_path} has none")
            self.prefix, self.suffix = self._special_tokens()

    def key(self) -> dict:
        return {"tokenizer": self.tok.name_or_path, "class": type(self.tok).__name__, "vocab": len(self.tok),
                "max_length": self.max_length, "template": self.template, "token_types": self.token_types,
                "decoder": self.decoder}

    def __call__(self, texts: list[tuple[str, ...]]) -> dict[str, list]:
        if self.template is None:
            columns = list(zip(*texts, strict=True))
            enc = self.tok(*columns, truncation=True, max_length=self.max_length)
            keep = ("input_ids", "token_type_ids") if self.token_types else ("input_ids",)
            return {k: enc[k] for k in keep if k in enc}
        return {"input_ids": [self._fill_template(t) for t in texts]}

    def _fill_template(self, texts: tuple[str, ...]) -> list[int]:
        """Tokenise the template piece by piece, truncating the texts (longest first), never the mask."""
        pieces = [p for p in re.split(r"(\{s1\}|\{s2\}|\{mask\})", self.template) if p.strip()]
        ids: list[list[int]] = []
        slots: list[int] = []  # which pieces hold the input texts (the only ones truncated)
        for k, piece in enumerate(pieces):
            if piece == "{mask}":
                ids.append([] if self.decoder else [self.tok.mask_token_id])
                continue
            slot = {"{s1}": 0, "{s2}": 1}.get(piece)
            text = (texts[slot] if slot is not None else piece).strip()
            text = (" " + text) if k and text else text  # BPE vocabularies mark word starts by a space
            ids.append(self.tok(text, add_special_tokens=False)["input_ids"] if text else [])
            if slot is not None:
                slots.append(k)
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        while sum(map(len, ids)) > budget:
            longest = max(slots, key=lambda s: len(ids[s]))
            if not ids[longest]:
                raise UserError(f"task.max_length={self.max_length} leaves no room for the text in {self.template!r}")
            ids[longest] = ids[longest][:-1]
        return self.prefix + [i for part in ids for i in part] + self.suffix

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a single sequence (e.g. <s> ... </s>)."""
        plain = self.tok("a", add_special_tokens=False)["input_ids"]
        full = self.tok("a")["input_ids"]
        at = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        return full[:at], full[at + len(plain):]


def label_word_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """One vocabulary id per label word, as a word start (leading space for BPE vocabularies)."""
    ids = []
    for word in words:
        enc = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise UserError(f"label word {word!r} is not one token for {tokenizer.name_or_path}; choose another")
        ids.append(enc[0])
    return ids


def cache_key(parts: dict) -> str:
    """A short hash of everything that determines a cached artefact."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def tokenized_split(run: RunConfig, spec: TaskSpec, split: str, tokenize: Tokenize) -> datasets.Dataset:
    """Load the tokenised split from the cache, or tokenise it and write the cache atomically."""
    limit = run.task.max_train_samples if split == "train" else run.task.max_eval_samples
    key = cache_key({
        "source": source_fingerprint(spec, run.task, split, run.data_dir), "task": spec.name, "split": split,
        "labels": spec.label_names, "subsample": [limit, run.seed] if limit is not None else None,  # seed picks rows
        **tokenize.key(),
    })
    folder = Path(run.cache_dir) / "tokenized" / f"{spec.name}-{split}-{key}"
    if folder.is_dir():
        return datasets.load_from_disk(str(folder))
    rows = load_split(spec, run.task, split, run.data_dir, run.seed)
    encoded = tokenize(rows["text"])
    groups = {"group": rows["group"]} if "group" in rows else {}  # COPA / MultiRC: the question of each example
    ds = datasets.Dataset.from_dict({**encoded, "labels": rows["label"], **groups})
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-")
    try:
        ds.save_to_disk(tmp)
        os.replace(tmp, folder)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(folder))


class Collate:
    """Pad a list of examples to the batch's longest sequence, on the right or on the left."""

    def __init__(self, pad_token_id: int, regression: bool, side: str = "right"):
        self.pad, self.regression, self.side = pad_token_id, regression, side

    def _pad(self, row: list, fill, longest: int) -> list:
        padding = [fill] * (longest - len(row))
        return padding + row if self.side == "left" else row + padding

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        batch = {}
        for name, fill in (("input_ids", self.pad), ("token_type_ids", 0)):
            if name in examples[0]:
                batch[name] = torch.tensor([self._pad(e[name], fill, longest) for e in examples])
        batch["attention_mask"] = torch.tensor([self._pad([1] * len(e["input_ids"]), 0, longest) for e in examples])
        dtype = torch.float if self.regression else torch.long
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=dtype)
        for name in ("group", "index"):  # COPA/MultiRC questions; training rows (for cache_lower)
            if name in examples[0]:
                batch[name] = torch.tensor([e[name] for e in examples])
        return batch


@dataclass
class EvalSet:
    """One evaluation data set: a split of the run's task, or of a zero-shot transfer task."""

    key: str  # metric prefix in results.json: "validation", or the transfer task's name
    spec: TaskSpec
    split: str
    run: RunConfig  # the run's config with `task` set to this data set's task


def eval_sets(run: RunConfig, spec: TaskSpec) -> list[EvalSet]:
    """The run's own evaluation splits, then each `eval_tasks` task's (keyed by its name)."""
    sets = [EvalSet(split, spec, split, run) for split in spec.eval_splits]
    for name in run.eval_tasks:
        task = TaskConfig(name=name, max_length=run.task.max_length, max_eval_samples=run.task.max_eval_samples)
        other = get_spec(task)
        for split in other.eval_splits:
            key = name if len(other.eval_splits) == 1 else f"{name}_{split}"
            sets.append(EvalSet(key, other, split, replace(run, task=task)))
    return sets


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length (less padding), still random: each epoch shuffles the examples with
    (seed, epoch), sorts them by length inside windows of `window` batches, and shuffles the batches.
    Every example appears exactly once per epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 50):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0
        self.skip = 0  # batches a mid-epoch resume has already trained on (see TaskDataModule.load_state_dict)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        skip, self.skip = self.skip, 0
        if skip:
            continue_generator(self)
        for b in torch.randperm(len(batches), generator=g).tolist()[skip:]:
            yield batches[b]

    def resume(self, state: dict) -> None:
        self.skip, self.rng = state["batches_done"], state.get("torch_rng")


def continue_generator(sampler) -> None:
    """A resumed epoch's DataLoader iterator drew its worker seed from torch's generator, which the
    uninterrupted run did before the checkpoint: put the generator back where the checkpoint left it."""
    if getattr(sampler, "rng", None) is not None:
        torch.set_rng_state(sampler.rng)
        sampler.rng = None

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class ResumableRandomSampler(RandomSampler):
    """`shuffle=True`'s sampler, with the same order (one seed drawn from torch's global generator when
    an epoch starts), that remembers the epoch's seed so a mid-epoch checkpoint can continue the epoch:
    the same order, less the batches already trained on."""

    def __init__(self, data_source, batch_size: int):
        super().__init__(data_source)
        self.batch_size, self.epoch_seed, self._resume = batch_size, None, None

    def __iter__(self):
        if self._resume is not None:  # the epoch's own seed, no draw
            self.epoch_seed, skip = self._resume["epoch_seed"], self._resume["batches_done"] * self.batch_size
            self.rng, self._resume = self._resume.get("torch_rng"), None
            continue_generator(self)
        else:
            self.epoch_seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.epoch_seed)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()[skip:]

    def resume(self, state: dict) -> None:
        self._resume = state


class TaskDataModule(L.LightningDataModule):
    def __init__(self, run: RunConfig, spec: TaskSpec, tokenizer, token_types: bool = True, decoder: bool = False):
        super().__init__()
        self.run, self.spec, self.tokenizer, self.token_types = run, spec, tokenizer, token_types
        self.decoder = decoder
        self.tokenize = self._tokenizer_for(run, spec)
        self.collate = Collate(tokenizer.pad_token_id or 0, spec.is_regression, getattr(tokenizer, "padding_side", "right"))
        self.evals = eval_sets(run, spec)
        self.splits: dict[str, datasets.Dataset] = {}
        self.train_sampler = None
        self._resume: dict | None = None  # a mid-epoch checkpoint's position, for the training sampler

    # mid-epoch checkpoints (preemption, checkpoint_every_n_steps) hold where the epoch's order stands
    def state_dict(self) -> dict:
        trainer, sampler = self.trainer, self.train_sampler
        if trainer is None or sampler is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if not 0 < done < trainer.num_training_batches:
            return {}  # at an epoch end: the next epoch draws its order as usual
        return {"batches_done": done, "epoch_seed": getattr(sampler, "epoch_seed", None),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batches_done"):
            if self.train_sampler is not None:
                self.train_sampler.resume(dict(state))
            else:
                self._resume = dict(state)

    def _tokenizer_for(self, run: RunConfig, spec: TaskSpec) -> Tokenize:
        template = mlm_verbalizer(spec, run.task)[0] if run.head.type in ("mlm", "lm") else None  # each task its own
        return Tokenize(self.tokenizer, run.task.max_length, template, self.token_types, self.decoder)

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.splits:
            train = tokenized_split(self.run, self.spec, "train", self.tokenize)
            self.splits["train"] = train.add_column("index", list(range(len(train))))
        for ev in self.evals:
            if ev.key not in self.splits:
                self.splits[ev.key] = tokenized_split(ev.run, ev.spec, ev.split, self._tokenizer_for(ev.run, ev.spec))

    def _loader(self, split: str, train: bool) -> DataLoader:
        size = self.run.data.batch_size if train else self.run.data.eval_batch_size
        if train and self.run.data.group_by_length:
            lengths = [len(ids) for ids in self.splits[split]["input_ids"]]
            sampler = LengthGroupedBatchSampler(lengths, size, self.run.seed)
            self._track(sampler)
            return DataLoader(self.splits[split], batch_sampler=sampler, collate_fn=self.collate,
                              num_workers=self.run.data.num_workers)
        if train:
            sampler = ResumableRandomSampler(self.splits[split], size)
            self._track(sampler)
            return DataLoader(self.splits[split], batch_size=size, sampler=sampler, collate_fn=self.collate,
                              num_workers=self.run.data.num_workers)
        return DataLoader(
            self.splits[split], batch_size=size, shuffle=False, collate_fn=self.collate,
            num_workers=self.run.data.num_workers,
        )

    def _track(self, sampler) -> None:
        self.train_sampler = sampler
        if self._resume is not None:
            sampler.resume(self._resume)
            self._resume = None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(ev.key, train=False) for ev in self.evals]
