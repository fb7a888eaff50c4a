"""Attention head layouts that upstream accepts: more key/value heads than query heads, odd rotary widths.

The ``dit_cond_wide_tokens*`` goldens were made with upstream 0.0.19 (see
tests/fixtures/golden/make_head_layout_goldens.py and each golden's README).
"""
import json
import math
import warnings

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_tools.models import attention as attention_module
from stable_audio_tools.models.attention import Attention, RotaryEmbedding, apply_rotary_pos_emb
from stable_audio_tools.models.config import ConfigWarning
from stable_audio_tools.models.dit import DiffusionTransformer
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.transformer import ContinuousTransformer

from conftest import FIXTURES

WIDE_GOLDENS = ["dit_cond_wide_tokens", "dit_cond_wide_tokens_diff_ln"]
KEYS = ("model.diffusion.config.embed_dim", "model.diffusion.config.num_heads",
        "model.diffusion.config.cond_token_dim", "model.conditioning.cond_dim",
        "model.diffusion.config.project_cond_tokens")


def _head_layout_warnings(records):
    return [r for r in records if issubclass(r.category, ConfigWarning) and "cross-attention ignores" in str(r.message)]


def _build(config):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        model = create_model_from_config(config)
    return model, _head_layout_warnings(records)


def _close(got, ref, key):
    assert tuple(got.shape) == tuple(ref.shape), key
    torch.testing.assert_close(got.float(), ref.float(), atol=1e-4, rtol=1e-4, msg=key)


def _meta(starts, totals):
    return [{"seconds_start": float(s), "seconds_total": float(t)} for s, t in zip(starts, totals)]


@pytest.mark.parametrize("name", WIDE_GOLDENS)
def test_golden_wide_cross_attention_tokens_match_upstream(name):
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    d = FIXTURES / "golden" / name
    model, found = _build(json.loads((d / "model_config.json").read_text()))
    assert len(found) == 1, "one warning per model build, not one per layer"
    message = str(found[0].message)
    assert all(key in message for key in KEYS) and "prompt has no effect" in message
    model.load_state_dict(load_file(str(d / "weights.safetensors")), strict=True)
    model.eval()
    io = load_file(str(d / "io.safetensors"))
    meta = _meta(io["in.seconds_start"], io["in.seconds_total"])
    x, t = io["in.x"], io["in.t"]
    with torch.no_grad():
        cond = model.conditioner(meta, "cpu")
        for key, (emb, _) in cond.items():
            _close(emb, io[f"out.cond.{key}.embedding"], key)
        for key, value in model.get_conditioning_inputs(cond).items():
            if value is not None:
                _close(value, io[f"out.cond_inputs.{key}"], key)
        _close(model(x, t, cond), io["out.model_out_cfg1"], "cfg1")
        _close(model(x, t, cond, cfg_scale=3.0), io["out.model_out_cfg3"], "cfg3")
        other = model.conditioner(_meta(io["in.other_seconds_start"], io["in.seconds_total"]), "cpu")
        _close(model(x, t, other), io["out.model_out_other_start"], "other prompt")
        _close(model(x, t, cond, return_info=True)[1]["hidden_states"][0], io["out.hidden0"], "hidden0")
    loss = model(x, t, cond).square().mean()
    loss.backward()
    _close(loss, io["out.loss"], "loss")
    params = dict(model.named_parameters())
    grad_keys = [k for k in io if k.startswith("out.grad.")]
    assert len(grad_keys) == 7
    for key in grad_keys:
        grad = params[key[len("out.grad."):]].grad
        assert grad is not None, f"{key}: upstream gives a zero gradient, not none"
        _close(grad, io[key], key)
    with torch.no_grad():
        gen = generate_diffusion_cond(model, steps=3, cfg_scale=2.0, conditioning=meta, batch_size=2, sample_size=16,
                                      seed=7, device="cpu", sampler_type="v-ddim")
    _close(gen, io["out.generate_vddim_steps3_cfg2_seed7"], "v-ddim")


