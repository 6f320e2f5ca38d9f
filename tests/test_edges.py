"""Edges of the data path: the tokenised cache is keyed by every task setting; bad CSV / JSONL files get
one line naming the file and what is wrong."""

from dataclasses import fields, replace

import pytest

from idspam import tasks
from idspam.config import TaskConfig
from idspam.errors import UserError
from idspam.runner.data import split_key, tokenized_split
from idspam.text import Tokenize

from .zygote import run_module


@pytest.fixture
def four_columns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a,b,label,other_label\n" + "".join(
        f"first {i},second {i * 7},{i % 2},{(i // 2) % 2}\n" for i in range(12)))
    return path


def csv_run(compose_cfg, tmp_path, path, *overrides):
    from idspam.runner.checks import validate

    return validate(compose_cfg("model=tiny", "task=csv", f"task.train_file={path}", f"task.validation_file={path}",
                                f"cache_dir={tmp_path / 'cache'}", *overrides))


def entries(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache" / "tokenized").iterdir() if not p.name.startswith("."))


def test_each_column_setting_is_a_new_cache_entry(compose_cfg, tiny_backbone, tmp_path, four_columns):
    """The defect: text_columns=[a], [b] and label_column=other_label shared one entry (the first one's data)."""
    _, tok = tiny_backbone
    seen = []
    for overrides in (["task.text_columns=[a]"], ["task.text_columns=[b]"], ["task.text_columns=[a,b]"],
                      ["task.text_columns=[a]", "task.label_column=other_label"]):
        run = csv_run(compose_cfg, tmp_path, four_columns, *overrides)
        split = tokenized_split(run, run.spec, "train", Tokenize(tok, 32))
        seen.append((tok.decode(split["input_ids"][1], skip_special_tokens=True), split["labels"][:4]))
        assert len(entries(tmp_path)) == len(seen)
    assert seen[0][0] == "first 1" and seen[1][0] == "second 7" and seen[2][0] == "first 1 second 7"
    assert seen[0][1] == [0, 1, 0, 1] and seen[3][1] == [0, 0, 1, 1]


def test_csv_text_columns_are_in_the_key(compose_cfg, tmp_path):
    from idspam.runner.checks import validate

    path = tmp_path / "t.jsonl"
    path.write_text('{"q": "x", "a": "y", "input": "i", "target": "t"}\n')
    base = ["model=tiny_gpt2", "task=csv_text", "head=generate", f"task.train_file={path}",
            f"task.validation_file={path}"]
    runs = [validate(compose_cfg(*base, *o)) for o in ([], ["task.input_column=q"], ["task.target_column=a"])]

    class Key:
        def key(self):
            return {"tokenizer": "same"}

    keys = {split_key(run, run.spec, "train", Key()) for run in runs}
    assert len(keys) == 3


def test_every_task_setting_changes_the_key(tmp_path, four_columns, monkeypatch):
    """Not a hand-kept list: each field of TaskConfig, changed, gives another key."""
    from idspam.config import RunConfig

    class Key:
        def key(self):
            return {"tokenizer": "same"}

    task = TaskConfig(name="csv", train_file=str(four_columns), validation_file=str(four_columns),
                      text_columns=["a"], label_names=["0", "1"])
    changed = {"name": "csv_text", "max_length": 99, "max_train_samples": 5, "max_eval_samples": 5,
               "heldout_samples": 3, "heldout_seed": 7, "train_file": str(four_columns) + "x",
               "validation_file": "v.csv", "text_columns": ["b"], "label_column": "other_label",
               "label_names": ["1", "0"], "regression": True, "metric": "mcc", "template": "{s1} {mask}",
               "label_words": ["no", "yes"], "input_column": "q", "target_column": "a", "max_target_length": 9,
               "chat_template": False}
    assert set(changed) == {f.name for f in fields(TaskConfig)}, "a new TaskConfig field: add it here"

    def key(t):
        run = RunConfig(task=t, model=None, method=None, head=None, optimizer=None, data=None, layer=0, seed=0,
                        data_dir=None, cache_dir=str(tmp_path), output_dir=str(tmp_path))
        spec = tasks.get_spec(replace(t, name="csv")) if t.name == "csv_text" else tasks.get_spec(t)
        return split_key(run, spec, "train", Key())

    monkeypatch.setattr("idspam.runner.data.source_fingerprint", lambda *a: "same file")
    base = key(task)
    for name, value in changed.items():
        assert key(replace(task, **{name: value})) != base, name


def run_cli(cwd, *args, timeout=300):
    return run_module("idspam.run", *args, cwd=cwd, timeout=timeout)


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "nope.csv", r"missing data file '.*nope.csv' \(task.train_file\): no such file"),
    (lambda d: (d / "head.csv").write_text("a,b,label\n") and d / "head.csv",
     r"head.csv' \(task.train_file\) has no data rows, only its header"),
    (lambda d: (d / "d.csv").mkdir() or d / "d.csv", r"d.csv' \(task.train_file\) is a directory"),
])
def test_missing_header_only_and_directory_files_get_their_own_line(tmp_path, make, message):
    """The defect: each said `unknown task.metric for task 'csv': 'pearson'`."""
    import re

    good = tmp_path / "ok.csv"
    good.write_text("a,b,label\nx,y,1\nz,w,0\n")
    path = make(tmp_path)
    proc = run_cli(tmp_path, "model=tiny", "task=csv", f"task.train_file={path}", f"task.validation_file={good}",
                   "task.text_columns=[a]", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert re.search(message, error_line(proc)), proc.stderr[-500:]
    assert not (tmp_path / "run" / "results.json").exists()  # refused before anything ran


@pytest.mark.parametrize("overrides,message", [
    (["task.text_columns=[nosuch]"], r"no column\(s\) \['nosuch'\] \(task.text_columns / task.label_column\); "
                                     r"the header has \['a', 'b', 'label'\]"),
    (["task.text_columns=[a]", "task.label_column=lab"], r"no label column 'lab' \(task.label_column\); "
                                                         r"the header has \['a', 'b', 'label'\]"),
    (["task.text_columns=[a]", "task.label_column=lab", "task.label_names=[x,y]"],
     r"no column\(s\) \['lab'\]"),
])
def test_a_column_the_file_lacks_is_refused_before_weights(compose_cfg, tmp_path, overrides, message):
    from idspam.runner.checks import validate

    path = tmp_path / "ok.csv"
    path.write_text("a,b,label\nx,y,1\nz,w,0\n")
    with pytest.raises(UserError, match=message):
        validate(compose_cfg("model=tiny", "task=csv", f"task.train_file={path}", f"task.validation_file={path}",
                             *overrides))


def test_a_one_megabyte_field_is_read_and_cut_by_tokens(tmp_path, tiny_backbone):
    _, tok = tiny_backbone
    path = tmp_path / "big.csv"
    path.write_text("a,label\n" + '"' + "word " * 220_000 + '",1\nshort,0\n')
    assert path.stat().st_size > 1_000_000
    cfg = TaskConfig(name="csv", train_file=str(path), validation_file=str(path), text_columns=["a"])
    data = tasks.load_split(tasks.get_spec(cfg), cfg, "train", None, 0)
    assert len(data["text"][0][0]) > 1_000_000 and data["label"] == [1, 0]
    assert len(Tokenize(tok, 32)(data["text"])["input_ids"][0]) == 32


def test_blank_and_null_texts_are_counted_in_one_warning(tmp_path, caplog):
    """Chosen: blank texts are read (as empty inputs), with one warning line counting them."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": "x", "label": 1}\n{"a": null, "label": 0}\n{"a": "  ", "label": 0}\n'
                    '{"a": "y", "label": 1}\n')
    cfg = TaskConfig(name="csv", train_file=str(path), validation_file=str(path), text_columns=["a"])
    with caplog.at_level("WARNING", logger="idspam.tasks"):
        data = tasks.load_split(tasks.get_spec(cfg), cfg, "train", None, 0)
    assert data["text"] == [("x",), ("",), ("  ",), ("y",)]  # JSON null is an empty text, not "None"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 of 4 rows have a blank or null text (column(s) ['a'])" in warnings[0]


def test_jsonl_errors_name_the_files_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": "x", "label": 1}\n\n{"a": "y", "label": 0}\n{"a": "z" "label": 1}\n')
    cfg = TaskConfig(name="csv", train_file=str(path), validation_file=str(path), text_columns=["a"],
                     label_names=["0", "1"])
    with pytest.raises(UserError, match=r"t.jsonl:4: not valid JSON \(Expecting ',' delimiter, column 11\)"):
        tasks.load_split(tasks.get_spec(cfg), cfg, "train", None, 0)
