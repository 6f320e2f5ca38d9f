"""Hugging Face hub access that fails in seconds, with a message on how to work offline.

Without this, `from_pretrained` and `load_dataset` retry for the better part of a minute when the
hub cannot be reached. We first look in the local cache, then probe the hub once with a short
timeout, and only then start a real download.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from .errors import UserError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One short request to the hub endpoint; any HTTP answer counts as reachable."""
    if offline_mode():
        return False
    from huggingface_hub import get_session

    try:
        get_session().head(hub_endpoint(), timeout=timeout)
    except Exception:
        return False
    return True


def load_with_hub_fallback(what: str, from_cache: Callable[[], T] | None, from_hub: Callable[[], T],
                           offline_hint: str) -> T:
    """Load from the local cache if possible, else from the hub if it answers, else fail fast.

    `what` names the object (e.g. "model 'FacebookAI/roberta-large'"); `offline_hint` says how to
    point the run at local files instead.
    """
    if from_cache is not None:
        try:
            return from_cache()
        except Exception:
            pass
    if not hub_reachable():
        reason = "HF_HUB_OFFLINE is set" if offline_mode() else f"the hub ({hub_endpoint()}) cannot be reached"
        raise UserError(f"cannot load {what}: it is not in the local cache and {reason}. {offline_hint}")
    return from_hub()

