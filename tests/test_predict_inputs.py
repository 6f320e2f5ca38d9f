"""idspam-predict's inputs: plain text on stdin (one text per line), --text-column for a run adapter."""

import io
import sys

import pytest

from idspam.errors import UserError


def predict_stdin(monkeypatch, text, *args, **kwargs):
    from idspam.tools.predict import predict

    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return predict(*args, **kwargs)


def test_plain_stdin_is_one_text_per_line(tiny_run_adapter, monkeypatch):
    import idspam

    texts = ["a warm, funny film", "dull and long", "sentence"]
    plain = predict_stdin(monkeypatch, "\n".join(texts) + "\n", str(tiny_run_adapter))
    assert [o["index"] for o in plain] == [0, 1, 2]  # the first line is an input, not a header
    direct = idspam.load_adapter(tiny_run_adapter).predict(texts)
    assert [o["prediction"] for o in plain] == [o["prediction"] for o in direct]
    assert [o["probabilities"] for o in plain] == pytest.approx([o["probabilities"] for o in direct])
    with_header = predict_stdin(monkeypatch, "sentence\tlabel\n" + "".join(f"{t}\tpositive\n" for t in texts[:2]),
                                str(tiny_run_adapter))
    assert len(with_header) == 2 and with_header[0]["label"] == "positive"  # a TSV with the task's header


def test_text_column_names_the_input_column_of_a_run_adapter(tiny_run_adapter, tmp_path):
    from idspam.tools.predict import predict

    (tmp_path / "in.csv").write_text('review,label\n"a warm, funny film",positive\ndull,negative\n')
    out = predict(str(tiny_run_adapter), str(tmp_path / "in.csv"), text_columns=["review"])
    assert [o["label"] for o in out] == ["positive", "negative"]
    with pytest.raises(UserError, match="--text-column given 2 time"):
        predict(str(tiny_run_adapter), str(tmp_path / "in.csv"), text_columns=["review", "label"])
    with pytest.raises(UserError):  # without it, the task's own column (sentence) is missing
        predict(str(tiny_run_adapter), str(tmp_path / "in.csv"))

