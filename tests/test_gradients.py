"""Training touches only the generator and head; the lower stack builds no autograd graph."""

import pytest
import torch

from idspam.config import HeadConfig
from idspam.heads import ClassificationHead
from idspam.injection import InjectionEngine
from idspam.methods.idspam import IDSPAMConfig, IDSPAMGenerator
from idspam.model import PromptModel


def make_model(backbone, layer, mode="eval"):
    torch.manual_seed(0)
    enc = InjectionEngine(backbone.base)
    head = HeadConfig()
    return PromptModel(enc, IDSPAMGenerator(IDSPAMConfig(prompt_length=4, bottleneck=8), enc.hidden_size),
                       ClassificationHead(enc.hidden_size, 2, head.dropout), layer, mode)


def batch_of(tokenizer):
    enc = tokenizer(["good film", "a rather bad and very long film indeed"], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor([1, 0])}


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_one_step_changes_only_generator_and_head(tiny_backbone, layer):
    backbone, tokenizer = tiny_backbone
    model = make_model(backbone, layer).train()
    frozen = {k: v.clone() for k, v in model.engine.state_dict().items()}
    trainable = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = batch_of(tokenizer)
    torch.nn.functional.cross_entropy(model(batch), batch["labels"]).backward()

    with_grad = {k for k, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)
    assert all(k.startswith(("method.", "head.")) for k in with_grad)
    assert all(p.grad.abs().sum() > 0 for k, p in model.named_parameters() if k.startswith("method."))
    opt.step()
    for k, v in model.engine.state_dict().items():
        assert torch.equal(v, frozen[k]), f"backbone tensor {k} changed"
    assert all(not torch.equal(p, trainable[k]) for k, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_no_graph_below_the_injection_layer(tiny_backbone, layer):
    backbone, tokenizer = tiny_backbone
    model = make_model(backbone, layer).train()
    outputs = {}
    hooks = [model.engine.base.embeddings.register_forward_hook(lambda m, a, o: outputs.__setitem__(-1, o))]
    for i, block in enumerate(model.engine.layers):
        hooks.append(block.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o)))
    try:
        model(batch_of(tokenizer))
    finally:
        for h in hooks:
            h.remove()
    for i, out in outputs.items():
        out = out[0] if isinstance(out, tuple) else out
        if i < layer:  # embeddings (-1) and layers 0..m-1
            assert out.grad_fn is None and not out.requires_grad, f"graph built at layer {i} < m={layer}"
        else:
            assert out.grad_fn is not None, f"layer {i} >= m={layer} must carry the graph to the prompt"


def test_backbone_mode_is_fixed_by_config(tiny_backbone):
    backbone, _ = tiny_backbone
    model = make_model(backbone, 2, mode="eval").train()
    assert model.method.training and model.head.training
    assert not any(m.training for m in model.engine.modules())
    model = make_model(backbone, 2, mode="train").train()
    assert all(m.training for m in model.engine.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.engine.parameters())
