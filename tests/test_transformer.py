"""ContinuousTransformer / TransformerBlock / Attention (SPEC 4.11)."""
import copy
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from stable_audio_tools.models.attention import (
    Attention,
    RotaryEmbedding,
    apply_rotary_pos_emb,
    attend,
    sliding_window_attention,
    sliding_window_mask,
)
from stable_audio_tools.models.transformer import (
    ContinuousTransformer,
    DynamicTanh,
    FeedForward,
    LayerNorm,
    TransformerBlock,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _manifest_keys(name: str, prefix: str) -> dict:
    manifest = json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())
    return {k[len(prefix):]: list(shape) for k, shape, _ in manifest["state_dict"] if k.startswith(prefix)}


def _dit_transformer_kwargs(name: str) -> dict:
    """ContinuousTransformer options the DiT derives from a released config (SPEC 4.10)."""
    root = Path(__file__).parents[1] / "stable_audio_tools" / "configs" / "model_configs" / "released"
    cfg = json.loads((root / f"{name}.json").read_text())["model"]["diffusion"]["config"]
    embed_dim, io = cfg["embed_dim"], cfg["io_channels"]
    cond_dim = embed_dim if cfg.get("project_cond_tokens", True) else cfg["cond_token_dim"]
    kwargs = dict(dim=embed_dim, depth=cfg["depth"], dim_heads=embed_dim // cfg["num_heads"], dim_in=io, dim_out=io,
                  cross_attend=cfg["cond_token_dim"] > 0, cond_token_dim=cond_dim, global_cond_dim=None)
    for key in ("attn_kwargs", "ff_kwargs", "norm_kwargs"):
        if key in cfg:
            kwargs[key] = cfg[key]
    return kwargs


@pytest.mark.parametrize("name", ["stable_audio_open_1_0", "stable_audio_open_small"])
def test_released_dit_transformer_state_dict_matches_manifest(name):
    with torch.device("meta"):
        model = ContinuousTransformer(**_dit_transformer_kwargs(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    reference = _manifest_keys(name, "model.model.transformer.")
    assert ours == reference
    assert list(ours) == list(reference)  # same registration order as upstream


def test_upstream_layer_numerics():
    data = load_file(str(FIXTURES / "transformer" / "dit_cond_transformer.safetensors"))
    model = ContinuousTransformer(dim=128, depth=1, dim_in=8, dim_out=8, dim_heads=64, cross_attend=True,
                                  cond_token_dim=128).eval()
    model.load_state_dict({k[len("transformer."):]: v for k, v in data.items() if k.startswith("transformer.")},
                          strict=True)
    with torch.no_grad():
        out, info = model(data["in.x_tokens"], prepend_embeds=data["in.prepend_embeds"],
                          context=data["in.context"], return_info=True)
    assert out.shape == (2, 18, 8)
    torch.testing.assert_close(info["hidden_states"][0], data["out.hidden0"], atol=1e-4, rtol=1e-4)


def test_layernorm_buffers_and_variants():
    norm = LayerNorm(6)
    assert set(dict(norm.named_parameters())) == {"gamma"}
    assert set(norm.state_dict()) == {"gamma", "beta"}  # beta is a persistent buffer
    assert set(dict(LayerNorm(6, bias=True).named_parameters())) == {"gamma", "beta"}
    assert set(dict(LayerNorm(6, fix_scale=True).named_parameters())) == set()
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (6,), eps=1e-5))
    torch.testing.assert_close(LayerNorm(6, force_fp32=True, eps=1e-2)(x.double()),
                               F.layer_norm(x.double(), (6,), eps=1e-2))
    dyt = DynamicTanh(6)
    assert dyt.alpha.item() == 10.0
    torch.testing.assert_close(dyt(x), torch.tanh(10 * x))


