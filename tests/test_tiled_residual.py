"""The tiled CPU inference path of the Oobleck and DAC residual units: same values as the untiled expression, the input is
never overwritten behind the caller's back, and the convolutions really see tiles (not the whole signal)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stable_audio_tools.models import tiled_residual
from stable_audio_tools.models import dac
from stable_audio_tools.models.activations import Activation1d
from stable_audio_tools.models.oobleck import DecoderBlock, OobleckDecoder, OobleckEncoder, ResidualUnit


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 3 and p.shape[1:] == (1, 1)
                                                                 else 0.0))
    return module.eval()


def _tile(unit, x: torch.Tensor) -> int:
    with torch.no_grad():
        return tiled_residual.residual_tile_length(unit.layers, x)


def _plain(unit: ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    return unit.layers(x) + x


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(tiled_residual, "RESIDUAL_TILE_ELEMENTS", 256)


@pytest.mark.parametrize("dilation", [1, 3, 9])
@pytest.mark.parametrize("use_snake", [True, False])
@pytest.mark.parametrize("length", [997, 1024])
def test_tiled_unit_matches_untiled(small_tiles, dilation, use_snake, length):
    unit = _randomise(ResidualUnit(6, 6, dilation, use_snake=use_snake))
    x = torch.randn(2, 6, length)
    with torch.no_grad():
        tile = _tile(unit, x)
        assert 0 < tile < length // 2
        expected = _plain(unit, x)
        kept = x.clone()
        got = unit(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(x, kept), "inplace=False must leave the input alone"
        same = unit(x, inplace=True)
        assert same.data_ptr() == x.data_ptr()
        torch.testing.assert_close(same, expected, rtol=1e-5, atol=1e-6)


def test_convolutions_see_tiles(small_tiles, monkeypatch):
    unit = _randomise(ResidualUnit(4, 4, 9, use_snake=True))
    x = torch.randn(1, 4, 2000)
    widths = []
    conv1d = F.conv1d

    def spy(inp, *args, **kwargs):
        widths.append(inp.shape[-1])
        return conv1d(inp, *args, **kwargs)

    monkeypatch.setattr(F, "conv1d", spy)
    with torch.no_grad():
        tile = _tile(unit, x)
        unit(x)
    assert widths and max(widths) <= tile + 2 * 27
    assert len(widths) == 2 * -(-2000 // tile)


def test_gradients_and_other_devices_use_the_plain_path(small_tiles):
    unit = _randomise(ResidualUnit(4, 4, 3, use_snake=True))
    x = torch.randn(1, 4, 3000, requires_grad=True)
    y = unit(x)
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert _tile(unit, torch.randn(1, 4, 30)) == 0, "short inputs stay untiled"


def test_non_elementwise_activation_is_not_tiled(small_tiles):
    unit = _randomise(ResidualUnit(4, 4, 1, use_snake=True))
    unit.layers[0] = Activation1d(unit.layers[0])
    x = torch.randn(1, 4, 3000)
    assert _tile(unit, x) == 0
    with torch.no_grad():
        torch.testing.assert_close(unit(x), _plain(unit, x))


def test_inplace_activation_is_not_tiled(small_tiles):
    unit = _randomise(ResidualUnit(4, 4, 1, use_snake=False))
    x = torch.randn(1, 4, 3000)
    assert _tile(unit, x) > 0
    unit.layers[0] = torch.nn.ELU(inplace=True)
    assert _tile(unit, x) == 0


def test_block_never_overwrites_its_input(small_tiles):
    block = _randomise(DecoderBlock(4, 4, 2, use_snake=True))
    x = torch.randn(1, 4, 1500)
    kept = x.clone()
    with torch.no_grad():
        got = block(x)
        assert torch.equal(x, kept)
    with torch.no_grad():
        h = block.layers[1](block.layers[0](x))
        for unit in block.layers[2:]:
            h = _plain(unit, h)
    torch.testing.assert_close(got, h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_nearest_upsample", [False, True])
def test_whole_decoder_and_encoder_match_untiled(monkeypatch, use_nearest_upsample):
    decoder = _randomise(OobleckDecoder(out_channels=2, channels=4, latent_dim=3, c_mults=[1, 2], strides=[2, 4],
                                        use_snake=True, use_nearest_upsample=use_nearest_upsample), seed=1)
    encoder = _randomise(OobleckEncoder(in_channels=2, channels=4, latent_dim=3, c_mults=[1, 2], strides=[2, 4],
                                        use_snake=True), seed=2)
    latents = torch.randn(2, 3, 200)
    audio = torch.randn(2, 2, 1600)
    kept_latents, kept_audio = latents.clone(), audio.clone()
    with torch.no_grad():
        monkeypatch.setattr(tiled_residual, "RESIDUAL_TILE_ELEMENTS", 1 << 40)
        decoded, encoded = decoder(latents), encoder(audio)
        monkeypatch.setattr(tiled_residual, "RESIDUAL_TILE_ELEMENTS", 128)
        assert _tile(decoder.layers[1].layers[2], torch.randn(2, 4, 800)) > 0
        torch.testing.assert_close(decoder(latents), decoded, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(encoder(audio), encoded, rtol=1e-5, atol=1e-6)
    assert torch.equal(latents, kept_latents) and torch.equal(audio, kept_audio)


def test_layers_with_hooks_are_not_tiled(small_tiles):
    unit = _randomise(ResidualUnit(4, 4, 1, use_snake=True))
    seen = []
    unit.layers[1].register_forward_hook(lambda module, args, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        unit(torch.randn(1, 4, 3000))
    assert seen == [3000]


def test_dac_unit_is_tiled_with_the_same_values(small_tiles, monkeypatch):
    unit = _randomise(dac.ResidualUnit(6, dilation=3))
    x = torch.randn(2, 6, 1200)
    with torch.no_grad():
        expected = x + unit.block(x)
        tile = tiled_residual.residual_tile_length(unit.block, x)
        assert 0 < tile < 600
        widths = []
        conv1d = F.conv1d
        monkeypatch.setattr(F, "conv1d", lambda inp, *a, **k: widths.append(inp.shape[-1]) or conv1d(inp, *a, **k))
        got = unit(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert max(widths) <= tile + 2 * 9
