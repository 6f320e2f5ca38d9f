"""idspam as a library: its methods through Hugging Face PEFT (get_peft_model, the HF Trainer, save and reload,
disable_adapter, several adapters), run adapters in PEFT format, and the Python API's loader."""

import csv
import json
import os
import subprocess
import sys
from importlib import resources

import pytest
import torch

import idspam
from idspam.errors import UserError

MINILM = "packaged:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm_path():
    from idspam.backbone import resolve_path

    return resolve_path(MINILM)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def classifier(path, seed=0):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # "classifier newly initialised" is expected
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})


def demo_rows(split="train", n=None):
    with (resources.files("idspam") / "resources" / f"demo_sentiment_{split}.csv").open() as f:
        rows = list(csv.DictReader(f))
    return rows[:n] if n else rows


def encode(tokenizer, rows):
    enc = tokenizer([r["sentence"] for r in rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {k: v for k, v in enc.items()}


class Examples(torch.utils.data.Dataset):
    def __init__(self, tokenizer, rows):
        self.items = [{**tokenizer(r["sentence"], truncation=True, max_length=64),
                       "labels": int(r["label"] == "positive")} for r in rows]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def train_with_trainer(model, tokenizer, tmp_path, steps=4):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=5e-3, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
                             dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Examples(tokenizer, demo_rows("train", 64)),
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    return trainer, result


@pytest.mark.parametrize("config", [idspam.IDSPAMConfig(layer=3, prompt_length=4, bottleneck=16),
                                    idspam.LPTConfig(layer=3, prompt_length=4, bottleneck=16)],
                         ids=["idspam", "lpt"])
def test_trainer_trains_and_the_saved_adapter_reloads_with_the_same_logits(config, minilm_path, tokenizer, tmp_path,
                                                                           capsys):
    from peft import PeftModel, get_peft_model

    model = get_peft_model(classifier(minilm_path), config)
    model.print_trainable_parameters()
    out = capsys.readouterr().out
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("idspam_prompt" in n or "classifier" in n for n in trainable)
    assert any("classifier" in n for n in trainable)  # the HF classifier trains, as PEFT trains it under SEQ_CLS
    counted = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert f"trainable params: {counted:,}" in out

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, result = train_with_trainer(model, tokenizer, tmp_path)
    assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable  # the frozen backbone did not move
    assert any("idspam_prompt" in n for n in changed)

    model.save_pretrained(str(tmp_path / "adapter"))
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == config.peft_type and saved["layer"] == 3 and saved["task_type"] == "SEQ_CLS"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    batch = encode(tokenizer, demo_rows("dev", 6))
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
        with model.disable_adapter():
            disabled = model(**batch).logits
    reloaded = PeftModel.from_pretrained(classifier(minilm_path, seed=1), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, logits)
    # disable_adapter: the base model as it was (PEFT keeps the original classifier beside the trained copy)
    base = classifier(minilm_path).eval()
    with torch.no_grad():
        assert torch.allclose(base(**batch).logits, disabled, atol=1e-6)
        assert not torch.allclose(logits, disabled, atol=1e-4)


def test_two_adapters_switch_and_unload(minilm_path, tokenizer):
    from peft import get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(classifier(minilm_path), idspam.IDSPAMConfig(layer=2, prompt_length=3, bottleneck=8))
    model.add_adapter("late", idspam.IDSPAMConfig(layer=5, prompt_length=2, bottleneck=8))  # PEFT: one type a model
    with pytest.raises(ValueError, match="Cannot combine adapters with different peft types"):
        model.add_adapter("lpt", idspam.LPTConfig(layer=5))
    model.eval()
    batch = encode(tokenizer, demo_rows("dev", 4))
    with torch.no_grad():
        first = model(**batch).logits
        model.set_adapter("late")
        late = model(**batch).logits
        assert {n.split(".idspam_prompt.")[1].split(".")[0] for n, p in model.named_parameters()
                if p.requires_grad and ".idspam_prompt." in n} == {"late"}
        model.set_adapter("default")
        assert torch.equal(model(**batch).logits, first) and not torch.allclose(first, late)
        base = model.unload()
        assert not hasattr(base.bert, "idspam_injection") and "forward" not in vars(base.bert)


def test_peft_path_and_runner_path_agree(minilm_path, tokenizer):
    """The same trained tensors give the same hidden states through get_peft_model and through the runner's model."""
    from peft import get_peft_model
    from transformers import AutoModel

    from idspam.injection import InjectionEngine
    from idspam.methods import build_method, method_config
    from idspam.model import PromptModel

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModel.from_pretrained(minilm_path), idspam.IDSPAMConfig(layer=3, bottleneck=8))
    peft_model.eval()
    engine = InjectionEngine(AutoModel.from_pretrained(minilm_path))
    method = build_method(method_config({"name": "idspam", "bottleneck": 8}), engine.hidden_size)
    prompt = peft_model.base_model.model.idspam_injection.idspam_prompt["default"]
    method.load_state_dict(prompt.state_dict())
    runner = PromptModel(engine, method, torch.nn.Identity(), 3).eval()
    batch = encode(tokenizer, demo_rows("dev", 5))
    with torch.no_grad():
        ours = peft_model(**batch).last_hidden_state
        theirs = runner.hidden_states(batch)
    assert torch.equal(ours, theirs)


def test_config_errors_are_one_line(minilm_path):
    from peft import get_peft_model

    with pytest.raises(UserError, match=r"method.prompt_length=0 must be at least 1"):
        idspam.IDSPAMConfig(layer=1, prompt_length=0)
    with pytest.raises(UserError, match=r"layer=9 is out of range for this 6-layer model; valid: 0..5"):
        get_peft_model(classifier(minilm_path), idspam.IDSPAMConfig(layer=9))
    with pytest.raises(UserError, match=r"IDSPAMConfig\(layer=...\) is required"):
        get_peft_model(classifier(minilm_path), idspam.IDSPAMConfig())


def test_another_peft_minor_version_is_refused_in_one_line(monkeypatch):
    import peft

    from idspam.tuner import check_peft_version

    monkeypatch.setattr(peft, "__version__", "0.22.0")
    with pytest.raises(UserError) as e:
        check_peft_version()
    assert str(e.value).count("\n") == 0 and "tested on peft 0.21.x only; this is peft 0.22.0" in str(e.value)


def train_capturing_the_model(cfg):
    """idspam.run.train(cfg), and the model the run exported its adapter from (its best epoch)."""
    import idspam.runner.train as run_module

    captured = {}
    original = run_module.export_adapter

    def export(folder, model, *args, **kwargs):
        captured["model"] = model
        return original(folder, model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "export_adapter", export)
        results = run_module.train(cfg)
    return results, captured["model"].eval()


def same_logits_as_the_run(predictor, run_model, texts):
    with torch.no_grad():
        ours = predictor.logits(texts, batch_size=16)
        theirs = torch.cat([run_model({k: v for k, v in b.items() if k != "labels"}).float()
                            for b in predictor.batches(texts, 16)])
    assert ours.shape == (len(texts), 2) and torch.equal(ours, theirs)


@pytest.fixture(scope="module")
def run_adapter(tmp_path_factory):
    """One short idspam-run on the packaged MiniLM and the demo data (its adapter, its results)."""
    from idspam.runner.compose import compose

    out = tmp_path_factory.mktemp("run")
    if True:
        cfg = compose(["trainer.max_epochs=1", "logger=none", "task.max_train_samples=64",
                                           "method.prompt_length=4", "method.bottleneck=16",
                                           f"paths.output_dir={out}"])
    results, model = train_capturing_the_model(cfg)
    return out / "adapter", results, model


def test_run_adapter_is_peft_and_predicts_as_the_run_evaluated(run_adapter, minilm_path, tokenizer, tmp_path):
    import shutil

    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from transformers import AutoModel, AutoModelForSequenceClassification

    adapter, results, run_model = run_adapter
    assert sorted(p.name for p in adapter.iterdir() if not p.name.startswith("README")) == [
        "adapter_config.json", "adapter_model.safetensors", "idspam_adapter.json", "idspam_head.safetensors"]
    extra = json.loads((adapter / "idspam_adapter.json").read_text())
    assert extra["task"]["label_names"] == ["negative", "positive"] and extra["format"] == "idspam-peft/1"

    predictor = idspam.load_adapter(adapter)
    dev = demo_rows("dev")
    predictions = predictor.predict([r["sentence"] for r in dev])
    accuracy = sum(p["prediction"] == r["label"] for p, r in zip(predictions, dev, strict=True)) / len(dev)
    assert accuracy == pytest.approx(results["best"]["metrics"]["validation/accuracy"], abs=1e-6)
    same_logits_as_the_run(predictor, run_model, [r["sentence"] for r in dev])

    # PEFT reads the same folder onto the bare backbone: the same hidden states as the run's model
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path), str(adapter)).eval()
    batch = {k: v for k, v in next(predictor.batches([r["sentence"] for r in dev[:8]])).items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(peft_model(**batch).last_hidden_state, predictor.model.hidden_states(batch), atol=1e-6)

    # PEFT's auto class, and PeftModel on the *ForSequenceClassification base, give the run's own logits (BERT's
    # pooler bypassed: the run's head is the classifier); offline the base is named as the local packaged folder
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    local = tmp_path / "adapter"
    shutil.copytree(adapter, local)
    (local / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(minilm_path)}))
    expected = predictor.logits([r["sentence"] for r in dev[:8]])
    for model in (AutoPeftModelForSequenceClassification.from_pretrained(str(local)),
                  PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(minilm_path),
                                            str(adapter))):
        with torch.no_grad():
            assert torch.allclose(model.eval()(**batch).logits, expected, atol=1e-5)


