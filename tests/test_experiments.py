"""The paper's experiments as Hydra sweeps: each composes, expands to its jobs, and its jobs are valid runs;
launchers, multi-GPU and Optuna configs compose; the few-shot and count-only runs work end to end."""

import json

import pytest

from idspam.tools.report import sweep_jobs

from .test_run import run_cli

# experiment -> (jobs, what a job varies)
EXPERIMENTS = {
    "glue_base": (8 * 6 * 3, {"method", "task", "seed"}),
    "glue_large": (8 * 6 * 3, {"method", "task", "seed"}),
    "superglue_base": (6 * 4 * 3, {"method", "task", "seed"}),
    "superglue_large": (6 * 4 * 3, {"method", "task", "seed"}),
    "ablation_meanpool": (2 * 3 * 3, {"method", "task", "seed"}),
    "transfer_zeroshot": (8 * 4 * 3, {"method", "transfer", "seed"}),
    "transfer_fewshot": (3 * 2 * 3, {"method", "transfer", "seed"}),
    "layer_sweep": (2 * 2 * 24 * 3, {"method", "task", "layer", "seed"}),
    "params": (2 * 9, {"model", "method"}),
    "glue_gpt2": (2 * 6 * 3, {"method", "task", "seed"}),
    "superglue_gpt2": (6 * 4 * 3, {"method", "task", "seed"}),
    "gpt2_large": (3 * 2 * 3, {"method", "task", "seed"}),
    "params_gpt2": (4 * 2, {"model", "method"}),
    "cpu_repro": (4 * 4 * 3, {"method", "task", "seed"}),
    "cpu_layer_sweep": (2 * 2 * 6, {"method", "task", "layer", "seed"}),
    "protocol_tune": (5 * 3, {"method", "method.lr", "seed"}),
    "protocol_main": (5 * 5, {"method", "seed"}),
    "protocol_layers": (4 * 5, {"method", "layer", "seed"}),
    "protocol_ablations": (9 * 2, {"variant", "seed"}),
    "protocol_curves": (4, {"method", "task.max_train_samples", "seed"}),
}


def compose_with_hydra(*overrides):
    from idspam.runner.compose import compose

    return compose(list(overrides), return_hydra_config=True)


def jobs_of(experiment: str) -> list[list[str]]:
    cfg = compose_with_hydra(f"experiment={experiment}")
    return sweep_jobs(dict(cfg.hydra.sweeper.params), [f"experiment={experiment}"])


def test_every_experiment_config_exists():
    from idspam.runner.compose import choices

    assert set(EXPERIMENTS) <= set(choices("experiment"))


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_expands_to_its_jobs(experiment):
    count, swept = EXPERIMENTS[experiment]
    jobs = jobs_of(experiment)
    assert len(jobs) == count
    assert len({tuple(job) for job in jobs}) == count  # no job twice
    assert {o.split("=")[0] for job in jobs for o in job} == swept | {"experiment"}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_first_and_last_job_of_each_experiment_are_valid_runs(experiment, compose_cfg):
    """The jobs compose and pass every check that needs no weights (layer range, transfer pairs, options)."""
    from idspam.runner.checks import validate

    jobs = jobs_of(experiment)
    for job in (jobs[0], jobs[-1]):
        cfg = compose_cfg(*job, "data_dir=null")  # the hub: no local files are checked
        run = validate(cfg)
        assert cfg.experiment_name == experiment
        assert 0 <= run.layer < run.model.num_layers


def test_paper_experiments_use_the_papers_backbones_and_seeds():
    assert {o for o in jobs_of("glue_large")[0]} >= {"seed=1"}
    large = compose_with_hydra("experiment=layer_sweep")
    assert large.model.name == "roberta_large"
    assert compose_with_hydra("experiment=glue_base").model.name == "roberta_base"
    layers = {o for job in jobs_of("layer_sweep") for o in job if o.startswith("layer=")}
    assert layers == {f"layer={m}" for m in range(24)}


def test_transfer_pairs_set_the_training_and_evaluation_tasks():
    zero = compose_with_hydra("transfer=sst2_imdb")
    assert zero.task.name == "sst2" and list(zero.eval_tasks) == ["imdb"]
    few = compose_with_hydra("transfer=fewshot_qqp_mrpc")
    assert few.task.name == "mrpc" and few.source_task.name == "qqp"
    assert compose_with_hydra().get("source_task") is None


