"""The trained parts train in train mode (their dropout is on), the frozen backbone stays in eval mode."""

import json

import pytest

FAST = ["model=tiny", "trainer.max_epochs=2", "task.max_train_samples=32", "task.max_eval_samples=16", "logger=none"]


def modes_in_training_steps(compose_cfg, tmp_path, monkeypatch, *overrides):
    from idspam.runner import module
    from idspam.runner.train import train

    seen = []
    original = module.TuningModule.training_step

    def spy(self, batch, batch_idx):
        model = self.model
        lora = [m.training for name, m in model.engine.named_modules() if name.endswith("lora_dropout.default")]
        seen.append({"method": model.method.training, "head": model.head.training,
                     "backbone": model.engine.base.training, "lora": lora})
        return original(self, batch, batch_idx)

    monkeypatch.setattr(module.TuningModule, "training_step", spy)
    train(compose_cfg(*FAST, *overrides, f"paths.output_dir={tmp_path / 'run'}"))
    return seen


def test_method_and_head_train_in_train_mode_every_epoch(compose_cfg, tmp_path, monkeypatch):
    seen = modes_in_training_steps(compose_cfg, tmp_path, monkeypatch, "method=idspam")
    assert len(seen) == 2 * 32 // 16
    assert all(s["method"] and s["head"] and not s["backbone"] for s in seen)  # after each validation too


def test_lora_dropout_trains_while_the_backbone_stays_in_eval_mode(compose_cfg, tmp_path, monkeypatch):
    seen = modes_in_training_steps(compose_cfg, tmp_path, monkeypatch, "method=lora")
    assert all(s["lora"] and all(s["lora"]) and not s["backbone"] and s["head"] for s in seen)


def test_prompt_dropout_changes_training(compose_cfg, tmp_path):
    from idspam.runner.train import train

    def losses(dropout, out):
        train(compose_cfg(*FAST, "method=idspam", f"method.dropout={dropout}", f"paths.output_dir={tmp_path / out}"))
        return [e["train_loss"] for e in json.loads((tmp_path / out / "results.json").read_text())["epochs"]]

    assert losses(0.0, "a") == losses(0.0, "b")  # deterministic
    assert losses(0.5, "c") != pytest.approx(losses(0.0, "a"), abs=1e-7)  # the dropout is applied
