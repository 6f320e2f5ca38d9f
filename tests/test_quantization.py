"""Quantized frozen backbones (model.quantization=nf4|fp4|int8, bitsandbytes' CPU backend here): the engine runs
the quantized layers through their own forward and equals the quantized Hugging Face model; a zero-mask prompt
changes no real token; only the method and head get gradients; methods train end to end on nf4 and int8 tiny
decoders and their adapters reload to the same predictions; bad inputs are one line before any weights."""

from dataclasses import replace

import pytest
import torch

from idspam.errors import UserError

pytest.importorskip("bitsandbytes")

# bitsandbytes' 4-bit CPU kernels quantize in blocks of 64 inputs: the tiny models, widened to 64
WIDE = {"tiny_llama": dict(hidden_size=64, intermediate_size=128), "tiny_gpt2": dict(n_embd=64),
        "tiny": dict(hidden_size=64, intermediate_size=128)}
WIDE_LLAMA = ["model.arch.hidden_size=64", "model.arch.intermediate_size=128"]
FAST = ["trainer.max_epochs=1", "task.max_train_samples=16", "logger=none",
        "data.batch_size=8"]


def model_cfg(name: str):
    from omegaconf import OmegaConf

    from idspam.config import ModelConfig, typed

    from .conftest import Path

    node = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / f"{name}.yaml")
    node.pop("defaults")
    return typed(node, ModelConfig, "model")


def quantized(name: str, quantization: str):
    from idspam.backbone import load_backbone, load_config

    cfg = model_cfg(name)
    cfg = replace(cfg, quantization=quantization, arch={**cfg.arch, **WIDE[name]})
    config = load_config(cfg)
    torch.manual_seed(0)
    return load_backbone(cfg, config), cfg


def batch(side: str, vocab: int = 200):
    torch.manual_seed(1)
    lengths, L = (9, 5, 12), 12
    ids = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    for row, n in enumerate(lengths):
        where = slice(0, n) if side == "right" else slice(L - n, L)
        ids[row, where], mask[row, where] = torch.randint(3, vocab, (n,)), 1
    return ids, mask


@pytest.mark.parametrize("name,quantization", [("tiny_llama", "nf4"), ("tiny_llama", "int8"), ("tiny_gpt2", "fp4"),
                                               ("tiny", "nf4")])
@pytest.mark.parametrize("side", ["right", "left"])
def test_engine_equals_the_quantized_hugging_face_model(name, quantization, side):
    backbone, _ = quantized(name, quantization)
    engine_equals_hugging_face(backbone.base.eval(), quantization, side, positions=name != "tiny")


