"""SuperGLUE records -> classification examples, for both the original jsonl layout and the hub's
flattened one. Each converter yields (texts, raw label, group) per example:

- COPA: one example per choice, (premise, "because|so <choice>"), label 1 for the right choice;
  the group is the question, and the prediction is the choice with the higher P(right).
- MultiRC: one example per (paragraph, question, answer), (paragraph, "<question> <answer>");
  the group is the question (exact match is per question).
- WiC: ("<word> : <sentence1>", sentence2).  WSC: (text, "<pronoun> refers to <noun>").
"""

from __future__ import annotations

from collections.abc import Iterator

Example = tuple[tuple[str, ...], object, object]


def copa(record: dict) -> Iterator[Example]:
    connector = {"cause": "because", "effect": "so"}[record["question"]]
    for j, choice in enumerate((record["choice1"], record["choice2"])):
        choice = choice[:1].lower() + choice[1:]
        yield (record["premise"], f"{connector} {choice}"), int(int(record["label"]) == j), record["idx"]


def multirc(record: dict) -> Iterator[Example]:
    if "passage" in record:  # original layout: a paragraph with its questions and answers
        paragraph = record["passage"]["text"]
        for question in record["passage"]["questions"]:
            for answer in question["answers"]:
                yield ((paragraph, f"{question['question']} {answer['text']}"), answer["label"],
                       (record["idx"], question["idx"]))
    else:  # hub: one row per answer
        idx = record["idx"]
        yield (record["paragraph"], f"{record['question']} {record['answer']}"), record["label"], \
            (idx["paragraph"], idx["question"])


def wic(record: dict) -> Iterator[Example]:
    yield (f"{record['word']} : {record['sentence1']}", record["sentence2"]), record["label"], None


def wsc(record: dict) -> Iterator[Example]:
    target = record.get("target", record)  # original layout nests the spans under "target"
    yield (record["text"], f"{target['span2_text']} refers to {target['span1_text']}"), record["label"], None


CONVERTERS = {"copa": copa, "multirc": multirc, "wic": wic, "wsc": wsc}


def expand(reader: str, records: list[dict]) -> tuple[list[tuple[str, ...]], list, list[int] | None, list[int]]:
    """(texts, raw labels, group ids (consecutive ints) or None, the record number of each example)."""
    convert = CONVERTERS[reader]
    texts, labels, groups, origin = [], [], [], []
    ids: dict = {}
    for number, record in enumerate(records, start=1):
        for text, label, group in convert(record):
            texts.append(text)
            labels.append(label)
            origin.append(number)
            groups.append(None if group is None else ids.setdefault(group, len(ids)))
    return texts, labels, (groups if ids else None), origin
