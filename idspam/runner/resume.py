"""Resume: what a job does with its run dir, and whether a checkpoint belongs to this run.

`resume_plan` decides under resume=auto (the default in a multirun) or resume=never: reuse a finished
run, resume an interrupted one from its `checkpoints/last.ckpt`, rerun a failed one, refuse a dir that
holds another configuration's run (`ConfigMismatch`: nothing there is touched). `resume=<dir>` resumes
that run after checking its checkpoint's stored fingerprint. Every decision compares `fingerprint`s.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import UserError
from ..files import atomic_write_json, now_iso
from .checkpoints import load_checkpoint

log = logging.getLogger("idspam")

# config sections that must match for a resume to continue the same run
RESUME_KEYS = ("task", "model", "method", "head", "optimizer", "data", "trainer", "callbacks", "layer", "seed",
               "data_dir")


def resume_checkpoint(run_dir: str, current: dict) -> Path | None:
    """The `last.ckpt` of `run_dir`, after checking that it belongs to a run with this configuration;
    None for a run killed before its first checkpoint (it starts again from the beginning)."""
    folder = Path(run_dir).expanduser()
    path = folder / "checkpoints" / "last.ckpt"
    if not path.is_file():
        if (folder / "results.json").is_file():
            log.warning("resume=%s: the run has no checkpoint yet; starting it from the beginning", run_dir)
            return None
        raise UserError(f"resume={run_dir!r}: no checkpoint at {str(path)!r} (a run dir written by idspam.run, "
                        "with checkpoints/last.ckpt, is needed)")
    stored = load_checkpoint(path).get("idspam") or {}
    differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if differ:
        first = differ[0]
        raise UserError(f"resume={run_dir!r}: the configuration differs from the checkpoint's in {differ}; e.g. "
                        f"{first}: checkpoint {stored.get(first)!r}, now {current.get(first)!r}. Resume with the "
                        "same overrides as the original run")
    return path




def fingerprint(config: dict) -> dict:
    """What a run must share with another to be the same run (resume, resume=auto, a sweep re-run into its dir):
    the RESUME_KEYS of a resolved config (a run's `config` in results.json, or the current one) in JSON-normal
    form, trainer.default_root_dir (the run dir itself) left out."""
    from dataclasses import MISSING, fields

    from ..config import TrainerConfig

    out = {key: config.get(key) for key in RESUME_KEYS}
    out["callbacks"] = out["callbacks"] or None  # none chosen (and runs from before the callbacks group)
    if isinstance(out.get("trainer"), dict):
        # Lightning's own defaults left out: runs from before the typed trainer schema (which lists every argument)
        # have the same fingerprint as now
        defaults = {f.name: f.default for f in fields(TrainerConfig) if f.default is not MISSING}
        out["trainer"] = {k: v for k, v in out["trainer"].items()
                          if k != "default_root_dir" and not (k in defaults and v == defaults[k])}
    return json.loads(json.dumps(out, default=str))


def composing_fingerprint(root) -> dict:
    """`fingerprint` of the config Hydra is composing (the run_dir resolver), without resolving
    trainer.default_root_dir (the run dir, which is what is being decided)."""
    out = {}
    for key in RESUME_KEYS:
        node = root.get(key)
        if OmegaConf.is_dict(node) and key == "trainer":
            out[key] = {k: OmegaConf.to_container(node[k], resolve=True) if OmegaConf.is_config(node[k]) else node[k]
                        for k in node if k != "default_root_dir"}
        else:
            out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return fingerprint(out)


def differences(stored: dict, current: dict) -> list[str]:
    """The dotted keys (one level down) where two fingerprints differ."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def read_results(folder: Path) -> dict | None:
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"status": "unreadable"}


def attempt_record(results: dict) -> dict:
    """One line of a run's history: how an earlier attempt ended and how far it got."""
    record = {k: results.get(k) for k in ("status", "error", "stopped_at", "wall_time_s", "ended_at")
              if results.get(k) is not None}
    epochs = results.get("epochs") or []
    record.setdefault("stopped_at", {"epoch": epochs[-1]["epoch"] + 1 if epochs else 0,
                                     "step": epochs[-1]["step"] if epochs else 0})
    return record


