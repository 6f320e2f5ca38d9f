import os
from pathlib import Path

import pytest

# Tests never touch the hub, and never write to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("WANDB_MODE", "offline")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GLUE_DIR = SHARED_DATA / "glue_data"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"benchmark data not found at {GLUE_DIR}")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["IDSPAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("idspam-cache"))


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the run config as `python -m idspam.run <overrides>` would, writing under tmp_path."""
    from hydra import compose, initialize_config_dir

    from idspam.run import CONF_DIR

    def _compose(*overrides: str):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=[*overrides, f"paths.output_dir={tmp_path}"])

    return _compose


@pytest.fixture(scope="session")
def tiny_backbone():
    """The `tiny` model (random-weight RoBERTa) and the packaged MiniLM tokenizer."""
    import torch
    from omegaconf import OmegaConf

    from idspam.backbone import load_backbone, load_config, load_tokenizer
    from idspam.config import ModelConfig, typed

    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny.yaml")
    node.pop("defaults")
    cfg = typed(node, ModelConfig, "model")

    torch.manual_seed(0)
    return load_backbone(cfg, load_config(cfg)), load_tokenizer(cfg)
