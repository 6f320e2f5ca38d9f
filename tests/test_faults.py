"""Faults around running jobs: a second sweep into a running sweep's folder writes nothing there and exits
non-zero."""

import json
import os
import subprocess
import sys
import time

import pytest

from idspam.errors import UserError

from .test_run import FAST

SLOW = [*FAST, "trainer.max_epochs=400", "logger=none"]  # a job that runs long enough to be found running


@pytest.mark.slow  # two sweeps side by side: about a minute on a quiet 2-core machine
def test_second_sweep_into_a_running_sweeps_folder_writes_nothing(tmp_path):
    from idspam.runner.checkpoints import held_elsewhere

    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "idspam.run", "-m", *SLOW, f"hydra.sweep.dir={sweep}"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while not (held_elsewhere(sweep / "0") and (sweep / "0" / "results.json").is_file()):
            assert first.poll() is None and time.time() < deadline, "the first sweep did not start its job"
            time.sleep(0.5)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert first.poll() is None, "the first sweep ended before the second one was refused"
        results = json.loads((sweep / "0" / "results.json").read_text())
        assert results["status"] == "running" and "error" not in results  # the running job's record untouched
        attempt = json.loads((sweep / "0" / ".hydra" / "attempt.json").read_text())
        assert attempt.get("action") == "new"
        assert not (sweep / "summary.json").exists() and not (sweep / "summary.md").exists()
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert any("is in use by another process" in line for line in errors), second.stderr[-2000:]
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def filled_cache(folder):
    """A disk lower-stack cache of two examples (3 and 2 real tokens, hidden size 4), every row published."""
    from types import SimpleNamespace

    import torch

    from idspam.runner.lower_cache import LowerCache

    cache = LowerCache([3, 2], 4, folder=folder)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) + 1
    cache.put(torch.tensor([0, 1]), SimpleNamespace(attention_mask=mask, hidden=hidden, embeddings=None))
    cache.close()
    return folder


@pytest.mark.parametrize("damage,message", [
    (lambda f: os.truncate(f / "hidden.bin", (f / "hidden.bin").stat().st_size // 2),
     "hidden.bin holds 40 bytes, its layout 80 (truncated or replaced)"),
    (lambda f: (f / "meta.json").write_text("{not json"), "meta.json is unreadable"),
    (lambda f: (f / "lengths.npy").write_bytes(b"garbage"), "lengths.npy is unreadable"),
])
def test_a_damaged_lower_cache_is_rebuilt_saying_so(tmp_path, caplog, damage, message):
    """The defect: a hidden.bin truncated to half was read as zeros (training silently differed); corrupt
    meta.json / lengths.npy were tracebacks."""
    from idspam.runner.lower_cache import LowerCache

    folder = filled_cache(tmp_path / "lower" / "key")
    assert LowerCache([3, 2], 4, folder=folder).present.all()  # intact: every row is served
    damage(folder)
    with caplog.at_level("WARNING", logger="idspam.runner.lower_cache"):
        again = LowerCache([3, 2], 4, folder=folder)
    assert not again.present.any()  # nothing is read from the damaged files: every row is computed again
    assert (folder / "hidden.bin").stat().st_size == 80
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and message in warnings[0] and "rebuilding the cache" in warnings[0]


def test_a_published_row_damaged_later_fails_its_checksum_and_is_computed_again(tmp_path, caplog, monkeypatch):
    """The defect: the journal held only (index, index ^ MAGIC), so a region of hidden.bin zeroed after publishing
    (same file size) was read silently as the row."""
    from types import SimpleNamespace

    import torch

    from idspam.runner.lower_cache import LowerCache

    folder = filled_cache(tmp_path / "lower" / "key")
    data = bytearray((folder / "hidden.bin").read_bytes())
    data[3 * 16: 5 * 16] = bytes(32)  # example 1's two rows (3 + 2 tokens of 4 float32 each): zeroed
    (folder / "hidden.bin").write_bytes(bytes(data))
    cache = LowerCache([3, 2], 4, folder=folder)
    assert cache.present.all()  # the journal still names both rows
    with caplog.at_level("WARNING", logger="idspam.runner.lower_cache"):
        assert cache.has(torch.tensor([0]))
        assert not cache.has(torch.tensor([0, 1]))  # example 1 fails its checksum: computed again
        assert not cache.has(torch.tensor([1]))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "example 1 do not match their journal checksum" in warnings[0]
    assert "\n" not in warnings[0]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) + 1
    cache.put(torch.tensor([0, 1]), SimpleNamespace(attention_mask=mask, hidden=hidden, embeddings=None))
    assert cache.has(torch.tensor([0, 1]))
    cache.close()
    again = LowerCache([3, 2], 4, folder=folder)  # the recomputed row's newer record is the one trusted
    checks = []
    real = LowerCache._checksums
    monkeypatch.setattr(LowerCache, "_checksums", lambda self, i: checks.append(i) or real(self, i))
    caplog.clear()
    with caplog.at_level("WARNING", logger="idspam.runner.lower_cache"):
        for _ in range(3):
            assert again.has(torch.tensor([0, 1]))
    assert sorted(checks) == [0, 1]  # each row checked once in this process
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    got = again.get(torch.tensor([0, 1]), torch.zeros_like(mask), mask, None, torch.float32).hidden
    assert torch.equal(got, hidden * mask.unsqueeze(-1))