def test_protocol_stages_read_the_tuned_learning_rates_and_carve_the_same_heldout_split():
    from omegaconf import OmegaConf

    from idspam.runner.compose import conf_dir

    tuned = OmegaConf.load(conf_dir() / "tuned" / "protocol_sst2.yaml").tuned_lr
    for method in ("idspam", "lpt", "prompt_tuning", "lora", "idspam_meanpool"):
        cfg = compose_with_hydra("experiment=protocol_main", f"method={method}")
        assert cfg.method.lr == tuned[method] and cfg.task.heldout_samples == 300 and cfg.task.heldout_seed == 0
        assert cfg.method.dropout == 0 and cfg.head.dropout == 0  # no dropout for any method (protocol_base)
    variant = compose_with_hydra("experiment=protocol_ablations", "variant=no_final_relu")
    assert variant.variant == "no_final_relu" and variant.method.final_relu is False
    assert variant.method.lr == tuned.idspam and variant.method.dropout == 0
    for name, dropout in (("dropout_01", 0.1), ("dropout_03", 0.3)):  # a variant wins over the protocol's pin
        assert compose_with_hydra("experiment=protocol_ablations", f"variant={name}").method.dropout == dropout
    tune = compose_with_hydra("experiment=protocol_tune")
    assert tune.task == compose_with_hydra("experiment=protocol_main").task  # one protocol, one data setting


def test_cpu_repro_evaluates_sst2_on_imdb_only():
    assert list(compose_with_hydra("experiment=cpu_repro", "task=sst2").eval_tasks) == ["imdb"]
    assert list(compose_with_hydra("experiment=cpu_repro", "task=rte").eval_tasks) == []


def test_source_task_is_checked_before_anything_trains(compose_cfg):
    from idspam.errors import UserError
    from idspam.runner.checks import validate

    with pytest.raises(UserError, match="source_task=rte: task 'sst2' has labels"):
        validate(compose_cfg("task=sst2", "task@source_task=rte"))
    with pytest.raises(UserError, match="not both"):
        validate(compose_cfg("transfer=fewshot_mrpc_qqp", "init_from=/some/adapter"))
    run = validate(compose_cfg("transfer=fewshot_mrpc_qqp", "few_shot_k=32"))
    assert run.task.name == "qqp" and run.task.max_train_samples == 32


@pytest.mark.parametrize("launcher,target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launchers_compose(launcher, target):
    from hydra.utils import get_class

    extra = ["hydra.launcher.partition=gpu"] if "slurm" in launcher else []
    cfg = compose_with_hydra(f"hydra/launcher={launcher}", *extra)
    assert cfg.hydra.launcher._target_ == target
    get_class(target)  # the plugin is installed
    if launcher == "slurm":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1
        assert cfg.hydra.launcher.timeout_min > 0


def test_ddp_trainer_builds_lightnings_ddp_strategy(compose_cfg):
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DDPStrategy

    cfg = compose_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true")
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2


@pytest.mark.parametrize("method", ["idspam", "lpt", "prompt_tuning", "ptuning", "smop", "dept", "lora", "finetune",
                                    "idspam_meanpool"])
def test_optuna_search_covers_table_7(method):
    cfg = compose_with_hydra(f"hparams_search={method}_optuna", "model=roberta_large")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.method.name == method
    params = dict(sweeper.params)
    assert params["trainer.max_epochs"] == "choice(1, 5, 10, 20, 30)"
    assert params["data.batch_size"] == "choice(16, 32, 64)"
    assert params["method.lr"] == "choice(1e-3, 5e-4, 1e-4, 5e-3, 1e-5)"
    assert params["optimizer.weight_decay"] == "choice(0.0, 0.01, 0.1)"
    assert any(k.endswith("dropout") for k in params)
    if method in ("idspam", "idspam_meanpool", "lpt"):
        assert params["layer"] == "range(1, 23)"  # RoBERTa-large: 1..23, both ends included by Optuna


FAST = ["model=tiny", "trainer.max_epochs=1", "task.max_train_samples=64", "task.max_eval_samples=32"]


def test_count_only_multirun_writes_the_parameter_counts(tmp_path):
    """`experiment=params` really runs: every job writes its counts (meta device, seconds), the report
    puts the paper's Table 12 beside them."""
    from idspam.tools.report import report

    sweep = tmp_path / "params" / "t"
    run_cli("-m", "experiment=params", "method=idspam,lpt,lora", f"hydra.sweep.dir={sweep}")
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in range(6)]
    counts = {(r["model"], r["method"]): r["parameters"]["method"] for r in results}
    assert counts[("roberta_base", "idspam")] == 2_858_624 and counts[("roberta_large", "lpt")] == 2_894_080
    assert all(r["status"] == "finished" and r["count_only"] for r in results)
    text = report([sweep])["markdown"].read_text()
    assert "| idspam | 12 | 4,597,888 · paper 3,538,944 |" in text


