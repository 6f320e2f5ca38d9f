import os
import sys
from pathlib import Path

import pytest

# Tests never touch the hub, and never write to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("WANDB_MODE", "offline")

# make test runs two xdist workers on two cores. Each worker, its zygote and every run they start would otherwise
# take one torch/OpenMP thread per core: four to six spinning threads on two cores, which made the suite's
# subprocess runs 3-5x slower than alone. Each process gets cores // workers threads instead (unless set already).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _THREADS)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# The benchmark data (glue_data/, superglue/, imdb/): the one setting is IDSPAM_DATA, by default ../shared/data
# beside the checkout. Without it the tests that read it skip, naming the setting; with IDSPAM_REQUIRE_DATA=1
# (CI, .ci/run) missing data fails the session instead of skipping.
DATA_ENV = "IDSPAM_DATA"
SHARED_DATA = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[1].parent / "shared" / "data")
GLUE_DIR = SHARED_DATA / "glue_data"
HAVE_DATA = GLUE_DIR.is_dir() and (SHARED_DATA / "superglue").is_dir()
NO_DATA = (f"benchmark data not found at {SHARED_DATA}: set {DATA_ENV} to the folder holding glue_data/ and "
           "superglue/ (default ../shared/data beside the checkout)")
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=NO_DATA)
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=NO_DATA)


def pytest_configure(config):
    if os.environ.get("IDSPAM_REQUIRE_DATA") == "1" and not HAVE_DATA:
        raise pytest.UsageError(f"IDSPAM_REQUIRE_DATA=1 and {NO_DATA}")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["IDSPAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("idspam-cache"))


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the run config as `python -m idspam.run <overrides>` would, writing under tmp_path."""
    from idspam.runner.compose import compose

    def _compose(*overrides: str):
        own = any(o.startswith("paths.output_dir=") for o in overrides)
        return compose([*overrides, *([] if own else [f"paths.output_dir={tmp_path}"])])

    return _compose


def tiny_model_config():
    from omegaconf import OmegaConf

    from idspam.config import ModelConfig, typed

    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny.yaml")
    node.pop("defaults")
    return typed(node, ModelConfig, "model")


def make_tiny_backbone():
    """A fresh `tiny` backbone (random-weight RoBERTa), the same weights on every call."""
    import torch

    from idspam.backbone import load_backbone, load_config

    cfg = tiny_model_config()
    torch.manual_seed(0)
    return load_backbone(cfg, load_config(cfg))


@pytest.fixture(scope="session")
def tiny_backbone():
    """The `tiny` model and the packaged MiniLM tokenizer (shared: tests must not modify it)."""
    from idspam.backbone import load_tokenizer

    return make_tiny_backbone(), load_tokenizer(tiny_model_config())


@pytest.fixture(scope="session")
def tiny_run_adapter(tmp_path_factory):
    """The adapter folder of one short ID-SPAM run on the tiny model (copy it before changing it)."""
    from idspam.runner.compose import compose
    from idspam.runner.train import train

    out = tmp_path_factory.mktemp("run")
    train(compose(["model=tiny", "trainer.max_epochs=1", "logger=none", "task.max_train_samples=16",
                   "method.prompt_length=2", "method.bottleneck=8", f"paths.output_dir={out}"]))
    return out / "adapter"
