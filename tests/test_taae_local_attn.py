"""TAAE (SPEC 4.6) and the working local-attention encoder/decoder (SPEC 3.2, 9.3 item 5)."""
import copy

import pytest
import torch

from stable_audio_tools.models.local_attn import (
    ContinuousLocalTransformer,
    TransformerDecoder1D,
    TransformerEncoder1D,
    local_window,
)
from stable_audio_tools.models.taae import TAAEBlock, TAAEDecoder, TAAEEncoder

SMALL_TAAE = dict(channels=16, latent_dim=8, c_mults=(1, 2), strides=(2, 4), transformer_depths=(1, 2),
                  sliding_window=(3, 4))


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised output projections / layer scales non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_taae_default_state_dict_layout():
    with torch.device("meta"):
        enc, dec = TAAEEncoder(), TAAEDecoder()
    sd = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert sd["layers.0.weight_v"] == (128, 2, 7) and sd["layers.0.bias"] == (128,)
    # block 1: act(128) = Identity, WNConv1d(128 -> 128, k=4, s=2), transformer stack at width 128
    assert sd["layers.1.layers.1.weight_v"] == (128, 128, 4)
    prefix = "layers.1.layers.2.1."
    assert sd[prefix + "self_attn.to_qkv.weight"] == (384, 128)
    assert sd[prefix + "self_attn.q_norm.weight"] == (128,)
    assert sd[prefix + "self_attn_scale.scale"] == (128,) and sd[prefix + "ff_scale.scale"] == (128,)
    assert sd[prefix + "rope.inv_freq"] == (32,)
    assert sd[prefix + "pre_norm.beta"] == (128,)
    assert sd["layers.4.layers.2.3.ff.ff.0.proj.weight"] == (8192, 1024)
    assert "layers.4.layers.2.4.pre_norm.gamma" not in sd  # depth 3 -> indices 1..3, then Transpose
    assert sd["layers.6.weight_v"] == (32, 1024, 3)
    dsd = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert dsd["layers.0.weight_v"] == (1024, 32, 3)
    assert dsd["layers.1.layers.0.1.self_attn.to_qkv.weight"] == (3072, 1024)
    assert dsd["layers.1.layers.2.weight_g"] == (1024, 1, 1)  # transposed conv: g has in channels
    assert dsd["layers.1.layers.2.weight_v"] == (1024, 512, 16)
    assert dsd["layers.6.weight_v"] == (2, 128, 7) and "layers.6.bias" not in dsd
    block = enc.layers[1].layers[2][1]
    assert block.pre_norm.eps == 1e-2 and block.self_attn.qk_norm == "ln" and block.dim_heads == 128
    assert enc.layers[1].sliding_window == (63, 64)


def test_taae_options_change_module_tree():
    with torch.device("meta"):
        enc = TAAEEncoder(use_snake=True, use_dilated_conv=True, conformer=True, layer_scale=False, **SMALL_TAAE)
        dec = TAAEDecoder(use_snake=True, use_dilated_conv=True, **SMALL_TAAE)
    sd = enc.state_dict()
    assert "layers.1.layers.0.layers.1.weight_v" in sd  # ResidualUnit d=1
    assert "layers.1.layers.3.alpha" in sd  # SnakeBeta before the strided conv
    assert "layers.1.layers.5.1.conformer.depthwise_conv.weight" in sd
    assert "layers.1.layers.5.1.self_attn_scale.scale" not in sd
    dsd = dec.state_dict()
    assert dsd["layers.1.layers.1.alpha"].shape == (32,)  # act sized like the transposed conv's input
    assert "layers.2.layers.5.layers.3.weight_v" in dsd  # trailing ResidualUnit d=9 of the last block
    assert (TAAEEncoder(layer_scale=False, **SMALL_TAAE).layers[1].layers[2][1].self_attn.to_out.weight == 0).all()
    with pytest.raises(ValueError, match="equal length"):
        TAAEEncoder(channels=8, c_mults=(1, 2), strides=(2,), transformer_depths=(1, 1))
    with pytest.raises(ValueError, match="encoder"):
        TAAEBlock(8, 8, 2, type="middle")


@pytest.mark.parametrize("opts", [dict(), dict(use_snake=True, use_dilated_conv=True, conformer=True)])
def test_taae_round_trip_backward_and_deepcopy(opts):
    torch.manual_seed(0)
    enc, dec = TAAEEncoder(in_channels=2, **SMALL_TAAE, **opts), TAAEDecoder(out_channels=2, **SMALL_TAAE, **opts)
    enc.train(), dec.train()
    x = torch.randn(2, 2, 128)
    z = enc(x)
    assert z.shape == (2, 8, 16)
    y = dec(z)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None for p in list(enc.parameters()) + list(dec.parameters()))
    enc_copy, dec_copy = copy.deepcopy(enc).eval(), copy.deepcopy(dec).eval()
    enc.eval(), dec.eval()
    with torch.no_grad():
        torch.testing.assert_close(dec_copy(enc_copy(x)), dec(enc(x)))