@pytest.mark.slow
def test_few_shot_job_trains_the_source_then_the_target(tmp_path):
    """One job: source run in <dir>/source, then k target examples from its adapter; a rerun reuses the source."""
    from idspam.adapter import read_adapter

    # task.* options apply to the target task, source_task.* to the source
    args = ["model=tiny", "trainer.max_epochs=1", "task.max_eval_samples=32", "logger=none", "task@source_task=demo",
            "source_task.max_train_samples=64", "few_shot_k=20", f"hydra.run.dir={tmp_path}"]
    run_cli(*args)
    results = json.loads((tmp_path / "results.json").read_text())
    source = json.loads((tmp_path / "source" / "results.json").read_text())
    assert source["status"] == "finished" and source["data"]["train"] == 64
    assert results["status"] == "finished" and results["data"]["train"] == 20
    assert results["init_from"] == str(tmp_path / "source" / "adapter")
    assert results["source"]["task"] == "demo" and results["source"]["best"] == source["best"]
    before = read_adapter(tmp_path / "source" / "adapter")[1]  # the trained tensors, whatever the folder format
    proc = run_cli(*args)
    assert "reusing the finished source run" in proc.stderr + proc.stdout
    after = read_adapter(tmp_path / "source" / "adapter")[1]
    assert before
    assert all((before[k] == after[k]).all() for k in before)


@pytest.mark.slow
def test_wandb_multirun_gives_separate_offline_runs_in_one_group(tmp_path):
    sweep = tmp_path / "mysweep" / "t1"
    run_cli("-m", *FAST, "logger=wandb", "seed=1,2", f"hydra.sweep.dir={sweep}", env={"WANDB_MODE": "offline"})
    runs = []
    for job in (0, 1):
        results = json.loads((sweep / str(job) / "results.json").read_text())
        offline = list((sweep / str(job) / "wandb").glob("offline-run-*"))
        assert len(offline) == 1  # finished, so the next job did not log into it
        data = next(offline[0].glob("run-*.wandb")).read_bytes()
        assert results["wandb"]["group"] == "mysweep-t1" and b"mysweep-t1" in data
        assert results["wandb"]["id"] in offline[0].name
        runs.append(results["wandb"]["id"])
    assert runs[0] != runs[1]


@pytest.mark.slow
def test_optuna_search_runs_trials_and_writes_the_best(tmp_path):
    import yaml

    # FAST fixes trainer.max_epochs=1: a plain override takes that key out of the search
    run_cli("-m", "hparams_search=idspam_optuna", *FAST, "logger=none", "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={tmp_path}")
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"data.batch_size", "method.lr", "method.dropout", "optimizer.weight_decay",
                                        "layer"}
    values = [json.loads((tmp_path / str(i) / "results.json").read_text())["best"]["value"] for i in (0, 1)]
    assert best["best_value"] == max(values)


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    run_cli("-m", *FAST, "logger=none", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["jobs"] == 2 and summary["failed"] == 0


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_rank_zero_writes(tmp_path):
    run_cli(*FAST, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            "logger=none", f"hydra.run.dir={tmp_path}")
    results = json.loads((tmp_path / "results.json").read_text())
    from idspam.adapter import read_adapter

    assert results["status"] == "finished" and read_adapter(tmp_path / "adapter")[1]
    assert results["epochs"][0]["train_examples"] == 32  # rank 0's half of the 64 examples