def test_old_format_adapter_still_loads(run_adapter, tmp_path):
    """An idspam-adapter/1 folder (adapter_config.json + adapter.safetensors) predicts as the PEFT-format one."""
    from safetensors.torch import save_file

    from idspam.adapter import read_adapter

    adapter = run_adapter[0]
    config, weights = read_adapter(adapter)
    old = tmp_path / "old"
    old.mkdir()
    config = {k: v for k, v in config.items() if k != "peft_type"} | {"format": "idspam-adapter/1"}
    (old / "adapter_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(old / "adapter.safetensors"))
    texts = [r["sentence"] for r in demo_rows("dev", 10)]
    assert torch.equal(idspam.load_adapter(old).logits(texts), idspam.load_adapter(adapter).logits(texts))

    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match="expected idspam_adapter.json .* found \\['weights.bin'\\]"):
        idspam.load_adapter(tmp_path / "neither")
    with pytest.raises(UserError, match="is a PEFT adapter without idspam's run files"):
        read_adapter(peft_only(adapter, tmp_path))


def peft_only(adapter, tmp_path):
    import shutil

    folder = tmp_path / "peft_only"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, folder / name)
    return folder


@pytest.mark.parametrize("method", ["lora", "lpt", "smop"])
def test_adapter_format_per_method(method, compose_cfg, tmp_path):
    """LoRA and LPT runs write PEFT folders, SMoP the project's own format; each reloads with the run's numbers.
    The LoRA run (head.dense=true: RoBERTa's classification head exactly) and the LPT run load through PEFT's
    auto class with the run's logits."""
    dense = ["head.dense=true"] if method == "lora" else []
    results, run_model = train_capturing_the_model(compose_cfg(
        "model=tiny", "trainer.max_epochs=1", "logger=none", "task.max_train_samples=32", f"method={method}", *dense))
    adapter = tmp_path / "adapter"
    names = sorted(p.name for p in adapter.iterdir() if not p.name.startswith("README"))
    if method == "smop":
        assert names == ["idspam_adapter.json", "idspam_adapter.safetensors"]
        assert json.loads((adapter / "idspam_adapter.json").read_text())["format"] == "idspam-adapter/2"
    else:
        assert "adapter_model.safetensors" in names and "idspam_head.safetensors" in names
        peft_type = json.loads((adapter / "adapter_config.json").read_text())["peft_type"]
        assert peft_type == {"lora": "LORA", "lpt": "IDSPAM_LPT"}[method]
    dev = demo_rows("dev")
    predictor = idspam.load_adapter(adapter)
    predictions = predictor.predict([r["sentence"] for r in dev])
    accuracy = sum(p["prediction"] == r["label"] for p, r in zip(predictions, dev, strict=True)) / len(dev)
    assert accuracy == pytest.approx(results["best"]["metrics"]["validation/accuracy"], abs=1e-6)
    same_logits_as_the_run(predictor, run_model, [r["sentence"] for r in dev])
    if method != "smop":
        loads_through_peft_with_the_runs_logits(adapter, run_model, predictor, [r["sentence"] for r in dev[:6]],
                                                tmp_path)


