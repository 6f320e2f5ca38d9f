"""Local GLUE files load with the official row counts; bad files get a message naming file, line and value;
tokenisation is cached and templates keep their <mask>."""

from pathlib import Path

import pytest

from idspam import tasks
from idspam.config import TaskConfig
from idspam.errors import UserError
from idspam.runner.data import tokenized_split
from idspam.text import Collate, Tokenize, label_word_ids

from .conftest import GLUE_DIR, needs_glue

COUNTS = {  # (split, rows, label counts) as listed in ../shared/data/README.md
    "rte": [("train", 2490, {0: 1249, 1: 1241}), ("validation", 277, {0: 146, 1: 131})],
    "mrpc": [("train", 3668, {1: 2474, 0: 1194}), ("validation", 408, {1: 279, 0: 129})],
    "sst2": [("train", 67349, {1: 37569, 0: 29780}), ("validation", 872, {1: 444, 0: 428})],
    "cola": [("train", 8551, {1: 6023, 0: 2528}), ("validation", 1043, {1: 721, 0: 322})],
    "wnli": [("train", 635, {1: 312, 0: 323}), ("validation", 71, {0: 40, 1: 31})],
    "qnli": [("validation", 5463, {0: 2702, 1: 2761})],
    "mnli": [("validation_matched", 9815, {0: 3479, 2: 3213, 1: 3123})],
    "stsb": [("train", 5749, None), ("validation", 1500, None)],
}


@needs_glue
@pytest.mark.parametrize("name", COUNTS)
def test_glue_files_load_with_official_counts(name):
    spec = tasks.SPECS[name]
    for split, rows, labels in COUNTS[name]:
        data = tasks.load_split(spec, TaskConfig(name=name), split, str(GLUE_DIR), seed=0)
        assert len(data["label"]) == len(data["text"]) == rows
        assert all(len(t) == len(spec.local_text) and all(isinstance(s, str) and s for s in t) for t in data["text"])
        if labels is None:
            assert all(0.0 <= v <= 5.0 for v in data["label"])
        else:
            assert {k: data["label"].count(k) for k in set(data["label"])} == labels


@needs_glue
def test_tsv_quotes_are_literal():
    data = tasks.load_split(tasks.SPECS["mrpc"], TaskConfig(name="mrpc"), "validation", str(GLUE_DIR), 0)
    assert data["text"][0][1].startswith('" The foodservice pie business')


def test_subsample_is_seeded_and_sized():
    spec, cfg = tasks.SPECS["demo"], TaskConfig(name="demo", max_train_samples=50)
    a = tasks.load_split(spec, cfg, "train", None, seed=1)
    assert len(a["label"]) == 50
    assert a == tasks.load_split(spec, cfg, "train", None, seed=1)
    assert a != tasks.load_split(spec, cfg, "train", None, seed=2)


def test_demo_data_is_balanced_and_labelled():
    spec = tasks.SPECS["demo"]
    for split, rows in (("train", 400), ("validation", 118)):
        data = tasks.load_split(spec, TaskConfig(), split, None, 0)
        assert len(data["label"]) == rows and set(data["label"]) == {0, 1}
        assert abs(sum(data["label"]) - rows / 2) <= 2


def write_rte(folder: Path, dev_body: str) -> None:
    (folder / "RTE").mkdir(parents=True)
    header = "index\tsentence1\tsentence2\tlabel\n"
    (folder / "RTE" / "train.tsv").write_text(header + "0\ta\tb\tentailment\n")
    (folder / "RTE" / "dev.tsv").write_text(dev_body)


@pytest.mark.parametrize("body,message", [
    ("", r"data file '.*dev.tsv' is empty"),
    ("index\tsentence1\tsentence2\tlabel\n", "has no data rows"),
    ("index\tsentence1\tlabel\n0\ta\tentailment\n", r"missing column\(s\) \['sentence2'\]; the header has"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n",
     r"dev.tsv:3: label 'maybe' is not in the label set \['entailment', 'not_entailment'\] of task 'rte'"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\n", r"dev.tsv:2: expected at least 4 fields, found 2"),
])
def test_bad_files_are_reported_with_file_line_and_value(tmp_path, body, message):
    write_rte(tmp_path, body)
    with pytest.raises(UserError, match=message):
        tasks.load_split(tasks.SPECS["rte"], TaskConfig(name="rte"), "validation", str(tmp_path), 0)


def test_csv_task_reads_the_users_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"q": "is it?", "a": "yes", "y": "no"}\n{"q": "x", "a": "y", "y": "yes"}\n')
    cfg = TaskConfig(name="csv", train_file=str(tmp_path / "train.jsonl"),
                     validation_file=str(tmp_path / "train.jsonl"),
                     text_columns=["q", "a"], label_column="y")
    spec = tasks.get_spec(cfg)
    assert spec.label_names == ("no", "yes") and spec.metric == "accuracy"
    data = tasks.load_split(spec, cfg, "train", None, 0)
    assert data == {"text": [("is it?", "yes"), ("x", "y")], "label": [0, 1]}


