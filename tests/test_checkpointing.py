"""Activation checkpointing over layers m..N-1 (model.activation_checkpointing): the layers above m really are
recomputed in backward (their forward runs twice), and losses and gradients equal the run without it, with the
last-layer pruning on and off, dropout on (backbone_mode=train), a bfloat16 backbone and an nf4 one."""

import pytest
import torch


def build(compose_cfg, *overrides):
    from idspam.backbone import fit_config_to_tokenizer, load_backbone, load_config, load_tokenizer
    from idspam.model import build_model
    from idspam.runner.checks import validate
    from idspam.tasks import get_spec

    run = validate(compose_cfg(*overrides))
    config = load_config(run.model)
    tokenizer = load_tokenizer(run.model, config)
    fit_config_to_tokenizer(config, run.model, tokenizer)
    torch.manual_seed(0)
    return build_model(run, get_spec(run.task), load_backbone(run.model, config), tokenizer), tokenizer, run


def step(model, tokenizer, seed=3):
    batch = dict(tokenizer(["a fine film", "a much longer and rather dull film, with padding after it", "ok"],
                           padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks in both runs
    loss = torch.nn.functional.cross_entropy(model(batch).float(), torch.tensor([0, 1, 1]))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


CASES = [
    ("model=tiny_llama", "method=idspam", "model.padding_side=left"),
    ("model=tiny_llama", "method=lpt", "model.prune_last_layer=false"),
    ("model=tiny", "method=idspam", "model.backbone_mode=train"),  # dropout in the recomputed layers
    ("model=tiny_gpt2", "method=lora"),  # graph below m too (LoRA): every layer checkpointed
    ("model=tiny_llama", "method=idspam", "model.dtype=bfloat16"),
    ("model=tiny_llama", "method=idspam", "model.quantization=nf4", "model.arch.hidden_size=64",
     "model.arch.intermediate_size=128"),
]


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: "-".join(x.split("=")[-1] for x in o))
def test_checkpointed_gradients_equal_the_plain_ones(compose_cfg, overrides):
    if any("quantization" in o for o in overrides):
        pytest.importorskip("bitsandbytes")
    plain, tokenizer, run = build(compose_cfg, *overrides)
    ckpt, _, _ = build(compose_cfg, *overrides, "model.activation_checkpointing=true")
    assert ckpt.engine.activation_checkpointing and not plain.engine.activation_checkpointing
    top = ckpt.engine.layers[run.layer]
    calls = []
    hook = top.register_forward_pre_hook(lambda *a: calls.append(1))
    loss_c, grads_c = step(ckpt, tokenizer)
    hook.remove()
    assert len(calls) == 2, "layer m was not recomputed in backward"
    loss_p, grads_p = step(plain, tokenizer)
    torch.testing.assert_close(loss_c, loss_p, atol=0, rtol=0)
    assert grads_p and set(grads_c) == set(grads_p)
    for name in grads_p:
        torch.testing.assert_close(grads_c[name], grads_p[name], atol=1e-6, rtol=1e-5, msg=name)
    assert any(g.abs().max() > 0 for n, g in grads_p.items() if not n.startswith("head.")), "no method gradient"


def test_no_checkpoint_without_a_graph(compose_cfg):
    model, tokenizer, run = build(compose_cfg, "model=tiny_llama", "model.activation_checkpointing=true")
    calls = []
    model.engine.layers[run.layer].register_forward_pre_hook(lambda *a: calls.append(1))
    batch = dict(tokenizer(["a fine film"], return_tensors="pt"))
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        model.eval()(batch)
    assert len(calls) == 1
