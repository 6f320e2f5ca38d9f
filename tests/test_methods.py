"""Every method on the tiny model: what it trains, how many parameters, and where its prompt goes."""

import pytest
import torch

from idspam.config import OptimizerConfig
from idspam.heads import ClassificationHead
from idspam.injection import InjectionEngine
from idspam.methods import METHODS, build_method, method_config
from idspam.model import PromptModel
from idspam.runner.module import TuningModule
from idspam.tasks import SPECS
from tests.conftest import make_tiny_backbone

N, LAYERS, FF, VOCAB, MAX_POS, TYPES = 32, 4, 64, 30522, 514, 2  # conf/model/tiny.yaml
T = 10


def build(name: str, run_layer: int = 2, **options) -> PromptModel:
    """A fresh tiny backbone with method `name` (its own layer if it fixes one) and a 2-class head."""
    from omegaconf import OmegaConf

    from idspam.runner.compose import compose

    composed = compose([f"method={name}"])  # the method's YAML, as a run gets it
    for key, value in options.items():
        OmegaConf.update(composed, f"method.{key}", value, merge=False)
    cfg = method_config(composed.method)
    torch.manual_seed(0)
    encoder = InjectionEngine(make_tiny_backbone().base)
    method = build_method(cfg, N)
    method.attach(encoder)
    return PromptModel(encoder, method, ClassificationHead(N, 2), cfg.layer if cfg.layer is not None else run_layer)


def batch_of(tokenizer):
    enc = tokenizer(["good film", "a rather bad and very long film indeed", "fine"], padding=True,
                    return_tensors="pt")
    return {**enc, "labels": torch.tensor([1, 0, 1])}


def owns(name: str, param: str) -> bool:
    """The parameters each method is meant to train (besides the head)."""
    if name == "lora":
        return "lora_" in param
    if name == "finetune":
        return param.startswith(("engine.base.embeddings.", "engine.base.encoder."))
    return param.startswith("method.")


