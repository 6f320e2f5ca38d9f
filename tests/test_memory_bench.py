"""idspam-bench --memory-rows: row names parse (bad ones are one line), a row measures its weights, its peak and
its step time in-process, and the peak grows with the batch (the reset of the peak RSS works)."""

import pytest

from idspam.errors import UserError


def test_rows_parse_and_bad_rows_are_one_line():
    from idspam.tools.bench.memory import parse_row

    row = parse_row("idspam m=mid nf4 ckpt", 24)
    assert (row["method"], row["layer"], row["precision"], row["ckpt"], row["cache"]) == ("idspam", 12, "nf4", True,
                                                                                        False)
    assert row["name"] == "idspam m=12 nf4 ckpt"
    assert parse_row("peft lora int8", 4)["method"] == "peft lora"
    with pytest.raises(UserError, match=r"unknown word 'fast'; valid: m=K, fp32, bf16, nf4, fp4, int8, ckpt, cache"):
        parse_row("idspam fast", 4)
    with pytest.raises(UserError, match=r"m=9 is out of range; valid: 0..3"):
        parse_row("idspam m=9", 4)
    with pytest.raises(UserError, match=r"cache applies to idspam rows only"):
        parse_row("peft lora cache", 4)


@pytest.mark.parametrize("text", ["idspam m=2 fp32 ckpt", "peft lora fp32", "idspam m=2 fp32 cache"])
def test_a_row_measures_weights_peak_and_time(text):
    from idspam.tools.bench.memory import measure_row, parse_row

    args = {"model": "tiny_llama", "device": "cpu", "seed": 0, "steps": 2, "length": 16}
    small = measure_row(parse_row(text, 4), {**args, "batch": 1})
    large = measure_row(parse_row(text, 4), {**args, "batch": 64, "length": 128})
    for r in (small, large):
        # the peak is measured from the timed window's start: the warm-up may free pages resident at load (this
        # process has run other tests), so peak >= weights is no invariant, peak >= the window's floor is
        assert r["weights_mb"] > 0 and r["peak_mb"] >= r["timed_start_mb"] > 0 and r["seconds_per_step"] > 0
        assert r["trained_parameters"] > 0 and 0 < r["weights_anon_mb"] < r["weights_mb"] and r["weights_file_mb"] > 0
    assert large["step_mb"] > small["step_mb"] + 5, (small, large)


def test_the_warm_up_keeps_the_first_steps_one_off_work_out_of_the_peak(monkeypatch):
    """A first step that allocates 200 MB once (as AdamW's state creation does)
    shows in first_step_mb, not in step_mb; without a warm-up it would be the step's peak."""
    import torch

    from idspam.tools.bench import memory

    calls = []

    def step():
        calls.append(1)
        size = 200 if len(calls) == 1 else 1
        buffer = torch.ones(size * 2**18)  # float32: size MB, touched
        buffer.add_(1)

    monkeypatch.setattr(memory, "build_step", lambda row, args: (step, torch.nn.Linear(2, 2)))
    row = memory.parse_row("idspam m=1 fp32", 4)
    args = {"model": "tiny_llama", "device": "cpu", "seed": 0, "steps": 2, "batch": 1, "length": 16}
    r = memory.measure_row(row, {**args, "warmup": 1})
    assert r["first_step_mb"] > 150 and r["step_mb"] < 100 and r["warmup_steps"] == 1 and r["steps"] == 2, r
    calls.clear()
    cold = memory.measure_row(row, {**args, "warmup": 0})
    assert cold["first_step_mb"] is None and cold["step_mb"] > 150, cold


def test_memory_rows_warm_up_one_step_by_default():
    from idspam.tools.bench.main import parse

    assert parse(["--memory-rows"])["warmup"] == 1
    assert parse(["--memory-rows", "--warmup", "0"])["warmup"] == 0
    assert parse([])["warmup"] == 2


def test_the_random_checkpoint_is_written_in_shards_and_loads_whole(tmp_path):
    import json

    import torch
    from transformers import AutoModel

    from idspam.tools.bench.common import model_config
    from idspam.tools.bench.memory import random_checkpoint

    config = model_config("tiny_llama")[1]
    torch.manual_seed(0)
    random_checkpoint(AutoModel, config, str(tmp_path), torch.bfloat16, shard_mb=0.05)
    shards = set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(shards) > 2 and all((tmp_path / name).exists() for name in shards)
    model, info = AutoModel.from_pretrained(str(tmp_path), dtype=torch.bfloat16, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    norm = model.layers[0].input_layernorm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    weight = model.layers[0].mlp.up_proj.weight.float()
    assert abs(weight.std().item() - config.initializer_range) < 0.2 * config.initializer_range
