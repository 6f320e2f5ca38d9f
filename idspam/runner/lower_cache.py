"""`cache_lower=true`: the frozen lower stack's output for each example, computed once.

With the backbone frozen and in eval mode (no dropout), the hidden states entering layer m are the
same in every epoch. The first epoch computes them and stores each example's real-token rows; later
epochs scatter them back into the batch (by its attention mask, so either padding side works) and
skip the lower stack. Padding positions are never attended to, so the results are unchanged. A run
has one cache per split: the training split's (rows by the batches' `index`) and one per evaluation
split (rows by `row`, the example's place in its file), so later validations skip the lower stack too.

Layout (compact): one flat `(real tokens of the training set, hidden)` array per stored part; example
i owns rows `offsets[i] : offsets[i] + lengths[i]`, known before the first batch from the tokenised
split. Only what a method reads is stored: the hidden states entering m. The word embeddings are
recomputed from the ids (`LowerStates.word_embeddings`); the embedding output is stored as a second
part only for a method that reads it at m > 0 (ID-SPAM with `embedding_source=full`; at m = 0 it is
the hidden state itself). The storage dtype is the backbone's compute dtype by default (exact), or
bfloat16 / float16 (half the bytes).

In memory (`cache_lower_memory_gb`; on a GPU run in pinned host memory, or on the GPU itself with
`cache_lower_device=gpu` when it fits), else on disk under `<cache_dir>/lower/<key>/`:

    meta.json    what the key covers, the layout, sizes (written last when the folder is created)
    lengths.npy  real tokens per example (offsets are their cumulative sum)
    hidden.bin   raw rows (preallocated, sparse), `embeddings.bin` likewise when stored
    rows.log     journal of complete rows: 24-byte records (index, checksums, check): the CRC-32 of the row's
                 bytes in each stored part (hidden in the high 32 bits, embeddings in the low) and
                 index ^ checksums ^ MAGIC; a torn record fails its check, and is padded
    .create.lock held while the layout is created (one creator)
    .lock        every process using the cache holds it shared (`idspam.cache clear` skips a cache in use)

Crash safety: rows are written into the memory map without a per-batch flush; every
`flush_mb` of new rows (and at the end of each epoch, and when the cache becomes complete) the map is
flushed (msync) and only then are the rows' indices appended to the journal, under an exclusive
lock, with fsync. Readers trust only journaled rows (a torn last record fails its check), so a killed
run never reads a row that was not fully written: it recomputes the rows it had not published. A row whose
bytes were damaged after publishing (a disk error, a region of hidden.bin overwritten) fails its checksum: each
process checks a row the first time it reads it from the folder (a per-row bitmap, so once per row and
process: one CRC-32 pass over the cache in the first epoch), warns once, and computes the damaged rows again.
Several processes (DDP ranks, jobs) share one cache: the layout is created once under the lock and
published by atomic renames; a process missing a row first re-reads the journal (rows another
process published are read, not recomputed), never overwrites a published row, and DDP ranks
publish their rows and meet at a barrier at the end of every epoch (`TuningModule`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
import weakref
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import tasks
from ..backbone import DTYPES
from ..errors import DiskFull, UserError, disk_full, no_space
from ..files import atomic_write, digest
from ..injection import LowerStates

log = logging.getLogger(__name__)

MAGIC = 0x1D5BA7C0FFEE1234
RAW = {4: np.int32, 2: np.int16}  # the files hold raw bits; torch views them as the storage dtype
FORMAT = 3  # of the on-disk layout; part of the key (3: the journal's records carry the rows' checksums)
RECORD = 3  # uint64 words per journal record: index, checksums, index ^ checksums ^ MAGIC


def read_journal(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (index, checksums) of the journal's good records, in order; a torn or padded record is skipped."""
    size = RECORD * 8
    records = np.frombuffer(data[: len(data) // size * size], dtype=np.uint64).reshape(-1, RECORD)
    good = (records[:, 0] ^ records[:, 1] ^ np.uint64(MAGIC)) == records[:, 2]
    return records[good, 0].astype(np.int64), records[good, 1]


def journal_records(index: np.ndarray, sums: np.ndarray) -> bytes:
    index, sums = index.astype(np.uint64), sums.astype(np.uint64)
    return np.stack([index, sums, index ^ sums ^ np.uint64(MAGIC)], axis=1).tobytes()


def reserve(fd: int, size: int) -> None:
    """Give the open file `size` bytes with its blocks allocated (posix_fallocate): ENOSPC now if they do not
    fit. Where the file system cannot allocate (or there is no posix_fallocate) the file is made sparse, after
    a check of the free space."""
    if size > 0:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except AttributeError:  # no posix_fallocate (macOS)
            pass
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
        st = os.fstatvfs(fd)
        if st.f_bavail * st.f_frsize < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.ftruncate(fd, size)


class CachedLowerStates(LowerStates):
    """LowerStates from the cache. The embedding output, when the cache does not hold it, raises a
    clear error instead of handing out a wrong tensor (the cache was built for a method that does
    not read it)."""

    @property
    def embeddings(self) -> torch.Tensor:
        if self._embeddings is None:
            raise RuntimeError("this lower-stack cache does not hold the embedding output (its method was declared not "
                               "to read it: see lower_cache.reads_embedding_output)")
        return self._embeddings

    @embeddings.setter
    def embeddings(self, value: torch.Tensor | None) -> None:
        self._embeddings = value


class LowerCache:
    def __init__(self, lengths, hidden_size: int, *, embeddings_are_hidden: bool = False,
                 store_embeddings: bool = False, dtype: torch.dtype = torch.float32, folder: Path | None = None,
                 device: str = "auto", meta: dict | None = None, flush_mb: float = 256.0):
        """`lengths`: real tokens of each training example. `embeddings_are_hidden`: m = 0, the hidden
        states are the embedding output. `store_embeddings`: keep the embedding output too (m > 0).
        `device` (memory only): auto (host memory, pinned when the model is on a GPU), cpu, gpu (on the
        model's GPU when it fits, else pinned host memory)."""
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.tokens, self.hidden_size, self.dtype = int(self.offsets[-1]), hidden_size, dtype
        self.same = embeddings_are_hidden
        self.parts = ("hidden", "embeddings") if store_embeddings and not embeddings_are_hidden else ("hidden",)
        self.present = np.zeros(len(self.lengths), dtype=bool)
        self.verified = np.zeros(len(self.lengths), dtype=bool)  # rows this process checked (or wrote) itself
        self.sums = np.zeros(len(self.lengths), dtype=np.uint64)  # each published row's checksums (journal)
        self._warned = False
        self.folder, self.device_option = folder, device
        self.flush_bytes = int(flush_mb * 2**20)
        self._closed = False
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # (rows, checksums) written, not yet published
        self._pending_bytes = 0
        self.store: dict[str, torch.Tensor] = {}
        if folder is not None:
            self._open_folder(folder, meta or {})

    # ------------------------------------------------------------------ sizes

    @property
    def bytes_per_token(self) -> int:
        return self.hidden_size * self.dtype.itemsize * len(self.parts)

    def nbytes(self) -> int:
        """Bytes the cache occupies (rows, lengths; journal on disk)."""
        total = self.tokens * self.bytes_per_token + self.lengths.nbytes
        if self.folder is not None and (self.folder / "rows.log").is_file():
            total += (self.folder / "rows.log").stat().st_size
        return total

    # ------------------------------------------------------------------ disk layout

    def _open_folder(self, folder: Path, meta: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # held while in use: `idspam.cache clear` skips this cache
        create = os.open(folder / ".create.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(create, fcntl.LOCK_EX)  # one creator; the others wait, then open its layout
            if not (folder / "meta.json").is_file():
                self._create(folder, meta)
            elif problem := self._damaged(folder):  # a truncated or corrupt file is never read as rows: rebuild
                log.warning("cache_lower: %s: %s; rebuilding the cache (its rows are computed again)", folder, problem)
                self._create(folder, meta)
            self._check(folder)
        except BaseException:
            os.close(self._lock_fd)
            raise
        finally:
            os.close(create)  # releases the creation lock
        raw = RAW[self.dtype.itemsize]
        self.memmaps = {p: np.memmap(folder / f"{p}.bin", dtype=raw, mode="r+", shape=(self.tokens, self.hidden_size))
                        for p in self.parts}
        self.store = {p: torch.from_numpy(m).view(self.dtype) for p, m in self.memmaps.items()}
        self._journal = os.open(folder / "rows.log", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._journal_pos = 0
        self.refresh()
        log.info("cache_lower: %d of %d rows already in %s", int(self.present.sum()), len(self.present), folder)
        self._finalizer = weakref.finalize(self, LowerCache._close, self._flush_args(), self._lock_fd, self._journal)

    def _create(self, folder: Path, meta: dict) -> None:
        """The layout: every data file's blocks reserved now (a full disk is one line here, before any row is
        written; a write into a sparse memory map would die by SIGBUS instead). meta.json, the marker of a
        complete layout, goes first and comes back last, so a layout half-created (a kill, a full disk) is
        never trusted: the next run creates it again."""
        (folder / "meta.json").unlink(missing_ok=True)
        (folder / "rows.log").unlink(missing_ok=True)  # a journal of an older, unfinished layout
        size = self.tokens * self.hidden_size * self.dtype.itemsize
        path = folder / "meta.json"
        try:
            for part in self.parts:
                path = folder / f"{part}.bin"
                atomic_write(path, lambda f: reserve(f.fileno(), size))
            path = folder / "lengths.npy"
            atomic_write(path, lambda f: np.save(f, self.lengths))
            info = {**meta, "format": FORMAT, "rows": len(self.lengths), "tokens": self.tokens,
                    "hidden_size": self.hidden_size, "dtype": str(self.dtype).removeprefix("torch."),
                    "parts": list(self.parts), "bytes": self.tokens * self.bytes_per_token, "created": time.time()}
            path = folder / "meta.json"
            atomic_write(path, lambda f: f.write(json.dumps(info, indent=1, default=str).encode()))
        except (OSError, DiskFull) as e:
            if not no_space(e):
                raise
            for name in (*(f"{p}.bin" for p in self.parts), "lengths.npy"):  # give the space back
                (folder / name).unlink(missing_ok=True)
            raise disk_full(path, e, need=self.tokens * self.bytes_per_token) from None

    def _damaged(self, folder: Path) -> str | None:
        """What is wrong with a cache folder of this layout (unreadable meta.json or lengths.npy, a data file
        of the wrong size, e.g. truncated), or None. A folder of another layout is `_check`'s to refuse."""
        try:
            info = json.loads((folder / "meta.json").read_text())
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            return f"meta.json is unreadable ({e})"
        try:
            np.load(folder / "lengths.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            return f"lengths.npy is unreadable ({e})"
        if info.get("tokens") != self.tokens or info.get("hidden_size") != self.hidden_size:
            return None
        want = self.tokens * self.hidden_size * self.dtype.itemsize
        for part in self.parts:
            path = folder / f"{part}.bin"
            size = path.stat().st_size if path.is_file() else None
            if size != want:
                return f"{part}.bin holds {size} bytes, its layout {want} (truncated or replaced)"
        return None

    def _check(self, folder: Path) -> None:
        info = json.loads((folder / "meta.json").read_text())
        mine = {"rows": len(self.lengths), "tokens": self.tokens, "hidden_size": self.hidden_size,
                "dtype": str(self.dtype).removeprefix("torch."), "parts": list(self.parts)}
        theirs = {k: info.get(k) for k in mine}
        if theirs != mine or not np.array_equal(np.load(folder / "lengths.npy"), self.lengths):
            raise UserError(f"the lower-stack cache in {folder} holds {theirs}, this run needs {mine} (or other "
                               "lengths); remove it: python -m idspam cache clear --key " + folder.name)
        os.utime(folder / "meta.json")  # last use, for `idspam.cache list` / `clear --older-than`

    def refresh(self) -> None:
        """Mark the rows other processes (or an earlier run) published since the last look."""
        if self.folder is None or self._closed:
            return
        size = os.fstat(self._journal).st_size
        end = self._journal_pos + (size - self._journal_pos) // (RECORD * 8) * (RECORD * 8)
        if end <= self._journal_pos:
            return
        index, sums = read_journal(os.pread(self._journal, end - self._journal_pos, self._journal_pos))
        keep = (index >= 0) & (index < len(self.present))
        index, sums = index[keep][::-1], sums[keep][::-1]
        index, last = np.unique(index, return_index=True)  # a row published again (recomputed): its last record
        sums = sums[last]
        changed = index[self.sums[index] != sums]
        self.sums[index] = sums
        self.present[index] = True
        self.verified[changed] = False  # (re)published elsewhere: this process checks it before reading it
        self._journal_pos = end

    def _flush_args(self) -> dict:
        return {"memmaps": getattr(self, "memmaps", {}), "journal": getattr(self, "_journal", None),
                "pending": self._pending, "path": self.folder / "rows.log" if self.folder else None}

    @staticmethod
    def _publish(memmaps: dict, journal: int | None, pending: list, path: Path | None = None) -> None:
        if not pending or journal is None:
            pending.clear()
            return
        for m in memmaps.values():
            m.flush()  # the rows reach the file before the journal names them
        records = journal_records(np.concatenate([i for i, _ in pending]), np.concatenate([c for _, c in pending]))
        size = RECORD * 8
        fcntl.flock(journal, fcntl.LOCK_EX)
        try:
            torn = os.fstat(journal).st_size % size  # a writer killed inside its write: pad that record (it fails
            if torn:                                  # its check) so that the records after it stay aligned
                os.write(journal, b"\0" * (size - torn))
            os.write(journal, records)
            os.fsync(journal)
        except OSError as e:
            if no_space(e):  # the rows stay unpublished (a torn record fails its check): computed again later
                pending.clear()
                raise disk_full(path, e) from None
            raise
        finally:
            fcntl.flock(journal, fcntl.LOCK_UN)
        pending.clear()

    @staticmethod
    def _close(args: dict, lock_fd: int, journal: int) -> None:
        try:
            LowerCache._publish(**args)
        finally:
            os.close(journal)
            os.close(lock_fd)

    def flush(self) -> None:
        """Publish the rows written since the last flush (disk); the module calls it at every epoch end."""
        if self.folder is not None and not self._closed:
            self._publish(**self._flush_args())
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        """Publish what is pending and release the files; the rows stay readable, nothing more is written."""
        if self.folder is not None and self._finalizer.alive:
            self._finalizer()
            self._closed = True

    # ------------------------------------------------------------------ rows

    def _positions(self, idx: np.ndarray) -> torch.Tensor:
        """Flat row numbers of these examples' tokens, example after example."""
        lengths = self.lengths[idx]
        starts = self.offsets[idx]
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return torch.from_numpy(shift + np.arange(int(lengths.sum()), dtype=np.int64))

    def _allocate(self, device: torch.device) -> None:
        """Memory store, on first use (then the model's device is known)."""
        shape = (self.tokens, self.hidden_size)
        need = self.tokens * self.bytes_per_token
        if self.device_option == "gpu" and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if need < 0.5 * free:
                self.store = {p: torch.zeros(shape, dtype=self.dtype, device=device) for p in self.parts}
                return
            log.warning("cache_lower_device=gpu: %.2f GB do not fit (%.2f GB free): pinned host memory instead",
                        need / 2**30, free / 2**30)
        pin = device.type == "cuda" and self.device_option != "cpu"
        self.store = {p: torch.zeros(shape, dtype=self.dtype, pin_memory=pin) for p in self.parts}

    def _checksums(self, example: int) -> int:
        """CRC-32 of the example's stored bytes: the hidden part in the high 32 bits, the embeddings' in the low."""
        start, stop = int(self.offsets[example]), int(self.offsets[example + 1])
        sums = [zlib.crc32(self.memmaps[p][start:stop]) for p in self.parts]
        return (sums[0] << 32) | (sums[1] if len(sums) > 1 else 0)

    def _verify(self, idx: np.ndarray) -> bool:
        """Check the published rows among `idx` that this process has not checked yet against their journal
        checksums; a damaged row is dropped (computed again, then published again). Whether all were good."""
        if self.folder is None:
            return True
        unchecked = [int(i) for i in np.unique(idx[~self.verified[idx]])]
        bad = [i for i in unchecked if self._checksums(i) != int(self.sums[i])]
        self.verified[unchecked] = True
        if not bad:
            return True
        self.present[bad] = self.verified[bad] = False
        if not self._warned:
            self._warned = True
            log.warning("cache_lower: %s: the stored bytes of example %d do not match their journal checksum "
                        "(damaged after they were written); such rows are computed again", self.folder, bad[0])
        return False

    def has(self, index: torch.Tensor) -> bool:
        idx = index.cpu().numpy()
        if not self.present[idx].all():
            self.refresh()
            if not self.present[idx].all():
                return False
        if not self._verify(idx):
            return False
        if self._pending_bytes:  # a row this process wrote is read again: its first pass is over
            self.flush()
        return True

    def put(self, index: torch.Tensor, states: LowerStates) -> None:
        idx = index.cpu().numpy()
        mask = states.attention_mask.bool()
        real = mask.sum(1).cpu().numpy()
        if not np.array_equal(real, self.lengths[idx]):
            raise RuntimeError(f"cache_lower: the batch's real tokens {real.tolist()} differ from the training split's "
                               f"{self.lengths[idx].tolist()} for examples {idx.tolist()}")
        if not self.store:
            self._allocate(states.hidden.device)
        self.refresh()
        new = ~self.present[idx]  # never overwrite a published row (another process may be reading it)
        if not new.any() or self._closed:
            return
        sources = {"hidden": states.hidden, "embeddings": states.embeddings}
        keep = torch.from_numpy(np.repeat(new, real)).to(mask.device)
        pos = self._positions(idx[new])
        for part in self.parts:
            rows = sources[part].detach()[mask][keep].to(self.dtype)
            store = self.store[part]
            store.index_copy_(0, pos.to(store.device), rows.to(store.device))
        self.present[idx[new]] = True
        if self.folder is not None:
            written = idx[new].copy()
            self.verified[written] = True  # its bytes are the ones just written
            self._pending.append((written, np.array([self._checksums(int(i)) for i in written], dtype=np.uint64)))
            self._pending_bytes += len(pos) * self.bytes_per_token
            if self._pending_bytes >= self.flush_bytes or self.present.all():
                self.flush()

    def get(self, index: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, engine,
            dtype: torch.dtype) -> LowerStates:
        idx = index.cpu().numpy()
        device = input_ids.device
        mask = attention_mask.bool()
        pos = self._positions(idx)
        out = {}
        for part in self.parts:
            store = self.store[part]
            if store.device.type == "cpu" and device.type == "cuda":  # gather into pinned memory, copy async
                rows = torch.empty((len(pos), self.hidden_size), dtype=self.dtype, pin_memory=True)
                torch.index_select(store, 0, pos, out=rows)
                rows = rows.to(device, non_blocking=True)
            else:
                rows = store.index_select(0, pos.to(store.device)).to(device)
            dense = torch.zeros((*mask.shape, self.hidden_size), dtype=dtype, device=device)
            dense[mask] = rows.to(dtype)
            out[part] = dense
        hidden = out["hidden"]
        embeddings = hidden if self.same else out.get("embeddings")
        return CachedLowerStates(input_ids, attention_mask, embeddings, hidden, _engine=engine)


def make_lower_cache(run, data, backbone_config, model=None, split: str = "train") -> LowerCache:
    """The compact lower-stack cache (idspam/lower_cache.py) of one split: `train` (rows by the training
    batches' `index`) or an evaluation split's key (rows by `row`, the example's place in its file). In memory
    when it fits cache_lower_memory_gb, else on disk under cache_dir/lower/<key>, shared by every process with
    that key."""
    import transformers

    from .. import __version__

    n, rows = backbone_config.hidden_size, len(data.splits[split])
    lengths = split_lengths(data.splits[split], split)
    compute = next(model.parameters()).dtype if model is not None else torch.float32
    dtype = compute if run.cache_lower_dtype == "auto" else DTYPES[run.cache_lower_dtype]
    store_embeddings = run.layer > 0 and run.method.reads_embedding_output
    size_gb = sum(lengths) * n * dtype.itemsize * (2 if store_embeddings else 1) / 2**30
    folder, meta = None, {}
    if size_gb > run.cache_lower_memory_gb:
        if split == "train":
            split_run, split_spec, source, tokenize = run, run.spec, "train", data.tokenize
        else:
            ev = next(ev for ev in data.evals if ev.key == split)
            split_run, split_spec, source, tokenize = ev.run, ev.spec, ev.split, data.tokenizer_for(ev.run, ev.spec)
        meta = {
            "model": asdict(run.model), "seed": None if run.model.pretrained else run.seed, "layer": run.layer,
            "compute_dtype": str(compute), "storage_dtype": str(dtype), "store_embeddings": store_embeddings,
            "attn_implementation": getattr(backbone_config, "_attn_implementation", None),
            "tokenize": tokenize.key(), "rows": rows, "subsample": [run.task.max_train_samples, run.seed],
            "task": split_spec.name, "split": split, "task_config": asdict(split_run.task),
            "data": tasks.source_fingerprint(split_spec, split_run.task, source, run.data_dir),
            "version": __version__, "format": FORMAT, "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        folder = Path(run.cache_dir) / "lower" / digest(meta)
    log.info("cache_lower (%s): %.2f GB (%d real tokens of %d examples, %s, %s), %s", split, size_gb, sum(lengths),
             rows, str(dtype).removeprefix("torch."),
             "hidden + embedding output" if store_embeddings else "hidden states",
             f"on disk in {folder}" if folder else "in memory")
    return LowerCache(lengths, n, embeddings_are_hidden=run.layer == 0, store_embeddings=store_embeddings,
                      dtype=dtype, folder=folder, device=run.cache_lower_device, meta={"key": meta})


def split_lengths(split_data, split: str) -> list[int]:
    """Real tokens of each example, in the order of the cache's row numbers: the training split's `index`
    (its own order), an evaluation split's `row` (file order; the split itself is sorted by length)."""
    lengths = [len(ids) for ids in split_data["input_ids"]]
    if split == "train":
        return lengths
    out = [0] * len(lengths)
    for row, length in zip(split_data["row"], lengths, strict=True):
        out[row] = length
    return out
