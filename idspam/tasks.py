"""Tasks: what each one reads (hub data set or local files), its label names, metrics and MLM template.

Every loader returns the same shape: {"text": [(s1,) or (s1, s2), ...], "label": [int or float, ...]}
per split. Local GLUE files are read in the original `glue_data` layout (tab-separated, quoting off).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import random
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .config import TaskConfig
from .errors import UserError
from .hub import load_with_hub_fallback, offline_mode

NLI = "{s1} ? {mask} , {s2}"  # LPT's template for RTE/MNLI/QNLI/MRPC
TEXT_METRICS = ("chrf", "exact_match")  # on generated text (head=generate); metrics.TextMetrics
log = logging.getLogger(__name__)
HELDOUT = "heldout"  # task.heldout_samples: a validation split carved from the training file


def subsample_limit(task, split: str) -> int | None:
    """How many rows of a split a run reads (None: all): training and evaluation subsamples; the held-out
    split's size is task.heldout_samples itself."""
    return {"train": task.max_train_samples, HELDOUT: None}.get(split, task.max_eval_samples)


def source_split(split: str) -> str:
    """The split whose file a split is read from (the held-out split comes out of the training file)."""
    return "train" if split == HELDOUT else split


@dataclass(frozen=True)
class TaskSpec:
    name: str
    label_names: tuple[str, ...] | None  # None: regression
    metric: str  # the validation metric that picks the best epoch
    hub: tuple[str, str] | None = None  # (data set, config) on the Hugging Face hub
    hub_text: tuple[str, ...] = ()  # text columns of the hub data set
    eval_splits: tuple[str, ...] = ("validation",)
    local_dir: str | None = None  # folder under data_dir
    # split -> candidate file names (first that exists wins)
    local_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    local_text: tuple[str | int, ...] = ()  # header names, or column indices when header=False
    local_label: str | int = "label"
    header: bool = True
    template: str | None = None
    label_words: tuple[str, ...] | None = None
    collection: str | None = None  # data_dir may be the folder above: data_dir/<collection>/<local_dir>
    reader: str | None = None  # records.py converter for structured records (copa, multirc, wic, wsc)
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> the hub data set's split
    # What each label index means, for transfer between tasks (default: the label names)
    label_meaning: tuple[str, ...] | None = None
    text_to_text: bool = False  # task=csv_text: the answer is text (no labels), read with head=generate

    @property
    def meaning(self) -> tuple[str, ...] | None:
        return self.label_meaning or self.label_names

    @property
    def grouped(self) -> str | None:
        """choice: the prediction is the best-scoring example of a group (COPA); multirc: per-question EM."""
        return {"copa": "choice", "multirc": "multirc"}.get(self.reader)

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def table_split(self) -> str:
        """The split the paper's tables report (the first evaluation split that is not the held-out one)."""
        return next(s for s in self.eval_splits if s != HELDOUT)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None and not self.text_to_text

    @property
    def metric_names(self) -> tuple[str, ...]:
        """What `TaskMetrics` reports for this task (any of them can pick the best epoch)."""
        if self.text_to_text:
            return TEXT_METRICS
        if self.is_regression:
            return ("pearson", "spearman", "corr", "mse")
        if self.grouped == "choice":
            return ("accuracy",)
        if self.grouped == "multirc":
            return ("f1a", "em", "accuracy")
        return ("accuracy", "macro_f1", "acc_f1", "mcc") + (("f1",) if self.num_labels == 2 else ())


def _glue(name, labels, metric, hub_text, local_dir, local_text, local_label="label", **kw) -> TaskSpec:
    files = kw.pop("local_files", {"train": ("train.tsv",), "validation": ("dev.tsv",)})
    return TaskSpec(
        name=name, label_names=labels, metric=metric, hub=("nyu-mll/glue", name), hub_text=hub_text,
        local_dir=local_dir, local_files=files, local_text=local_text, local_label=local_label,
        collection="glue_data", **kw,
    )


