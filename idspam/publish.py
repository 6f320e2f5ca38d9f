"""Publishing a run's adapter on the Hugging Face hub (`idspam-push`, `idspam.push_adapter`)."""

from __future__ import annotations

from pathlib import Path

from . import hub
from .adapter import adapter_kind
from .errors import UserError


def push_adapter(folder, repo_id: str, *, private: bool | None = None, token: str | None = None,
                 revision: str | None = None, commit_message: str | None = None) -> str:
    """Upload a run's adapter folder (its PEFT files, idspam's files and the model card README.md) to the hub
    repository `repo_id` (created if absent), as `PeftModel.push_to_hub` uploads a saved adapter; returns the
    commit's URL. Checked before any upload: the folder is a run's adapter, the repository id is valid, the hub
    answers (else one line, in seconds)."""
    folder = Path(folder).expanduser()
    kind = adapter_kind(folder)  # one line for a folder that is not an adapter
    if kind == "peft" or not (folder / "README.md").is_file():
        raise UserError(f"adapter {str(folder)!r} is not a finished idspam-run's adapter with a model card "
                        "(README.md); push a run's <run>/adapter folder")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"repository id {repo_id!r} is not valid: {e} (expected <user or org>/<name>)") from None
    if not hub.hub_reachable():
        reason = "HF_HUB_OFFLINE is set" if hub.offline_mode() else f"the hub ({hub.hub_endpoint()}) cannot be reached"
        raise UserError(f"cannot push {str(folder)!r} to {repo_id!r}: {reason}")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                             commit_message=commit_message or f"idspam adapter ({kind})",
                             ignore_patterns=[".*"])
    return str(getattr(info, "commit_url", info))