def expected_count(name: str) -> int:
    """Each method's parameter formula (head excluded), written out from its definition."""
    n, t = N, T
    if name == "idspam":  # bias-free Wq, Wk, Wv; MLP n -> c -> t*n with biases
        c = 128
        return 3 * n * n + (n * c + c) + (c * t * n + t * n)
    if name == "idspam_meanpool":
        c = 128
        return (n * c + c) + (c * t * n + t * n)
    if name == "prompt_tuning":
        return t * n
    if name == "ptuning":  # t input vectors, MLP n -> h -> h -> n with h = n
        return t * n + 3 * (n * n + n)
    if name == "lpt":  # Linear(n, r), Linear(r, t*n), both with biases; r = 256
        r = 256
        return (n * r + r) + (r * t * n + t * n)
    if name == "smop":  # K prompts of t vectors and a linear router
        k = 4
        return k * t * n + (n * k + k)
    if name == "dept":  # prompt, A (max_length x r), B (r x n); r = 45
        r = 45
        return t * n + 256 * r + r * n
    if name == "lora":  # A (r x n) and B (n x r) on query and value in every layer; r = 8
        return LAYERS * 2 * (8 * n + n * 8)
    if name == "finetune":  # embeddings and layers; the unused pooler stays frozen
        embeddings = (VOCAB + MAX_POS + TYPES) * n + 2 * n
        layer = 4 * (n * n + n) + 2 * n + (n * FF + FF) + (FF * n + n) + 2 * n
        return embeddings + LAYERS * layer
    raise AssertionError(f"no formula for {name}")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trainable_count_equals_the_formula(name):
    model = build(name)
    counts = model.parameter_counts()
    assert counts["method"] == expected_count(name)
    assert counts["head"] == N * 2 + 2 and counts["trainable"] == counts["method"] + counts["head"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_changes_exactly_what_the_method_owns(name, tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build(name).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {k for k, _ in model.named_parameters() if owns(name, k) or k.startswith("head.")}
    assert {k for k, p in model.named_parameters() if p.requires_grad} == expected

    module = TuningModule(model, SPECS["demo"], OptimizerConfig(lr=1e-2), lr=1e-2)
    opt = torch.optim.AdamW(module.param_groups())
    batch = batch_of(tokenizer)
    for _ in range(3):
        opt.zero_grad()
        loss = module.loss(model(batch), batch["labels"])
        aux = model.aux_loss()
        (loss if aux is None else loss + aux).backward()
        opt.step()

    params = dict(model.named_parameters())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == expected, (
        f"changed but not owned: {sorted(changed - expected)[:5]}; "
        f"owned but unchanged: {sorted(expected - changed)[:5]}")
    assert all(k in params for k in changed), "a buffer changed"


def test_methods_fixed_at_the_input_ignore_the_run_layer(compose_cfg):
    from idspam.runner.checks import validate

    assert validate(compose_cfg("method=prompt_tuning", "layer=3")).layer == 0
    assert validate(compose_cfg("method=lpt", "layer=3")).layer == 3
    assert validate(compose_cfg("method=prompt_tuning", "method.layer=null", "layer=2")).layer == 2


def fixed_prompt_idspam(prompt: torch.Tensor, layer: int) -> PromptModel:
    """An ID-SPAM model whose generator writes `prompt` for every input (W_up = 0, b_up = prompt)."""
    model = build("idspam", run_layer=layer, final_relu=False, dropout=0.0)
    with torch.no_grad():
        model.method.up.weight.zero_()
        model.method.up.bias.copy_(prompt.flatten())
    return model.eval()


@pytest.mark.parametrize("name, layer, options", [
    ("prompt_tuning", 0, {}),
    ("prompt_tuning", 2, {"layer": None}),
    ("lpt", 2, {"static": True, "dropout": 0.0}),
    ("lpt", 3, {"static": True, "dropout": 0.0}),
])
def test_static_prompts_match_the_idspam_injection_path(name, layer, options, tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build(name, run_layer=layer, **options).eval()
    assert model.layer == layer
    reference = fixed_prompt_idspam(model.method.prompt.detach(), layer)
    batch = batch_of(tokenizer)
    with torch.no_grad():
        ours, theirs = model.hidden_states(batch), reference.hidden_states(batch)
        plain = model.engine(batch["input_ids"], batch["attention_mask"], layer)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert (ours - plain).abs().max() > 1e-3, "the prompt must change the hidden states"


@pytest.mark.parametrize("layer", [1, 3])
def test_lpt_reads_the_first_token_entering_layer_m(layer, tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build("lpt", run_layer=layer, dropout=0.0).eval()
    batch = batch_of(tokenizer)
    seen = {}

    def capture(module, args):
        seen["input"] = args[0]

    with torch.no_grad():
        ref = model.engine.base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 output_hidden_states=True).hidden_states[layer]
        handle = model.engine.layers[layer].register_forward_pre_hook(capture)
        model.hidden_states(batch)
    handle.remove()
    g = model.method
    expected = g.up(torch.relu(g.down(ref[:, 0]))).view(3, T, N)
    torch.testing.assert_close(seen["input"][:, :T], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, layer", [("idspam", 2), ("idspam_meanpool", 1), ("lpt", 2), ("lpt", 3),
                                         ("prompt_tuning", 0), ("smop", 0), ("ptuning", 0)])
def test_frozen_lower_stack_builds_no_graph(name, layer, tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build(name, run_layer=layer).train()
    assert not model.method.grad_below
    outputs = {}
    hooks = [model.engine.base.embeddings.register_forward_hook(lambda m, a, o: outputs.__setitem__(-1, o))]
    hooks += [block.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o))
              for i, block in enumerate(model.engine.layers)]
    model(batch_of(tokenizer))
    for h in hooks:
        h.remove()
    for i, out in outputs.items():
        out = out[0] if isinstance(out, tuple) else out
        assert (out.grad_fn is None) == (i < model.layer), f"graph at {i} (m={model.layer})"


def test_smop_routes_top1_and_balances_load(tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build("smop", balance_coef=0.5).train()
    smop = model.method
    batch = batch_of(tokenizer)
    with torch.no_grad():
        smop.router.weight.zero_()
        smop.router.bias.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))  # every input to prompt 1
    prompt = smop(model.engine.lower(batch["input_ids"], batch["attention_mask"], 0))
    p1 = torch.softmax(torch.tensor([0.0, 5.0, 0.0, 0.0]), -1)[1]
    torch.testing.assert_close(prompt, (p1 * smop.prompts[1]).expand(3, -1, -1))
    # all load on one prompt: coef * K * (1 * p1); uniform routing would give coef * 1
    torch.testing.assert_close(model.aux_loss(), 0.5 * 4 * p1)
    with torch.no_grad():
        smop.router.bias.zero_()
    smop(model.engine.lower(batch["input_ids"], batch["attention_mask"], 0))
    torch.testing.assert_close(model.aux_loss(), torch.tensor(0.5))
    model.eval()
    assert model.aux_loss() is None