def _superglue(name, config, labels, metric, local_dir, text=(), reader=None, **kw) -> TaskSpec:
    """SuperGLUE: hub `aps/super_glue`, or the original jsonl layout (<local_dir>/{train,val}.jsonl)."""
    return TaskSpec(
        name=name, label_names=labels, metric=metric, hub=("aps/super_glue", config), hub_text=text,
        local_dir=local_dir, local_files={"train": ("train.jsonl",), "validation": ("val.jsonl",)},
        local_text=text, collection="superglue", reader=reader, **kw,
    )


BOOL = ("False", "True")
PARAPHRASE = ("not_paraphrase", "paraphrase")  # MRPC and QQP labels mean the same: transfer between them


SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        _glue("rte", ("entailment", "not_entailment"), "accuracy", ("sentence1", "sentence2"), "RTE",
              ("sentence1", "sentence2"), template=NLI, label_words=("Yes", "No")),
        _glue("mrpc", ("not_equivalent", "equivalent"), "acc_f1", ("sentence1", "sentence2"), "MRPC",
              ("#1 String", "#2 String"), "Quality", template=NLI, label_words=("No", "Yes"),
              label_meaning=PARAPHRASE),
        _glue("sst2", ("negative", "positive"), "accuracy", ("sentence",), "SST-2", ("sentence",),
              template="{s1} . It was {mask} .", label_words=("terrible", "great")),
        _glue("qnli", ("entailment", "not_entailment"), "accuracy", ("question", "sentence"), "QNLI",
              ("question", "sentence"), template=NLI, label_words=("Yes", "No")),
        _glue("qqp", ("not_duplicate", "duplicate"), "acc_f1", ("question1", "question2"), "QQP",
              ("question1", "question2"), "is_duplicate", template="{s1} {mask} , {s2}", label_words=("No", "Yes"),
              label_meaning=PARAPHRASE),
        _glue("mnli", ("entailment", "neutral", "contradiction"), "accuracy", ("premise", "hypothesis"), "MNLI",
              ("sentence1", "sentence2"), "gold_label", template=NLI, label_words=("Yes", "Maybe", "No"),
              eval_splits=("validation_matched", "validation_mismatched"),
              local_files={"train": ("train.tsv",),
                           "validation_matched": ("dev_matched.tsv", "dev_matched.slim.tsv"),
                           "validation_mismatched": ("dev_mismatched.tsv",)}),
        _glue("cola", ("unacceptable", "acceptable"), "mcc", ("sentence",), "CoLA", (3,), 1, header=False,
              template="{s1} This is {mask} .", label_words=("wrong", "correct")),
        _glue("stsb", None, "pearson", ("sentence1", "sentence2"), "STS-B", ("sentence1", "sentence2"), "score"),
        _glue("wnli", ("not_entailment", "entailment"), "accuracy", ("sentence1", "sentence2"), "WNLI",
              ("sentence1", "sentence2"), template=NLI, label_words=("No", "Yes")),
        _superglue("cb", "cb", ("entailment", "contradiction", "neutral"), "accuracy", "CB", ("premise", "hypothesis"),
                   template=NLI, label_words=("Yes", "No", "Maybe")),
        _superglue("rte_sg", "rte", ("entailment", "not_entailment"), "accuracy", "RTE", ("premise", "hypothesis"),
                   template=NLI, label_words=("Yes", "No")),
        _superglue("boolq", "boolq", BOOL, "accuracy", "BoolQ", ("question", "passage"),
                   template="{s2} . Question: {s1} ? Answer: {mask} .", label_words=("No", "Yes")),
        _superglue("wic", "wic", BOOL, "accuracy", "WiC", reader="wic", template="{s1} ? {mask} , {s2}",
                   label_words=("No", "Yes")),
        _superglue("wsc", "wsc.fixed", BOOL, "accuracy", "WSC", reader="wsc", template="{s1} ? {mask} , {s2}",
                   label_words=("No", "Yes")),
        _superglue("copa", "copa", ("wrong", "right"), "accuracy", "COPA", reader="copa",
                   template="{s1} {mask} , {s2}", label_words=("No", "Yes")),
        _superglue("multirc", "multirc", BOOL, "f1a", "MultiRC", reader="multirc",
                   template="{s1} Question and answer: {s2} ? {mask} .", label_words=("No", "Yes")),
        TaskSpec(name="imdb", label_names=("negative", "positive"), metric="accuracy",
                 hub=("stanfordnlp/imdb", None), hub_text=("text",), hub_splits={"validation": "test"},
                 local_dir="imdb", local_files={"train": ("train.tsv",), "validation": ("test.tsv",)},
                 local_text=("sentence",), template="{s1} . It was {mask} .", label_words=("terrible", "great")),
        TaskSpec(name="demo", label_names=("negative", "positive"), metric="accuracy",
                 local_files={"train": ("demo_sentiment_train.csv",), "validation": ("demo_sentiment_dev.csv",)},
                 local_text=("sentence",), template="{s1} It was {mask} .", label_words=("terrible", "great")),
    ]
}
TASK_NAMES = [*SPECS, "csv", "csv_text"]