def test_no_warning_when_the_tokens_are_shared():
    config = json.loads((FIXTURES / "golden" / "dit_cond_wide_tokens" / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["project_cond_tokens"] = True
    model, found = _build(config)
    assert found == []
    assert not model.model.model.transformer.layers[0].cross_attn.ignores_context


def test_narrower_tokens_keep_grouped_query_sharing_and_do_not_warn():
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        dit = DiffusionTransformer(io_channels=4, embed_dim=128, num_heads=4, depth=1, cond_token_dim=64,
                                   project_cond_tokens=False)
    assert _head_layout_warnings(records) == []
    attn = dit.transformer.layers[0].cross_attn
    assert (attn.num_heads, attn.kv_heads, attn.ignores_context) == (4, 2, False)


def test_lm_backbone_with_wide_unprojected_tokens_warns_and_ignores_them():
    from stable_audio_tools.models.lm_backbone import ContinuousTransformerAudioLMBackbone

    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        backbone = ContinuousTransformerAudioLMBackbone(embed_dim=64, cross_attn_cond_dim=96, depth=2, dim_heads=32)
    found = _head_layout_warnings(records)
    assert len(found) == 1
    assert all(key in str(found[0].message) for key in ("model.lm.config.cross_attn_cond_dim",
                                                         "model.lm.config.project_cross_attn_cond"))
    torch.manual_seed(0)
    for p in backbone.parameters():  # undo the zero-initialised outputs
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 4, 64)
    out_a = backbone(x, cross_attn_cond=torch.randn(1, 3, 96))
    out_b = backbone(x, cross_attn_cond=torch.randn(1, 3, 96))
    torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        ContinuousTransformerAudioLMBackbone(embed_dim=64, cross_attn_cond_dim=96, depth=1, dim_heads=32,
                                             project_cross_attn_cond=True)
    assert _head_layout_warnings(records) == []


@pytest.mark.parametrize("differential", [False, True])
@pytest.mark.parametrize("qk_norm", ["none", "l2", "ln"])
@pytest.mark.parametrize("dim_context", [96, 128, 768])
def test_unshared_key_value_heads_give_zeros_with_zero_gradients(dim_context, qk_norm, differential):
    torch.manual_seed(0)
    attn = Attention(64, dim_heads=32, dim_context=dim_context, zero_init_output=False, qk_norm=qk_norm,
                     differential=differential, feat_scale=True)
    assert attn.ignores_context and attn.kv_heads == dim_context // 32
    x = torch.randn(2, 5, 64, requires_grad=True)
    context = torch.randn(2, 7, dim_context, requires_grad=True)
    out = attn(x, context=context)
    assert out.shape == (2, 5, 64) and torch.count_nonzero(out) == 0
    out.sum().backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None and torch.count_nonzero(param.grad) == 0, name
    assert torch.count_nonzero(x.grad) == 0 and torch.count_nonzero(context.grad) == 0


def test_unshared_key_value_heads_bypass_every_kernel(monkeypatch):
    """No kernel runs, so SDPA, flash-attn (CUDA), FlexAttention and sliding windows all give the zeros."""

    def no_kernel(*args, **kwargs):
        raise AssertionError("no attention kernel should run")

    monkeypatch.setattr(attention_module, "attend", no_kernel)
    attn = Attention(64, dim_heads=32, dim_context=96, zero_init_output=False)
    x, context = torch.randn(1, 4, 64), torch.randn(1, 3, 96)
    outputs = [attn(x, context=context),
               attn(x, context=context, flash_attn_sliding_window=(1, 1)),
               attn(x, context=context, flex_attention_score_mod=lambda score, b, h, q, k: score),
               attn(x, context=context, causal=True)]
    for out in outputs:
        assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("dim, dim_heads, dim_context, match", [
    # fewer key/value heads that do not divide the query heads: upstream fails in the first forward
    (96, 32, 64, "3 query heads cannot share 2 key/value heads"),
    (128, 32, 96, "4 query heads cannot share 3"),
    # head widths that differ (upstream: shape errors in attention or in the output projection)
    (64, 32, 48, "differ"),
    (96, 64, 768, "differ"),
    # no key/value head at all, or a width the heads do not split
    (64, 32, 16, "cannot be split"),
    (64, 32, 100, "cannot be split"),
])
def test_layouts_that_upstream_cannot_run_still_fail_early(dim, dim_heads, dim_context, match):
    with pytest.raises(ValueError, match=match):
        Attention(dim, dim_heads=dim_heads, dim_context=dim_context)


def test_dit_names_a_layout_upstream_cannot_run_at_build_time():
    with pytest.raises(ValueError, match="cannot share"):
        DiffusionTransformer(io_channels=4, embed_dim=96, num_heads=3, depth=1, cond_token_dim=64,
                             project_cond_tokens=False)


def test_odd_rotary_widths_rotate_one_feature_more_as_upstream():
    rope = RotaryEmbedding(33)
    expected = 1.0 / 10000 ** (torch.arange(0, 33, 2).float() / 33)
    torch.testing.assert_close(rope.inv_freq, expected)
    freqs, _ = rope.forward_from_seq_len(5)
    assert freqs.shape == (5, 34)
    t = torch.randn(1, 1, 5, 66)
    out = apply_rotary_pos_emb(t, freqs)
    torch.testing.assert_close(out[..., 34:], t[..., 34:])
    half = 17
    theta = 3 * expected
    x1, x2 = t[0, 0, 3, :half], t[0, 0, 3, half:34]
    torch.testing.assert_close(out[0, 0, 3, :half], x1 * theta.cos() - x2 * theta.sin())
    torch.testing.assert_close(out[0, 0, 3, half:34], x2 * theta.cos() + x1 * theta.sin())
    # a DiT with 66-wide heads (rotary over 33 -> 34 features) builds and runs, as upstream
    dit = DiffusionTransformer(io_channels=4, embed_dim=132, num_heads=2, depth=1)
    assert dit.transformer.rotary_pos_emb.inv_freq.shape == (17,)
    assert torch.isfinite(dit(torch.randn(1, 4, 8), torch.rand(1))).all()
    # zero rotary features rotate nothing; a rotation wider than the heads is still refused
    assert RotaryEmbedding(0).forward_from_seq_len(3)[0].shape == (3, 0)
    with pytest.raises(ValueError, match="rotate 34 features"):
        ContinuousTransformer(dim=33, depth=1, dim_heads=66)
    with pytest.raises(ValueError, match="other than 2"):
        RotaryEmbedding(2, base_rescale_factor=2.0)
    assert math.isclose(float(RotaryEmbedding(2).inv_freq[0]), 1.0)