def test_taae_sliding_window_is_honoured_without_flash_attn():
    torch.manual_seed(1)
    windowed = TAAEBlock(16, 16, 1, transformer_depth=1, sliding_window=(2, 2)).eval()
    _randomize(windowed)
    full = copy.deepcopy(windowed)
    full.sliding_window = None
    wide = copy.deepcopy(windowed)
    wide.sliding_window = (40, 40)
    x = torch.randn(1, 16, 40)
    with torch.no_grad():
        assert not torch.allclose(windowed(x), full(x), atol=1e-4)
        torch.testing.assert_close(wide(x), full(x))
        x2 = x.clone()
        x2[..., 20] += torch.randn(16)  # not a constant: LayerNorm would cancel it
        changed = (windowed(x2) - windowed(x)).abs().amax(1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [18, 19, 20, 21, 22]


def test_taae_checkpointing_matches_plain():
    torch.manual_seed(2)
    plain = TAAEEncoder(**SMALL_TAAE).train()
    _randomize(plain)
    ckpt = copy.deepcopy(plain)
    for block in ckpt.layers[1:3]:
        block.checkpointing = True
    x = torch.randn(1, 2, 64)
    out_p, out_c = plain(x), ckpt(x)
    torch.testing.assert_close(out_p, out_c)
    out_p.sum().backward()
    out_c.sum().backward()
    for p, c in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, c.grad)


def test_local_window():
    assert local_window(64) == (32, 31) and sum(local_window(64)) + 1 == 64
    assert local_window(5) == (2, 2)
    assert local_window(8, causal=True) == (7, 0)
    with pytest.raises(ValueError):
        local_window(0)


def test_local_attention_encoder_decoder_keys():
    with torch.device("meta"):
        enc = TransformerEncoder1D(2, 32)
        dec = TransformerDecoder1D(32, 2)
    sd = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert sd["project_in.weight"] == (96, 2) and sd["project_out.weight"] == (32, 768)
    assert "layers.0.project_in.weight" not in sd  # block 0 already has embed_dims[0] channels
    assert sd["layers.1.project_in.weight"] == (192, 96)
    assert sd["layers.1.project_down.weight"] == (192, 384)
    assert sd["layers.0.transformer.layers.2.1.to_qkv.weight"] == (288, 96)
    assert sd["layers.0.transformer.layers.0.0.beta"] == (96,)
    assert sd["layers.0.transformer.layers.0.4.ff.0.proj.weight"] == (384, 96)
    assert "layers.0.transformer.layers.0.4.ff.2.bias" not in sd
    assert sd["layers.0.transformer.rotary_pos_emb.inv_freq"] == (4,)  # 8-wide heads
    assert sd["layers.3.transformer.rotary_pos_emb.inv_freq"] == (16,)  # 64-wide heads: upstream's 32 dims
    dsd = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert dsd["project_in.weight"] == (768, 32) and dsd["layers.1.project_up.weight"] == (768, 384)


@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_round_trip(causal):
    torch.manual_seed(3)
    kw = dict(heads=(2, 4), depths=(1, 2), ratios=(2, 4), local_attn_window_size=6, causal=causal)
    enc = TransformerEncoder1D(2, 8, embed_dims=(16, 32), **kw).train()
    dec = TransformerDecoder1D(8, 2, embed_dims=(32, 16), **kw).train()
    x = torch.randn(2, 2, 64)
    z = enc(x)
    assert z.shape == (2, 8, 8)
    y = dec(z)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None for p in list(enc.parameters()) + list(dec.parameters()))
    enc_copy = copy.deepcopy(enc).eval()
    with torch.no_grad():
        torch.testing.assert_close(enc_copy(x), enc.eval()(x))
    with pytest.raises(ValueError, match="multiple"):
        enc(torch.randn(1, 2, 60))


@pytest.mark.parametrize("causal,expected", [(False, [8, 9, 10, 11, 12, 13]), (True, [10, 11, 12, 13, 14, 15])])
def test_local_transformer_attends_only_within_window(causal, expected):
    torch.manual_seed(4)
    model = ContinuousLocalTransformer(dim=16, depth=1, heads=2, local_attn_window_size=6, causal=causal).eval()
    _randomize(model)
    x = torch.randn(1, 24, 16)
    x2 = x.clone()
    x2[0, 10] += torch.randn(16)
    with torch.no_grad():
        changed = (model(x2) - model(x)).abs().amax(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == expected


def test_local_transformer_cross_attention_and_prepend():
    torch.manual_seed(5)
    model = ContinuousLocalTransformer(dim=16, depth=2, dim_in=4, dim_out=3, heads=2, cross_attn_cond_dim=8)
    _randomize(model)
    out = model(torch.randn(2, 10, 4), cross_attn_cond=torch.randn(2, 5, 8), prepend_cond=torch.randn(2, 2, 16))
    assert out.shape == (2, 12, 3)
    with pytest.raises(ValueError, match="cross_attn_cond_dim"):
        ContinuousLocalTransformer(dim=16, depth=1, heads=2)(torch.randn(1, 4, 16), cross_attn_cond=torch.randn(1, 2, 8))
