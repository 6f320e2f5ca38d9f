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

    from ..config import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainerConfig
    from ..methods import METHODS

    cs = ConfigStore.instance()
    for group, node in (("task", TaskConfig), ("model", ModelConfig), ("head", HeadConfig),
                        ("optimizer", OptimizerConfig), ("trainer", TrainerConfig), ("data", DataConfig)):
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


def schemas() -> dict[str, list[type]]:
    """The typed groups and their dataclasses (method: every method's, keys checked against their union)."""
    from ..config import DataConfig, HeadConfig, ModelConfig, OptimizerConfig, TaskConfig, TrainerConfig
    from ..methods import METHODS

    return {"task": [TaskConfig], "model": [ModelConfig], "head": [HeadConfig], "optimizer": [OptimizerConfig],
            "trainer": [TrainerConfig], "data": [DataConfig], "method": list(METHODS.values())}


def check_overrides(argv: list[str]) -> None:
    """Before Hydra composes (its own messages take several lines): a key that is not in its group's schema, or
    at the top level, is one line with the close matches (`did you mean trainer.max_epochs?`); a value of the
    wrong type for a typed key (`trainer.max_epochs=abc`) is one line naming the key and the type."""
    import difflib
    from dataclasses import fields

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..errors import UserError

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return
    typed_groups, known_groups = schemas(), set(groups())
    top = set(OmegaConf.load(conf_dir() / "config.yaml"))  # and what `@package _global_` files add (tuned_lr)
    for path in conf_dir().rglob("*.yaml"):
        if "@package _global_" in path.read_text():
            top |= set(OmegaConf.load(path) or {})
    top -= {"defaults"}
    for override in parsed:
        if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
            continue
        key = override.key_or_group
        parts = key.split(".")
        if parts[0] in ("hydra", "source_task") or key in known_groups or "/" in key:  # hydra/launcher=joblib
            continue
        if len(parts) == 1:
            valid = top | known_groups
            if key not in valid:
                close = difflib.get_close_matches(key, sorted(valid), n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise UserError(f"unknown key {key!r}{hint} (a new key needs a leading +: +{key}=...)")
            continue
        if parts[0] not in typed_groups or len(parts) != 2:
            continue
        group, name = parts
        names = sorted({f.name for cls in typed_groups[group] for f in fields(cls)})
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (f"did you mean {' or '.join(f'{group}.{c}' for c in close)}?" if close
                    else f"valid keys of {group}: {', '.join(names)}")
            raise UserError(f"unknown key {key!r}; {hint}")
        owners = [cls for cls in typed_groups[group] if name in {f.name for f in fields(cls)}]
        if override.is_sweep_override() or len(owners) != 1:
            continue
        value = override.value()
        if isinstance(value, str) and "${" in value:
            continue
        try:
            node = OmegaConf.structured(owners[0])
            setattr(node, name, value)
        except OmegaConfBaseException as e:
            raise UserError(f"{key}={override.get_value_element_as_str()}: {str(e).splitlines()[0]}") from None
        except Exception:  # noqa: BLE001 - a schema that cannot be built without arguments: Hydra checks it
            continue
