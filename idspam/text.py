"""Text in and out of a backbone: tokenisation (plain, through a verbalizer template, or input + target
for text-to-text), batch collation (padded on either side), label words, the EOS, and decoding of
generated tokens. The runner's data module and the library's `load_adapter` both build their inputs here.
"""

from __future__ import annotations

import re

import torch

from .errors import UserError


def decoder_template(template: str) -> str:
    """A verbalizer template for a decoder, which reads the label word as the next token: the text after
    {mask} moves before it, e.g. "{s1} ? {mask} , {s2}" -> "{s1} ? {s2} {mask}"."""
    before, after = template.split("{mask}", 1)
    after = after.strip().strip(".").strip().lstrip(",").strip()
    return f"{before.rstrip()} {after} {{mask}}" if after else f"{before.rstrip()} {{mask}}"


class Tokenize:
    """Text tuples -> input ids. `template` (head=mlm) places the texts around one `<mask>` token; on a
    decoder (head=lm) the template ends where the label word would come (`decoder_template`)."""

    def __init__(self, tokenizer, max_length: int, template: str | None = None, token_types: bool = True,
                 decoder: bool = False):
        """`token_types`: keep the tokenizer's segment ids (only for backbones with more than one type)."""
        self.tok, self.max_length, self.template, self.token_types = tokenizer, max_length, template, token_types
        self.decoder = decoder
        if template is not None and decoder:
            self.template = decoder_template(template)
            self.prefix, self.suffix = self._special_tokens()
            self.suffix = []  # the next token is the label word
        elif template is not None:
            if tokenizer.mask_token_id is None:
                raise UserError(f"head=mlm needs a tokenizer with a mask token; {tokenizer.name_or_path} has none")
            self.prefix, self.suffix = self._special_tokens()

    def key(self) -> dict:
        return {"tokenizer": self.tok.name_or_path, "class": type(self.tok).__name__, "vocab": len(self.tok),
                "max_length": self.max_length, "template": self.template, "token_types": self.token_types,
                "decoder": self.decoder}

    def __call__(self, texts: list[tuple[str, ...]]) -> dict[str, list]:
        if self.template is None:
            columns = list(zip(*texts, strict=True))
            enc = self.tok(*columns, truncation=True, max_length=self.max_length)
            keep = ("input_ids", "token_type_ids") if self.token_types else ("input_ids",)
            return {k: enc[k] for k in keep if k in enc}
        return {"input_ids": [self._fill_template(t) for t in texts]}

    def _fill_template(self, texts: tuple[str, ...]) -> list[int]:
        """Tokenise the template piece by piece, truncating the texts (longest first), never the mask."""
        pieces = [p for p in re.split(r"(\{s1\}|\{s2\}|\{mask\})", self.template) if p.strip()]
        ids: list[list[int]] = []
        slots: list[int] = []  # which pieces hold the input texts (the only ones truncated)
        for k, piece in enumerate(pieces):
            if piece == "{mask}":
                ids.append([] if self.decoder else [self.tok.mask_token_id])
                continue
            slot = {"{s1}": 0, "{s2}": 1}.get(piece)
            text = (texts[slot] if slot is not None else piece).strip()
            text = (" " + text) if k and text else text  # BPE vocabularies mark word starts by a space
            ids.append(self.tok(text, add_special_tokens=False)["input_ids"] if text else [])
            if slot is not None:
                slots.append(k)
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        while sum(map(len, ids)) > budget:
            longest = max(slots, key=lambda s: len(ids[s]))
            if not ids[longest]:
                raise UserError(f"task.max_length={self.max_length} leaves no room for the text in {self.template!r}")
            ids[longest] = ids[longest][:-1]
        return self.prefix + [i for part in ids for i in part] + self.suffix

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a single sequence (e.g. <s> ... </s>)."""
        plain = self.tok("a", add_special_tokens=False)["input_ids"]
        full = self.tok("a")["input_ids"]
        at = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        return full[:at], full[at + len(plain):]


def eos_token_id(tokenizer, eos_token: str | None = None) -> int:
    """The id that ends a target and stops generation: `eos_token` (head.eos_token) if set, else the
    tokenizer's EOS, else its SEP (BERT-style vocabularies: the packaged stand-in)."""
    if eos_token is not None:
        ids = tokenizer(eos_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise UserError(f"head.eos_token={eos_token!r} is not one token for {tokenizer.name_or_path}")
        return ids[0]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise UserError(f"tokenizer {tokenizer.name_or_path} has no EOS (nor SEP) token: set head.eos_token")
    return eos


class TextTokenize:
    """head=generate: (input, target) -> input ids of `input + target + EOS`, `target_start` (where the target
    begins) and `reference` (the target's text as the tokenizer gives it back, what exact match compares).

    The input is wrapped in the tokenizer's chat template when it has one (task.chat_template), else it is plain
    text after the tokenizer's own prefix (e.g. <s>). A classification task is read through its decoder template
    (the one head=lm uses: the text ends where the label word comes) with the label word as the target. Inputs
    are never cut: one longer than fits is an error naming its file and line; targets are cut to
    task.max_target_length tokens, the EOS kept."""

    def __init__(self, tokenizer, task, eos_id: int, template: str | None = None,
                 label_words: tuple[str, ...] | None = None, max_positions: int | None = None,
                 model_name: str = "the model"):
        self.tok, self.eos_id, self.label_words = tokenizer, eos_id, label_words
        self.max_length, self.max_target_length = task.max_length, task.max_target_length
        self.chat = bool(task.chat_template and getattr(tokenizer, "chat_template", None))
        self.max_positions, self.model_name = max_positions, model_name
        self.budget = task.max_length
        if max_positions:
            self.budget = min(self.budget, max_positions - task.max_target_length)
        self.classes = Tokenize(tokenizer, task.max_length, template, False, decoder=True) if template else None
        self.prefix = [] if self.chat else Tokenize(tokenizer, task.max_length)._special_tokens()[0]

    def key(self) -> dict:
        return {"tokenizer": self.tok.name_or_path, "class": type(self.tok).__name__, "vocab": len(self.tok),
                "max_length": self.max_length, "max_target_length": self.max_target_length, "eos": self.eos_id,
                "chat": self.tok.chat_template if self.chat else None, "budget": self.budget,
                "template": self.classes.template if self.classes else None, "words": self.label_words,
                "text_to_text": 2}

    def encode_input(self, text: tuple[str, ...], where: str | None = None) -> list[int]:
        if self.classes is not None:
            return self.classes._fill_template(text)
        if self.chat:
            prompt = self.tok.apply_chat_template([{"role": "user", "content": text[0]}], tokenize=False,
                                                  add_generation_prompt=True)
            ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = self.prefix + self.tok(text[0], add_special_tokens=False)["input_ids"]
        if len(ids) > self.budget:
            room = (f"; model {self.model_name!r} has {self.max_positions} positions, task.max_target_length="
                    f"{self.max_target_length} of them kept for the target" if self.max_positions else "")
            raise UserError(f"{where or 'input'}: the input is {len(ids)} tokens; at most {self.budget} fit "
                            f"(task.max_length={self.max_length}{room})")
        return ids

    def encode_target(self, target: str) -> list[int]:
        text = target.strip() if self.chat else " " + target.strip()  # a word start after the input
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return ids[:self.max_target_length - 1] + [self.eos_id]

    def targets_of(self, rows: dict) -> list[str]:
        if "target" in rows:
            return rows["target"]
        return [self.label_words[label] for label in rows["label"]]  # classification read as label words

    def encode_rows(self, rows: dict) -> dict[str, list]:
        where = rows.get("where") or [None] * len(rows["text"])
        out = {"input_ids": [], "target_start": [], "reference": []}
        for text, target, at in zip(rows["text"], self.targets_of(rows), where, strict=True):
            source, answer = self.encode_input(tuple(text), at), self.encode_target(target)
            out["input_ids"].append(source + answer)
            out["target_start"].append(len(source))
            out["reference"].append(self.tok.decode(answer[:-1], skip_special_tokens=True))
        return out

    def __call__(self, texts: list[tuple[str, ...]]) -> dict[str, list]:
        """Inputs only (prediction): the ids generation starts from."""
        ids = [self.encode_input(tuple(t)) for t in texts]
        return {"input_ids": ids, "target_start": [len(i) for i in ids], "reference": [""] * len(ids)}


def label_word_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """One vocabulary id per label word, as a word start (leading space for BPE vocabularies)."""
    ids = []
    for word in words:
        enc = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise UserError(f"label word {word!r} is not one token for {tokenizer.name_or_path}; choose another")
        ids.append(enc[0])
    return ids


class Collate:
    """Pad a list of examples to the batch's longest sequence, on the right or on the left."""

    def __init__(self, pad_token_id: int, regression: bool, side: str = "right"):
        self.pad, self.regression, self.side = pad_token_id, regression, side

    def _pad(self, row: list, fill, longest: int) -> list:
        padding = [fill] * (longest - len(row))
        return padding + row if self.side == "left" else row + padding

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        batch = {}
        for name, fill in (("input_ids", self.pad), ("token_type_ids", 0)):
            if name in examples[0]:
                batch[name] = torch.tensor([self._pad(e[name], fill, longest) for e in examples])
        batch["attention_mask"] = torch.tensor([self._pad([1] * len(e["input_ids"]), 0, longest) for e in examples])
        dtype = torch.float if self.regression else torch.long
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=dtype)
        for name in ("group", "index", "row"):  # COPA/MultiRC questions; training rows (cache_lower); eval rows
            if name in examples[0]:
                batch[name] = torch.tensor([e[name] for e in examples])
        return batch


