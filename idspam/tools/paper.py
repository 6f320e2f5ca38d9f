"""The numbers the ID-SPAM paper reports (PAPER.md), keyed as the report groups our results.

`PAPER[(model, method, column)]` is a score in percent (mean of 3 runs in the paper) or, for the
column "parameters", a parameter count. Columns are task names ("rte"), zero-shot transfer pairs
("sst2->imdb") and few-shot transfer pairs ("mrpc->qqp few-shot").
"""

from __future__ import annotations

GLUE_TASKS = ("mnli", "qnli", "sst2", "mrpc", "rte", "qqp")
SUPERGLUE_TASKS = ("cb", "copa", "multirc", "boolq")
ZERO_SHOT_PAIRS = ("qqp->mrpc", "mrpc->qqp", "sst2->imdb", "imdb->sst2")
BEST_LAYERS = {"roberta_large": (11, 13)}  # the layer figure: both methods peak here
BEST_LAYERS_OF = 24  # ... out of RoBERTa-large's 24 layers

# Table 2 (GLUE dev), columns as GLUE_TASKS
_GLUE = {
    "roberta_base": {
        "finetune": (87.4, 91.3, 92.3, 92.7, 82.5, 90.9),
        "lora": (88.7, 84.2, 90.4, 79.3, 77.6, 81.8),
        "prompt_tuning": (78.3, 81.4, 89.3, 74.4, 57.9, 77.8),
        "ptuning": (82.0, 82.5, 88.1, 81.9, 67.4, 84.2),
        "smop": (80.7, 82.9, 89.8, 78.1, 71.7, 83.7),
        "lpt": (81.7, 83.2, 91.8, 84.3, 73.6, 84.1),
        "dept": (81.5, 87.9, 90.2, 75.7, 71.2, 79.2),
        "idspam": (83.1, 86.4, 92.7, 82.8, 79.2, 84.6),
    },
    "roberta_large": {
        "finetune": (87.6, 94.7, 95.4, 92.1, 88.4, 90.7),
        "lora": (89.1, 87.9, 95.1, 86.5, 78.7, 88.4),
        "prompt_tuning": (83.4, 88.2, 92.6, 73.9, 60.8, 81.2),
        "ptuning": (86.4, 88.7, 95.8, 76.3, 62.6, 85.2),
        "smop": (86.7, 88.4, 95.8, 79.6, 76.3, 86.7),
        "lpt": (84.2, 86.1, 93.4, 87.3, 74.2, 85.3),
        "dept": (83.3, 88.8, 91.2, 77.7, 73.2, 82.2),
        "idspam": (87.4, 91.1, 94.6, 86.1, 81.1, 88.4),
    },
}
# Tables 4-5 (SuperGLUE), columns as SUPERGLUE_TASKS
_SUPERGLUE = {
    "roberta_base": {
        "prompt_tuning": (75.9, 52.5, 67.2, 63.6), "ptuning": (76.3, 54.7, 67.9, 63.7),
        "smop": (79.9, 57.7, 67.2, 69.7), "lpt": (80.6, 59.2, 70.8, 66.3),
        "dept": (78.6, 52.9, 67.1, 71.4), "idspam": (83.9, 57.8, 72.9, 69.9),
    },
    "roberta_large": {
        "prompt_tuning": (78, 53, 67.2, 63.3), "ptuning": (76, 55, 68.1, 64.0),
        "smop": (81.9, 59, 69.6, 71.1), "lpt": (82, 60, 71.0, 68.0),
        "dept": (79, 54, 69.0, 71.0), "idspam": (85, 60, 73.0, 70.0),
    },
}
# Table 6 (zero-shot transfer, RoBERTa-large), columns as ZERO_SHOT_PAIRS
_ZERO_SHOT = {
    "finetune": (64.0, 68.3, 87.1, 88.8), "lora": (71.1, 66.1, 90.3, 87.6),
    "prompt_tuning": (54.1, 54.6, 68.7, 63.5), "ptuning": (57.6, 52.7, 66.5, 66.8),
    "smop": (67.9, 64.1, 84.5, 83.3), "lpt": (66.7, 64.5, 67.1, 71.1),
    "dept": (63.3, 58.8, 69.8, 69.3), "idspam": (70.9, 69.2, 89.1, 86.0),
}
# Table 11 (few-shot transfer, RoBERTa-large)
_FEW_SHOT = {"finetune": (81.7, 79.7), "lpt": (74.4, 69.4), "idspam": (73.1, 72.5)}
# Table 3 (ablation, RoBERTa-large): mean pooling instead of attention
_MEANPOOL = {"mrpc": 82.3, "rte": 75.2, "qqp": 84.2}
# Table 12 (trainable parameters, no classification head)
TABLE_12 = {
    ("roberta_base", "idspam"): 2_064_384, ("roberta_large", "idspam"): 3_538_944,
    ("roberta_base", "lpt"): 2_162_688, ("roberta_large", "lpt"): 2_883_584,
    ("roberta_base", "lora"): 3_495_312, ("roberta_large", "lora"): 7_931_280,
}
# Table 13 (GPT-2 family), in millions: backbone / ID-SPAM / LoRA
TABLE_13 = {
    "gpt2": (126.8, 2.1, 2.4), "gpt2_medium": (361.1, 3.5, 6.3),
    "gpt2_large": (785.8, 5.1, 11.8), "gpt2_xl": (1577.3, 8.3, 19.7),
}
# GPT-2 on GLUE (LPT vs ID-SPAM), columns as GLUE_TASKS
_GLUE_GPT2 = {"lpt": (69.5, 79.4, 90.1, 81.9, 62.8, 80.3), "idspam": (78.3, 77.1, 85.1, 79.5, 71.6, 82.9)}
# GPT-2 Large, RTE and MRPC
_GPT2_LARGE = {"lora": (74.0, 80.0), "lpt": (69.9, 82.9), "idspam": (73.7, 81.1)}
# SuperGLUE, GPT-2 column, columns as SUPERGLUE_TASKS
_SUPERGLUE_GPT2 = {
    "prompt_tuning": (71.7, 57, 61.7, 64.1), "ptuning": (73.3, 57.7, 63.2, 65.7), "smop": (81.4, 61.2, 68.4, 69.4),
    "lpt": (82.1, 61.3, 72.1, 74.1), "dept": (76.1, 55.1, 73.5, 67.2), "idspam": (88.1, 63.1, 71.7, 72.4),
}


