"""Entry point: `python -m idspam.run [group=choice ...] [key=value ...]`, `-m` for Hydra multirun.

The order matters for users: every check that needs no weights runs first (config values, task,
files, layer range), then the data is read and tokenised, and only then is the model loaded.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from . import tasks
from .backbone import load_backbone, load_config, load_tokenizer
from .config import check_layer, register_schemas, validate
from .data import TaskDataModule
from .errors import UserError
from .model import build_model
from .module import PromptTuningModule
from .results import ResultsWriter, atomic_write_json, git_commit, package_versions

log = logging.getLogger("idspam")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register_schemas()
# `${first_set:a,b}`: the first value that is not null (the run dir names the layer a method really uses)
OmegaConf.register_new_resolver("first_set", lambda *values: next((v for v in values if v is not None), None),
                                replace=True)
# The frozen backbone is in eval mode on purpose (model.backbone_mode); Lightning warns about it.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # inside Lightning 2.6
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "Tip:" not in r.getMessage())


def train(cfg: DictConfig) -> dict:
    """Train and evaluate one configuration; returns the results written to results.json."""
    started = time.perf_counter()
    run = validate(cfg)
    spec = tasks.get_spec(run.task)
    backbone_config = load_config(run.model)
    check_layer(run.layer, backbone_config.num_hidden_layers, run.model.name)

    L.seed_everything(run.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(run.model, backbone_config)
    data = TaskDataModule(run, spec, tokenizer, token_types=backbone_config.type_vocab_size > 1)
    data.setup()  # data problems surface here, before the weights are loaded
    backbone = load_backbone(run.model, backbone_config, with_mlm_head=run.head.type == "mlm")
    model = build_model(run, spec, backbone, tokenizer)
    module = PromptTuningModule(model, spec, run.optimizer, lr=run.method.lr)

    output_dir = Path(run.output_dir)
    parameters = model.parameter_counts()
    monitor = f"{spec.eval_splits[0]}/{spec.metric}"
    header = {
        "task": spec.name, "method": run.method.name, "model": run.model.name, "layer": run.layer,
        "seed": run.seed, "head": run.head.type,
        "parameters": parameters,
        "data": {split: len(ds) for split, ds in data.splits.items()},
        "versions": package_versions(), "git_commit": git_commit(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    writer = ResultsWriter(output_dir / "results.json", header, monitor,
                           mode="min" if spec.metric == "mse" else "max", started=started)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[writer])
    log.info("training %s on %s with %s, layer %d: %s trainable parameters (head %s)", run.method.name, spec.name,
             run.model.name, run.layer, f"{parameters['trainable']:,}", run.head.type)
    try:
        trainer.fit(module, datamodule=data)
    finally:
        if any(isinstance(logger, WandbLogger) for logger in loggers):
            import wandb

            wandb.finish()  # one W&B run per job: multirun jobs must not merge
    writer.write()  # final wall time, after the loggers closed
    results = writer.results
    best = results["best"]
    if best:
        print(f"dev {monitor} = {best['value']:.4f} (best epoch {best['epoch']}); "
              f"wall time {results['wall_time_s']:.0f} s; results: {output_dir / 'results.json'}")
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # record it; the other jobs go on
            out = Path(HydraConfig.get().runtime.output_dir)
            atomic_write_json(out / "results.json", {"status": "failed", "error": str(e)})
            return None
        sys.exit(2)
    return results["best"]["value"] if results.get("best") else None


def check_group_choices(argv: list[str]) -> None:
    """Name the valid choices of a config group in one line (Hydra's own message is longer)."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or any(c in value for c in "()[]{}$*"):
            continue
        for choice in value.split(","):
            if choice and choice != "null" and not (CONF_DIR / key / f"{choice}.yaml").is_file():
                valid = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
                raise UserError(f"unknown {key} {choice!r}; valid: {', '.join(valid)}")


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