def get_spec(task: TaskConfig) -> TaskSpec:
    if task.name == "csv_text":
        return TaskSpec(
            name="csv_text", label_names=None, metric=task.metric or "chrf", text_to_text=True,
            local_text=(task.input_column,), local_label=task.target_column,
            local_files={"train": (task.train_file,), "validation": (task.validation_file,)},
        )
    if task.name != "csv":
        spec = SPECS[task.name]
        spec = spec if task.metric is None else TaskSpec(**{**spec.__dict__, "metric": task.metric})
        return with_heldout(spec, task)
    if not task.text_columns or len(task.text_columns) > 2:
        raise UserError(f"task=csv needs task.text_columns with one or two column names; got {task.text_columns}")
    if task.regression:
        labels = None
    else:
        labels = tuple(task.label_names) if task.label_names else _labels_from_file(task)
    return with_heldout(TaskSpec(
        name="csv", label_names=labels, metric=task.metric or ("accuracy" if labels else "pearson"),
        local_text=tuple(task.text_columns), local_label=task.label_column,
        local_files={"train": (task.train_file,), "validation": (task.validation_file,)},
        template=task.template, label_words=tuple(task.label_words) if task.label_words else None,
    ), task)


def with_heldout(spec: TaskSpec, task: TaskConfig) -> TaskSpec:
    """With task.heldout_samples the held-out split is evaluated first (it picks the best epoch); the task's
    own evaluation splits follow and are reported at that epoch."""
    if not task.heldout_samples:
        return spec
    return TaskSpec(**{**spec.__dict__, "eval_splits": (HELDOUT, *spec.eval_splits)})


def carve_heldout(data: dict[str, list], size: int, seed: int, held: bool) -> dict[str, list]:
    """The held-out rows of the training set (`held`) or the rest: `size` rows (or, for COPA/MultiRC, `size`
    questions with all their rows) drawn with `seed` alone, so every method and every run seed of a task
    carves the same split, and its rows never reach training."""
    keys = data["group"] if "group" in data else list(range(len(data["label"])))
    units = sorted(set(keys))
    if size >= len(units):
        raise UserError(f"task.heldout_samples={size} leaves no training data ({len(units)} in the training set)")
    chosen = set(random.Random(seed).sample(units, size))
    keep = [i for i, k in enumerate(keys) if (k in chosen) == held]
    return {k: [v[i] for i in keep] for k, v in data.items()}


def mlm_verbalizer(spec: TaskSpec, task: TaskConfig) -> tuple[str, tuple[str, ...]]:
    """The template and label words `head=mlm` reads the task through."""
    if spec.is_regression:
        raise UserError(f"head=mlm is for classification; task {spec.name!r} is a regression task (use head=cls)")
    template = task.template or spec.template
    words = tuple(task.label_words) if task.label_words else spec.label_words
    if not template or not words:
        raise UserError(f"head=mlm needs task.template and task.label_words for task {spec.name!r}")
    if "{mask}" not in template or "{s1}" not in template:
        raise UserError(f"task.template {template!r} must contain {{s1}} and {{mask}}")
    if len(words) != spec.num_labels:
        raise UserError(f"task.label_words has {len(words)} words for {spec.num_labels} labels {spec.label_names}")
    return template, words