def resume_plan(folder: Path, current: dict, mode: str) -> dict:
    """What a job does with its run dir under resume=auto (`mode`) or resume=never:
    {"action": new | reuse | resume | rerun, "ckpt": last.ckpt or None, "previous": results or None,
    "history": earlier attempts}. A run dir of another configuration is refused (UserError)."""
    folder = Path(folder)
    previous = read_results(folder)
    if previous is None:
        return {"action": "new", "ckpt": None, "previous": None, "history": []}
    history = list(previous.get("history") or [])
    if previous.get("status") not in ("finished",) or mode == "never":
        history.append(attempt_record(previous))
    if mode == "never":
        return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}
    if previous.get("status") == "unreadable" or not isinstance(previous.get("config"), dict):
        return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}
    differ = differences(fingerprint(previous["config"]), current)
    if differ:
        raise ConfigMismatch(f"{str(folder)!r} holds a run of another configuration (differs in "
                             f"{', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}); "
                             "use another run/sweep dir, or resume=never to train it again there")
    status = previous.get("status")
    finished = status == "finished" and not previous.get("count_only")
    if finished and (folder / "adapter").is_dir():
        return {"action": "reuse", "ckpt": None, "previous": previous, "history": history}
    ckpt = folder / "checkpoints" / "last.ckpt"
    # a run killed between its results and its adapter's rename (or one from before results waited for the
    # adapter): resume from the last checkpoint, which finishes at once and exports the adapter
    if (status in ("interrupted", "running") or finished) and ckpt.is_file():
        return {"action": "resume", "ckpt": ckpt, "previous": previous, "history": history}
    return {"action": "rerun", "ckpt": None, "previous": previous, "history": history}


def clean_temp_files(folder: Path) -> list[str]:
    """Temporary files an interrupted process left in its run dir (atomic writes of results.json and
    checkpoints, the adapter folder before its rename): removed by the next process that holds the run
    dir's lock (no other process writes there then)."""
    folder = Path(folder)
    found = [*folder.glob(".results.json.*.tmp"), *folder.glob(".adapter-*"),
             *(folder / "checkpoints").glob(".*.ckpt.*.tmp")]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return sorted(p.name for p in found)


class ConfigMismatch(UserError):
    """A run dir holds another configuration's run: refused, and nothing there is touched."""


def clear_checkpoints(folder: Path) -> None:
    """Before training a run dir again from scratch: an old last.ckpt must not be resumed later."""
    shutil.rmtree(Path(folder) / "checkpoints", ignore_errors=True)


def find_run_dir(prefix: str, current: dict) -> str | None:
    """resume=auto for a single run: the newest `<prefix>*` run dir (the default run dirs differ only in
    their time stamp) whose results.json holds this configuration."""
    base = Path(prefix)
    parent = base.parent
    if not parent.is_dir():
        return None
    for folder in sorted(parent.glob(base.name + "*"), key=lambda p: p.name, reverse=True):
        results = read_results(folder)
        if results and isinstance(results.get("config"), dict) and \
                not differences(fingerprint(results["config"]), current):
            return str(folder)
    return None


def plan_run(run, output_dir: Path, multirun: bool, main_process: bool) -> dict:
    """resume=<dir>: that run's last.ckpt (its config checked); resume=auto (the default in a multirun) or
    never: `resume_plan` on the run dir; null in a single run: a new run."""
    mode = run.resume if run.resume is not None else ("auto" if multirun else None)
    current = fingerprint(run.resolved)
    if mode in ("auto", "never"):
        plan = resume_plan(output_dir, current, mode)
        if plan["action"] == "resume":  # the checkpoint's own record of its config, checked too
            plan["ckpt"] = resume_checkpoint(str(output_dir), current)
        if plan["action"] == "rerun" and main_process:
            clear_checkpoints(output_dir)
        return plan
    if mode is None:
        return {"action": "new", "ckpt": None, "previous": None, "history": []}
    ckpt = resume_checkpoint(mode, current)
    previous = read_results(Path(mode))
    history = list((previous or {}).get("history") or []) + ([attempt_record(previous)] if previous else [])
    return {"action": "resume" if ckpt else "rerun", "ckpt": ckpt, "previous": previous, "history": history}


def record_attempt(output_dir: Path, action: str) -> None:
    """What this invocation did with the run dir (new, resume, rerun, reused, refused), for the sweep summary;
    beside Hydra's own files in .hydra/, so a reused run's results.json stays as it was."""
    atomic_write_json(output_dir / ".hydra" / "attempt.json", {"action": action, "at": now_iso()})


def mark_interrupted(output_dir: Path, config: dict, e: Exception) -> None:
    """results.json status interrupted (as the run wrote it, if it got that far; else a record with the
    config, so resume=auto and the summary know the job)."""
    record = read_results(output_dir) or {}
    if record.get("status") == "unreadable":
        record = {}
    if record.get("status") != "interrupted" or "stopped_at" not in record:
        epochs = record.get("epochs") or []
        record["stopped_at"] = {"epoch": epochs[-1]["epoch"] + 1 if epochs else 0,
                                "step": epochs[-1]["step"] if epochs else 0, "phase": "setup"}
    record.setdefault("config", config)
    record.update(status="interrupted", error=f"{type(e).__name__}: {e}", ended_at=now_iso())
    atomic_write_json(output_dir / "results.json", record)