class TextCollate(Collate):
    """head=generate batches: `input_ids` (input + target + EOS) padded on the tokenizer's side, `labels` the
    target ids there and -100 at input, padding (and, as the model drops them, prompt) positions; `input_mask`
    the input tokens alone (what the prompt is computed from, as at generation); `gen_input_ids` and
    `gen_attention_mask` the inputs alone, left-padded (generation starts from them); `class_labels` (-1 for
    text tasks) and `references` (target texts)."""

    def __init__(self, pad_token_id: int, side: str = "right"):
        super().__init__(pad_token_id, False, side)

    def __call__(self, examples: list[dict]) -> dict:
        longest = max(len(e["input_ids"]) for e in examples)
        ids, labels, input_mask = [], [], []
        for e in examples:
            row, start = e["input_ids"], e["target_start"]
            ids.append(self._pad(row, self.pad, longest))
            labels.append(self._pad([-100] * start + row[start:], -100, longest))
            input_mask.append(self._pad([1] * start + [0] * (len(row) - start), 0, longest))
        batch = {"input_ids": torch.tensor(ids),
                 "attention_mask": torch.tensor([self._pad([1] * len(e["input_ids"]), 0, longest) for e in examples]),
                 "labels": torch.tensor(labels), "input_mask": torch.tensor(input_mask)}
        inputs = [e["input_ids"][:e["target_start"]] for e in examples]
        width = max(len(i) for i in inputs)
        batch["gen_input_ids"] = torch.tensor([[self.pad] * (width - len(i)) + i for i in inputs])
        batch["gen_attention_mask"] = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in inputs])
        batch["class_labels"] = torch.tensor([e.get("labels", -1) for e in examples])
        batch["references"] = [e.get("reference", "") for e in examples]
        for name in ("group", "index"):
            if name in examples[0]:
                batch[name] = torch.tensor([e[name] for e in examples])
        return batch




