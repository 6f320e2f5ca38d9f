"""idspam-bench --fits: weights computed from parameter counts per precision, measured step costs scaled linearly
in tokens (a line through two measurements, through zero from one), the largest batch per device, bad files in
one line."""

import json

import pytest

from idspam.errors import UserError


def _file(tmp_path, name, rows, batch=8, length=512, model="m1"):
    path = tmp_path / name
    path.write_text(json.dumps({"args": {"model": model, "batch": batch, "length": length, "device": "cpu"},
                                "rows": rows}))
    return str(path)


def test_weights_follow_the_parameter_counts_per_precision():
    import torch
    from torch import nn
    from transformers import AutoModel

    from idspam.tools.bench.common import model_config
    from idspam.tools.bench.fits import weight_mb

    config = model_config("tiny_llama")[1]
    with torch.device("meta"):
        base = AutoModel.from_config(config)
    linear = sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear))
    total = sum(p.numel() for p in base.parameters())
    assert weight_mb(config, "bf16") == pytest.approx(2 * total / 2**20)
    assert weight_mb(config, "fp32") == pytest.approx(4 * total / 2**20)
    assert weight_mb(config, "nf4") == pytest.approx((2 * (total - linear) + linear * (0.5 + 4 / 64)) / 2**20)
    assert weight_mb(config, "nf4") < weight_mb(config, "int8") < weight_mb(config, "bf16")


def test_step_costs_scale_linearly_in_tokens_and_the_largest_batch_fits(tmp_path):
    from idspam.tools.bench.fits import fits, read_rows

    two = [_file(tmp_path, "a.json", [{"row": "idspam m=8 nf4 ckpt", "precision": "nf4", "step_mb": 1100.0},
                                      {"row": "peft lora nf4", "precision": "nf4", "step_mb": 4096.0}], batch=8),
           _file(tmp_path, "b.json", [{"row": "idspam m=8 nf4 ckpt", "precision": "nf4", "step_mb": 350.0},
                                      {"row": "peft lora nf4", "error": "past --row-timeout 10 s"}], batch=2)]
    rows = read_rows(two)
    out = {f["row"]: f for f in fits(rows, 16, 512, devices=(24, 40), weights=lambda model, p: 10 * 1024)}
    ours = out["idspam m=8 nf4 ckpt"]  # 100 MB fixed + 1000 MB per 4096 tokens
    assert ours["step_mb"] == pytest.approx(100 + 2000) and ours["scaling"] == "line through 2 measurements"
    assert ours["largest_batch"] == {24: int((24 * 1024 - 10240 - 100) // (1000 / 4096 * 512)),
                                     40: int((40 * 1024 - 10240 - 100) // (1000 / 4096 * 512))}
    lora = out["peft lora nf4"]  # one measurement: 1 MB a token, through zero
    assert lora["step_mb"] == pytest.approx(16 * 512) and lora["scaling"] == "linear through zero from 4096 tokens"
    assert lora["largest_batch"] == {24: 28, 40: 60} and lora["total_mb"] == pytest.approx(10240 + 8192)
    heavy = fits(rows, 8, 512, devices=(24,), weights=lambda model, p: 30 * 1024)
    assert all(f["largest_batch"][24] == 0 for f in heavy)


def test_the_fits_table_marks_computed_measured_and_rows_that_did_not_run(tmp_path, capsys):
    from idspam.tools.bench.main import main

    path = _file(tmp_path, "a.json", [{"row": "idspam m=2 bf16", "precision": "bf16", "step_mb": 64.0},
                                      {"row": "peft lora bf16", "error": "exit -9: killed"}], batch=2, length=16,
                 model="tiny_llama")
    main(["--fits", path, "--out", str(tmp_path / "fits.json")])
    text = capsys.readouterr().out
    assert "weights GiB (computed)" in text and "step GiB at 8 x 512" in text
    assert "32 on cpu; linear through zero from 32 tokens" in text
    assert "| tiny_llama | peft lora bf16 | did not run at 2 x 16: exit -9: killed |" in text
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["rows"][0]["step_mb"] == pytest.approx(64 / 32 * 8 * 512)
    assert saved["command"] == f"idspam-bench --fits {path} --out {tmp_path / 'fits.json'}"


def test_bad_fits_files_are_one_line(tmp_path):
    from idspam.tools.bench.fits import read_rows

    with pytest.raises(UserError, match=r"--fits .*nope.json: cannot read it as JSON \(FileNotFoundError\)"):
        read_rows([str(tmp_path / "nope.json")])
    (tmp_path / "x.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(UserError, match=r"not an idspam-bench --memory-rows file"):
        read_rows([str(tmp_path / "x.json")])
    with pytest.raises(UserError, match=r"no rows in these files"):
        read_rows([_file(tmp_path, "e.json", [])])