def _build() -> dict[tuple[str, str, str], float]:
    paper: dict[tuple[str, str, str], float] = {}
    for model, rows in _GLUE.items():
        for method, values in rows.items():
            paper.update({(model, method, task): v for task, v in zip(GLUE_TASKS, values, strict=True)})
    for model, rows in _SUPERGLUE.items():
        for method, values in rows.items():
            paper.update({(model, method, task): v for task, v in zip(SUPERGLUE_TASKS, values, strict=True)})
    for method, values in _ZERO_SHOT.items():
        paper.update({("roberta_large", method, pair): v for pair, v in zip(ZERO_SHOT_PAIRS, values, strict=True)})
    for method, (mrpc_qqp, qqp_mrpc) in _FEW_SHOT.items():
        paper[("roberta_large", method, "mrpc->qqp few-shot")] = mrpc_qqp
        paper[("roberta_large", method, "qqp->mrpc few-shot")] = qqp_mrpc
    paper.update({("roberta_large", "idspam_meanpool", task): v for task, v in _MEANPOOL.items()})
    paper.update({(model, method, "parameters"): v for (model, method), v in TABLE_12.items()})
    for method, values in _GLUE_GPT2.items():
        paper.update({("gpt2", method, task): v for task, v in zip(GLUE_TASKS, values, strict=True)})
    for method, values in _SUPERGLUE_GPT2.items():
        paper.update({("gpt2", method, task): v for task, v in zip(SUPERGLUE_TASKS, values, strict=True)})
    for method, (rte, mrpc) in _GPT2_LARGE.items():
        paper[("gpt2_large", method, "rte")], paper[("gpt2_large", method, "mrpc")] = rte, mrpc
    for model, (_, idspam, lora) in TABLE_13.items():
        paper[(model, "idspam", "parameters")] = round(idspam * 1e6)
        paper[(model, "lora", "parameters")] = round(lora * 1e6)
    return paper


PAPER = _build()