def loads_through_peft_with_the_runs_logits(adapter, run_model, predictor, texts, tmp_path):
    """The tiny run's random backbone saved as a *ForSequenceClassification base folder; the adapter (named onto
    it) through AutoPeftModelForSequenceClassification and PeftModel.from_pretrained gives the run's logits."""
    import shutil

    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from transformers import AutoModelForSequenceClassification

    expected = predictor.logits(texts)
    backbone = run_model.engine.base
    if hasattr(run_model.method, "peft_model"):
        backbone = run_model.method.peft_model.unload()  # LoRA: the backbone without its LoRA layers
    base = AutoModelForSequenceClassification.from_config(backbone.config)
    base.base_model.load_state_dict(backbone.state_dict(), strict=False)
    base.save_pretrained(tmp_path / "base")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    local = tmp_path / "named"
    shutil.copytree(adapter, local)
    (local / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(tmp_path / "base")}))
    batch = {k: v for k, v in next(predictor.batches(texts)).items() if k != "labels"}
    for model in (AutoPeftModelForSequenceClassification.from_pretrained(str(local)),
                  PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tmp_path / "base"),
                                            str(adapter))):
        with torch.no_grad():
            assert torch.allclose(model.eval()(**batch).logits, expected, atol=1e-5)


def test_decoder_lm_run_adapter_loads_through_peft_causal_lm_auto_class(compose_cfg, tmp_path):
    """A head=lm run on a tiny GPT-2 writes a CAUSAL_LM adapter: AutoPeftModelForCausalLM (base named onto the run's
    random backbone saved as a GPT2LMHeadModel folder) and PeftModel.from_pretrained on AutoModelForCausalLM give
    next-token logits whose label-word columns at the last real token are the run's class logits."""
    import shutil

    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    results, run_model = train_capturing_the_model(compose_cfg(
        "model=tiny_gpt2", "head=lm", "model.padding_side=left", "trainer.max_epochs=1", "logger=none",
        "task.max_train_samples=16", "task.max_eval_samples=8"))
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["peft_type"] == "IDSPAM"
    assert "AutoPeftModelForCausalLM" in (adapter / "README.md").read_text()
    predictor = idspam.load_adapter(adapter)
    texts = [r["sentence"] for r in demo_rows("dev", 6)] + ["dull"]  # different lengths: left padding matters
    expected = predictor.logits(texts)
    base = AutoModelForCausalLM.from_config(run_model.engine.base.config)
    missing = base.base_model.load_state_dict(run_model.engine.base.state_dict(), strict=False)
    assert not missing.unexpected_keys and torch.equal(base.lm_head.weight, run_model.head.lm_head.weight)
    base.save_pretrained(tmp_path / "base")
    named = tmp_path / "named"
    shutil.copytree(adapter, named)
    (named / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(tmp_path / "base")}))
    batch = {k: v for k, v in next(predictor.batches(texts)).items() if k != "labels"}
    assert not batch["attention_mask"].all()
    words = run_model.head.label_word_ids
    for model in (AutoPeftModelForCausalLM.from_pretrained(str(named)),
                  PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), str(adapter))):
        with torch.no_grad():
            logits = model.eval()(**batch).logits
        assert logits.shape[:2] == batch["input_ids"].shape
        assert torch.allclose(logits[:, -1, words], expected, atol=1e-5)
        with torch.no_grad(), model.disable_adapter():  # the prompt is what makes them the run's
            assert not torch.allclose(model(**batch).logits[:, -1, words], expected, atol=1e-3)


