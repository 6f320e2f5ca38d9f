"""ID-SPAM's generator: eqs. 1-2 as written, padding masked, parameter counts by formula."""

import math

import pytest
import torch

from idspam.injection import LowerStates
from idspam.methods import build_method
from idspam.methods.idspam import IDSPAMConfig, IDSPAMGenerator


def states(E, mask, full=None):
    ids = torch.zeros(mask.shape, dtype=torch.long)
    return LowerStates(ids, mask, embeddings=full if full is not None else E, hidden=E, _word=E)


def expected_count(n, t, c, heads=1, d=None, qkv_bias=False, mlp_bias=True, attention=True):
    d = d or n // heads
    count = n * c + c * t * n + (c + t * n if mlp_bias else 0)
    if attention:
        count += 2 * n * heads * d + n * n + ((2 * heads * d + n) if qkv_bias else 0)
    return count


@pytest.mark.parametrize("n,kw", [
    (32, {}),
    (48, dict(prompt_length=4, bottleneck=7, num_heads=3, qkv_bias=True)),
    (48, dict(num_heads=2, head_dim=5, mlp_bias=False)),
    (64, dict(attention=False, name="idspam_meanpool")),
])
def test_parameter_count_matches_formula(n, kw):
    cfg = IDSPAMConfig(**kw)
    gen = IDSPAMGenerator(cfg, n)
    got = sum(p.numel() for p in gen.parameters())
    assert got == expected_count(n, cfg.prompt_length, cfg.bottleneck, cfg.num_heads, cfg.head_dim,
                                 cfg.qkv_bias, cfg.mlp_bias, cfg.attention)


@pytest.mark.parametrize("n,paper", [(768, 2_064_384), (1024, 3_538_944)])
def test_a_configuration_reproduces_table_12(n, paper):
    """Table 12's counts are 3n^2 + 384n: bias-free Wq/Wk/Wv (d_k = n) plus a bias-free MLP with
    c * (t + 1) = 384, e.g. t = 11, c = 32. No integer c fits t = 10 (see README)."""
    cfg = IDSPAMConfig(prompt_length=11, bottleneck=32, qkv_bias=False, mlp_bias=False)
    assert sum(p.numel() for p in IDSPAMGenerator(cfg, n).parameters()) == paper == 3 * n * n + 384 * n


def test_attention_pooling_is_equation_1():
    torch.manual_seed(0)
    n, L = 16, 5
    gen = IDSPAMGenerator(IDSPAMConfig(dropout=0.0, qkv_bias=True), n).eval()
    E = torch.randn(1, L, n)
    q, k, v = gen.query(E[0]), gen.key(E[0]), gen.value(E[0])
    A = (torch.softmax(q @ k.T / math.sqrt(n), dim=-1) @ v).mean(0)
    torch.testing.assert_close(gen.pool(E, torch.ones(1, L)), A[None], atol=1e-5, rtol=0)
    S = torch.relu(gen.up(torch.relu(gen.down(A)))).view(10, n)
    torch.testing.assert_close(gen(states(E, torch.ones(1, L))), S[None], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", [True, False])
def test_padding_does_not_change_the_prompt(attention):
    """Padding is masked as a key and left out of the mean: extra pad positions change nothing."""
    torch.manual_seed(0)
    n = 24
    gen = IDSPAMGenerator(IDSPAMConfig(attention=attention, num_heads=2, dropout=0.0), n).eval()
    E = torch.randn(1, 6, n)
    padded = torch.cat([E, torch.randn(1, 4, n) * 100], dim=1)  # garbage in the pad positions
    mask = torch.tensor([[1] * 6 + [0] * 4])
    torch.testing.assert_close(gen(states(padded, mask)), gen(states(E, torch.ones(1, 6))), atol=1e-5, rtol=0)


def test_meanpool_ablation_is_the_masked_mean():
    torch.manual_seed(0)
    gen = IDSPAMGenerator(IDSPAMConfig(attention=False), 8)
    assert not hasattr(gen, "query")
    E, mask = torch.randn(2, 4, 8), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(gen.pool(E, mask), torch.stack([E[0, :2].mean(0), E[1].mean(0)]))


def test_options_change_the_output_as_documented():
    torch.manual_seed(0)
    E, full, mask = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.ones(2, 4)
    relu = IDSPAMGenerator(IDSPAMConfig(prompt_length=3, dropout=0.0), 8).eval()
    out = relu(states(E, mask, full))
    assert out.shape == (2, 3, 8) and (out >= 0).all()
    linear = IDSPAMGenerator(IDSPAMConfig(prompt_length=3, dropout=0.0, final_relu=False), 8).eval()
    linear.load_state_dict(relu.state_dict())
    assert (linear(states(E, mask, full)) < 0).any()
    from_full = IDSPAMGenerator(IDSPAMConfig(prompt_length=3, dropout=0.0, embedding_source="full"), 8).eval()
    from_full.load_state_dict(relu.state_dict())
    assert not torch.allclose(from_full(states(E, mask, full)), out)
    torch.testing.assert_close(from_full(states(full, mask, full)), relu(states(full, mask, full)))


def test_registry_builds_from_config():
    gen = build_method(IDSPAMConfig(name="idspam_meanpool", attention=False), 16)
    assert isinstance(gen, IDSPAMGenerator) and not gen.cfg.attention