# ---------------------------------------------------------------- files


def _local_path(spec: TaskSpec, task: TaskConfig, split: str, data_dir: str | None) -> Path:
    """The file a split is read from, or a UserError naming what is missing and what exists."""
    split = source_split(split)
    candidates = spec.local_files[split]
    if spec.name == "demo":
        return Path(str(resources.files("idspam") / "resources" / candidates[0]))
    if spec.name in ("csv", "csv_text"):
        if not candidates[0]:
            raise UserError(f"task={spec.name} needs task.{split}_file (a .csv, .tsv or .jsonl file)")
        return user_file(candidates[0], f"task.{split}_file")
    root = Path(data_dir).expanduser()
    folders = [root / spec.local_dir] + ([root / spec.collection / spec.local_dir] if spec.collection else [])
    for folder in folders:
        for name in candidates:
            if (folder / name).is_file():
                return folder / name
    folder = folders[0]
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise UserError(
        f"missing data file {str(folder / candidates[0])!r} for task {spec.name!r} ({split}); "
        f"expected one of {list(candidates)} in {str(folder)!r}"
        + (f", which holds {present}" if present else
           f" (no such folder; data_dir={data_dir!r} should hold {spec.local_dir}/"
           + (f" or {spec.collection}/{spec.local_dir}/)" if spec.collection else ")"))
    )


def user_file(name: str, key: str) -> Path:
    """A data file the user named: one line for a path that does not exist or is a folder."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise UserError(f"data file {str(path)!r} ({key}) is a directory; give the .csv, .tsv or .jsonl file in it")
    if not path.is_file():
        raise UserError(f"missing data file {str(path)!r} ({key}): no such file")
    return path


def check_columns(spec: TaskSpec, task: TaskConfig, split: str) -> None:
    """task=csv / csv_text: the file's header (or first record) holds the columns the task reads, checked
    before any weights load (one line naming the missing column and the columns the file has)."""
    path = _local_path(spec, task, split, None)
    need = [*spec.local_text, spec.local_label]  # every split a run reads is labelled
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), None)
        try:
            record = json.loads(first) if first is not None else None
        except json.JSONDecodeError:
            return  # reported with its line when the file is read
        columns = sorted(record) if isinstance(record, dict) else None
        what = "the first record has"
    else:
        rows = _table_rows(path)
        try:
            head = list(itertools.islice(rows, 2))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"cannot read data file {str(path)!r}: {e}") from None
        finally:
            rows.close()
        columns, what = (head[0] if head else None), "the header has"
        if len(head) == 1:
            raise UserError(f"data file {str(path)!r} (task.{source_split(split)}_file) has no data rows, "
                            "only its header")
    if columns is None:
        raise UserError(f"data file {str(path)!r} (task.{source_split(split)}_file) is empty")
    missing = [c for c in need if c not in columns]
    if missing:
        keys = ("task.input_column / task.target_column" if spec.text_to_text
                else "task.text_columns / task.label_column")
        raise UserError(f"{path}: no column(s) {missing} ({keys}); {what} {list(columns)}")


def check_files(spec: TaskSpec, task: TaskConfig, data_dir: str | None, splits: tuple[str, ...] | None = None) -> None:
    """Fail early on a missing file of `splits` (default: train and the eval splits); local sources
    only, hub sources are checked when loaded."""
    if spec.hub is None or data_dir:
        if spec.hub is not None and not Path(data_dir).expanduser().is_dir():
            raise UserError(f"data_dir={data_dir!r} is not a folder")
        for split in splits or ("train", *spec.eval_splits):
            _local_path(spec, task, split, data_dir)
            if spec.name in ("csv", "csv_text"):
                check_columns(spec, task, split)


def _field_limit() -> None:
    """No limit on a CSV field's size (the csv module's default is 128 KiB; long documents are normal input and
    are cut by tokens like any long input)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than sys.maxsize
            limit //= 2