def test_a_run_on_a_damaged_lower_cache_equals_one_on_a_fresh_cache(compose_cfg, tmp_path, caplog):
    from idspam.runner.train import train

    def run(cache, out):
        results = train(compose_cfg("model=tiny", "trainer.max_epochs=1", "task.max_train_samples=32",
                                    "task.max_eval_samples=16", "logger=none", "cache_lower=true",
                                    "cache_lower_memory_gb=0", f"cache_dir={tmp_path / cache}",
                                    f"paths.output_dir={tmp_path / out}"))
        return [(e["train_loss"], e["validation/accuracy"]) for e in results["epochs"]]

    fresh = run("cache", "first")  # computes and publishes every row
    (train_cache,) = [f for f in (tmp_path / "cache" / "lower").iterdir()
                      if json.loads((f / "meta.json").read_text())["key"]["split"] == "train"]
    hidden = train_cache / "hidden.bin"
    size = hidden.stat().st_size
    with open(hidden, "r+b") as f:  # a region zeroed after publishing, the file's size unchanged
        f.seek(size // 4)
        f.write(bytes(size // 2))
    with caplog.at_level("WARNING", logger="idspam.runner.lower_cache"):
        damaged = run("cache", "second")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "checksum" in r.getMessage()]
    assert damaged == fresh  # exact: the damaged rows were computed again, not read
    assert len(warnings) == 1, warnings


def test_killed_before_the_adapter_is_in_place_the_run_is_not_finished(compose_cfg, tmp_path, monkeypatch):
    """The defect: results.json said finished with no adapter, and resume=auto reused it (no adapter, ever)."""
    import idspam.runner.train as train_module
    from idspam.runner.train import train

    args = ["model=tiny", "trainer.max_epochs=1", "task.max_train_samples=32", "task.max_eval_samples=16",
            "logger=none", f"cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'run'}"]
    real = train_module.export_adapter

    def killed(*a, **k):
        raise KeyboardInterrupt("killed before the adapter's rename")

    monkeypatch.setattr(train_module, "export_adapter", killed)
    with pytest.raises(KeyboardInterrupt):
        train(compose_cfg(*args))
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] != "finished" and not (tmp_path / "run" / "adapter").exists()
    monkeypatch.setattr(train_module, "export_adapter", real)
    run = tmp_path / "run"  # what a process killed inside its atomic writes leaves behind
    left = [run / ".results.json.x1.tmp", run / "checkpoints" / ".last.ckpt.x2.tmp", run / ".adapter-x3"]
    left[0].write_text("{")
    left[1].write_bytes(b"half")
    left[2].mkdir()
    results = train(compose_cfg(*args, "resume=auto"))
    assert results["status"] == "finished" and results["attempt"] == "resume"
    assert (tmp_path / "run" / "adapter" / "idspam_adapter.json").is_file()
    assert not any(p.exists() for p in left)  # temp files are cleaned by the resume
    assert [e["epoch"] for e in results["epochs"]] == [0]  # nothing trained again


def test_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoint(compose_cfg, tmp_path, monkeypatch):
    """ENOSPC simulated on the second epoch's last.ckpt (test_full_disk.py does it on a real small tmpfs, as root):
    the defect was a torch RuntimeError, the run marked failed, and resume=auto deleting the earlier valid
    last.ckpt to train from scratch."""
    import errno

    import torch

    import idspam.runner.checkpoints as checkpoints
    from idspam.runner.train import train

    args = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=32", "task.max_eval_samples=16",
            "logger=none", f"cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'run'}"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    real_save = torch.save

    def save(obj, f, *a, **k):
        target = os.readlink(f"/proc/self/fd/{f.fileno()}") if hasattr(f, "fileno") else str(f)
        if last.is_file() and obj.get("epoch", 0) >= 1 and ".last.ckpt." in target:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from OSError(
                errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    with pytest.raises(UserError) as e:
        train(compose_cfg(*args))
    assert str(e.value).startswith(f"no space left on device writing '{last}'") and "\n" not in str(e.value)
    kept = torch.load(last, weights_only=True)
    assert kept["epoch"] == 0  # the earlier checkpoint, whole
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "interrupted"
    assert not list(last.parent.glob(".last.ckpt.*.tmp"))
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    results = train(compose_cfg(*args, "resume=auto"))
    assert results["status"] == "finished" and results["attempt"] == "resume"
    assert [e["epoch"] for e in results["epochs"]] == [0, 1]


def test_a_full_disk_under_the_tokenised_cache_names_it(compose_cfg, tmp_path, monkeypatch, tiny_backbone):
    """The defect: the cache's ENOSPC was swallowed and a misleading FileNotFoundError followed."""
    import errno

    import datasets

    from idspam.runner.checks import validate
    from idspam.runner.data import tokenized_split
    from idspam.text import Tokenize

    def full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    run = validate(compose_cfg("model=tiny", f"cache_dir={tmp_path / 'cache'}"))
    with pytest.raises(UserError, match=r"^no space left on device writing '.*tokenized/demo-validation-"):
        tokenized_split(run, run.spec, "validation", Tokenize(tiny_backbone[1], 32))
    assert not list((tmp_path / "cache" / "tokenized").iterdir())  # no temp folder left behind


def test_temp_folders_of_dead_tokenised_cache_writers_are_removed_and_live_ones_kept(compose_cfg, tmp_path,
                                                                                    tiny_backbone):
    """The defect: tokenized/.tmp-* folders of writers that died stayed for ever."""
    import signal

    from idspam.runner.checks import validate
    from idspam.runner.data import WRITER_LOCK, tokenized_split
    from idspam.text import Tokenize

    root = tmp_path / "cache" / "tokenized"
    root.mkdir(parents=True)

    def writer_folder(name):
        folder = root / name
        folder.mkdir()
        (folder / "data-00000-of-00001.arrow").write_bytes(b"half")
        return folder

    # a writer killed with its lock: the kernel released it
    dead = writer_folder(".tmp-dead")
    holder = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)")
    killed = subprocess.Popen([sys.executable, "-c", holder, str(dead / WRITER_LOCK)], stdout=subprocess.PIPE,
                              text=True)
    assert killed.stdout.readline().strip() == "locked"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    live = writer_folder(".tmp-live")  # another process writing now: its lock is held
    writer = subprocess.Popen([sys.executable, "-c", holder, str(live / WRITER_LOCK)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        old = writer_folder(".tmp-old")  # no lock (an older version's writer), a day old
        os.utime(old, (time.time() - 86400, time.time() - 86400))
        writer_folder(".tmp-young")  # no lock yet, just created (between mkdtemp and its lock)
        run = validate(compose_cfg("model=tiny", f"cache_dir={tmp_path / 'cache'}"))
        tokenized_split(run, run.spec, "validation", Tokenize(tiny_backbone[1], 32))
        left = sorted(p.name for p in root.iterdir())
        assert left[:2] == [".tmp-live", ".tmp-young"] and len(left) == 3 and left[2].startswith("demo-validation-")
        assert (live / "data-00000-of-00001.arrow").read_bytes() == b"half"  # untouched
        assert not (root / left[2] / WRITER_LOCK).exists()  # the entry itself holds no lock file
    finally:
        writer.kill()
        writer.wait()
    from idspam.runner.data import clean_dead_writers

    assert clean_dead_writers(root) == [".tmp-live"]  # its writer is gone now
    assert clean_dead_writers(root, stale_hours=0) == [".tmp-young"]
    assert not list(root.glob(".tmp-*"))


@pytest.mark.parametrize("part", ["state.json", "arrow"])
def test_a_corrupt_tokenised_cache_entry_is_rebuilt_saying_so(compose_cfg, tmp_path, tiny_backbone, caplog, part):
    from idspam.runner.checks import validate
    from idspam.runner.data import tokenized_split
    from idspam.text import Tokenize

    run = validate(compose_cfg("model=tiny", f"cache_dir={tmp_path / 'cache'}"))
    tokenize = Tokenize(tiny_backbone[1], 32)
    first = [list(ids) for ids in tokenized_split(run, run.spec, "validation", tokenize)["input_ids"]]
    (entry,) = (tmp_path / "cache" / "tokenized").iterdir()
    target = entry / "state.json" if part == "state.json" else next(entry.glob("*.arrow"))
    target.write_bytes(b"\x00garbage")
    with caplog.at_level("WARNING", logger="idspam.runner.data"):
        again = [list(ids) for ids in tokenized_split(run, run.spec, "validation", tokenize)["input_ids"]]
    assert again == first
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "is unreadable" in warnings[0] and "rebuilding it" in warnings[0]
    assert [p.name for p in (tmp_path / "cache" / "tokenized").iterdir()] == [entry.name]
