"""Every method trains end to end on tiny random decoders through the runner: run dir, results.json, an
adapter whose reload predicts what the run evaluated; only method + head parameters train; bad inputs
are one line before any weights load."""

import json

import pytest
import torch

from idspam.errors import UserError

FAST = ["trainer.max_epochs=1", "task.max_train_samples=32", "logger=none", "data.batch_size=8"]
METHODS = ["idspam", "idspam_meanpool", "prompt_tuning", "ptuning", "lpt", "smop", "dept", "lora", "finetune"]


def dev_texts():
    from idspam.tasks import SPECS, read_local

    path = SPECS["demo"].local_files["validation"][0]
    from pathlib import Path

    import idspam

    rows = read_local(SPECS["demo"], Path(idspam.__file__).parent / "resources" / path)
    return rows["text"], rows["label"]


@pytest.mark.parametrize("model,method", [("tiny_gpt2", m) for m in METHODS]
                         + [("tiny_llama", m) for m in ("idspam", "lpt", "lora")] + [("tiny_qwen2", "idspam")])
def test_every_method_trains_on_a_decoder_and_its_adapter_reloads(compose_cfg, tmp_path, model, method):
    from idspam.api import load_adapter
    from idspam.runner.train import train

    side = "left" if model == "tiny_llama" else "right"
    results = train(compose_cfg(f"model={model}", f"method={method}", f"model.padding_side={side}", *FAST))
    assert results["status"] == "finished" and results["model"] == model
    params = results["parameters"]
    assert params["trainable"] > 0 and params["trainable"] == params["method"] + params["head"]
    texts, labels = dev_texts()
    predictor = load_adapter(tmp_path / "adapter")
    predictions = predictor.predict(texts)
    accuracy = sum(p["prediction"] == predictor.label_names[y] for p, y in zip(predictions, labels, strict=True))
    assert accuracy / len(labels) == pytest.approx(results["best"]["value"], abs=1e-6)  # a float32 metric
    # the reloaded model carries exactly the tensors of the best checkpoint
    from idspam.runner.checkpoints import load_checkpoint

    best = {k.removeprefix("model."): v for k, v in load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
            ["state_dict"].items()}
    reloaded = predictor.model.trained_state_dict()
    assert set(reloaded) == set(best)
    for name, tensor in best.items():
        torch.testing.assert_close(reloaded[name], tensor, atol=0, rtol=0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["layer"] == results["layer"]


def test_lm_head_on_a_decoder_trains_only_the_generator(compose_cfg):
    from idspam.runner.train import train

    results = train(compose_cfg("model=tiny_gpt2", "head=lm", "model.padding_side=left", *FAST))
    assert results["status"] == "finished" and results["parameters"]["head"] == 0
    assert results["parameters"]["method"] > 0


def test_only_method_and_head_receive_gradients_on_a_decoder():
    from omegaconf import OmegaConf

    from idspam.backbone import load_backbone, load_config, load_tokenizer
    from idspam.config import ModelConfig, typed
    from idspam.heads import ClassificationHead
    from idspam.injection import InjectionEngine
    from idspam.methods import build_method, method_config
    from idspam.model import PromptModel

    from .conftest import Path

    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny_llama.yaml")
    node.pop("defaults")
    cfg = typed(node, ModelConfig, "model")
    config = load_config(cfg)
    tokenizer = load_tokenizer(cfg, config)
    torch.manual_seed(0)
    engine = InjectionEngine(load_backbone(cfg, config).base)
    method = build_method(method_config({"name": "idspam"}), 32)
    method.attach(engine)
    model = PromptModel(engine, method, ClassificationHead(32, 2, read_at="last"), layer=2)
    seen = {}
    hooks = [engine.layers[i].register_forward_hook(lambda m, a, kw, o, i=i: seen.__setitem__(i, o), with_kwargs=True)
             for i in range(4)]
    batch = dict(tokenizer(["a short one", "a longer sentence with padding here"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    model.train()
    model(batch).sum().backward()
    for h in hooks:
        h.remove()
    assert not seen[0].requires_grad and not seen[1].requires_grad, "layers below m built a graph"
    assert seen[2].requires_grad and seen[3].requires_grad
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith(("method.", "head.")) for n in grads)
    assert all(p.grad is None for p in engine.parameters())


@pytest.mark.parametrize("overrides,message", [
    (["model=tiny_gpt2", "layer=4"], r"layer=4 is out of range for model 'tiny_gpt2' with 4 layers; valid: 0..3"),
    (["model=tiny_gpt2", "task.max_length=1000"], r"task.max_length=1000 is beyond the 512 positions of model "
                                                   r"'tiny_gpt2'; valid: 8..512"),
    (["model=minilm", "task.max_length=1000"], r"task.max_length=1000 is beyond the 512 positions of model 'minilm'"),
    # every family: the positions come from each config (tiny's RoBERTa and XLM-R positions start after its pad id
    # 0: 514 - 1; BERT's at 0)
    *[([*model, "task.max_length=1000"], rf"task.max_length=1000 is beyond the {n} positions of model '{name}'; "
                                          rf"valid: 8..{n}")
      for model, name, n in [(["model=tiny"], "tiny", 513), (["model=tiny", "model.arch.model_type=bert"], "tiny", 514),
                             (["model=tiny", "model.arch.model_type=xlm-roberta"], "tiny", 513),
                             (["model=tiny_llama"], "tiny_llama", 512), (["model=tiny_qwen2"], "tiny_qwen2", 512),
                             *[(["model=tiny_llama", f"model.arch.model_type={t}"], "tiny_llama", 512)
                               for t in ("mistral", "gemma", "gemma2", "qwen3")]]],
    (["model=tiny_llama", "head=mlm"], r"head=mlm needs a masked-LM encoder; model 'tiny_llama' is a decoder"),
    (["model=tiny", "head=lm"], r"head=lm reads a decoder's next-token logits; model 'tiny' is an encoder"),
    (["model=tiny_gpt2", "head=lm", "task.label_words=[terrible,unbelievably]"],
     r"label word 'unbelievably' is not one token"),
    (["model=tiny_gpt2", "model.arch.model_type=gpt_neo"], r"'gpt_neo'.* idspam cannot inject into; supported model "
                                                          r"types by family: .*GPT-2: gpt2.*llama, qwen2"),
    (["model=tiny_llama", "model.dtype=float64"], r"unknown model.dtype 'float64'; valid: float32, bfloat16, float16"),
    (["model=tiny_llama", "model.padding_side=middle"], r"unknown model.padding_side 'middle'; valid: right, left"),
])
def test_bad_decoder_input_is_one_line_before_any_weights(compose_cfg, overrides, message, monkeypatch):
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr("idspam.backbone.load_backbone", no_weights)
    with pytest.raises(UserError, match=message):
        train(compose_cfg(*overrides, *FAST))


@pytest.mark.parametrize("method", ["idspam", "lora"])
def test_bfloat16_backbone_keeps_trained_parameters_in_float32(compose_cfg, method):
    """model.dtype=bfloat16: the frozen weights in bfloat16, what trains (method, LoRA matrices, head) float32."""
    from idspam.backbone import load_backbone, load_config, load_tokenizer
    from idspam.model import build_model
    from idspam.runner.checks import validate
    from idspam.tasks import get_spec

    run = validate(compose_cfg("model=tiny_llama", f"method={method}", "model.dtype=bfloat16"))
    config = load_config(run.model)
    tokenizer = load_tokenizer(run.model, config)
    model = build_model(run, get_spec(run.task), load_backbone(run.model, config), tokenizer)
    trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trained and set(trained.values()) == {torch.float32}, trained
    assert frozen == {torch.bfloat16}
    batch = dict(tokenizer(["one input", "another, longer input"], padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    model.train()
    logits = model(batch)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model,head,side,methods", [
    ("tiny", "cls", "right", METHODS), ("tiny_gpt2", "cls", "left", METHODS),  # every method
    ("tiny", "mlm", "left", ["idspam", "lpt"]), ("tiny_gpt2", "lm", "right", ["idspam", "lora"]),  # every head
    ("tiny_llama", "cls", "right", ["idspam", "lpt"]), ("tiny_llama", "lm", "left", ["idspam", "dept"]),
])
def test_last_layer_pruning_gives_the_unpruned_logits_for_every_method(compose_cfg, model, head, side, methods):
    from idspam.backbone import fit_config_to_tokenizer, load_backbone, load_config, load_tokenizer
    from idspam.model import build_model
    from idspam.runner.checks import validate
    from idspam.tasks import get_spec, mlm_verbalizer
    from idspam.text import Tokenize

    texts = [("a fine film",), ("a much longer and rather dull film, with padding after it",)]
    for method in methods:
        run = validate(compose_cfg(f"model={model}", f"method={method}", f"head={head}", f"model.padding_side={side}",
                                   "task=demo"))
        spec = get_spec(run.task)
        config = load_config(run.model)
        tokenizer = load_tokenizer(run.model, config)
        fit_config_to_tokenizer(config, run.model, tokenizer)
        torch.manual_seed(0)
        net = build_model(run, spec, load_backbone(run.model, config, with_lm_head=head != "cls"), tokenizer).eval()
        template = mlm_verbalizer(spec, run.task)[0] if head != "cls" else None
        ids = Tokenize(tokenizer, 64, template, token_types=False, decoder=head == "lm")(texts)["input_ids"]
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        with torch.no_grad():
            net.prune_last_layer = False
            full = net(batch)
            net.prune_last_layer = True
            pruned = net(batch)
        torch.testing.assert_close(pruned, full, atol=3e-5, rtol=1e-4, msg=f"{method}: pruned logits differ")


def test_cache_lower_and_length_grouping_on_a_decoder_change_no_result(compose_cfg, tmp_path):
    """Left-padded Llama, batches grouped by length, two epochs: with the lower stack cached (epoch 2 reads
    it) the dev metrics and the final trained tensors are those of the uncached run."""
    from idspam.runner.checkpoints import load_checkpoint
    from idspam.runner.train import train

    common = ["model=tiny_llama", "model.padding_side=left", "data.group_by_length=true", "trainer.max_epochs=2",
              "task.max_train_samples=32", "logger=none", "data.batch_size=8"]
    runs = {}
    for cached in (False, True):
        out = tmp_path / str(cached)
        results = train(compose_cfg(*common, f"cache_lower={str(cached).lower()}", f"paths.output_dir={out}"))
        state = load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
        runs[cached] = ([e["validation/accuracy"] for e in results["epochs"]], state)
    assert runs[True][0] == runs[False][0]
    for name, tensor in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], tensor, atol=1e-6, rtol=1e-5)
