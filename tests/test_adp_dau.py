"""ADP U-Nets (UNet1d / UNetCFG1d) and the Dance Diffusion U-Net (DiffusionAttnUnet1D)."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from stable_audio_tools.models.adp import FixedEmbedding, UNet1d, UNetCFG1d, rand_bool
from stable_audio_tools.models.adp_blocks import Conv1d, ConvTranspose1d, Downsample1d, Upsample1d
from stable_audio_tools.models.blocks import (
    Downsample1d as FixedDownsample1d,
    ResConvBlock,
    SelfAttention1d,
    Upsample1d as FixedUpsample1d,
)
from stable_audio_tools.models.dau1d import DiffusionAttnUnet1D

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(__file__).parent.parent / "stable_audio_tools" / "configs" / "model_configs"
PREFIX = "model.model."

TINY = dict(in_channels=3, channels=16, multipliers=[1, 2, 2], factors=[2, 2], num_blocks=[1, 1],
            attentions=[0, 1, 1], attention_heads=2, attention_multiplier=2, resnet_groups=8)
TINY_CFG = dict(TINY, context_embedding_features=12, context_embedding_max_length=6)


def _tiny_cfg(seed: int = 0, **overrides) -> UNetCFG1d:
    torch.manual_seed(seed)
    return UNetCFG1d(**dict(TINY_CFG, **overrides)).eval()


def _inputs(seed: int = 1, channels: int = 3, length: int = 32, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, length, generator=g)
    t = torch.rand(batch, generator=g)
    emb = torch.randn(batch, 6, 12, generator=g)
    return x, t, emb


# --------------------------------------------------------------------------------------------- ADP


def test_unet_cfg_matches_stable_audio_1_0_manifest():
    manifest = json.loads((FIXTURES / "manifests" / "stable_audio_1_0.json").read_text())
    expected = {k[len(PREFIX):]: tuple(shape) for k, shape, _ in manifest["state_dict"] if k.startswith(PREFIX)}
    config = json.loads((CONFIGS / "txt2audio" / "stable_audio_1_0.json").read_text())["model"]["diffusion"]["config"]
    with torch.device("meta"):
        model = UNetCFG1d(**config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert got["fixed_embedding.embedding.weight"] == (79, 768)


def test_unet1d_matches_adp_uncond_golden():
    golden = FIXTURES / "golden" / "adp_uncond"
    config = json.loads((golden / "model_config.json").read_text())["model"]["config"]
    model = UNet1d(**config).eval()
    weights = load_file(str(golden / "weights.safetensors"))
    model.load_state_dict({k[len(PREFIX):]: v for k, v in weights.items()}, strict=True)
    io = load_file(str(golden / "io.safetensors"))
    with torch.no_grad():
        out = model(io["in.x"], io["in.t"])
    torch.testing.assert_close(out, io["out.model_out"], atol=1e-4, rtol=0)


def test_unet1d_tiny_shapes_and_skip_scale():
    torch.manual_seed(0)
    model = UNet1d(**TINY).eval()
    x, t, _ = _inputs()
    with torch.no_grad():
        out = model(x, t)
    assert out.shape == x.shape
    assert model.upsamples[0].skip_scale == pytest.approx(2 ** -0.5)
    assert len(model.upsamples[0].blocks) == 2 and len(model.upsamples[1].blocks) == 1
    assert not hasattr(model.downsamples[0], "transformer") and hasattr(model.bottleneck, "transformer")


def test_unet_cfg_scale_one_is_plain_forward():
    model = _tiny_cfg()
    x, t, emb = _inputs()
    with torch.no_grad():
        out = model(x, t, embedding=emb)
        plain = UNet1d.forward(model, x, t, embedding=emb)
        fixed = UNet1d.forward(model, x, t, embedding=model.fixed_embedding(emb))
    torch.testing.assert_close(out, plain, atol=0, rtol=0)
    assert (out - fixed).abs().max() > 1e-4  # the cross-attention embedding matters


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_unet_cfg_guidance_formula(batch_cfg):
    model = _tiny_cfg()
    x, t, emb = _inputs()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        cond = UNet1d.forward(model, x, t, embedding=emb, embedding_mask=mask)
        uncond = UNet1d.forward(model, x, t, embedding=model.fixed_embedding(emb), embedding_mask=mask)
        out = model(x, t, embedding=emb, embedding_mask=mask, embedding_scale=3.0, batch_cfg=batch_cfg)
        rescaled = model(x, t, embedding=emb, embedding_mask=mask, embedding_scale=3.0, batch_cfg=batch_cfg,
                         rescale_cfg=True, scale_phi=0.7)
    expected = uncond + (cond - uncond) * 3.0
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    ratio = cond.std(dim=1, keepdim=True) / expected.std(dim=1, keepdim=True)
    torch.testing.assert_close(rescaled, 0.7 * expected * ratio + 0.3 * expected, atol=1e-5, rtol=0)


def test_unet_cfg_negative_embedding_and_mask():
    model = _tiny_cfg()
    x, t, emb = _inputs()
    neg = torch.randn(2, 6, 12)
    neg_mask = torch.tensor([[True, True, False, False, True, False]] * 2)
    with torch.no_grad():
        cond = UNet1d.forward(model, x, t, embedding=emb)
        mixed = torch.where(neg_mask[:, :, None], neg, model.fixed_embedding(emb))
        uncond = UNet1d.forward(model, x, t, embedding=mixed)
        out = model(x, t, embedding=emb, embedding_scale=2.0, batch_cfg=True, negative_embedding=neg,
                    negative_embedding_mask=neg_mask)
        full_neg = model(x, t, embedding=emb, embedding_scale=2.0, batch_cfg=True, negative_embedding=neg)
        uncond_full = UNet1d.forward(model, x, t, embedding=neg)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 2.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(full_neg, uncond_full + (cond - uncond_full) * 2.0, atol=1e-5, rtol=0)


def test_unet_cfg_embedding_dropout():
    model = _tiny_cfg()
    x, t, emb = _inputs()
    with torch.no_grad():
        cond = UNet1d.forward(model, x, t, embedding=emb)
        uncond = UNet1d.forward(model, x, t, embedding=model.fixed_embedding(emb))
        assert torch.equal(model(x, t, embedding=emb, embedding_mask_proba=1.0), uncond)
        assert torch.equal(model(x, t, embedding=emb, embedding_mask_proba=0.0), cond)
        seen = set()
        torch.manual_seed(0)
        for _ in range(12):
            out = model(x, t, embedding=emb, embedding_mask_proba=0.5)
            for i in range(2):
                is_cond = torch.allclose(out[i], cond[i], atol=1e-6)
                assert is_cond or torch.allclose(out[i], uncond[i], atol=1e-6)
                seen.add(is_cond)
    assert seen == {True, False}
    assert rand_bool((3, 1, 1), 1.0).all() and not rand_bool((3, 1, 1), 0.0).any()


def test_unet_cfg_xattn_time_token():
    model = _tiny_cfg(use_xattn_time=True)
    assert model.fixed_embedding.embedding.weight.shape == (7, 12)
    x, t, emb = _inputs()
    mask = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        out = model(x, t, embedding=emb, embedding_mask=mask, embedding_scale=2.0, batch_cfg=True)
        two_pass = model(x, t, embedding=emb, embedding_mask=mask, embedding_scale=2.0)
    assert out.shape == x.shape
    torch.testing.assert_close(out, two_pass, atol=1e-5, rtol=0)


def test_unet_cfg_context_features_and_channels():
    model = _tiny_cfg(context_features=5, context_channels=[2, 0, 8])
    assert model.to_in.block.block1.project.weight.shape[1] == 3 + 2
    assert model.downsamples[1].blocks[0].block1.project.weight.shape[1] == 32 + 8
    x, t, emb = _inputs()
    feats = torch.randn(2, 5)
    chans = [torch.randn(2, 2, 32), torch.randn(2, 8, 8)]
    with torch.no_grad():
        batch = model(x, t, embedding=emb, embedding_scale=2.5, batch_cfg=True, features=feats, channels_list=chans)
        two_pass = model(x, t, embedding=emb, embedding_scale=2.5, features=feats, channels_list=chans)
        other = model(x, t, embedding=emb, features=feats * 2, channels_list=chans)
        base = model(x, t, embedding=emb, features=feats, channels_list=chans)
    torch.testing.assert_close(batch, two_pass, atol=1e-5, rtol=0)
    assert (other - base).abs().max() > 1e-4
    with pytest.raises(ValueError, match="features"):
        model(x, t, embedding=emb, channels_list=chans)
    with pytest.raises(ValueError, match="context channels"):
        model(x, t, embedding=emb, features=feats, channels_list=[chans[0], torch.randn(2, 3, 8)])


def test_unet_options_and_errors():
    torch.manual_seed(0)
    model = UNet1d(**dict(TINY, use_nearest_upsample=True, patch_size=2, out_channels=1, use_context_time=False,
                          context_features=4, kernel_multiplier_downsample=4, attention_heads=None,
                          attention_features=8)).eval()
    x, t, _ = _inputs()
    with torch.no_grad():
        assert model(x, features=torch.randn(2, 4)).shape == (2, 1, 32)
        assert model(x, features=torch.randn(2, 4), causal=True).shape == (2, 1, 32)
    assert model.bottleneck.transformer.blocks[0].attention.attention.num_heads == 4
    with pytest.raises(ValueError, match="unknown arguments"):
        UNet1d(**dict(TINY, bogus=1))
    with pytest.raises(ValueError, match="attentions"):
        UNet1d(**dict(TINY, attentions=[0]))
    with pytest.raises(ValueError, match="max_length"):
        FixedEmbedding(3, 4)(torch.zeros(1, 5, 4))


def test_adp_conv_padding_lengths():
    for length in (15, 16, 17, 33):
        x = torch.randn(1, 2, length)
        for factor in (1, 2, 4):
            down = Downsample1d(2, 3, factor)
            assert down(x).shape[-1] == -(-length // factor)
            assert Upsample1d(2, 3, factor)(x).shape[-1] == length * factor
            assert Upsample1d(2, 3, factor, use_nearest=True)(x).shape[-1] == length * factor
    conv = Conv1d(1, 1, 3, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(1.0, 5.0)[None, None]
    assert conv(x).tolist() == [[[3.0, 6.0, 9.0, 7.0]]]
    assert conv(x, causal=True).tolist() == [[[1.0, 3.0, 6.0, 9.0]]]
    tconv = ConvTranspose1d(1, 1, 4, stride=2, bias=False)
    assert tconv(x).shape[-1] == 8


# -------------------------------------------------------------------------------------------- DAU1d


@pytest.mark.parametrize("name", sorted(p.name for p in (CONFIGS / "dance_diffusion").glob("*.json")))
def test_dau1d_builds_from_dance_diffusion_configs(name):
    config = json.loads((CONFIGS / "dance_diffusion" / name).read_text())
    assert config["model"]["type"] == "DAU1d"
    with torch.device("meta"):
        model = DiffusionAttnUnet1D(**config["model"]["config"])
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(sd) == 932
    assert sum(p.numel() for p in model.parameters()) == 221_389_322
    assert sd["timestep_embed.weight"] == (8, 1)
    assert sd["net.0.main.0.weight"] == (128, 2 + 16, 5)
    assert sd["net.4.main.0.weight"] == (128, 256, 5)
    assert sd["net.6.main.3.weight"] == (2, 128, 5) and "net.6.main.4.weight" not in sd
    assert sd["net.6.skip.weight"] == (2, 128, 1)
    assert sd["net.3.main.0.kernel"] == (8,) and sd["net.3.main.14.kernel"] == (8,)
    assert sd["net.3.main.1.main.0.weight"] == (128, 128, 5)
    deepest = "net.3" + ".main.7" * 12
    assert sd[deepest + ".main.1.main.0.weight"] == (512, 512, 5)
    assert sd[deepest + ".main.2.qkv_proj.weight"] == (1536, 512, 1)
    assert sd[deepest + ".main.8.main.0.weight"] == (512, 512, 5)  # innermost: no skip concat
    attn = [n for n, m in model.named_modules() if isinstance(m, SelfAttention1d)]
    assert len(attn) == 6 * 6  # levels 9..14 of depth 14 with n_attn_layers=5


def test_dau1d_tiny_forward_backward():
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(io_channels=2, depth=4, n_attn_layers=2, channels=[32, 32, 64, 64],
                                strides=[2, 2, 2], cond_dim=3)
    x, t = torch.randn(2, 2, 64), torch.rand(2)
    cond = torch.randn(2, 3, 40)
    out = model(x, t, cond=cond)
    assert out.shape == x.shape
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.net[0].main[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond"):
        model(x, t)


def test_dau1d_variants():
    torch.manual_seed(0)
    model = DiffusionAttnUnet1D(io_channels=1, depth=3, n_attn_layers=1, channels=[32, 32, 64], strides=[4, 1],
                                learned_resample=True, use_snake=True, conv_bias=False, kernel_size=3,
                                cond_dim=1, cond_noise_aug=True)
    keys = model.state_dict().keys()
    assert "net.0.main.2.alpha" in keys and "net.0.main.0.bias" not in keys
    assert model.net[0].main[0].weight.shape == (32, 1 + 1 + 32, 3)
    x, t = torch.randn(2, 1, 32), torch.rand(2)
    out = model(x, t, cond=torch.randn(2, 1, 32), cond_aug_scale=0.1)
    assert out.shape == x.shape
    out.sum().backward()
    with pytest.raises(ValueError, match="learned_resample"):
        DiffusionAttnUnet1D(depth=3, n_attn_layers=0, channels=[8, 8, 8], strides=[4, 2])


def test_dau_blocks_reference_numerics():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 20)
    down, up = FixedDownsample1d("cubic"), FixedUpsample1d("cubic")
    eye = torch.eye(5)[:, :, None]
    ref_down = F.conv1d(F.pad(x, (3, 3), "reflect"), eye * down.kernel, stride=2)
    ref_up = F.conv_transpose1d(F.pad(x, (2, 2), "reflect"), eye * up.kernel, stride=2, padding=7)
    torch.testing.assert_close(down(x), ref_down, atol=1e-6, rtol=0)
    torch.testing.assert_close(up(x), ref_up, atol=1e-6, rtol=0)
    assert down(x).shape[-1] == 10 and up(x).shape[-1] == 40

    attn = SelfAttention1d(64, 2).eval()
    y = torch.randn(2, 64, 7)
    qkv = attn.qkv_proj(attn.norm(y)).view(2, 6, 32, 7).transpose(2, 3)
    q, k, v = qkv.chunk(3, dim=1)
    weights = torch.softmax(q @ k.transpose(2, 3) / 32 ** 0.5, dim=-1)
    ref = y + attn.out_proj((weights @ v).transpose(2, 3).reshape(2, 64, 7))
    torch.testing.assert_close(attn(y), ref, atol=1e-5, rtol=0)

    block = ResConvBlock(4, 6, 3, is_last=True)
    assert [type(m).__name__ for m in block.main] == ["Conv1d", "GroupNorm", "GELU", "Conv1d", "Identity", "Identity"]
    assert block.skip.weight.shape == (3, 4, 1) and block.skip.bias is None
