"""The Hydra + Lightning runner: `idspam-run`, its config checks, data, training module, checkpoints,
resume, results and sweeps. It uses the library (`idspam.*`); the library never imports it.

    from idspam.runner import compose, train
    train(compose(["task=rte", "data_dir=../shared/data"]))   # one run, as `idspam-run task=rte ...`
"""


def __getattr__(name: str):
    if name == "train":
        from .train import train

        return train
    if name in ("compose", "validate"):
        from . import checks, compose

        return {"compose": compose.compose, "validate": checks.validate}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