def _table_rows(path: Path):
    """The rows of a .csv (standard quoting) or .tsv (tab-separated, quoting off: GLUE TSVs hold literal quotes)."""
    _field_limit()
    with path.open(encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".csv":
            yield from csv.reader(f)
        else:
            yield from (line.rstrip("\r\n").split("\t") for line in f if line.strip())


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:  # the file's line, not the line inside the record
                raise UserError(f"{path}:{number}: not valid JSON ({e.msg}, column {e.colno})") from None
    return records


def _read_table(path: Path) -> list[list[str]] | list[dict]:
    if path.is_dir():
        raise UserError(f"data file {str(path)!r} is a directory; give the .csv, .tsv or .jsonl file in it")
    try:
        if path.suffix.lower() == ".jsonl":
            return _read_jsonl(path)
        return list(_table_rows(path))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read data file {str(path)!r}: {e}") from None


def _text(value) -> str:
    """A text field: JSON null is an empty text, not the string 'None'."""
    return "" if value is None else str(value)


def warn_blank(path, texts: list[tuple[str, ...]], columns) -> None:
    """Rows whose text is blank or null train as empty inputs: counted and named in one warning line."""
    blank = sum(1 for t in texts if any(not s.strip() for s in t))
    if blank:
        log.warning("%s: %d of %d rows have a blank or null text (column(s) %s); they are read as empty text",
                    path, blank, len(texts), list(columns))


def _parse_label(raw, spec: TaskSpec, path: Path, line: int):
    if spec.is_regression:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{path}:{line}: label {raw!r} is not a number") from None
    text = str(raw).strip()
    if text in spec.label_names:
        return spec.label_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < spec.num_labels:
        return int(text)
    raise UserError(f"{path}:{line}: label {text!r} is not in the label set {list(spec.label_names)} "
                    f"of task {spec.name!r}")


def _read_examples(spec: TaskSpec, path: Path, need_labels: bool) -> tuple[list[tuple[str, ...]], list | None]:
    """Texts (the task's text columns) and labels of a local file; labels may be absent unless needed."""
    rows = _read_table(path)
    if not rows:
        raise UserError(f"data file {str(path)!r} is empty")
    texts, labels = [], []
    if spec.reader:  # structured records (COPA, MultiRC, WiC, WSC)
        if not isinstance(rows[0], dict):
            raise UserError(f"{path}: task {spec.name!r} reads jsonl records (the original SuperGLUE layout)")
        return _from_records(spec, rows, str(path), need_labels)
    if isinstance(rows[0], dict):  # jsonl
        for i, row in enumerate(rows, start=1):
            missing = [c for c in (*spec.local_text, *([spec.local_label] if need_labels else [])) if c not in row]
            if missing:
                raise UserError(f"{path}:{i}: missing column(s) {missing}; the record has {sorted(row)}")
            texts.append(tuple(_text(row[c]) for c in spec.local_text))
            if spec.local_label in row:
                labels.append(_parse_label(row[spec.local_label], spec, path, i))
        warn_blank(path, texts, spec.local_text)
        return texts, labels if len(labels) == len(texts) else None
    if spec.header:
        header, body, first = rows[0], rows[1:], 2
        missing = [c for c in (*spec.local_text, *([spec.local_label] if need_labels else [])) if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing}; the header has {header}")
        index = [header.index(c) for c in spec.local_text]
        label = header.index(spec.local_label) if spec.local_label in header else None
    else:
        body, first, index, label = rows, 1, list(spec.local_text), spec.local_label
    if not body:
        raise UserError(f"data file {str(path)!r} has no data rows")
    needed = max(index + [label]) if need_labels else max(index)
    for i, row in enumerate(body, start=first):
        if len(row) <= needed:
            raise UserError(f"{path}:{i}: expected at least {needed + 1} fields, found {len(row)}")
        texts.append(tuple(row[j] for j in index))
        if label is not None and len(row) > label:
            labels.append(_parse_label(row[label], spec, path, i))
    warn_blank(path, texts, spec.local_text)
    return texts, labels if len(labels) == len(texts) else None


def _from_records(spec: TaskSpec, records: list[dict], source: str, need_labels: bool):
    from .records import expand

    try:
        texts, raw, groups, origin = expand(spec.reader, records)
    except (KeyError, TypeError) as e:
        raise UserError(f"{source}: a record lacks the field {e} that task {spec.name!r} reads") from None
    if any(label is None for label in raw):
        if need_labels:
            raise UserError(f"{source}: records without labels (an unlabelled test file?)")
        return texts, None
    labels = [_parse_label(label, spec, source, line) for label, line in zip(raw, origin, strict=True)]
    if groups is not None and need_labels:
        return texts, labels, groups
    return texts, labels


def read_local(spec: TaskSpec, path: Path) -> dict[str, list]:
    """A labelled split from a local file (with `group` ids for COPA and MultiRC)."""
    texts, labels, *groups = _read_examples(spec, path, need_labels=True)
    return {"text": texts, "label": labels, **({"group": groups[0]} if groups else {})}


def read_text_examples(spec: TaskSpec, path: Path, need_targets: bool = True) -> dict[str, list]:
    """task=csv_text: {"text": [(input,)], "target": [str] (absent when the file has none and none are
    needed), "where": ["file:line"]} of a .jsonl, .csv or .tsv file with a header. One line per problem,
    naming file and line."""
    (source,), target = spec.local_text, spec.local_label
    valid = f"set task.input_column / task.target_column (now {source!r}, {target!r})"
    rows = _read_table(path)
    if not rows:
        raise UserError(f"data file {str(path)!r} is empty")
    if isinstance(rows[0], dict):
        records = list(enumerate(rows, start=1))
    else:
        header = rows[0]
        missing = [c for c in (source, *([target] if need_targets else [])) if c not in header]
        if missing:
            raise UserError(f"{path}:1: no column(s) {missing}; the header has {header}: {valid}")
        records = [(i, dict(zip(header, row, strict=False))) for i, row in enumerate(rows[1:], start=2)]
        if not records:
            raise UserError(f"data file {str(path)!r} has no data rows")
    texts, targets, where = [], [], []
    has_targets = need_targets or all(target in r for _, r in records)
    for line, record in records:
        if not isinstance(record, dict):
            raise UserError(f"{path}:{line}: expected a JSON object with columns {source!r} and {target!r}")
        missing = [c for c in (source, *([target] if has_targets else [])) if c not in record]
        if missing:
            raise UserError(f"{path}:{line}: no column(s) {missing}; the record has {sorted(record)}: {valid}")
        value = record[source]
        texts.append(("" if value is None else str(value),))
        where.append(f"{path}:{line}")
        if has_targets:
            value = record[target]
            value = "" if value is None else str(value)
            if not value.strip():
                raise UserError(f"{path}:{line}: empty target (column {target!r}); every example needs one")
            targets.append(value)
    warn_blank(path, texts, (source,))
    return {"text": texts, **({"target": targets} if has_targets else {}), "where": where}


def read_inputs(spec: TaskSpec, path: Path) -> tuple[list[tuple[str, ...]], list | None]:
    """Texts to predict on, in the task's own file layout; their labels (task=csv_text: targets) when the file
    has them."""
    if spec.text_to_text:
        rows = read_text_examples(spec, path, need_targets=False)
        return rows["text"], rows.get("target")
    return _read_examples(spec, path, need_labels=False)


def _labels_from_file(task: TaskConfig) -> tuple[str, ...]:
    """task=csv without task.label_names: the sorted distinct labels of the training file."""
    if not task.train_file:
        raise UserError("task=csv needs task.train_file (a .csv, .tsv or .jsonl file)")
    path = user_file(task.train_file, "task.train_file")
    rows = _read_table(path)
    if not rows:
        raise UserError(f"data file {str(path)!r} (task.train_file) is empty")
    if isinstance(rows[0], dict):
        missing = [i for i, r in enumerate(rows, start=1) if task.label_column not in r]
        if missing:
            raise UserError(f"{path}: record {missing[0]} has no label column {task.label_column!r} "
                            f"(task.label_column); it has {sorted(rows[missing[0] - 1])}")
        values = {str(r[task.label_column]) for r in rows}
    else:
        if task.label_column not in rows[0]:
            raise UserError(f"{path}: no label column {task.label_column!r} (task.label_column); "
                            f"the header has {rows[0]}")
        if len(rows) < 2:
            raise UserError(f"data file {str(path)!r} (task.train_file) has no data rows, only its header")
        j = rows[0].index(task.label_column)
        values = {r[j] for r in rows[1:] if len(r) > j}
    return tuple(sorted(values))


# ---------------------------------------------------------------- hub


def _read_hub(spec: TaskSpec, split: str) -> dict[str, list]:
    import datasets

    path, name = spec.hub
    files = ", ".join(f"{spec.local_dir}/{f[0]}" for f in spec.local_files.values())
    layout = {"glue_data": "the original GLUE layout", "superglue": "the original SuperGLUE jsonl layout"}
    hint = (f"Point the run at local files in {layout.get(spec.collection, 'the layout shown')}: "
            f"data_dir=/path/to/{spec.collection or 'data'} (this task reads {files}); "
            "HF_HUB_OFFLINE=1 uses a copy already in the local cache.")

    def load():
        return datasets.load_dataset(path, name, split=spec.hub_splits.get(source_split(split), source_split(split)))

    try:
        ds = load_with_hub_fallback(f"data set {path!r} ({name}, {split})", load if offline_mode() else None, load,
                                    hint)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load data set {path!r} ({name}, {split}): {e}. {hint}") from None
    if spec.reader:
        texts, labels, *groups = _from_records(spec, ds.to_list(), f"{path}/{name} ({split})", need_labels=True)
        return {"text": texts, "label": labels, **({"group": groups[0]} if groups else {})}
    return {"text": list(zip(*(ds[c] for c in spec.hub_text), strict=True)), "label": list(ds["label"])}


def load_split(spec: TaskSpec, task: TaskConfig, split: str, data_dir: str | None, seed: int) -> dict[str, list]:
    """Rows of one split, subsampled with the seed when the task config asks for it."""
    if spec.text_to_text:
        data = read_text_examples(spec, _local_path(spec, task, split, data_dir))
        data["label"] = [-1] * len(data["text"])  # no class: the target is the answer
    elif spec.hub is not None and not data_dir:
        data = _read_hub(spec, split)
    else:
        data = read_local(spec, _local_path(spec, task, split, data_dir))
    if task.heldout_samples and source_split(split) == "train":
        data = carve_heldout(data, task.heldout_samples, task.heldout_seed, held=split == HELDOUT)
    limit = subsample_limit(task, split)
    if "group" in data:  # COPA, MultiRC: the limit counts questions, which keep all their examples
        groups = sorted(set(data["group"]))
        if limit is not None and limit < len(groups):
            chosen = set(random.Random(seed).sample(groups, limit))
            keep = [i for i, g in enumerate(data["group"]) if g in chosen]
            data = {k: [v[i] for i in keep] for k, v in data.items()}
    elif limit is not None and limit < len(data["label"]):
        keep = sorted(random.Random(seed).sample(range(len(data["label"])), limit))
        data = {k: [v[i] for i in keep] for k, v in data.items()}
    return data


def source_fingerprint(spec: TaskSpec, task: TaskConfig, split: str, data_dir: str | None) -> str:
    """What identifies a split's raw data, for the tokenisation cache key."""
    if spec.hub is not None and not data_dir:
        return f"hub:{spec.hub[0]}/{spec.hub[1]}/{source_split(split)}"
    path = _local_path(spec, task, split, data_dir)
    st = path.stat()
    return f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
