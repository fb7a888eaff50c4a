"""Composed attention (models.attention.composed_attention): two matrix multiplies around a float32 softmax, used
instead of SDPA only while torch.compile traces CPU bf16 attention that needs gradients, for short sequences
(compiled bf16-mixed training). Checks its values and gradients against a float64 reference, the dispatch rules
(eager, inference, float32, causal and long sequences keep SDPA), and a compiled bf16 attention layer's gradients
against eager ones. No timings."""
import pytest
import torch
import torch.nn.functional as F

from stable_audio_tools.inference import precision
from stable_audio_tools.models import attention
from stable_audio_tools.models.attention import COMPOSED_ATTENTION_MAX_SCORES, Attention, attend, composed_attention

from conftest import needs_cpu_bf16

needs_compiler = pytest.mark.skipif(precision.cpp_compiler() is None, reason="no C++ compiler for TorchInductor")


def _qkv(q_len, k_len, dtype=torch.bfloat16, grad=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, n, 32, generator=gen).to(dtype).requires_grad_(grad) for n in (q_len, k_len, k_len)]


@pytest.mark.parametrize("k_len", [2, 37])
def test_composed_attention_matches_a_float64_reference_with_gradients(k_len):
    q, k, v = _qkv(37, k_len)
    ref_inputs = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    grad_out = torch.randn(2, 4, 37, 32, generator=torch.Generator().manual_seed(1))
    out = composed_attention(q, k, v)
    ref = F.scaled_dot_product_attention(*ref_inputs)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max() < 0.03
    out.backward(grad_out.bfloat16())
    ref.backward(grad_out.double())
    for ours, theirs in zip((q, k, v), ref_inputs):
        assert (ours.grad.double() - theirs.grad).abs().max() < 0.05 * theirs.grad.abs().max() + 1e-3


def test_composed_attention_equals_sdpa_in_float64():
    q, k, v = _qkv(9, 5, dtype=torch.float64, grad=False)
    torch.testing.assert_close(composed_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_attend_uses_composed_attention_only_for_traced_short_bf16_training(monkeypatch):
    calls = []
    real = attention.composed_attention
    monkeypatch.setattr(attention, "composed_attention", lambda *a: calls.append(a) or real(*a))
    q, k, v = _qkv(16, 8)
    attend(q, k, v)
    assert not calls, "eager attention keeps SDPA"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    attend(q, k, v)
    assert len(calls) == 1, "traced bf16 attention with gradients composes"
    with torch.no_grad():
        attend(q, k, v)
    attend(*_qkv(16, 8, grad=False))
    attend(*_qkv(16, 8, dtype=torch.float32))
    attend(q, k, v, causal=True)
    long_len = int(COMPOSED_ATTENTION_MAX_SCORES ** 0.5) + 2
    attend(*_qkv(long_len, long_len))
    assert len(calls) == 1, "inference, float32, causal and long attention keep SDPA"


@needs_cpu_bf16
@needs_compiler
def test_compiled_bf16_attention_layer_gradients_match_eager():
    torch.manual_seed(0)
    layer = Attention(64, dim_heads=16, qk_norm="ln", zero_init_output=False)
    x = torch.randn(2, 24, 64)
    rotary = attention.RotaryEmbedding(8).forward_from_seq_len(24)

    def grads(module):
        module.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x, rotary_pos_emb=rotary)
        out.float().square().mean().backward()
        return out.float().detach(), [p.grad.clone() for p in layer.parameters()]

    eager_out, eager_grads = grads(layer)
    compiled = torch.compile(layer)
    compiled_out, compiled_grads = grads(compiled)
    assert (compiled_out - eager_out).abs().max() < 0.05 * eager_out.abs().max()
    for ours, theirs in zip(compiled_grads, eager_grads):
        assert torch.isfinite(ours).all()
        assert (ours - theirs).abs().max() < 0.1 * theirs.abs().max() + 1e-6
