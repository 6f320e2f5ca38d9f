"""idspam's Python API: wrap a Hugging Face model with a prompt method at layer m, and load a trained adapter.

    import idspam
    model = idspam.wrap(hf_model, "idspam", layer=3, prompt_length=10)   # a peft.PeftModel
    predictor = idspam.load_adapter("outputs/runs/.../adapter")        # any adapter idspam wrote
    predictor.predict(["a warm, funny film", "dull"])                 # [{"prediction": ..., "probabilities": ...}]
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import UserError


def wrap(model, method="idspam", *, layer: int | None = None, adapter_name: str = "default", **options):
    """`peft.get_peft_model(model, <the method's PEFT config>)`: `model` (a Hugging Face encoder or decoder,
    e.g. `AutoModelForSequenceClassification.from_pretrained(...)`) with `method` injected before `layer`.

    `method` is a name (idspam, idspam_meanpool, lpt, prompt_tuning, ptuning) with its options as keywords
    (those of `idspam.IDSPAMConfig` and the others), or a ready PEFT config (then no options). The result is a
    `peft.PeftModel`: `print_trainable_parameters()`, the HF `Trainer`, `save_pretrained`, `set_adapter`...
    """
    from peft import get_peft_model

    from .tuner import CONFIGS, PromptInjectionConfig

    if isinstance(method, PromptInjectionConfig):
        if options or layer is not None:
            raise UserError("wrap(model, <config>) takes no options: set them in the config")
        config = method
    elif method in CONFIGS:
        config = CONFIGS[method](layer=layer, **options)
    else:
        raise UserError(f"unknown method {method!r}; methods with a PEFT form: {', '.join(CONFIGS)}")
    return get_peft_model(model, config, adapter_name=adapter_name)


class Predictor:
    """A trained adapter on its backbone, in eval mode, with the task's tokenisation: `predict(texts)`.

    `texts`: one string per example, or a tuple of strings for pair tasks (in the task's column order).
    `model` is the underlying nn.Module; `label_names` the task's classes (None: regression)."""

    def __init__(self, model, tokenize, collate, label_names, regression: bool, config: dict, forward=None):
        self.model, self.tokenize, self.collate = model, tokenize, collate
        self.label_names, self.regression, self.config = label_names, regression, config
        self._forward = forward or model

    def batches(self, texts: Sequence, batch_size: int = 64):
        rows = [t if isinstance(t, tuple | list) else (t,) for t in texts]
        encoded = self.tokenize([tuple(r) for r in rows])
        examples = [{**{k: v[i] for k, v in encoded.items()}, "labels": 0} for i in range(len(rows))]
        for start in range(0, len(examples), batch_size):
            yield self.collate(examples[start:start + batch_size])

    @torch.inference_mode()
    def logits(self, texts: Sequence, batch_size: int = 64) -> torch.Tensor:
        """(N, classes) logits (N, 1 for regression), float32, on the CPU."""
        device = next(self.model.parameters()).device
        out = []
        for batch in self.batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            out.append(self._forward(batch).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    @torch.inference_mode()
    def generate(self, texts: Sequence, batch_size: int = 64, **overrides) -> list[str]:
        """head=generate adapters: the text generated for each input, with the generation settings saved in the
        adapter (`overrides`: Hugging Face `generate` keywords, e.g. max_new_tokens=64), cut at the first EOS."""
        from .generation import generate
        from .text import decode_generated

        head = getattr(self.model, "head", None)
        if not getattr(head, "generative", False):
            raise UserError("generate() needs an adapter trained with head=generate; this one predicts labels: "
                            "use predict()")
        device = next(self.model.parameters()).device
        settings = {**head.generation, **overrides}
        out = []
        for batch in self.batches(texts, batch_size):
            new = generate(self.model, batch["gen_input_ids"].to(device), batch["gen_attention_mask"].to(device),
                           **settings)
            out += decode_generated(head.tokenizer, new, settings["eos_token_id"])
        return out

    def predict(self, texts: Sequence, batch_size: int = 64) -> list[dict]:
        """One dict per text: `prediction` (the label name; the value for regression) and `probabilities`."""
        if getattr(getattr(self.model, "head", None), "generative", False):
            return [{"prediction": text} for text in self.generate(texts, batch_size)]
        logits = self.logits(texts, batch_size)
        if self.regression:
            return [{"prediction": float(v)} for v in logits.squeeze(-1)]
        return [{"prediction": self.label_names[int(row.argmax())],
                 "probabilities": dict(zip(self.label_names, map(float, row), strict=True))}
                for row in logits.softmax(-1)]


RUN_KEYS = ("task", "model", "method", "head", "layer", "seed")


def run_config(config: dict, trust_remote_code: bool = False, where: str = "adapter"):
    """The RunConfig an adapter's idspam config describes (what the run trained), its task's spec included.

    `model.trust_remote_code` is never taken from the adapter's files: it is `trust_remote_code` (the caller's
    own choice), so an adapter folder cannot make idspam run code from itself or from a model folder it names."""
    from .config import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, RunConfig, TaskConfig, typed
    from .methods import method_config
    from .tasks import get_spec

    missing = [k for k in RUN_KEYS if k not in config]
    if missing or not isinstance(config.get("model"), dict):
        raise UserError(f"{where}: its idspam config lacks {', '.join(missing) or 'a model mapping'} (needs "
                        f"{', '.join(RUN_KEYS)}): not an adapter idspam-run wrote, or a damaged one")
    shape_keys = ("hidden_size", "num_layers", "vocab_size", "model_type")
    model_node = {k: v for k, v in config["model"].items() if k not in shape_keys}
    model_node["trust_remote_code"] = bool(trust_remote_code)
    model_cfg = typed(model_node, ModelConfig, "adapter model")
    task = typed(config["task"], TaskConfig, "adapter task")
    return RunConfig(
        task=task, model=model_cfg, method=method_config(config["method"]),
        head=typed(config["head"], HeadConfig, "adapter head"), optimizer=OptimizerConfig(), data=DataConfig(),
        layer=int(config["layer"]), seed=int(config["seed"]), data_dir=None, cache_dir="", output_dir=".",
        spec=get_spec(task),
    )


@contextmanager
def _quiet_transformers():
    """transformers' weight-loading bar and load report (missing / newly initialized weights) off for a while."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


@contextmanager
def _refusing_remote_code(model: str):
    """Transformers' refusal of a model folder's own code (trust_remote_code off), as one line."""
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise UserError(f"the adapter's base model {model!r} ships its own Python code (an auto_map), which idspam "
                        "does not run unless you ask: pass trust_remote_code=True (idspam-predict "
                        "--trust-remote-code) if you trust that folder") from None


def load_adapter(folder: str | Path, device: str | torch.device = "cpu", labels: Sequence[str] | None = None,
                 *, trust_remote_code: bool = False) -> Predictor:
    """A Predictor for an adapter folder: one written by `idspam-run` (PEFT format for ID-SPAM, LPT, prompt
    tuning, P-tuning and LoRA; idspam's format for the other methods; the earlier `idspam-adapter/1` format), or
    a PEFT adapter of a `*ForSequenceClassification` model saved with `save_pretrained` (its base model is read
    from `base_model_name_or_path`; its label names are `labels`, else the base model config's id2label).

    `trust_remote_code=True` lets the base model's own Python code run (a Hugging Face `auto_map`); it is only
    ever this argument, never a setting read from the adapter folder."""
    from .adapter import adapter_kind

    if adapter_kind(folder) == "peft":
        return _load_peft_classifier(Path(folder).expanduser(), device, labels, trust_remote_code)
    return _load_run_adapter(Path(folder).expanduser(), device, trust_remote_code)


def _load_run_adapter(folder: Path, device, trust_remote_code: bool = False) -> Predictor:
    from .adapter import check_backbone, read_adapter
    from .backbone import is_decoder, max_positions
    from .heads import HEADS
    from .model import load_model, load_parts
    from .text import collate_for, tokenizer_for

    config, weights = read_adapter(folder)
    run = run_config(config, trust_remote_code, f"adapter {str(folder)!r}")
    with _refusing_remote_code(run.model.name_or_path):
        backbone_config, tokenizer = load_parts(run)
    check_backbone(config, backbone_config, f"adapter {str(folder)!r}")
    with _quiet_transformers():  # its load report lists the head as "newly initialized": the adapter's is loaded next
        model, _ = load_model(run, backbone_config, tokenizer)
    model.load_trained_state(weights, f"adapter {str(folder)!r}")
    model.to(device).eval()
    head = HEADS[run.head.type]
    tokenize = tokenizer_for(run, run.spec, head, tokenizer,
                             token_types=getattr(backbone_config, "type_vocab_size", 0) > 1,
                             decoder=is_decoder(backbone_config), max_positions=max_positions(backbone_config))
    return Predictor(model, tokenize, collate_for(run.spec, head, tokenizer), run.spec.label_names,
                     run.spec.is_regression, config)


def _load_peft_classifier(folder: Path, device, labels: Sequence[str] | None, trust_remote_code: bool = False
                          ) -> Predictor:
    """A PEFT adapter folder of a sequence classifier (e.g. trained with the HF Trainer)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .text import Collate, Tokenize

    config = json.loads((folder / "adapter_config.json").read_text())
    base_path = config.get("base_model_name_or_path")
    if config.get("task_type") != "SEQ_CLS" or not base_path:
        raise UserError(f"adapter {str(folder)!r} is a PEFT adapter with task_type={config.get('task_type')!r} and "
                        f"base model {base_path!r}; load_adapter reads sequence classifiers (SEQ_CLS) whose base "
                        "model path is in adapter_config.json")
    options = {"num_labels": len(labels)} if labels else {}
    trust = {"trust_remote_code": bool(trust_remote_code)}
    with _refusing_remote_code(base_path):
        base = AutoModelForSequenceClassification.from_pretrained(base_path, **options, **trust)
        tokenizer = AutoTokenizer.from_pretrained(base_path, **trust)
    model = PeftModel.from_pretrained(base, str(folder)).to(device).eval()
    labels = tuple(labels or (base.config.id2label[i] for i in range(base.config.num_labels)))
    regression = base.config.problem_type == "regression" or base.config.num_labels == 1
    token_types = getattr(base.config, "type_vocab_size", 0) > 1
    tokenize = Tokenize(tokenizer, tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 512,
                        None, token_types)
    collate = Collate(tokenizer.pad_token_id or 0, regression)

    def forward(batch):
        return model(**batch).logits

    return Predictor(model, tokenize, collate, None if regression else labels, regression, config, forward)
