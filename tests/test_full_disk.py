"""A real full disk: small tmpfs mounts (root only; skipped, saying why, where mounting is not possible), and
the lower-stack cache's block reservation (posix_fallocate) with and without one."""

import contextlib
import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from idspam.errors import UserError
from idspam.runner.lower_cache import LowerCache


@contextlib.contextmanager
def small_fs(folder: Path, size_kb: int):
    """A tmpfs of `size_kb` KiB mounted at `folder`, always unmounted on the way out; the test is skipped when
    mounting is not possible (not root, no CAP_SYS_ADMIN, no mount binary)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a small tmpfs for a full disk: {type(e).__name__}: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full (real ENOSPC); returns it (remove it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, b"\1" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def states(lengths, idx, hidden_size=4):
    from types import SimpleNamespace

    width = max(lengths[i] for i in idx)
    mask = torch.tensor([[1] * lengths[i] + [0] * (width - lengths[i]) for i in idx])
    hidden = torch.stack([torch.full((width, hidden_size), float(i + 1)) for i in idx])
    return SimpleNamespace(attention_mask=mask, hidden=hidden, embeddings=None)


# ------------------------------------------------------------------------------ lower cache: block reservation

def test_the_lower_cache_reserves_its_blocks_on_creation(tmp_path):
    """The defect: hidden.bin was sparse (truncate), so a full disk surfaced as SIGBUS on a row write."""
    cache = LowerCache([3, 2], 4, folder=tmp_path / "key")
    st = (tmp_path / "key" / "hidden.bin").stat()
    assert st.st_size == 80 and st.st_blocks * 512 >= 80  # allocated, not a hole
    cache.close()


def test_no_room_for_the_lower_cache_is_one_line_before_any_row(tmp_path, monkeypatch):
    """ENOSPC from posix_fallocate (any file system): one line naming the file, and nothing left that a later
    run would take for a layout."""
    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    folder = tmp_path / "key"
    with pytest.raises(UserError) as e:
        LowerCache([3, 2], 4, folder=folder)
    assert str(e.value).startswith(f"no space left on device writing '{folder / 'hidden.bin'}'")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in folder.iterdir()) == [".create.lock", ".lock"]
    monkeypatch.undo()
    cache = LowerCache([3, 2], 4, folder=folder)  # space again: the layout is created, nothing trusted
    assert not cache.present.any() and (folder / "meta.json").is_file()
    cache.close()


def test_without_fallocate_support_the_file_is_sparse_after_a_free_space_check(tmp_path, monkeypatch):
    def unsupported(fd, offset, size):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    cache = LowerCache([3, 2], 4, folder=tmp_path / "ok")
    assert (tmp_path / "ok" / "hidden.bin").stat().st_size == 80
    cache.close()
    real = os.fstatvfs

    def no_room(fd):
        st = real(fd)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, *tuple(st)[5:]))

    monkeypatch.setattr(os, "fstatvfs", no_room)
    with pytest.raises(UserError, match=r"^no space left on device writing '.*full/hidden\.bin'"):
        LowerCache([3, 2], 4, folder=tmp_path / "full")
    assert not (tmp_path / "full" / "meta.json").exists()


def test_a_lower_cache_that_does_not_fit_a_real_small_disk(tmp_path):
    with small_fs(tmp_path / "fs", 64) as fs:
        lengths = [100] * 40  # 4000 tokens x 8 x 4 bytes = 125 KiB: more than the 64 KiB disk
        with pytest.raises(UserError) as e:
            LowerCache(lengths, 8, folder=fs / "lower" / "key")
        assert str(e.value).startswith(f"no space left on device writing '{fs / 'lower' / 'key' / 'hidden.bin'}'")
        assert sorted(p.name for p in (fs / "lower" / "key").iterdir()) == [".create.lock", ".lock"]
        small = LowerCache(lengths[:4], 8, folder=fs / "lower" / "small")  # 12.5 KiB: fits
        small.put(torch.tensor([0, 1]), states(lengths, [0, 1], 8))
        small.close()
        assert LowerCache(lengths[:4], 8, folder=fs / "lower" / "small").present.tolist() == [True, True, False,
                                                                                             False]


# ------------------------------------------------------------------------------ whole runs on a full disk

RUN = ["model=tiny", "task.max_train_samples=32", "task.max_eval_samples=16", "logger=none"]


@pytest.mark.slow  # two short trainings: about 15 s on the 2-core machine
def test_a_full_run_dir_keeps_the_earlier_checkpoint_and_resumes(compose_cfg, tmp_path, monkeypatch):
    """The run dir on a tmpfs filled up after the first epoch's last.ckpt: the second epoch's checkpoint gets a
    real ENOSPC through torch.save."""
    import idspam.runner.checkpoints as checkpoints
    from idspam.runner.train import train

    with small_fs(tmp_path / "fs", 4096) as fs:
        run_dir = fs / "run"
        last = run_dir / "checkpoints" / "last.ckpt"
        args = [*RUN, "trainer.max_epochs=2", f"cache_dir={tmp_path / 'cache'}", f"paths.output_dir={run_dir}"]
        real = checkpoints.AtomicCheckpointIO.save_checkpoint
        filler = []

        def save(self, checkpoint, path, storage_options=None):
            real(self, checkpoint, path, storage_options)
            if Path(path).name == "last.ckpt" and not filler:
                filler.append(fill(fs))  # the disk is full from here on

        monkeypatch.setattr(checkpoints.AtomicCheckpointIO, "save_checkpoint", save)
        with pytest.raises(UserError) as e:
            train(compose_cfg(*args))
        assert filler, "the first epoch's checkpoint was never written"
        message = str(e.value)
        assert "\n" not in message and message.startswith("no space left on device writing '")
        assert str(run_dir) in message
        assert torch.load(last, weights_only=True)["epoch"] == 0  # the earlier checkpoint, whole
        assert not list(last.parent.glob(".last.ckpt.*.tmp")) and not list(last.parent.glob(".best.ckpt.*.tmp"))
        assert json.loads((run_dir / "results.json").read_text())["status"] in ("running", "interrupted")
        monkeypatch.undo()
        filler[0].unlink()
        results = train(compose_cfg(*args, "resume=auto"))
        assert results["status"] == "finished" and results["attempt"] == "resume"
        assert [e["epoch"] for e in results["epochs"]] == [0, 1]


def test_a_full_tokenised_cache_is_one_line(compose_cfg, tmp_path, tiny_backbone):
    from idspam.runner.checks import validate
    from idspam.runner.data import tokenized_split
    from idspam.text import Tokenize

    with small_fs(tmp_path / "fs", 64) as fs:
        run = validate(compose_cfg("model=tiny", f"cache_dir={fs / 'cache'}"))
        fill(fs)
        with pytest.raises(UserError) as e:
            tokenized_split(run, run.spec, "validation", Tokenize(tiny_backbone[1], 32))
        assert "\n" not in str(e.value)
        tokenized = fs / "cache" / "tokenized"
        assert str(e.value).startswith(f"no space left on device writing '{tokenized}/demo-validation-")
        assert not list((fs / "cache" / "tokenized").iterdir())  # no temp folder left behind


LOWER = [*RUN, "task.max_train_samples=128", "trainer.max_epochs=1", "cache_lower=true", "cache_lower_memory_gb=0"]
LOWER_FS_KB = 96  # room for the tokenised splits (~40 KiB), not the training split's lower cache: 128 examples x
                  # ~12 tokens x hidden 32 x 4 bytes (~190 KiB)


def test_a_lower_cache_too_big_for_its_disk_stops_the_run_as_interrupted(compose_cfg, tmp_path):
    from idspam.runner.train import train

    with small_fs(tmp_path / "fs", LOWER_FS_KB) as fs:
        run_dir = tmp_path / "run"
        with pytest.raises(UserError) as e:
            train(compose_cfg(*LOWER, f"cache_dir={fs / 'cache'}", f"paths.output_dir={run_dir}"))
        (key,) = (fs / "cache" / "lower").iterdir()
        assert str(e.value).startswith(f"no space left on device writing '{key / 'hidden.bin'}'")
        assert "MB needed" in str(e.value) and "\n" not in str(e.value)
        assert sorted(p.name for p in key.iterdir()) == [".create.lock", ".lock"]  # no layout to trust
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "interrupted" and record["error"].startswith("DiskFull: no space left on device")


@pytest.mark.slow  # a process of its own (about 10 s with the zygote, more without)
def test_a_lower_cache_too_big_for_its_disk_exits_2_with_one_line(tmp_path):
    from .zygote import run_module

    with small_fs(tmp_path / "fs", LOWER_FS_KB) as fs:
        run_dir = tmp_path / "run"
        proc = run_module("idspam.run", *LOWER, f"cache_dir={fs / 'cache'}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device writing '" in errors[0], proc.stderr[-3000:]
    assert errors[0].split("'")[1].endswith("/hidden.bin") and str(fs / "cache" / "lower") in errors[0]
    assert "Traceback" not in proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"


def test_reserve_allocates_exactly_the_size(tmp_path):
    from idspam.runner.lower_cache import reserve

    path = tmp_path / "f"
    with open(path, "wb") as f:
        reserve(f.fileno(), 12345)
        reserve(f.fileno(), 12345)
    assert path.stat().st_size == 12345
    with open(path, "rb") as f:
        assert np.frombuffer(f.read(), dtype=np.uint8).max() == 0