def test_rotary_matches_hand_formula():
    rope = RotaryEmbedding(8)
    assert "inv_freq" in rope.state_dict() and "scale" not in rope.state_dict()
    torch.testing.assert_close(rope.inv_freq, torch.tensor([10000 ** (-2 * i / 8) for i in range(4)]))
    n, head = 5, 12
    t = torch.randn(2, 3, n, head)
    freqs, scale = rope.forward_from_seq_len(n)
    assert scale == 1.0 and freqs.shape == (n, 8)
    out = apply_rotary_pos_emb(t, freqs)
    expected = t.clone()
    for p in range(n):
        for i in range(4):
            theta = p * 10000 ** (-2 * i / 8)
            x1, x2 = t[..., p, i], t[..., p, i + 4]
            expected[..., p, i] = x1 * math.cos(theta) - x2 * math.sin(theta)
            expected[..., p, i + 4] = x2 * math.cos(theta) + x1 * math.sin(theta)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # only the relative position matters for q.k
    q, k = torch.randn(head), torch.randn(head)
    big = rope.forward_from_seq_len(20)[0]
    dots = [(apply_rotary_pos_emb(q[None], big[a:a + 1]) * apply_rotary_pos_emb(k[None], big[a + 3:a + 4])).sum()
            for a in (0, 7, 15)]
    torch.testing.assert_close(torch.stack(dots), dots[0].expand(3), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="head dimension"):
        apply_rotary_pos_emb(torch.randn(1, 1, n, 4), freqs)


def test_rotary_xpos_and_rescale_options():
    rope = RotaryEmbedding(8, use_xpos=True, base_rescale_factor=2.0, interpolation_factor=2.0)
    assert set(rope.state_dict()) == {"inv_freq", "scale"}
    freqs, scale = rope.forward_from_seq_len(6)
    assert freqs.shape == scale.shape == (6, 8)
    torch.testing.assert_close(freqs[3], freqs[6 // 2] * 1.0)
    torch.testing.assert_close(freqs[2, :4], 1.0 * rope.inv_freq)  # position 2 / interpolation 2
    attn = Attention(16, dim_heads=8, zero_init_output=False)
    out = attn(torch.randn(1, 6, 16), rotary_pos_emb=(freqs, scale))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        RotaryEmbedding(8, interpolation_factor=0.5)


def _reference_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("differential", [False, True])
def test_cross_attention_gqa_matches_explicit_reference(differential):
    torch.manual_seed(0)
    dim, dim_ctx, dh = 64, 32, 16  # 4 query heads, 2 key/value heads
    attn = Attention(dim, dim_heads=dh, dim_context=dim_ctx, zero_init_output=False, differential=differential)
    assert attn.num_heads == 4 and attn.kv_heads == 2
    assert attn.to_kv.weight.shape == (dim_ctx * (3 if differential else 2), dim_ctx)
    x, ctx = torch.randn(2, 5, dim), torch.randn(2, 7, dim_ctx)
    out = attn(x, context=ctx)

    qs = (x @ attn.to_q.weight.T).chunk(2 if differential else 1, dim=-1)
    kvs = (ctx @ attn.to_kv.weight.T).chunk(3 if differential else 2, dim=-1)
    ks, v = (kvs[:2], kvs[2]) if differential else (kvs[:1], kvs[1])
    heads = []
    for h in range(4):
        g = h // 2  # query heads 2g and 2g+1 share key/value head g
        head_v = v[..., g * dh:(g + 1) * dh]
        res = 0
        for sign, q, k in zip((1, -1), qs, ks):
            res = res + sign * _reference_attention(q[..., h * dh:(h + 1) * dh], k[..., g * dh:(g + 1) * dh], head_v)
        heads.append(res)
    expected = torch.cat(heads, dim=-1) @ attn.to_out.weight.T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_self_attention_options_match_reference():
    torch.manual_seed(1)
    attn = Attention(32, dim_heads=8, zero_init_output=False, qk_norm="l2", feat_scale=True, causal=True)
    with torch.no_grad():
        attn.lambda_dc.normal_()
        attn.lambda_hf.normal_()
    x = torch.randn(2, 6, 32)
    out = attn(x)
    q, k, v = (t.unflatten(-1, (4, 8)).transpose(1, 2) for t in (x @ attn.to_qkv.weight.T).chunk(3, -1))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    o = _reference_attention(q, k, v, causal).transpose(1, 2).flatten(2) @ attn.to_out.weight.T
    dc = o.mean(dim=1, keepdim=True)
    expected = o + attn.lambda_dc * dc + attn.lambda_hf * (o - dc)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="qk_norm"):
        Attention(32, dim_heads=8, qk_norm="rms")


@pytest.mark.parametrize("window,causal,q_len,k_len", [
    ((2, 3), False, 11, 11), ((0, 4), False, 9, 9), ((3, -1), False, 10, 10), ((-1, 1), False, 10, 10),
    ((4, 4), True, 10, 10), ((2, 1), False, 4, 9), ((1, 1), False, 9, 4), ((-1, -1), False, 8, 8),
])
def test_sliding_window_dense_equals_band_mask(window, causal, q_len, k_len):
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 3, q_len, 8), torch.randn(2, 3, k_len, 8), torch.randn(2, 3, k_len, 8)
    offset = k_len - q_len
    mask = torch.zeros(q_len, k_len, dtype=torch.bool)
    for i in range(q_len):
        for j in range(k_len):
            d = j - i - offset
            mask[i, j] = ((window[0] < 0 or d >= -window[0]) and (window[1] < 0 or d <= window[1])
                          and (not causal or d <= 0))
    assert torch.equal(sliding_window_mask(q_len, k_len, window, causal), mask)
    out = sliding_window_attention(q, k, v, window, causal=causal)
    rows = mask.any(-1)
    expected = _reference_attention(q, k, v, mask | ~rows[:, None]) * rows[:, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,window,causal", [(37, (3, 4), False), (64, (5, 0), False), (50, (6, 2), True),
                                             (41, (0, 0), False)])
