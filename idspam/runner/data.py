"""Tokenise each split once (cached on disk, keyed by everything that affects the result) and serve
batches padded to their own longest sequence."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from ..config import RunConfig, TaskConfig
from ..files import digest
from ..heads import HEADS
from ..tasks import TaskSpec, get_spec, load_split, source_fingerprint, subsample_limit
from ..text import TextTokenize, Tokenize, collate_for, tokenizer_for

log = logging.getLogger(__name__)


def split_key(run: RunConfig, spec: TaskSpec, split: str, tokenize: Tokenize) -> str:
    """The cache key of a tokenised split: the whole resolved task config and the task's spec (every column,
    label and template setting: a setting added later is in the key without anyone listing it), the source
    file's identity, the seed where it picks rows, and the tokenizer's own key."""
    limit = subsample_limit(run.task, split)
    return digest({
        "source": source_fingerprint(spec, run.task, split, run.data_dir), "split": split,
        "task": asdict(run.task), "spec": asdict(spec),
        "seed": run.seed if limit is not None else None,  # the seed picks the subsample's rows
        **tokenize.key(),
    })


ENTRY = "idspam_entry.json"  # rows and file sizes of a tokenised cache entry, checked when it is read


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != ENTRY}


def checked_entry(folder: Path) -> datasets.Dataset:
    """A cached entry, or an error when its files are not the ones written (truncated, replaced, unreadable)."""
    marker = folder / ENTRY
    want = json.loads(marker.read_text()) if marker.is_file() else None  # entries from before the marker: trusted
    if want is not None and file_sizes(folder) != want["files"]:
        raise ValueError(f"its files are not the ones written (sizes {file_sizes(folder)}, written {want['files']})")
    ds = datasets.load_from_disk(str(folder))
    if want is not None and len(ds) != want["rows"]:
        raise ValueError(f"{len(ds)} rows, {want['rows']} written")
    return ds


def tokenized_split(run: RunConfig, spec: TaskSpec, split: str, tokenize: Tokenize) -> datasets.Dataset:
    """Load the tokenised split from the cache, or tokenise it and write the cache atomically."""
    key = split_key(run, spec, split, tokenize)
    folder = Path(run.cache_dir) / "tokenized" / f"{spec.name}-{split}-{key}"
    if folder.is_dir():
        try:
            return checked_entry(folder)
        except Exception as e:  # noqa: BLE001 - a corrupt entry (its *.arrow, state.json): rebuild it, saying so
            log.warning("tokenised cache %s is unreadable (%s: %s); rebuilding it", folder, type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else "")
            stale = folder.with_name(f".stale-{folder.name}-{os.getpid()}")
            try:
                os.replace(folder, stale)  # out of the way at once (a reader of the old entry keeps its files)
            except OSError:
                pass
            shutil.rmtree(stale, ignore_errors=True)
    rows = load_split(spec, run.task, split, run.data_dir, run.seed)
    encoded = tokenize.encode_rows(rows) if isinstance(tokenize, TextTokenize) else tokenize(rows["text"])
    groups = {"group": rows["group"]} if "group" in rows else {}  # COPA / MultiRC: the question of each example
    ds = datasets.Dataset.from_dict({**encoded, "labels": rows["label"], **groups})
    folder.parent.mkdir(parents=True, exist_ok=True)
    if removed := clean_dead_writers(folder.parent):
        log.info("removed %d temporary folder(s) of tokenised-cache writers that died: %s", len(removed),
                 ", ".join(removed))
    tmp = tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-")
    lock = os.open(Path(tmp) / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while writing: the kernel drops it if this process dies
        os.write(lock, f"{os.getpid()}\n".encode())
        ds.save_to_disk(tmp)
        (Path(tmp) / WRITER_LOCK).unlink()  # not part of the entry (an unlocked .tmp- this young is left alone)
        (Path(tmp) / ENTRY).write_text(json.dumps({"rows": len(ds), "files": file_sizes(Path(tmp))}))
        os.replace(tmp, folder)
    except OSError as e:  # another process won the race: use its copy
        from .checkpoints import disk_full, no_space

        shutil.rmtree(tmp, ignore_errors=True)
        if no_space(e):
            raise disk_full(folder, e) from None
        if not folder.is_dir():
            raise
    finally:
        os.close(lock)
    return datasets.load_from_disk(str(folder))


WRITER_LOCK = ".writer.lock"  # inside a .tmp- folder: its writer's pid, flock-held while it writes
UNLOCKED_STALE_HOURS = 12.0  # a .tmp- folder without a lock (a writer of an older version) this old is dead


def clean_dead_writers(parent: Path, stale_hours: float = UNLOCKED_STALE_HOURS) -> list[str]:
    """Remove the `.tmp-*` folders of tokenised-cache writers that died: those whose writer lock nobody holds
    (the kernel released it with the process), and those without a lock older than `stale_hours`. A folder
    whose lock is held (a live writer, in any process) is never touched. Returns the names removed."""
    removed = []
    for tmp in sorted(parent.glob(".tmp-*")):
        if not tmp.is_dir():
            continue
        lock = tmp / WRITER_LOCK
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # no lock: a writer between mkdtemp and its lock, or of an older version
            try:
                young = time.time() - tmp.stat().st_mtime < stale_hours * 3600
            except FileNotFoundError:
                continue
            if not young:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp.name)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive
            os.close(fd)
            continue
        try:
            shutil.rmtree(tmp, ignore_errors=True)  # under the lock: the writer is gone
            removed.append(tmp.name)
        finally:
            os.close(fd)
    return removed


def by_length(split: datasets.Dataset) -> datasets.Dataset:
    """An evaluation split in order of length (batches pad to their own longest input: on SST-2 several times
    fewer pad tokens than in file order), with `row`, each example's place in the file, so per-example
    outputs go back to file order. Metrics do not depend on the order."""
    lengths = [len(ids) for ids in split["input_ids"]]
    return split.add_column("row", list(range(len(split)))).select(sorted(range(len(split)), key=lengths.__getitem__))


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
            sets.append(EvalSet(key, other, split, replace(run, task=task, spec=other)))
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

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def continue_generator(sampler) -> None:
    """A resumed epoch's DataLoader iterator drew its worker seed from torch's generator, which the
    uninterrupted run did before the checkpoint: put the generator back where the checkpoint left it."""
    if getattr(sampler, "rng", None) is not None:
        torch.set_rng_state(sampler.rng)
        sampler.rng = None


class ResumableRandomSampler(RandomSampler):
    """`shuffle=True`'s sampler, with the same order (one seed drawn from torch's global generator when
    an epoch starts), that remembers the epoch's seed so a mid-epoch checkpoint can continue the epoch:
    the same order, less the batches already trained on."""

    def __init__(self, data_source, batch_size: int, rank: int = 0, world: int = 1):
        super().__init__(data_source)
        self.batch_size, self.epoch_seed, self._resume = batch_size, None, None
        self.rank, self.world = rank, world  # trainer=fsdp: this process's share of the one-process order

    def __iter__(self):
        if self._resume is not None:  # the epoch's own seed, no draw
            self.epoch_seed, skip = self._resume["epoch_seed"], self._resume["batches_done"] * self.batch_size
            self.rng, self._resume = self._resume.get("torch_rng"), None
            continue_generator(self)
        else:
            self.epoch_seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.epoch_seed)
        order = torch.randperm(len(self.data_source), generator=generator).tolist()
        if self.world > 1:  # every world-th example from `rank`, the order padded by its start to equal shares
            order = (order * self.world)[:-(-len(order) // self.world) * self.world][self.rank::self.world]
        yield from order[skip:]

    def __len__(self) -> int:
        return -(-len(self.data_source) // self.world)

    def resume(self, state: dict) -> None:
        self._resume = state


class TaskDataModule(L.LightningDataModule):
    def __init__(self, run: RunConfig, tokenizer, backbone_config):
        """The run's splits, tokenised for this backbone (segment ids only where it has several types; an
        input that does not fit its positions under head=generate is an error)."""
        from ..backbone import is_decoder, max_positions

        super().__init__()
        self.run, self.spec, self.tokenizer = run, run.spec, tokenizer
        self.token_types = getattr(backbone_config, "type_vocab_size", 0) > 1
        self.decoder, self.max_positions = is_decoder(backbone_config), max_positions(backbone_config)
        self.generate = HEADS[run.head.type].generative  # batches of input + target
        self.tokenize = self.tokenizer_for(run, self.spec)
        self.collate = collate_for(self.spec, HEADS[run.head.type], tokenizer)
        self.evals = eval_sets(run, self.spec)
        self.splits: dict[str, datasets.Dataset] = {}
        self.train_sampler = None
        self._resume: dict | None = None  # a mid-epoch checkpoint's position, for the training sampler

    # Mid-epoch checkpoints (preemption, checkpoint_every_n_steps) hold where the epoch's order stands. Why not
    # torchdata's StatefulDataLoader, which Lightning saves and restores itself: measured here (torchdata 0.11,
    # Lightning 2.6), swapping it in makes every resume of tests/test_preemption.py differ from the uninterrupted
    # run (mid-epoch and at epoch ends alike: train_loss 0.8409 vs 0.8495 in epoch 0), because a resumed iterator
    # draws its base seed from torch's generator after the checkpoint's RNG state is restored, so dropout and the
    # next epochs' orders shift. The batches done come from Lightning's progress counter (`fit_loop`'s
    # documented progress tracking), not from the sampler, which Lightning's prefetching runs a batch ahead.
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

    def tokenizer_for(self, run: RunConfig, spec: TaskSpec) -> Tokenize | TextTokenize:
        return tokenizer_for(run, spec, HEADS[run.head.type], self.tokenizer, token_types=self.token_types,
                             decoder=self.decoder, max_positions=self.max_positions)

    def setup(self, stage: str | None = None) -> None:
        if "train" not in self.splits:
            train = tokenized_split(self.run, self.spec, "train", self.tokenize)
            self.splits["train"] = train.add_column("index", list(range(len(train))))
        for ev in self.evals:
            if ev.key not in self.splits:
                split = tokenized_split(ev.run, ev.spec, ev.split, self.tokenizer_for(ev.run, ev.spec))
                self.splits[ev.key] = split if self.generate else by_length(split)

    def _loader(self, split: str, train: bool) -> DataLoader:
        size = self.run.data.batch_size if train else self.run.data.eval_batch_size
        if train and self.run.data.group_by_length:
            lengths = [len(ids) for ids in self.splits[split]["input_ids"]]
            sampler = LengthGroupedBatchSampler(lengths, size, self.run.seed)
            self._track(sampler)
            return DataLoader(self.splits[split], batch_sampler=sampler, collate_fn=self.collate,
                              num_workers=self.run.data.num_workers)
        if train:
            shards = self.trainer is not None and getattr(self.trainer.strategy, "shards_batches", False)
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if shards else (0, 1)
            sampler = ResumableRandomSampler(self.splits[split], size, rank, world)
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