def test_dept_updates_the_input_embeddings_with_its_own_lr(tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build("dept", lowrank_lr=3e-4, max_length=16).eval()
    with torch.no_grad():
        model.method.lora_b.normal_()
    batch = batch_of(tokenizer)
    states = model.engine.lower(batch["input_ids"], batch["attention_mask"], 0, embed_fn=model.method.input_embeds)
    plain = model.engine.lower(batch["input_ids"], batch["attention_mask"], 0)
    assert (states.embeddings - plain.embeddings).abs().max() > 1e-3
    groups = TuningModule(model, SPECS["demo"], OptimizerConfig(lr=1e-2)).param_groups()
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lrs[id(model.method.lora_a)] == lrs[id(model.method.lora_b)] == 3e-4
    assert lrs[id(model.method.prompt)] == 1e-2
    long = tokenizer(["word " * 40], return_tensors="pt")
    from idspam.errors import UserError

    with pytest.raises(UserError, match="longer than method.max_length=16"):
        model.engine.lower(long["input_ids"], long["attention_mask"], 0, embed_fn=model.method.input_embeds)


def test_lora_is_peft_and_its_adapter_saves_and_restores(tmp_path, tiny_backbone):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    _, tokenizer = tiny_backbone
    model = build("lora").train()
    assert sum(isinstance(m, LoraLayer) for m in model.engine.modules()) == 2 * LAYERS
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(tokenizer)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), batch["labels"]).backward()
        opt.step()
    model.eval()
    model.method.save_adapter(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}

    restored = build("lora").eval()
    with torch.no_grad():
        trained = model.hidden_states(batch)
        assert (restored.hidden_states(batch) - trained).abs().max() > 1e-4  # fresh LoRA: B = 0
        restored.method.load_adapter(tmp_path / "adapter")
        torch.testing.assert_close(restored.hidden_states(batch), trained)
        # and PEFT itself loads it onto a plain backbone
        plain = PeftModel.from_pretrained(make_tiny_backbone().base, str(tmp_path / "adapter")).eval()
        out = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], trained[real], atol=1e-5, rtol=0)


def test_lora_names_the_modules_when_targets_do_not_match():
    from idspam.errors import UserError

    with pytest.raises(UserError, match=r"target_modules=\['qkv'\].*linear modules there: .*query"):
        build("lora", target_modules=["qkv"])


@pytest.mark.parametrize("targets,bad", [("[nosuch]", "'nosuch'"), ("[query,nosuch,valu]", "'nosuch', 'valu'")])
def test_lora_targets_that_match_nothing_are_refused_before_any_weights_load(compose_cfg, monkeypatch, targets, bad):
    """The defect: method.target_modules=[nosuch] was refused only by PEFT, after the backbone's weights loaded
    (and [query,nosuch] adapted query alone, silently)."""
    import transformers

    import idspam.backbone as bb
    from idspam.errors import UserError
    from idspam.model import load_parts
    from idspam.runner.checks import validate
    from idspam.runner.train import train

    def no_weights(*a, **k):
        raise AssertionError("weights were loaded before target_modules was checked")

    for auto in (transformers.AutoModel, transformers.AutoModelForMaskedLM, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", no_weights)
    monkeypatch.setattr(bb, "load_backbone", no_weights)
    with pytest.raises(UserError) as e:
        train(compose_cfg("model=tiny", "method=lora", f"method.target_modules={targets}", "logger=none"))
    message = str(e.value)
    assert message.startswith(f"method.target_modules: {bad} match no module of the backbone") and "\n" not in message
    assert "its linear modules: " in message and "query" in message and "value" in message
    good = validate(compose_cfg("model=tiny", "method=lora", "method.target_modules=[query,attention.self.value]"))
    load_parts(good)  # full-name suffixes match as in PEFT


def test_lora_dropout_follows_training_mode_while_the_backbone_stays_frozen():
    model = build("lora").train()
    lora_dropouts = [m for n, m in model.engine.named_modules()
                     if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert lora_dropouts and all(m.training for m in lora_dropouts)
    assert not model.engine.base.embeddings.training
    finetune = build("finetune").train()
    assert finetune.engine.base.embeddings.training and finetune.engine.layers[0].training


def test_prompt_tuning_starts_from_vocabulary_tokens_as_the_embedding_layer_writes_them(tiny_backbone):
    _, tokenizer = tiny_backbone
    model = build("prompt_tuning", seed_vocab_ids=[7, 8, 9])
    ids = torch.tensor([[7, 8, 9, 7, 8, 9, 7, 8, 9, 7]])
    with torch.no_grad():
        expected = model.engine.base.eval().embeddings(input_ids=ids)[0]
    torch.testing.assert_close(model.method.prompt.detach(), expected)
    random = build("prompt_tuning", init="random", init_range=0.1).method.prompt
    assert random.abs().max() <= 0.1 and random.std() > 0.01
