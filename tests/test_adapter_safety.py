"""Loading an adapter never runs code from it or from a model folder it names (trust_remote_code comes only
from the caller), and a damaged idspam_adapter.json is one line."""

import json
import shutil

import pytest

import idspam
from idspam.errors import UserError

EVIL = """from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import PretrainedConfig


class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


def hostile_model(tmp_path):
    """A model folder whose config.json auto_map points at a Python file that writes a marker file."""
    folder, marker = tmp_path / "hostile_model", tmp_path / "MARKER"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilConfig",
                     "AutoModelForSequenceClassification": "evil.EvilConfig",
                     "AutoTokenizer": ["evil.EvilConfig", None]}}))
    return folder, marker


def test_run_adapter_cannot_make_load_adapter_run_code(tiny_run_adapter, tmp_path):
    folder, marker = hostile_model(tmp_path)
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_run_adapter, adapter)
    config = json.loads((adapter / "idspam_adapter.json").read_text())
    config["model"].update(name_or_path=str(folder), pretrained=True, trust_remote_code=True, arch=None)
    (adapter / "idspam_adapter.json").write_text(json.dumps(config))

    with pytest.raises(UserError, match="ships its own Python code") as e:
        idspam.load_adapter(adapter)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    from idspam.tools.predict import main

    (tmp_path / "in.csv").write_text("sentence\nfine\n")
    with pytest.raises(SystemExit):
        main([str(adapter), "--input", str(tmp_path / "in.csv")])
    assert not marker.exists()

    # the test can fail: the caller's own trust_remote_code=True does run the folder's code
    with pytest.raises(Exception):  # noqa: B017 - the evil "model" is no model; the code ran before that
        idspam.load_adapter(adapter, trust_remote_code=True)
    assert marker.exists()


def test_peft_adapter_cannot_make_load_adapter_run_code(tmp_path):
    folder, marker = hostile_model(tmp_path)
    adapter = tmp_path / "peft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": str(folder),
         "trust_remote_code": True}))
    with pytest.raises(UserError, match="ships its own Python code"):
        idspam.load_adapter(adapter)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["task", "model", "layer"])
def test_adapter_without_a_run_key_is_one_line(tiny_run_adapter, tmp_path, key):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_run_adapter, adapter)
    config = json.loads((adapter / "idspam_adapter.json").read_text())
    del config[key]
    (adapter / "idspam_adapter.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"lacks {key} ") as e:
        idspam.load_adapter(adapter)
    assert "\n" not in str(e.value)


def test_run_adapter_has_a_model_card_and_a_portable_base_name(tmp_path, capfd):
    from idspam.adapter import portable_base
    from idspam.backbone import resolve_path
    from idspam.runner.compose import compose
    from idspam.runner.train import train

    packaged = resolve_path("packaged:all-MiniLM-L6-v2")
    assert portable_base(packaged) == portable_base("packaged:all-MiniLM-L6-v2") == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert portable_base("/some/own/folder") == "/some/own/folder"
    results = train(compose(["trainer.max_epochs=1", "logger=none", "task.max_train_samples=16",
                             "task.max_eval_samples=16", "method.prompt_length=2", "method.bottleneck=8",
                             f"paths.output_dir={tmp_path}"]))
    adapter = tmp_path / "adapter"
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    card = (adapter / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "library_name: peft" in card
    accuracy = results["best"]["metrics"]["validation/accuracy"]
    assert f"| validation/accuracy | {accuracy:.4f} |" in card and "before layer" in card
    assert "idspam.load_adapter" in card and str(packaged) not in card
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in card  # the PEFT auto class, and what it needs
    assert "import idspam  # registers idspam's PEFT types: PEFT cannot resolve peft_type IDSPAM without it" in card

    capfd.readouterr()
    idspam.load_adapter(adapter)  # the packaged MiniLM from_pretrained: no load bar, no "newly initialized" table
    printed = "".join(capfd.readouterr())
    assert "Loading weights" not in printed and "newly initialized" not in printed.lower()
