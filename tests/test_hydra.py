"""Hydra ergonomics and the typed trainer / data / optimizer / seed groups: every Lightning Trainer argument
without `+`, one line (exit 2) for a misspelt key or a bad value before any weights, the callbacks group, the
project's own --help."""

import inspect
from dataclasses import fields

import pytest

from idspam.config import RUNNER_OWNED, TrainerConfig
from idspam.errors import UserError

from .zygote import run_module


def run_cli(*args, cwd=None):
    return run_module("idspam.run", *args, cwd=cwd)


def one_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "bitsandbytes" not in line]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-1500:]
    return lines[0]


def test_trainer_schema_is_lightnings_signature():
    import lightning.pytorch as pl

    params = inspect.signature(pl.Trainer.__init__).parameters
    want = {n: p.default for n, p in params.items() if n != "self" and n not in RUNNER_OWNED}
    have = {f.name: f.default for f in fields(TrainerConfig) if f.name != "_target_"}
    assert have == want


def test_any_trainer_argument_without_plus(compose_cfg):
    from idspam.runner.checks import validate

    run = validate(compose_cfg("model=tiny", "trainer.accumulate_grad_batches=2", "trainer.max_time=00:01:00:00"))
    assert run.trainer["accumulate_grad_batches"] == 2 and run.trainer["max_time"] == "00:01:00:00"


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be at least 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1 must be at least 1"),
    ("trainer.devices=0", "trainer.devices=0 must be a positive number of devices"),
    ("trainer.precision=7", "unknown trainer.precision '7'; valid: 64, 32, 16, bf16, 16-true"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1.0 must be at least 0"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 must be at least 1"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 must be a fraction"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1.0 must be at least 0"),
    ("optimizer.betas=[2,3]", "optimizer.betas=[2.0, 3.0] must be two values in [0, 1)"),
    ("data.num_workers=-1", "data.num_workers=-1 must be at least 0"),
    ("seed=-1", "seed=-1 must be at least 0"),
    ("seed=abc", "seed='abc' must be an integer"),
    ("task.max_train_samples=0", "task.max_train_samples=0 must be a positive number"),
    ("task.max_eval_samples=-5", "task.max_eval_samples=-5 must be a positive number"),
])
def test_bad_values_are_one_line_before_weights(compose_cfg, monkeypatch, override, message):
    from idspam.runner.checks import validate

    with pytest.raises(UserError) as e:
        validate(compose_cfg("model=tiny", override))
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epoch=1", "error: unknown key 'trainer.max_epoch'; did you mean trainer.max_epochs"),
    ("trainer.max_epochs=abc", "error: trainer.max_epochs=abc: Value 'abc' of type 'str' could not be converted "
                               "to Integer"),
    ("sed=3", "error: unknown key 'sed'; did you mean seed?"),
    ("data.batchsize=8", "error: unknown key 'data.batchsize'; did you mean data.batch_size"),
    ("trainer.precision=7", "error: unknown trainer.precision '7'"),
    ("trainer.max_epochs=0", "error: trainer.max_epochs=0 must be at least 1"),
])
def test_command_line_mistakes_are_one_line(tmp_path, override, message):
    proc = run_cli("model=tiny", override, f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'c'}",
                   cwd=tmp_path)
    assert one_error(proc).startswith(message)
    assert not (tmp_path / "run" / "results.json").exists()


def test_resume_of_a_missing_dir_creates_nothing(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = run_cli("model=tiny", f"resume={missing}", f"cache_dir={tmp_path / 'c'}", cwd=tmp_path)
    assert proc.returncode == 2 and "no_such_run" in proc.stderr
    assert not missing.exists()


def test_help_is_the_projects_own():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "schema/" not in proc.stdout and "Config groups" in proc.stdout
    assert "callbacks      early_stopping, lr_monitor, model_summary, none" in proc.stdout
    assert "trainer.accumulate_grad_batches=2" in proc.stdout and "docs/runner.md" in proc.stdout


def test_callbacks_group_builds_lightning_callbacks(compose_cfg):
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelSummary

    from idspam.runner.checks import validate
    from idspam.runner.train import extra_callbacks

    assert validate(compose_cfg("model=tiny")).callbacks == {}
    run = validate(compose_cfg("model=tiny", "callbacks=[early_stopping,lr_monitor,model_summary]",
                               "callbacks.early_stopping.patience=1"))
    built = extra_callbacks(run)
    assert [type(c) for c in built] == [EarlyStopping, LearningRateMonitor, ModelSummary]
    assert built[0].monitor == "validation/accuracy" and built[0].patience == 1 and built[0].mode == "max"


def test_group_paths_and_sweeps_pass_the_key_check():
    from idspam.runner.compose import check_overrides

    check_overrides(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", "+foo=1",
                     "task@source_task=sst2", "trainer.max_epochs=1,2", "method.lr=1e-3", "paths.output_dir=x",
                     "callbacks=[early_stopping]", "callbacks.early_stopping.patience=2", "model.arch.n_layer=2"])