def tokenizer_for(run, spec, head, tokenizer, *, token_types: bool, decoder: bool,
                  max_positions: int | None = None) -> Tokenize | TextTokenize:
    """The tokenisation a run's task and head (its `heads.HeadKind`) need: input + target (generative heads),
    the task's verbalizer template (head=mlm / lm), or the plain texts."""
    from .tasks import mlm_verbalizer

    if head.generative:
        template, words = (None, None) if spec.text_to_text else mlm_verbalizer(spec, run.task)
        return TextTokenize(tokenizer, run.task, eos_token_id(tokenizer, run.head.eos_token), template, words,
                            max_positions, run.model.name)
    template = mlm_verbalizer(spec, run.task)[0] if head.verbalizer else None  # each task its own template
    return Tokenize(tokenizer, run.task.max_length, template, token_types, decoder)


def collate_for(spec, head, tokenizer) -> Collate:
    """Batches padded on the tokenizer's side (generative heads: input + target, and the inputs alone)."""
    side = getattr(tokenizer, "padding_side", "right")
    pad = tokenizer.pad_token_id or 0
    if head.generative:
        return TextCollate(pad, side)
    return Collate(pad, spec.is_regression, side)


def decode_generated(tokenizer, new_tokens: torch.Tensor, eos_id: int) -> list[str]:
    """The text of each row of generated tokens, cut at its first EOS."""
    out = []
    for row in new_tokens.cpu().tolist():
        row = row[:row.index(eos_id)] if eos_id in row else row
        out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