def test_sliding_window_blocked_equals_band_mask(n, window, causal):
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 2, n, 8, requires_grad=True) for _ in range(3))
    out = sliding_window_attention(q, k, v, window, causal=causal, block_size=4)
    mask = sliding_window_mask(n, n, window, causal)
    expected = _reference_attention(q, k, v, mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


def test_attention_sliding_window_on_cpu_is_honoured():
    torch.manual_seed(4)
    attn = Attention(32, dim_heads=16, zero_init_output=False, qk_norm="ln")
    x = torch.randn(1, 12, 32)
    full = attn(x)
    windowed = attn(x, flash_attn_sliding_window=[2, 2])
    assert not torch.allclose(full, windowed)
    # perturbing a token only changes outputs inside its window
    x2 = x.clone()
    x2[0, 8] += 1.0
    changed = (attn(x2, flash_attn_sliding_window=[2, 2]) - windowed).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [6, 7, 8, 9, 10]


def test_flex_attention_block_mask_path():
    from torch.nn.attention.flex_attention import create_block_mask

    torch.manual_seed(5)
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))

    def band(b, h, q_idx, kv_idx):
        return (kv_idx - q_idx).abs() <= 2

    block_mask = create_block_mask(band, None, None, 16, 16, device="cpu")
    with warnings.catch_warnings():  # torch warns (once per process) that eager flex attention is slow
        warnings.simplefilter("ignore")
        out = attend(q, k, v, block_mask=block_mask)
    torch.testing.assert_close(out, _reference_attention(q, k, v, sliding_window_mask(16, 16, (2, 2))),
                               atol=1e-5, rtol=1e-5)
    # causal disables flex attention (as upstream)
    torch.testing.assert_close(attend(q, k, v, causal=True, block_mask=block_mask),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_feedforward_variants():
    x = torch.randn(2, 5, 8)
    glu = FeedForward(8, zero_init_output=False)
    assert [k for k in glu.state_dict()] == ["ff.0.proj.weight", "ff.0.proj.bias", "ff.2.weight", "ff.2.bias"]
    a, gate = glu.ff[0].proj(x).chunk(2, -1)
    torch.testing.assert_close(glu(x), glu.ff[2](a * F.silu(gate)))
    plain = FeedForward(8, mult=2, glu=False, no_bias=True, zero_init_output=False)
    assert plain.ff[0][1].weight.shape == (16, 8) and plain.ff[2].bias is None
    torch.testing.assert_close(plain(x), plain.ff[2](F.silu(plain.ff[0][1](x))))
    conv = FeedForward(8, glu=False, use_conv=True, dim_out=4)
    assert conv(x).shape == (2, 5, 4)
    assert FeedForward(8, use_conv=True)(x).shape == (2, 5, 8)
    assert (FeedForward(8).ff[2].weight == 0).all()


def test_adaln_block_matches_hand_computation():
    torch.manual_seed(6)
    block = TransformerBlock(16, dim_heads=8, global_cond_dim=16, zero_init_branch_outputs=False)
    x, g = torch.randn(2, 5, 16), torch.randn(2, 96)
    out = block(x, global_cond=g)
    s_self, sh_self, g_self, s_ff, sh_ff, g_ff = (block.to_scale_shift_gate + g).unsqueeze(1).chunk(6, -1)
    h = x + block.self_attn(block.pre_norm(x) * (1 + s_self) + sh_self) * torch.sigmoid(1 - g_self)
    expected = h + block.ff(block.ff_norm(h) * (1 + s_ff) + sh_ff) * torch.sigmoid(1 - g_ff)
    torch.testing.assert_close(out, expected)
    assert block.to_scale_shift_gate.shape == (96,)


OPTION_SETS = {
    "adaln_global": dict(global_cond_dim=12),
    "conformer_layer_scale": dict(conformer=True, layer_scale=True),
    "qk_l2": dict(attn_kwargs={"qk_norm": "l2"}),
    "qk_ln": dict(attn_kwargs={"qk_norm": "ln"}),
    "qk_dyt_differential": dict(attn_kwargs={"qk_norm": "dyt", "differential": True}),
    "feat_scale": dict(attn_kwargs={"feat_scale": True}),
    "memory_tokens_abs_pos": dict(num_memory_tokens=3, use_abs_pos_emb=True, abs_pos_emb_max_length=32),
    "sinusoidal_no_rotary": dict(use_sinusoidal_emb=True, rotary_pos_emb=False),
    "remove_norms_add_rope": dict(remove_norms=True, add_rope=True),
    "non_glu_ff": dict(ff_kwargs={"glu": False, "mult": 2, "no_bias": True}, norm_kwargs={"bias": True}),
    "causal_final_cross": dict(causal=True, final_cross_attn_ix=0, sliding_window=(3, 0)),
}

EXPECTED_KEYS = {
    "adaln_global": ["global_cond_embedder.2.weight", "layers.0.to_scale_shift_gate"],
    "conformer_layer_scale": ["layers.1.conformer.depthwise_conv.weight", "layers.0.conformer_scale.scale",
                              "layers.0.self_attn_scale.scale", "layers.0.ff_scale.scale",
                              "layers.0.cross_attn_scale.scale", "layers.0.conformer.glu.proj.weight"],
    "qk_l2": [],
    "qk_ln": ["layers.0.self_attn.q_norm.weight", "layers.0.cross_attn.k_norm.bias"],
    "qk_dyt_differential": ["layers.0.self_attn.q_norm.alpha", "layers.0.cross_attn.k_norm.gamma"],
    "feat_scale": ["layers.0.self_attn.lambda_dc", "layers.1.cross_attn.lambda_hf"],
    "memory_tokens_abs_pos": ["memory_tokens", "pos_emb.emb.weight"],
    "sinusoidal_no_rotary": ["pos_emb.scale"],
    "remove_norms_add_rope": ["layers.0.pre_norm.alpha", "layers.0.rope.inv_freq"],
    "non_glu_ff": ["layers.0.ff.ff.0.1.weight", "layers.0.pre_norm.beta"],
    "causal_final_cross": ["layers.0.cross_attn.to_q.weight"],
}


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_option_combinations_forward_backward(name):
    torch.manual_seed(7)
    opts = copy.deepcopy(OPTION_SETS[name])
    original = copy.deepcopy(opts)
    model = ContinuousTransformer(dim=64, depth=2, dim_in=6, dim_out=5, dim_heads=32, cross_attend=True,
                                  cond_token_dim=32, zero_init_branch_outputs=False, **opts).train()
    assert opts == original  # config dicts are never mutated
    sd = model.state_dict()
    for key in EXPECTED_KEYS[name]:
        assert key in sd, key
    if name == "causal_final_cross":
        assert not hasattr(model.layers[1], "cross_attn")
    if name == "memory_tokens_abs_pos":
        assert sd["pos_emb.emb.weight"].shape == (35, 64)
    if name == "qk_dyt_differential":
        assert sd["layers.0.self_attn.to_qkv.weight"].shape == (320, 64)
    if name == "sinusoidal_no_rotary":
        assert "rotary_pos_emb.inv_freq" not in sd and "pos_emb.inv_freq" not in sd
    x, ctx = torch.randn(2, 9, 6), torch.randn(2, 4, 32)
    prepend = torch.randn(2, 2, 64)
    kwargs = dict(context=ctx, prepend_embeds=prepend)
    if "global_cond_dim" in opts:
        kwargs["global_cond"] = torch.randn(2, 12)
    out, info = model(x, return_info=True, **kwargs)
    assert out.shape == (2, 11, 5) and torch.isfinite(out).all()
    assert len(info["hidden_states"]) == 2
    assert info["hidden_states"][0].shape == (2, 11 + opts.get("num_memory_tokens", 0), 64)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    copy.deepcopy(model)


@pytest.mark.parametrize("needs_grad", ["none", "input", "parameters", "context"])
def test_checkpointing_only_when_gradients_are_recorded(monkeypatch, needs_grad):
    """A frozen transformer called with gradients enabled is not checkpointed (nothing to recompute for; compiled,
    it would fail on torch 2.13); a trainable parameter, input or context turns checkpointing on."""
    from stable_audio_tools.models import transformer as module

    calls = []
    real = module.checkpoint
    monkeypatch.setattr(module, "checkpoint", lambda fn, *a, **k: calls.append(fn) or real(fn, *a, **k))
    torch.manual_seed(8)
    model = ContinuousTransformer(dim=32, depth=2, dim_in=4, dim_heads=32, cross_attend=True,
                                  cond_token_dim=32).eval().requires_grad_(needs_grad == "parameters")
    x = torch.randn(2, 7, 4, requires_grad=needs_grad == "input")
    context = torch.randn(2, 3, 32, requires_grad=needs_grad == "context")
    out = model(x, context=context)
    assert len(calls) == (0 if needs_grad == "none" else 2)
    assert out.requires_grad == (needs_grad != "none")
    with torch.no_grad():
        torch.testing.assert_close(model(x, context=context), out.detach())
    assert len(calls) == (0 if needs_grad == "none" else 2)


def test_checkpointing_exit_layer_and_dtype():
    torch.manual_seed(8)
    model = ContinuousTransformer(dim=32, depth=3, dim_in=4, dim_heads=32, zero_init_branch_outputs=False,
                                  num_memory_tokens=2).train()
    x = torch.randn(2, 7, 4, dtype=torch.float64)
    out_ckpt = model(x, use_checkpointing=True)
    assert out_ckpt.dtype == torch.float32
    out_ckpt.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out_plain = model(x, use_checkpointing=False)
    out_plain.sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
    hidden, info = model(x, exit_layer_ix=1, return_info=True)
    assert hidden.shape == (2, 7, 32) and len(info["hidden_states"]) == 2
    torch.testing.assert_close(hidden, info["hidden_states"][1][:, 2:])


def test_construction_errors():
    with pytest.raises(ValueError, match="rotary"):
        ContinuousTransformer(dim=32, depth=1, dim_heads=16)
    with pytest.raises(ValueError, match="key/value heads"):
        Attention(64, dim_heads=16, dim_context=48)
    # as upstream, a width that dim_heads does not divide gives dim // dim_heads wider heads ...
    wide = Attention(192, dim_heads=128, zero_init_output=False)
    assert wide.num_heads == 1 and wide(torch.randn(1, 3, 192)).shape == (1, 3, 192)
    # ... which a per-head norm of dim_heads features cannot handle
    with pytest.raises(ValueError, match="qk_norm"):
        Attention(192, dim_heads=128, qk_norm="ln")
    model = ContinuousTransformer(dim=32, depth=1, dim_heads=32)
    with pytest.raises(ValueError, match="prepend"):
        model(torch.randn(1, 3, 32), prepend_embeds=torch.randn(1, 1, 16))
    with pytest.raises(ValueError, match="context"):
        Attention(32, dim_heads=16, dim_context=32)(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(3, 3, (1, 2, 3))
