"""The protocol's analysis on a small synthetic sweep with known answers: the tuned learning rates, the claim
table (verdicts, intervals, paper numbers), the ablation table, the figures, the command line."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from idspam.tools import protocol

N_DEV, N_HELD = 200, 100
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, size=N_DEV)
HELD = RNG.integers(0, 2, size=N_HELD)


def predictions(acc: float, labels: np.ndarray, rng) -> list[int]:
    return np.where(rng.random(len(labels)) < acc, labels, 1 - labels).tolist()


def write_run(root: Path, n: int, stage: str, method: str, seed: int, dev: float, *, layer=3, lr=1e-3,
              variant=None, imdb=0.7, seconds=10.0, epochs=3, train_samples=1000):
    """One job dir: results.json whose best epoch (by held-out score) is the last; per-example predictions at
    every epoch with the given dev accuracy there."""
    rng = np.random.default_rng(zlib.crc32(repr((stage, method, seed, layer, variant, lr, train_samples)).encode()))
    job = root / str(n)
    (job / "predictions").mkdir(parents=True)
    rows = []
    for e in range(epochs):
        acc = dev - 0.02 * (epochs - 1 - e)
        pred = predictions(acc, LABELS, rng)
        held = dev + 0.01 * np.log(lr * 1e3 + 1e-9) * (method == "idspam") - 0.02 * (epochs - 1 - e)
        (job / "predictions" / f"epoch{e}.json").write_text(json.dumps(
            {"heldout": {"pred": predictions(held, HELD, rng), "label": HELD.tolist()},
             "validation": {"pred": pred, "label": LABELS.tolist()}}))
        rows.append({"epoch": e, "train_seconds": seconds / epochs, "heldout/accuracy": held,
                     "validation/accuracy": float(np.mean(np.array(pred) == LABELS)), "imdb/acc_f1": imdb})
    cfg = {"method": {"name": method, "lr": lr}, "optimizer": {"lr": 1e-3}, "variant": variant,
           "eval_tasks": ["imdb"] if stage == "main" else [], "model": {"name": "minilm", "num_layers": 6},
           "task": {"max_train_samples": train_samples, "heldout_samples": N_HELD, "heldout_seed": 0,
                    "max_length": 64}, "trainer": {"max_epochs": epochs}, "data": {"batch_size": 16},
           "cache_lower": "auto"}
    (job / "results.json").write_text(json.dumps({
        "status": "finished", "experiment": f"protocol_{stage}", "task": "sst2", "method": method, "layer": layer,
        "seed": seed, "monitor": "heldout/accuracy", "table_metric": "validation/accuracy", "epochs": rows,
        "best": {"epoch": epochs - 1, "value": rows[-1]["heldout/accuracy"]}, "wall_time_s": seconds + 5,
        "config": cfg}))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    n = 0
    for method in ("idspam", "lpt", "prompt_tuning", "lora", "idspam_meanpool"):
        for lr in (5e-4, 2e-3):
            write_run(root / "tune", n, "tune", method, 0, 0.8, lr=lr)
            n += 1
    # main: ID-SPAM clearly above prompt tuning (and in zero-shot), equal to LPT, below LoRA; 5 seeds
    dev = {"idspam": 0.85, "lpt": 0.85, "prompt_tuning": 0.70, "lora": 0.92, "idspam_meanpool": 0.85}
    for method, acc in dev.items():
        for seed in range(1, 6):
            jitter = 0.004 * (seed - 3)
            write_run(root / "main", n, "main", method, seed, acc + jitter, imdb=0.75 if method == "idspam" else 0.6,
                      seconds=10.0 if method != "lpt" else 10.0 + 0.2 * seed)
            n += 1
    for layer in (0, 1, 2, 4):  # layer 0 far below the others
        for seed in range(1, 6):
            write_run(root / "layers", n, "layers", "idspam", seed, 0.6 if layer == 0 else 0.83, layer=layer)
            write_run(root / "layers", n + 1, "layers", "lpt", seed, 0.6 if layer == 0 else 0.82, layer=layer)
            n += 2
    for seed in range(1, 6):  # m = N-1 scores best but lies outside the claim's 1..N-2
        write_run(root / "layers", n, "layers", "idspam", seed, 0.95, layer=5)
        n += 1
    for variant, acc in (("t_5", 0.85), ("no_final_relu", 0.70)):
        for seed in (1, 2):
            write_run(root / "ablations", n, "ablations", "idspam", seed, acc, variant=variant)
            n += 1
    for size in (250, 500):
        write_run(root / "curves", n, "curves", "idspam", 1, 0.7 + size / 5000, train_samples=size)
        n += 1
    return root


def test_tuning_picks_each_methods_best_heldout_learning_rate(sweeps, tmp_path):
    runs = protocol.read_runs([sweeps / "tune"])
    chosen = protocol.select_lrs(runs)
    assert chosen["idspam"] == 2e-3  # its held-out score rises with the rate
    assert set(chosen) == {"idspam", "lpt", "prompt_tuning", "lora", "idspam_meanpool"}
    out = tmp_path / "tuned.yaml"
    assert protocol.main([str(sweeps / "tune"), "--write-tuned", str(out)]) == 0
    from omegaconf import OmegaConf

    assert OmegaConf.load(out).tuned_lr.idspam == 2e-3


def test_tuning_refuses_an_unfinished_grid(sweeps, tmp_path, capsys):
    import shutil

    partial = tmp_path / "tune"
    shutil.copytree(sweeps / "tune", partial)
    shutil.rmtree(partial / "1")  # ID-SPAM at lr 2e-3 did not finish
    with pytest.raises(SystemExit) as e:
        protocol.main([str(partial), "--write-tuned", str(tmp_path / "t.yaml")])
    assert e.value.code == 2 and "idspam lacks lr 0.002" in capsys.readouterr().err
    assert not (tmp_path / "t.yaml").exists()


def test_claim_table_has_the_known_verdicts(sweeps, tmp_path):
    assert protocol.main([str(sweeps), "--out", str(tmp_path)]) == 0
    claims = {c["claim"]: c for c in json.loads((tmp_path / "claims.json").read_text())}
    assert claims["ID-SPAM vs prompt tuning"]["verdict"] == "holds"
    assert claims["ID-SPAM vs prompt tuning"]["paper"] == pytest.approx(92.7 - 89.3)
    assert claims["ID-SPAM vs LoRA"]["verdict"] == "does not hold"
    best = claims["best layer in 1..N-2 vs m = 0 (ID-SPAM)"]
    assert best["verdict"] == "holds" and best["low"] > 10
    zs = claims["SST-2 -> IMDB zero-shot: ID-SPAM vs prompt tuning"]
    assert zs["verdict"] == "holds" and zs["effect"] == pytest.approx(15.0)
    speed = claims["time to the best epoch: ID-SPAM vs LPT"]
    assert speed["effect"] < 0 and speed["verdict"] == "holds"  # LPT took longer with every seed
    for c in claims.values():  # Holm: every level is at least the uncorrected 95%
        assert c["level"] >= 0.95 - 1e-12
    report = (tmp_path / "report.md").read_text()
    assert "| ID-SPAM vs prompt tuning |" in report and "**holds**" in report and "**does not hold**" in report
    assert "| no_final_relu | 2 |" in report and "worse than the default" in report
    assert "| t_5 | 2 |" in report
    assert (tmp_path / "layers.png").stat().st_size > 5000 and (tmp_path / "curves.png").is_file()
    assert "![layers](layers.png)" in report and "| main | 25 |" in report


def test_best_layer_is_picked_among_1_to_n_minus_2_on_the_heldout_split(sweeps):
    runs = protocol.read_runs([sweeps])
    claim = protocol.best_layer_claim(runs)
    assert claim.estimate.note == "best m = 3 of {1, 2, 3, 4} (held-out)"  # not m = 5 (= N-1), the best of all
    assert claim.estimate.effect == pytest.approx(np.mean([r.dev for r in runs if r.stage == "main" and
                                                           r.method == "idspam"]) - 100 * 0.6, abs=3)


def test_too_few_seeds_leave_a_claim_inconclusive(sweeps, tmp_path):
    runs = [r for r in protocol.read_runs([sweeps]) if not (r.stage == "main" and r.seed > 2)]
    found = protocol.claims(runs, "sst2")
    assert found[0].estimate.n == 2 and not len(found[0].estimate.draws)
    from idspam.tools import stats

    assert stats.decide([found[0].estimate], [1])[0].verdict == "inconclusive"


def test_report_without_a_main_stage_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished runs of the protocol's main stage"):
        protocol.main([str(tmp_path), "--out", str(tmp_path / "out")])
