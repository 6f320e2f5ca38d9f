"""idspam.report on sweep dirs written by the test: means, stds, seed counts, the paper's numbers, the jobs that
failed or never ran, the layer figure, and the W&B table."""

import csv
import json
import statistics

import pytest
import yaml

from idspam.tools.report import report

# (method, task, seed) -> best dev metric; RoBERTa-base, the paper's layer 6 for idspam and lpt
SCORES = {
    ("idspam", "rte", 1): 0.70, ("idspam", "rte", 2): 0.74, ("idspam", "rte", 3): 0.78,
    ("idspam", "mrpc", 1): 0.80, ("idspam", "mrpc", 2): 0.82, ("idspam", "mrpc", 3): 0.84,
    ("lpt", "rte", 1): 0.60, ("lpt", "rte", 2): 0.62,  # seed 3 failed
    ("lpt", "mrpc", 1): 0.81, ("lpt", "mrpc", 2): 0.83,  # seed 3 never ran
}
METRIC = {"rte": "validation/accuracy", "mrpc": "validation/acc_f1"}


def write_sweep(sweep, params, extra, jobs):
    """A sweep dir as Hydra and idspam.run leave it: multirun.yaml, then one folder per job."""
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": params},
                                                                   "overrides": {"task": extra}}}))
    for num, (overrides, results) in enumerate(jobs):
        if results is None:
            continue  # never started
        (sweep / str(num) / ".hydra").mkdir(parents=True)
        (sweep / str(num) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (sweep / str(num) / "results.json").write_text(json.dumps(results))


def header(method, task, seed, layer=6, model="roberta_base", experiment="glue_base", **extra):
    return {"experiment": experiment, "task": task, "method": method, "model": model, "layer": layer, "seed": seed,
            "table_metric": METRIC.get(task, "validation/accuracy"), "eval_tasks": [], **extra}


def finished(value, metrics=None, **kw):
    return {"status": "finished", **header(**kw), "best": {"epoch": 1, "value": value, "metrics": metrics or {}}}


@pytest.fixture
def glue_sweep(tmp_path):
    sweep = tmp_path / "glue_base" / "2026-11-23_10-00-00"
    jobs = []
    for method in ("idspam", "lpt"):
        for task in ("rte", "mrpc"):
            for seed in (1, 2, 3):
                overrides = [f"method={method}", f"task={task}", f"seed={seed}", "experiment=glue_base"]
                if (method, task, seed) in SCORES:
                    results = finished(SCORES[(method, task, seed)], method=method, task=task, seed=seed)
                elif task == "rte":
                    results = {"status": "failed", "error": "RuntimeError: CUDA out of memory\ntraceback...",
                               **header(method, task, seed)}
                else:
                    results = None
                jobs.append((overrides, results))
    write_sweep(sweep, {"method": "idspam,lpt", "task": "rte,mrpc", "seed": "1,2,3"}, ["experiment=glue_base"], jobs)
    return sweep


def test_report_gives_means_stds_seed_counts_and_the_papers_numbers(glue_sweep):
    written = report([glue_sweep])
    assert (written["jobs"], written["finished"]) == (12, 10)
    rows = {(r["method"], r["column"]): r for r in csv.DictReader(written["csv"].open())}
    rte = rows[("idspam", "rte")]
    assert float(rte["mean"]) == pytest.approx(74.0)
    assert float(rte["std"]) == pytest.approx(statistics.stdev([70.0, 74.0, 78.0]))
    assert (rte["finished"], rte["expected"], rte["paper"]) == ("3", "3", "79.2")
    assert rte["metric"] == "validation/accuracy" and rows[("idspam", "mrpc")]["metric"] == "validation/acc_f1"
    lpt_rte, lpt_mrpc = rows[("lpt", "rte")], rows[("lpt", "mrpc")]
    assert float(lpt_rte["mean"]) == pytest.approx(61.0) and (lpt_rte["finished"], lpt_rte["expected"]) == ("2", "3")
    assert (lpt_mrpc["finished"], lpt_mrpc["expected"], lpt_mrpc["paper"]) == ("2", "3", "84.3")
    assert rows[("lpt", "mrpc")]["layer"] == "6"  # the never-started job was composed into the right group

    text = written["markdown"].read_text()
    assert "| idspam | 6 | 82.0 ± 2.0 (3/3) · paper 82.8 | 74.0 ± 4.0 (3/3) · paper 79.2 |" in text
    assert "10 of 12 jobs finished." in text
    failed = next(line for line in text.splitlines() if "/8 |" in line)
    assert "method=lpt task=rte seed=3" in failed and "| failed | RuntimeError: CUDA out of memory |" in failed
    missing = next(line for line in text.splitlines() if "/11 |" in line)
    assert all(o in missing for o in ("method=lpt", "task=mrpc", "seed=3")) and "| missing |" in missing


def test_report_survives_broken_and_interrupted_jobs(glue_sweep):
    (glue_sweep / "0" / "results.json").write_text("{not json")
    running = json.loads((glue_sweep / "1" / "results.json").read_text())
    (glue_sweep / "1" / "results.json").write_text(json.dumps({**running, "status": "running", "best": None}))
    written = report([glue_sweep])
    assert written["finished"] == 8
    text = written["markdown"].read_text()
    assert "results.json is unreadable" in text and "| running | stopped before it finished" in text
    rte = next(r for r in csv.DictReader(written["csv"].open()) if (r["method"], r["column"]) == ("idspam", "rte"))
    assert (rte["finished"], rte["expected"], float(rte["mean"])) == ("1", "3", pytest.approx(78.0))


def test_report_reads_zero_shot_pairs_and_the_mean_column(tmp_path):
    sweep = tmp_path / "transfer_zeroshot" / "t"
    jobs = [([f"seed={s}"], finished(0.9, {"imdb/acc_f1": v}, method="idspam", task="sst2", seed=s, layer=12,
                                     model="roberta_large", experiment="transfer_zeroshot", eval_tasks=["imdb"]))
            for s, v in ((1, 0.88), (2, 0.90))]
    write_sweep(sweep, {"seed": "1,2"}, [], jobs)
    rows = {r["column"]: r for r in csv.DictReader(report([sweep])["csv"].open())}
    assert float(rows["sst2->imdb"]["mean"]) == pytest.approx(89.0) and rows["sst2->imdb"]["paper"] == "89.1"
    assert rows["sst2->imdb"]["metric"] == "imdb/acc_f1"
    assert rows["sst2"]["paper"] == "94.6"


def test_glue_table_has_a_mean_over_tasks_beside_the_papers(tmp_path):
    sweep = tmp_path / "glue_base" / "t"
    tasks = ("mnli", "qnli", "sst2", "mrpc", "rte", "qqp")
    jobs = [([f"task={t}"], finished(0.80, method="idspam", task=t, seed=1)) for t in tasks]
    write_sweep(sweep, {"task": ",".join(tasks)}, [], jobs)
    text = report([sweep])["markdown"].read_text()
    assert text.count("· paper") == 7 and "| 80.0 · paper 84.8 |" in text  # the paper's ID-SPAM mean


def test_layer_figure_is_a_valid_png(tmp_path):
    import matplotlib.image

    sweep = tmp_path / "layer_sweep" / "t"
    jobs = []
    for method in ("lpt", "idspam"):
        for layer in range(4):
            for seed in (1, 2):
                value = 0.6 + 0.02 * layer + 0.01 * seed + (0.05 if method == "idspam" else 0)
                jobs.append(([f"method={method}", f"layer={layer}", f"seed={seed}"],
                             finished(value, method=method, task="rte", seed=seed, layer=layer, model="roberta_large",
                                      experiment="layer_sweep")))
    write_sweep(sweep, {"method": "lpt,idspam", "layer": "range(0,4)", "seed": "1,2"}, [], jobs)
    written = report([sweep])
    assert written["figures"] == [sweep / "layers.png"]
    png = (sweep / "layers.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(sweep / "layers.png")
    assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0  # drawn, not blank
    assert (sweep / "layers.svg").read_text().lstrip().startswith("<?xml")
    assert "![metric against the injection layer](layers.png)" in written["markdown"].read_text()


def test_no_figure_without_a_layer_sweep(glue_sweep):
    assert report([glue_sweep])["figures"] == []
    assert not (glue_sweep / "layers.png").exists()


def test_report_logs_a_table_to_wandb_offline(glue_sweep, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    written = report([glue_sweep], wandb_log=True)
    import wandb

    wandb.teardown()  # wandb >= 0.31 writes the run file from its service process after finish(): wait for it
    assert written["wandb_group"] == "glue_base-2026-11-23_10-00-00"
    runs = list((glue_sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert b"glue_base-2026-11-23_10-00-00" in next(runs[0].glob("run-*.wandb")).read_bytes()
    tables = list(runs[0].glob("files/media/table/report_*.table.json"))
    assert tables and json.loads(tables[0].read_text())["columns"][:3] == ["experiment", "model", "method"]


def test_report_cli_names_bad_arguments(tmp_path, capsys):
    from idspam.tools.report import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2 and "no such sweep or run dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--colour", "red"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("idspam-report: error: unrecognized arguments: --colour "
                                       "(see idspam-report --help)\n")


def test_report_cli_writes_the_formats_asked_for(glue_sweep, tmp_path, capsys):
    from idspam.tools.report import main

    main([str(glue_sweep), "--out", str(tmp_path / "r"), "--format", "csv", "json"])
    assert sorted(p.name for p in (tmp_path / "r").glob("report.*")) == ["report.csv", "report.json"]
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    csv_rows = list(csv.DictReader((tmp_path / "r" / "report.csv").open()))
    assert len(data["rows"]) == len(csv_rows) > 0 and len(data["jobs"]) == 12
    first = data["rows"][0]
    assert first["mean"] == pytest.approx(float(csv_rows[0]["mean"])) and isinstance(first["finished"], int)
    assert f"wrote {tmp_path / 'r' / 'report.json'}" in capsys.readouterr().out


def test_ranking_and_reference_numbers_for_a_model_the_paper_did_not_run(glue_sweep, tmp_path):
    """Our ordering of methods beside the paper's, over the columns where both exist."""
    text = report([glue_sweep])["markdown"].read_text()
    # ours: idspam (74.0 + 82.0) / 2 = 78.0, lpt (61.0 + 82.0) / 2 = 71.5; paper: (79.2+82.8)/2, (73.6+84.3)/2
    assert "Ranking by the mean over mrpc, rte: ours idspam 78.0 > lpt 71.5; paper idspam 81.0 > lpt 78.9" in text

    sweep = tmp_path / "cpu_repro" / "t"
    jobs = [([f"method={m}"], finished(v, method=m, task="rte", seed=1, layer=3, model="minilm",
                                       experiment="cpu_repro")) for m, v in (("idspam", 0.55), ("lpt", 0.60))]
    write_sweep(sweep, {"method": "idspam,lpt"}, [], jobs)
    assert "paper" not in report([sweep])["markdown"].read_text().split("## Jobs")[0].split("where it has one.")[1]
    text = report([sweep], reference="roberta_base")["markdown"].read_text()
    assert "## cpu_repro: minilm (the paper's numbers beside ours are roberta_base's)" in text
    assert "| lpt | 3 | 60.0 (1/1) · paper 73.6 |" in text
    assert "ours lpt 60.0 > idspam 55.0; paper idspam 79.2 > lpt 73.6" in text


def test_archived_sweep_gives_the_same_report(glue_sweep, tmp_path):
    """experiments/archive_sweep.py keeps what the report reads (what experiments/results/ commits)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "archive_sweep.py"
    spec = importlib.util.spec_from_file_location("archive_sweep", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (glue_sweep / "0" / "checkpoints").mkdir()
    (glue_sweep / "0" / "checkpoints" / "last.ckpt").write_bytes(b"x" * 100)
    archived = tmp_path / "archive" / "glue_base"
    assert module.archive(glue_sweep, archived) == 11  # job 11 never started: no folder
    assert not (archived / "0" / "checkpoints").exists()
    original = report([glue_sweep], out=tmp_path / "a")["csv"].read_text()
    assert report([archived], out=tmp_path / "b")["csv"].read_text() == original


def test_job_killed_before_its_results_is_grouped_from_its_saved_config(glue_sweep, compose_cfg):
    """A job with only .hydra/config.yaml (killed while loading) counts against its group, as running."""
    from omegaconf import OmegaConf

    job = glue_sweep / "11" / ".hydra"
    job.mkdir(parents=True)
    # saved with layer=9, so the group shows that the saved config, not the sweep's overrides, was read
    cfg = compose_cfg("experiment=glue_base", "method=lpt", "task=mrpc", "seed=3", "layer=9")
    OmegaConf.save(cfg, job / "config.yaml")
    written = report([glue_sweep])
    rows = {(r["method"], r["layer"], r["column"]): r for r in csv.DictReader(written["csv"].open())}
    assert (rows[("lpt", "9", "mrpc")]["finished"], rows[("lpt", "9", "mrpc")]["expected"]) == ("0", "1")
    assert (rows[("lpt", "6", "mrpc")]["finished"], rows[("lpt", "6", "mrpc")]["expected"]) == ("2", "2")
    line = next(line for line in written["markdown"].read_text().splitlines() if "/11 |" in line)
    assert "| running | no results.json" in line


def test_gpt2_large_sweep_renders_beside_the_papers_gpt2_large_table(tmp_path):
    """experiment=gpt2_large: the report puts the paper's GPT-2 Large numbers beside ours."""
    sweep = tmp_path / "gpt2_large" / "t"
    jobs = []
    for method, value in (("idspam", 0.70), ("lora", 0.72)):
        overrides = [f"method={method}", "task=rte", "seed=1", "experiment=gpt2_large"]
        jobs.append((overrides, finished(value, method=method, task="rte", seed=1,
                                         layer=18 if method == "idspam" else 0,
                                         model="gpt2_large", experiment="gpt2_large")))
    write_sweep(sweep, {"method": "idspam,lora", "task": "rte", "seed": "1"}, ["experiment=gpt2_large"], jobs)
    text = report([sweep])["markdown"].read_text()
    assert "gpt2_large" in text
    assert "73.7" in text and "74.0" in text  # the paper's RTE for ID-SPAM and LoRA on GPT-2 Large
