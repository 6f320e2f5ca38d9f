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
        assert r["weights_mb"] > 0 and r["peak_mb"] >= r["weights_mb"] and r["seconds_per_step"] > 0
        assert r["trained_parameters"] > 0
    assert large["step_mb"] > small["step_mb"] + 5, (small, large)
