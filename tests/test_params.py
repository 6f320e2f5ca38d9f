"""`python -m idspam params`: parameter counts per method, beside the paper's Table 12."""

import pytest

from idspam.tools.params import main


def rows(text: str) -> dict[tuple[str, str], list[str]]:
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 2 and cells[0] != "method":
            table[(cells[0], cells[1])] = cells[2:]
    return table


def test_table_reproduces_the_papers_counts_for_roberta(capsys):
    main([])
    table = rows(capsys.readouterr().out)
    fit = table[("idspam", "prompt_length=11 bottleneck=32 mlp_bias=false")]
    assert fit[:4] == ["2,064,384", "2,064,384 (equal)", "3,538,944", "3,538,944 (equal)"]
    assert table[("lpt", "bias=false")][:4] == ["2,162,688", "2,162,688 (equal)", "2,883,584", "2,883,584 (equal)"]
    # the defaults differ from the paper, and say so by the absence of "(equal)"
    assert table[("idspam", "defaults")][:2] == ["2,858,624", "2,064,384"]
    assert table[("lora", "defaults")][0] == f"{12 * 2 * 2 * 8 * 768:,}"
    assert table[("prompt_tuning", "defaults")][0] == f"{10 * 768:,}"
    assert table[("idspam", "defaults")][4] == "no (head: 1,538 / 2,050)"
    assert {m for m, _ in table} >= {"idspam", "idspam_meanpool", "prompt_tuning", "ptuning", "lpt", "smop", "dept",
                                     "lora", "finetune"}


def test_any_model_and_head_counted(capsys):
    main(["--model", "tiny", "--include-head", "--task", "mnli"])
    table = rows(capsys.readouterr().out)
    assert table[("prompt_tuning", "defaults")] == [f"{10 * 32 + 32 * 3 + 3:,}", "", "yes (head: 99)", ""]


def test_unknown_model_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model", "roberta_huge"])
    assert e.value.code == 2
    expected = ("unknown model 'roberta_huge'; valid: gpt2, gpt2_large, gpt2_medium, gpt2_xl, hf, llama_3_1_8b, "
                "llama_3_2_1b, llama_small, minilm")
    assert expected in capsys.readouterr().err


def test_gpt2_rows_beside_table_13(capsys):
    """No --model: the GPT-2 family's backbone, ID-SPAM and LoRA counts beside the paper's Table 13."""
    main([])
    out = capsys.readouterr().out
    assert "| gpt2 | 124,439,808 | 126.8M | 2,064,384 | 2.1M | 294,912 | 2.4M |" in out
    assert "| gpt2_xl | 1,557,611,200 | 1577.3M | 8,294,400 | 8.3M | 2,457,600 | 19.7M |" in out
    main(["--model", "tiny"])  # an explicit model list prints only its own table
    assert "gpt2_xl" not in capsys.readouterr().out
