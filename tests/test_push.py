"""idspam-push / idspam.push_adapter: a run's adapter folder goes to the hub as it is (PEFT files, idspam's files,
the model card); without the network it stops at once with one line. The hub is never contacted here."""

from __future__ import annotations

import time

import pytest

import idspam.hub
from idspam.errors import UserError
from idspam.publish import push_adapter
from idspam.tools import push


def test_push_uploads_the_whole_adapter_folder_to_the_named_repo(tiny_run_adapter, monkeypatch, capsys):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=None, **kwargs):
        from pathlib import Path

        calls["upload"] = (repo_id, sorted(p.name for p in Path(folder_path).iterdir() if not p.name.startswith(".")))
        return "https://huggingface.co/me/tiny-idspam/commit/abc"

    monkeypatch.setattr(idspam.hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert push.main([str(tiny_run_adapter), "me/tiny-idspam", "--private"]) == 0
    assert calls["create"] == ("me/tiny-idspam", True, True)
    assert calls["upload"] == ("me/tiny-idspam", ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                  "idspam_adapter.json", "idspam_head.safetensors"])
    assert "pushed" in capsys.readouterr().out


def test_push_without_the_network_fails_fast_with_one_line(tiny_run_adapter, monkeypatch, capsys):
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        start = time.monotonic()
        with pytest.raises(SystemExit) as exit_:
            push.main([str(tiny_run_adapter), "me/tiny-idspam"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and time.monotonic() - start < 5
        assert err.count("\n") == 1 and "cannot push" in err and "me/tiny-idspam" in err
    with pytest.raises(UserError, match="repository id 'not a repo' is not valid"):
        push_adapter(tiny_run_adapter, "not a repo")
    with pytest.raises(UserError, match="does not exist"):
        push_adapter(tiny_run_adapter.parent / "nowhere", "me/x")
