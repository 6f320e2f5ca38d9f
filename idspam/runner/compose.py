"""Hydra composition: where the configs are, the schemas and resolvers they use, and one `compose` for
the tools and tests.

The configs are the repository's top-level `conf/` folder, shipped inside the wheel as the package
`idspam.conf` (pyproject's package-dir maps one onto the other, so a clone and an installed wheel read
the same files); Hydra finds them through its `pkg://idspam.conf` search path. A user's own config
folder is added with Hydra's `--config-dir DIR` (or `hydra.searchpath=[file:///DIR]`): its groups and
files sit beside the shipped ones and override those of the same name.

Nothing here runs at import: `register()` (idempotent) stores the schemas and the resolvers, and every
entry point calls it before composing.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "idspam.conf"
CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"
INTERNAL_GROUPS = ("hydra", "schema")  # groups a user does not pick


def conf_dir() -> Path:
    """The folder the shipped configs are in (the checkout's `conf/`, or the installed `idspam/conf/`)."""
    return Path(str(resources.files(CONFIG_PACKAGE)))


def groups() -> list[str]:
    """The config groups a user picks from (`task`, `model`, `method`, ...)."""
    return sorted(p.name for p in conf_dir().iterdir()
                  if p.is_dir() and p.name not in INTERNAL_GROUPS and not p.name.startswith("_"))


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def first_set(*values):
    """`${first_set:a,b}`: the first value that is not null (the run dir names the layer a method really uses)."""
    return next((v for v in values if v is not None), None)


def wandb_group(single: str) -> str:
    """W&B group: a multirun's jobs share one, named after the sweep dir (<experiment>-<time>), which is also
    what `idspam-report ... wandb=true` logs to; a single run gets `single` (<task>-<model>)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return single
    sweep = Path(HydraConfig.get().runtime.output_dir).parent
    return f"{sweep.parent.name}-{sweep.name}"


def run_dir(resume, prefix: str, stamp: str, *, _root_) -> str:
    """hydra.run.dir: resume=<dir> runs in that dir; resume=auto in the newest `<prefix>*` dir whose
    results.json holds this configuration (else a new `<prefix><stamp>`); otherwise `<prefix><stamp>`."""
    from .resume import composing_fingerprint, find_run_dir

    if resume in (None, "never"):
        return f"{prefix}{stamp}"
    if resume == "auto":
        return find_run_dir(prefix, composing_fingerprint(_root_)) or f"{prefix}{stamp}"
    return str(resume)


@functools.cache
def register() -> None:
    """Store the dataclasses as Hydra schemas (group YAMLs start from `/schema/<group>@_here_: <name>`, so every
    key exists, is overridable from the command line and type-checked at compose time) and register the
    resolvers the configs use. Idempotent."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ..config import HeadConfig, ModelConfig, OptimizerConfig, TaskConfig
    from ..methods import METHODS

    cs = ConfigStore.instance()
    for group, node in (("task", TaskConfig), ("model", ModelConfig), ("head", HeadConfig),
                        ("optimizer", OptimizerConfig)):
        cs.store(group=f"schema/{group}", name="base", node=node)
    for name, config_cls in METHODS.items():
        cs.store(group="schema/method", name=name, node=config_cls())
    for name, resolver in (("first_set", first_set), ("minus", lambda a, b: a - b), ("wandb_group", wandb_group),
                           ("run_dir", run_dir)):
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def compose(overrides: list[str] = (), config_name: str = "config", return_hydra_config: bool = False):
    """The config `idspam-run <overrides>` composes (no job runs), for the tools and tests."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register()
    with initialize_config_module(CONFIG_PACKAGE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def check_group_choices(argv: list[str]) -> None:
    """Name the valid choices of a config group in one line (Hydra's own message is longer)."""
    from ..errors import UserError

    known = set(groups())
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~").split("@")[0]  # task@source_task=<task> is a task choice too
        if key not in known or any(c in value for c in "()[]{}$*"):
            continue
        for choice in value.split(","):
            if choice and choice != "null" and choice not in choices(key):
                raise UserError(f"unknown {key} {choice!r}; valid: {', '.join(choices(key))}")
