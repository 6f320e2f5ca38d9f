"""The LightningModule of every method: loss (plus a method's auxiliary loss), validation metrics per
evaluation split, per-example predictions, AdamW with warm-up."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_scheduler

from ..config import OptimizerConfig
from ..errors import UserError
from ..files import atomic_write_text
from ..heads import lm_targets
from ..model import PromptModel
from ..tasks import TaskSpec
from ..text import decode_generated
from .checkpoints import rng_state, set_rng_state
from .metrics import TaskMetrics, TextMetrics

log = logging.getLogger(__name__)


class EpochLog(L.Callback):
    """One log line per epoch (run.log and the console, also under SLURM or a pipe, where no live bar shows):
    the epoch, its mean training loss, each validation metric, and the epoch's time."""

    def __init__(self):
        self._start, self._loss, self._n = time.perf_counter(), 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._loss, self._n = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss, self._n = self._loss + float(loss.detach()), self._n + 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        metrics = " ".join(f"{k} {v:.4f}" for k, v in sorted(getattr(pl_module, "last_eval", {}).items())
                           if isinstance(v, int | float))
        loss = f"train/loss {self._loss / self._n:.4f}" if self._n else "train/loss -"
        log.info("epoch %d/%d: %s %s (%.1f s)", trainer.current_epoch, trainer.max_epochs - 1, loss, metrics,
                 time.perf_counter() - self._start)