def test_readme_python_example_runs_as_written(tmp_path):
    """The complete example of the docs' "Use it from Python" page, run as a script in an empty folder."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    assert "get_peft_model(" in code and "Trainer(" in code and "PeftModel.from_pretrained(" in code
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = float(re.search(r"dev accuracy (\d\.\d+) on 118 sentences", proc.stdout).group(1))
    assert accuracy > 0.6  # the demo set's dev sentences, after two epochs
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert "'prediction': 'positive'" in proc.stdout.splitlines()[-1]


DECODERS = {
    "gpt2": dict(vocab_size=100, n_embd=32, n_layer=4, n_head=2, n_positions=64),
    "llama": dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64),
}


@pytest.mark.parametrize("model_type", list(DECODERS))
def test_decoders_classify_reload_and_generate(model_type, tmp_path):
    """Tiny random GPT-2 and Llama: a sequence classifier (reload, disable_adapter), and a causal LM whose generate
    is the greedy decoding of the prompted model, the prompt written once from the input
    (tests/test_peft_generate.py checks it against idspam's own generate, beams and sliding windows too)."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, **DECODERS[model_type], pad_token_id=0, num_labels=2)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(config).eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        plain = base(input_ids=ids, attention_mask=mask).logits
    model = get_peft_model(base, idspam.IDSPAMConfig(layer=2, prompt_length=3, bottleneck=8)).eval()
    with torch.no_grad():
        prompted = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, plain)
    assert not torch.allclose(prompted, plain)
    model.save_pretrained(str(tmp_path / "adapter"))
    again = AutoModelForSequenceClassification.from_config(config)
    again.load_state_dict(state)
    reloaded = PeftModel.from_pretrained(again, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids, attention_mask=mask).logits, prompted)

    torch.manual_seed(0)
    lm = get_peft_model(AutoModelForCausalLM.from_config(config), idspam.LPTConfig(layer=1, bottleneck=8)).eval()
    with torch.no_grad():  # the prompt written once from the input: greedy recomputation with that prompt
        generated = lm.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=4, do_sample=False,
                                pad_token_id=0)
        greedy = ids[:1]
        layer = lm.base_model.model.base_model.idspam_injection
        for _ in range(4):
            with layer.generating(ids.shape[1]):
                logits = lm.base_model.model(input_ids=greedy).logits
            greedy = torch.cat([greedy, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        with lm.disable_adapter():
            unprompted = lm(input_ids=greedy).logits
        assert not torch.allclose(unprompted, lm(input_ids=greedy).logits)
    assert torch.equal(generated, greedy)


@pytest.mark.parametrize("first", ["idspam.tuner.config", "idspam.tuner.model", "idspam.tuner.layer"])
def test_the_peft_types_are_registered_whichever_wing_module_is_imported_first(first):
    """Importing a wing module first must not leave PEFT's post-import hook a half-imported module (it used to
    warn "circular import" and leave PEFT without the idspam types)."""
    code = (f"import {first}\nfrom peft import mapping\nfrom idspam.tuner.config import CONFIGS\n"
            "assert all(c.method_peft_type() in mapping.PEFT_TYPE_TO_CONFIG_MAPPING for c in CONFIGS.values())\n")
    proc = subprocess.run([sys.executable, "-W", "error:idspam:UserWarning", "-c", code], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