# the other decoder families of tests/tiny_decoders.py at 64 wide (bitsandbytes' 4-bit CPU blocks), 4 layers, with
# their sliding windows (4) shorter than the rows, Gemma2's attention softcap; Llama and GPT-2 are above
WIDE_FAMILY = dict(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral", "gemma", "gemma2"])
def test_every_decoder_family_in_nf4_equals_the_quantized_hugging_face_model(family):
    from idspam.backbone import load_backbone, load_config

    from .tiny_decoders import FAMILIES

    arch = {**FAMILIES[family], **WIDE_FAMILY}
    if "layer_types" in arch:
        arch["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention"]
    if "head_dim" in arch:
        arch["head_dim"] = 16
    arch["num_key_value_heads"] = 2  # 4-bit CPU kernels take output widths in blocks of 32
    cfg = replace(model_cfg("tiny_llama"), name=f"tiny_{family}", quantization="nf4", arch=arch,
                  attn_implementation="eager")
    config = load_config(cfg)
    torch.manual_seed(0)
    backbone = load_backbone(cfg, config)
    assert backbone.base.config.model_type == family
    for side in ("right", "left"):
        engine_equals_hugging_face(backbone.base.eval(), "nf4", side, positions=True, layers=(1,))  # CPU 4-bit: slow


def engine_equals_hugging_face(base, quantization: str, side: str, positions: bool, layers=(0, 2)) -> None:
    """The engine's lower/upper stacks on a quantized backbone equal its own forward on the real tokens, at each m of
    `layers`, with no prompt, a zero-mask prompt and the pruned last layer; a live prompt changes them."""
    from idspam.injection import InjectionEngine, real_positions

    kind = "Linear4bit" if quantization != "int8" else "Linear8bitLt"
    assert any(type(m).__name__ == kind for m in base.modules()), "the backbone was not quantized"
    ids, mask = batch(side)
    engine = InjectionEngine(base)  # first: it sets how the 4-bit layers run on the CPU, for HF's forward too
    with torch.no_grad():
        kwargs = {"position_ids": real_positions(mask)} if positions else {}
        ref = base(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    real = mask.bool()
    for m in layers:
        with torch.no_grad():
            states = engine.lower(ids, mask, m)
            plain = engine.upper(states.hidden, mask, m)
            prompt = torch.randn(3, 4, engine.hidden_size) * 2
            masked = engine.upper(states.hidden, mask, m, prompt, prompt_mask=torch.zeros(3, 4))
            live = engine.upper(states.hidden, mask, m, prompt)
            rows = real_positions(mask).max(dim=1).values
            pruned = engine.upper(states.hidden, mask, m, prompt, rows=rows)[:, 0]
        # int8 matmuls round their inputs to float16 per call: equal up to that rounding
        tol = dict(atol=2e-5, rtol=1e-4) if quantization != "int8" else dict(atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(plain[real], ref[real], **tol)
        torch.testing.assert_close(masked[real], ref[real], **tol)
        assert (live[real] - ref[real]).abs().max() > 1e-2, "an attended prompt must change the output"
        full_rows = live[torch.arange(3), rows]
        torch.testing.assert_close(pruned, full_rows, **tol)


def _has_avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


@pytest.mark.skipif(not _has_avx512bf16(), reason="bitsandbytes repacks 4-bit weights only on AVX512-BF16 CPUs")
def test_the_frozen_stack_runs_4bit_layers_as_training_does():
    """bitsandbytes repacks a 4-bit weight run in eval mode without autograd on an AVX512-BF16 CPU, for a kernel
    that, without the `kernels` package, is a slow bfloat16 loop (`unpack_cpu_4bit_weights`). The engine keeps
    the training path: its graph-free lower stack equals the Hugging Face forward with autograd bit for bit, also
    when the weights were repacked before the engine was built; repacking stays off afterwards."""
    from bitsandbytes.nn import Linear4bit

    from idspam.injection import InjectionEngine

    backbone, _ = quantized("tiny_llama", "nf4")
    base = backbone.base.eval()
    ids, mask = batch("right")
    with torch.no_grad():
        base(input_ids=ids, attention_mask=mask)  # eval, no autograd: bitsandbytes may repack here
    engine = InjectionEngine(base)
    linears = [m for m in base.modules() if isinstance(m, Linear4bit)]

    def packed() -> int:
        return sum(bool(getattr(m.weight.quant_state, "packing_format_for_cpu", False)) for m in linears)

    assert linears and packed() == 0
    embeds = base.embed_tokens(ids).detach().requires_grad_()  # autograd: bitsandbytes' training path
    with_graph = base(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    with torch.no_grad():
        without = engine.lower(ids, mask, 2).hidden
        base(input_ids=ids, attention_mask=mask)
    assert packed() == 0
    real = mask.bool()
    assert torch.equal(without[real], with_graph.detach()[real])


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_only_method_and_head_get_gradients_on_a_quantized_backbone(quantization):
    from idspam.heads import ClassificationHead
    from idspam.injection import InjectionEngine
    from idspam.methods import build_method, method_config
    from idspam.model import PromptModel

    backbone, _ = quantized("tiny_llama", quantization)
    engine = InjectionEngine(backbone.base)
    method = build_method(method_config({"name": "idspam"}), 64)
    method.attach(engine)
    model = PromptModel(engine, method, ClassificationHead(64, 2, read_at="last"), layer=2)
    ids, mask = batch("left")
    model.train()
    model({"input_ids": ids, "attention_mask": mask}).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith(("method.", "head.")) for n in grads)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == grads, "a trained parameter got no gradient"
    assert all(p.grad is None for p in engine.parameters())


@pytest.mark.parametrize("quantization,method", [("nf4", m) for m in
                                                 ("idspam", "idspam_meanpool", "lpt", "prompt_tuning", "ptuning",
                                                  "smop", "dept", "lora")] + [("int8", "idspam"), ("int8", "lora")])
def test_methods_train_on_a_quantized_decoder_and_the_adapter_reloads(compose_cfg, tmp_path, quantization, method):
    from idspam.api import load_adapter
    from idspam.runner.train import train

    from .test_decoder_runs import dev_texts

    results = train(compose_cfg("model=tiny_llama", f"method={method}", f"model.quantization={quantization}",
                                "model.padding_side=left", *WIDE_LLAMA, *FAST))
    assert results["status"] == "finished"
    predictor = load_adapter(tmp_path / "adapter")
    assert predictor.model.engine.base.config.quantization_config.quant_method.value == "bitsandbytes"
    texts, labels = dev_texts()
    predictions = predictor.predict(texts)
    accuracy = sum(p["prediction"] == predictor.label_names[y] for p, y in zip(predictions, labels, strict=True))
    assert accuracy / len(labels) == pytest.approx(results["best"]["value"], abs=1e-6)


def test_lora_on_a_quantized_backbone_is_qlora():
    from idspam.injection import InjectionEngine
    from idspam.methods import build_method, method_config

    backbone, _ = quantized("tiny_llama", "nf4")
    engine = InjectionEngine(backbone.base)
    method = build_method(method_config({"name": "lora"}), 64)
    method.attach(engine)
    names = {type(m).__module__ + "." + type(m).__name__ for m in method.backbone_modules(engine)}
    assert names == {"peft.tuners.lora.bnb.Linear4bit"}, names


@pytest.mark.parametrize("overrides,message", [
    (["model=tiny_llama", "method=finetune", "model.quantization=nf4"],
     r"method=finetune trains the backbone's own weights, which model.quantization=nf4 freezes"),
    (["model=tiny_llama", "model.quantization=nf8"], r"unknown model.quantization 'nf8'; valid: none, nf4, fp4, int8"),
])
def test_bad_quantized_input_is_one_line_before_any_weights(compose_cfg, overrides, message, monkeypatch):
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before the check")

    monkeypatch.setattr("idspam.backbone.load_backbone", no_weights)
    with pytest.raises(UserError, match=message):
        train(compose_cfg(*overrides, *FAST))


def test_quantization_without_bitsandbytes_is_one_line(monkeypatch):
    import importlib.util

    from idspam.config import ModelConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError, match=r"model.quantization=nf4 needs bitsandbytes, which is not installed: "
                                        r"pip install 'idspam\[quant\]'"):
        ModelConfig(quantization="nf4")
    ModelConfig(quantization="none")


@pytest.mark.slow  # three two-epoch runs
def test_cache_lower_and_checkpointing_on_an_nf4_decoder_change_no_result(compose_cfg, tmp_path):
    """Two epochs on an nf4 Llama: with the lower stack cached (epoch 2 reads it) and with activation
    checkpointing, the dev metrics and the final trained tensors are those of the plain run."""
    from idspam.runner.checkpoints import load_checkpoint
    from idspam.runner.train import train

    common = ["model=tiny_llama", "model.quantization=nf4", "model.padding_side=left", "trainer.max_epochs=2",
              "task.max_train_samples=16", "logger=none", "data.batch_size=8", *WIDE_LLAMA]
    runs = {}
    for variant in ("cache_lower=false", "cache_lower=true", "model.activation_checkpointing=true"):
        out = tmp_path / variant.replace("=", "_")
        results = train(compose_cfg(*common, variant, f"paths.output_dir={out}"))
        state = load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
        runs[variant] = ([e["validation/accuracy"] for e in results["epochs"]], state)
    plain = runs.pop("cache_lower=false")
    for variant, (metrics, state) in runs.items():
        assert metrics == plain[0], variant
        assert set(state) == set(plain[1])
        for name, tensor in plain[1].items():
            torch.testing.assert_close(state[name], tensor, atol=1e-5, rtol=1e-4, msg=f"{variant}: {name}")


def quantized_causal_lm(tmp_path, quantization: str = "nf4"):
    from transformers import AutoConfig, AutoModelForCausalLM

    from idspam.backbone import quantization_config, quantized_device_map
    from idspam.config import ModelConfig

    from .test_decoders import DECODERS

    arch = {**DECODERS["llama"], "hidden_size": 64, "intermediate_size": 128}
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path, device_map=quantized_device_map(),
                                                quantization_config=quantization_config(
                                                    ModelConfig(quantization=quantization))).eval()


@pytest.mark.slow  # two 4-bit causal LMs built, saved and reloaded
def test_generation_on_an_nf4_decoder(tmp_path):
    """Without a prompt (LoRA at B = 0) generation equals the quantized HF model's; with ID-SPAM's prompt the
    cached decode gives the tokens of recomputing every step, and the prompt changes the scores."""
    from idspam.generation import generate, left_padded

    from .test_generation import prompt_model, recompute_greedy

    lm = quantized_causal_lm(tmp_path)
    ids, mask = batch("right")
    kw = dict(max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    left_ids, left_mask = left_padded(ids, mask)
    lora = prompt_model(lm, "lora")  # first: the engine sets how the 4-bit layers run on the CPU, for HF's too
    ref = lm.generate(input_ids=left_ids, attention_mask=left_mask, **kw)  # LoRA's B = 0: the plain model's
    ours = generate(lora, ids, mask, **kw)
    torch.testing.assert_close(torch.stack(ours.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)
    lm = quantized_causal_lm(tmp_path / "again")  # LoRA wrapped the first one's layers
    model = prompt_model(lm, "idspam")
    ours = generate(model, ids, mask, **kw)
    tokens, logits = recompute_greedy(model, ids, mask, 5)
    assert torch.equal(ours.sequences[:, ids.shape[1]:], tokens)
    torch.testing.assert_close(torch.stack(ours.scores), logits, atol=1e-4, rtol=1e-4)
    assert (torch.stack(ours.scores) - torch.stack(ref.scores)).abs().max() > 1e-2, "the prompt must matter"