class TuningModule(L.LightningModule):
    def __init__(self, model: PromptModel, spec: TaskSpec, optimizer: OptimizerConfig, lr: float | None = None,
                 evals: list[tuple[str, TaskSpec]] | None = None):
        """`evals`: (metric prefix, task) per validation loader; default: the task's own splits."""
        super().__init__()
        self.model, self.spec, self.opt, self.lr = model, spec, optimizer, lr
        evals = evals or [(split, spec) for split in spec.eval_splits]
        self.eval_splits = [key for key, _ in evals]
        self.generative = getattr(model.head, "generative", False)  # head=generate: causal-LM loss, generated text
        self.metrics = nn.ModuleList((TextMetrics(task, classes=not task.text_to_text) if self.generative
                                      else TaskMetrics(task)) for _, task in evals)
        self.predictions_dir = None  # the run dir, where validation predictions (or generations) are written
        self._generations: list[list[dict]] = [[] for _ in evals]
        self._outputs: list[dict[str, list]] = [{} for _ in evals]  # per-example predictions (classification)
        self._best: float | None = None
        self.last_eval: dict[str, float] = {}
        self.fingerprint: dict | None = None  # the run's config, stored in checkpoints to refuse a mismatched resume

    # ------------------------------------------------------------ checkpoints: only what trains

    def state_dict(self, *args, **kwargs):
        """A checkpoint holds the trained tensors only, never the frozen backbone."""
        return {f"model.{k}": v for k, v in self.model.trained_state_dict().items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state = {k.removeprefix("model."): v for k, v in state_dict.items()}
        self.model.load_trained_state(state, "the checkpoint")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = rng_state()  # the next epoch's shuffle and dropout, for an exact resume
        checkpoint["idspam"] = self.fingerprint
        if self.generative:  # a resumed run rewrites predictions.jsonl only for a better epoch
            checkpoint["idspam_best_predictions"] = self._best

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            set_rng_state(checkpoint["rng"])
        self._best = checkpoint.get("idspam_best_predictions", self._best)

    def configure_model(self) -> None:
        """trainer=fsdp (idspam.runner.fsdp): the strategy shards the frozen backbone here; others: nothing."""
        shard = getattr(self.trainer.strategy, "shard", None)
        if shard is not None:
            shard(self)

    @property
    def sharded(self) -> bool:
        """Under trainer=fsdp: each process trains on its share of the batch, validates on the whole set."""
        return self._trainer is not None and getattr(self.trainer.strategy, "evaluates_everywhere", False)

    def forward(self, batch, split: str | None = None):
        return self.model(batch, split)

    def targets(self, batch) -> torch.Tensor:
        """What the loss compares the logits with: the labels, or (head=generate) the target token ids."""
        return lm_targets(batch["labels"]) if self.generative else batch["labels"]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.generative:  # the head's logits are those of the positions predicting a target token
            return F.cross_entropy(logits.float(), labels)
        if self.spec.is_regression:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Lightning (2.2+) leaves modules in the mode it finds them (and a run resumed mid-epoch starts without
        # an epoch start); the model is built in eval mode, so every training step puts the trained parts (the
        # method, the head, LoRA's modules) in train mode, for their dropout; the frozen backbone keeps
        # model.backbone_mode (PromptModel.train).
        if not self.model.method.training or not self.model.head.training:
            self.model.train(True)

    def training_step(self, batch, batch_idx):
        n = len(batch["labels"])
        loss = self.loss(self(batch), self.targets(batch))
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                f"try a lower learning rate (now {self.lr or self.opt.lr}: method.lr / optimizer.lr). "
                "The last good checkpoint is kept in the run dir (checkpoints/last.ckpt)")
        # under FSDP the logged loss is the global batch's (the mean over the processes' equal shares)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=self.sharded)
        aux = self.model.aux_loss()
        if aux is not None:  # a method's own regulariser (SMoP's load balancing)
            self.log("train/aux_loss", aux, on_step=True, on_epoch=True, batch_size=n, sync_dist=self.sharded)
            loss = loss + aux
        return loss

    def on_train_epoch_end(self) -> None:
        cache = self.model.lower_cache
        if cache is not None:  # publish this process's new cache rows; DDP ranks read each other's next epoch
            cache.flush()
            if self.trainer.world_size > 1:
                self.trainer.strategy.barrier("lower_cache")

    def on_fit_end(self) -> None:
        for cache in self.model.caches():  # publish, release the files (a multirun's next job opens its own)
            cache.close()

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.eval_splits[dataloader_idx]
        logits = self(batch, split)
        self.log(f"{split}/loss", self.loss(logits, self.targets(batch)), batch_size=len(batch["labels"]),
                 add_dataloader_idx=False)
        if self.generative:
            texts = self.generate_texts(batch)
            self.metrics[dataloader_idx].update(texts, batch["references"], batch["class_labels"])
            tok = self.model.head.tokenizer
            self._generations[dataloader_idx] += [
                {"split": split, "input": tok.decode(ids[mask.bool()], skip_special_tokens=True), "target": ref,
                 "prediction": text}
                for ids, mask, ref, text in zip(batch["gen_input_ids"].cpu(), batch["gen_attention_mask"].cpu(),
                                                batch["references"], texts, strict=True)]
            return
        self.metrics[dataloader_idx].update(logits, batch["labels"], batch.get("group"))
        out = self._outputs[dataloader_idx]
        scores = logits.detach().float()
        pred = scores.squeeze(-1) if scores.shape[-1] == 1 else scores.argmax(-1)  # regression / COPA: the score
        out.setdefault("pred", []).extend(pred.cpu().tolist())
        out.setdefault("label", []).extend(batch["labels"].cpu().tolist())
        for name in ("group", "row"):
            if name in batch:
                out.setdefault(name, []).extend(batch[name].cpu().tolist())

    def generate_texts(self, batch) -> list[str]:
        """head=generate: the texts the model generates from the batch's inputs (the head's generation
        settings), each cut at its first EOS."""
        from ..generation import generate

        head = self.model.head
        new = generate(self.model, batch["gen_input_ids"], batch["gen_attention_mask"], **head.generation)
        return decode_generated(head.tokenizer, new, head.generation["eos_token_id"])

    def on_validation_epoch_end(self) -> None:
        for cache in self.model.eval_caches.values():  # publish the evaluation splits' new rows (disk)
            cache.flush()
        values = {}
        for split, metrics in zip(self.eval_splits, self.metrics, strict=True):
            values.update({f"{split}/{k}": v for k, v in metrics.compute().items()})
            metrics.reset()
        self.last_eval = values
        monitor = f"{self.eval_splits[0]}/{self.spec.metric}"
        if self.generative:
            self.write_predictions(values.get(monitor))
        else:
            self.write_example_predictions()
        for key, value in values.items():
            self.log(key, value, prog_bar=key == monitor, add_dataloader_idx=False)

    def write_predictions(self, value: float | None) -> None:
        """head=generate: the epoch's validation generations (JSON lines: split, input, target, prediction) to
        <run dir>/predictions/epoch<E>.jsonl, and to <run dir>/predictions.jsonl when the monitored metric is the
        best so far (the epoch whose weights the adapter keeps). Not for the sanity check before training."""
        rows, self._generations = [r for split in self._generations for r in split], [[] for _ in self._generations]
        if self.predictions_dir is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        folder = Path(self.predictions_dir)
        (folder / "predictions").mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "predictions" / f"epoch{self.current_epoch}.jsonl", text)
        if value is not None and (self._best is None or value > self._best):
            self._best = value
            atomic_write_text(folder / "predictions.jsonl", text)

    def write_example_predictions(self) -> None:
        """Classification: every evaluation split's per-example predictions (`pred`: the predicted class, or the
        score of a regression / COPA example), `label` (and `group`), in dev-file order, to
        <run dir>/predictions/epoch<E>.json: what a paired bootstrap over dev examples resamples."""
        outputs, self._outputs = self._outputs, [{} for _ in self._outputs]
        if self.predictions_dir is None or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if self.trainer.world_size > 1 and not self.sharded:
            return  # each process saw a share of the examples: no file rather than a partial one
        folder = Path(self.predictions_dir) / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        for out in outputs:  # evaluated in order of length (data.by_length): back to file order
            rows = out.pop("row", None)
            if rows is not None:
                order = sorted(range(len(rows)), key=rows.__getitem__)
                for key, values in out.items():
                    out[key] = [values[i] for i in order]
        text = json.dumps(dict(zip(self.eval_splits, outputs, strict=True)), separators=(",", ":"))
        atomic_write_text(folder / f"epoch{self.current_epoch}.json", text)

    def param_groups(self) -> list[dict]:
        """AdamW groups by learning rate and decay: no decay on biases and norms (ndim < 2); the
        method's lr (method.lr, else optimizer.lr) for everything but parameters the method gives
        their own (DEPT's low-rank update)."""
        base_lr = self.lr or self.opt.lr
        special = self.model.method.param_lrs()
        groups: dict[tuple[float, bool], list] = {}
        for p in self.model.parameters():
            if p.requires_grad:
                groups.setdefault((special.get(p, base_lr), p.ndim >= 2), []).append(p)
        return [{"params": params, "lr": lr, "weight_decay": self.opt.weight_decay if decay else 0.0}
                for (lr, decay), params in groups.items()]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups(), betas=tuple(self.opt.betas), eps=self.opt.eps)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_scheduler(
            {"constant": "constant_with_warmup"}.get(self.opt.scheduler, self.opt.scheduler),
            optimizer, num_warmup_steps=int(self.opt.warmup_ratio * total), num_training_steps=total,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