def test_mlm_template_keeps_one_mask_under_truncation(tiny_backbone):
    _, tok = tiny_backbone
    long = " ".join(["word"] * 400)
    tokenize = Tokenize(tok, 32, tasks.NLI)
    ids = tokenize([(long, "short hypothesis"), ("a premise", "a hypothesis")])["input_ids"]
    assert len(ids[0]) == 32 and all(seq.count(tok.mask_token_id) == 1 for seq in ids)
    assert tok.decode(ids[1]) == f"[CLS] a premise? {tok.mask_token}, a hypothesis [SEP]"
    assert len(label_word_ids(tok, ("Yes", "No"))) == 2
    with pytest.raises(UserError, match="label word 'unbelievablyhappy' is not one token"):
        label_word_ids(tok, ("unbelievablyhappy",))


def test_collate_pads_to_the_longest_in_the_batch():
    batch = Collate(pad_token_id=0, regression=False)([{"input_ids": [5, 6, 7], "labels": 1},
                                                       {"input_ids": [5], "labels": 0}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_tokenisation_is_cached_and_keyed(compose_cfg, tiny_backbone, monkeypatch, tmp_path):
    from idspam.runner.checks import validate

    _, tok = tiny_backbone
    run = validate(compose_cfg("model=tiny", f"cache_dir={tmp_path / 'cache'}"))
    spec = tasks.get_spec(run.task)
    first = tokenized_split(run, spec, "validation", Tokenize(tok, 64))
    monkeypatch.setattr("idspam.runner.data.load_split", lambda *a: pytest.fail("cache miss: data read again"))
    again = tokenized_split(run, spec, "validation", Tokenize(tok, 64))
    assert again["input_ids"] == first["input_ids"]
    with pytest.raises(pytest.fail.Exception):  # another max_length is another cache entry
        tokenized_split(run, spec, "validation", Tokenize(tok, 16))


def test_hub_data_path_maps_the_glue_schema(monkeypatch):
    """With the hub reachable, GLUE comes from `nyu-mll/glue` with its own column names (stubbed here)."""
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0],
                                           "idx": [0, 1]})

    monkeypatch.setattr("idspam.tasks.offline_mode", lambda: False)
    monkeypatch.setattr("idspam.hub.offline_mode", lambda: False)
    monkeypatch.setattr("idspam.hub.hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = tasks.load_split(tasks.SPECS["mnli"], TaskConfig(name="mnli"), "validation_mismatched", None, 0)
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert data == {"text": [("p1", "h1"), ("p2", "h2")], "label": [2, 0]}


def stub_hub(monkeypatch, rows):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr("idspam.tasks.offline_mode", lambda: False)
    monkeypatch.setattr("idspam.hub.offline_mode", lambda: False)
    monkeypatch.setattr("idspam.hub.hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_hub_superglue_and_imdb_map_their_schemas(monkeypatch):
    calls = stub_hub(monkeypatch, [
        {"premise": "It rained.", "choice1": "The grass got wet.", "choice2": "The sun shone.", "question": "effect",
         "label": 0, "idx": 0}])
    data = tasks.load_split(tasks.SPECS["copa"], TaskConfig(name="copa"), "validation", None, 0)
    assert calls == [("aps/super_glue", "copa", "validation")]
    assert data == {"text": [("It rained.", "so the grass got wet."), ("It rained.", "so the sun shone.")],
                    "label": [1, 0], "group": [0, 0]}
    calls = stub_hub(monkeypatch, [{"text": "a fine film", "label": 1}])
    data = tasks.load_split(tasks.SPECS["imdb"], TaskConfig(name="imdb"), "validation", None, 0)
    assert calls == [("stanfordnlp/imdb", None, "test")]  # IMDB evaluates on its test split
    assert data == {"text": [("a fine film",)], "label": [1]}
