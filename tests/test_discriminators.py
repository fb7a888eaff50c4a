"""Tests for the autoencoder GAN discriminators (EnCodec MS-STFT, Oobleck, DAC) and their factory."""
import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.dac_discriminator import BANDS, MRD, DACDiscriminator, DACGANLoss
from stable_audio_tools.models.discriminators import (EncodecDiscriminator, OobleckDiscriminator,
                                                      create_discriminator_from_config, get_hinge_losses,
                                                      get_relativistic_losses)

CONFIGS = Path(__file__).resolve().parents[1] / "stable_audio_tools" / "configs" / "model_configs" / "autoencoders"

SMALL = {
    "encodec": {"type": "encodec", "config": {"filters": 4, "n_ffts": [256, 128], "hop_lengths": [64, 32],
                                              "win_lengths": [256, 128]}},
    "encodec_rpgan": {"type": "encodec", "config": {"filters": 4, "n_ffts": [128], "hop_lengths": [32],
                                                    "win_lengths": [96], "loss_type": "rpgan",
                                                    "normalize_losses": True, "spec_scale_pow": 0.3}},
    "oobleck": {"type": "oobleck", "config": {}},
    "dac": {"type": "dac", "config": {"periods": [2, 3], "fft_sizes": [256], "rates": [2]}},
    "dac_hinge": {"type": "dac", "config": {"periods": [5], "fft_sizes": [128], "use_hinge": True}},
}


def _f(value: torch.Tensor) -> float:
    return float(value.detach())


def _audio(seed: int, channels: int = 2, length: int = 2048, grad: bool = False) -> torch.Tensor:
    x = 0.3 * torch.randn(2, channels, length, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(grad)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_loss_is_finite_and_gradients_flow(name):
    torch.manual_seed(0)
    disc = create_discriminator_from_config(SMALL[name], in_channels=2, sample_rate=44100)
    reals, fakes = _audio(1), _audio(2, grad=True)
    dis, adv, fm = disc.loss(reals, fakes)
    for value in (dis, adv, fm):
        assert value.dim() == 0 and torch.isfinite(value)
    dis.backward(retain_graph=True)
    grads = [p.grad for p in disc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    fakes.grad = None
    (adv + fm).backward()
    assert fakes.grad is not None and float(fakes.grad.abs().sum()) > 0
    # The split entry points give the same values; the discriminator-side one leaves fakes alone.
    fakes.grad = None
    dis_only = disc.discriminator_loss(reals, fakes)
    assert _f(dis_only) == pytest.approx(_f(dis), rel=1e-5, abs=1e-6)
    dis_only.backward()
    assert fakes.grad is None
    gen_adv, gen_fm = disc.generator_loss(reals, fakes)
    assert _f(gen_adv) == pytest.approx(_f(adv), rel=1e-5, abs=1e-6)
    assert _f(gen_fm) == pytest.approx(_f(fm), rel=1e-5, abs=1e-6)
    (gen_adv + gen_fm).backward()
    assert fakes.grad is not None
    clone = copy.deepcopy(disc)
    assert _f(clone.loss(reals, fakes)[0]) == pytest.approx(_f(dis), rel=1e-5, abs=1e-6)


def test_loss_helpers():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-0.5, 0.3])
    dis, gen = get_hinge_losses(real, fake)
    assert _f(dis) == pytest.approx((0.5 + 0.0) / 2 + (0.5 + 1.3) / 2)
    assert _f(gen) == pytest.approx(-(-0.5 + 0.3) / 2)
    dis, gen = get_relativistic_losses(real, fake)
    diff = real - fake
    assert _f(dis) == pytest.approx(_f(torch.log1p(torch.exp(-diff)).mean()))
    assert _f(gen) == pytest.approx(_f(torch.log1p(torch.exp(diff)).mean()))


def test_encodec_spectrogram_and_losses_match_formulas():
    torch.manual_seed(0)
    disc = EncodecDiscriminator(filters=4, in_channels=2, n_ffts=[128, 64], hop_lengths=[32, 16],
                                win_lengths=[128, 48], normalize_losses=True)
    x = _audio(3)
    sub = disc.discriminators.discriminators[1]
    spec = sub.spec_transform(x)
    window = F.pad(torch.hann_window(48), (8, 8))
    frames = x.unfold(-1, 64, 16) * window
    manual = torch.fft.rfft(frames, dim=-1).transpose(-1, -2) / torch.hann_window(48).square().sum().sqrt()
    assert spec.shape == (2, 2, 33, 1 + (2048 - 64) // 16)
    assert torch.allclose(spec, manual, atol=1e-5)

    reals, fakes = _audio(4), _audio(5)
    dis, adv, fm = disc.loss(reals, fakes)
    (lr, fr), (lf, ff) = disc(reals), disc(fakes)
    exp_dis = sum(F.relu(1 - a).mean() + F.relu(1 + b).mean() for a, b in zip(lr, lf)) / 2
    exp_adv = sum(-b.mean() for b in lf) / 2
    exp_fm = sum(sum((r - f).abs().mean() / (r.abs().mean() + 1e-3) for r, f in zip(rs, fs)) / len(rs)
                 for rs, fs in zip(fr, ff)) / 2
    assert _f(dis) == pytest.approx(_f(exp_dis), rel=1e-6)
    assert _f(adv) == pytest.approx(_f(exp_adv), rel=1e-6)
    assert _f(fm) == pytest.approx(_f(exp_fm), rel=1e-6)
    assert len(fr[0]) == 5 and lr[0].shape[1] == 1


def test_encodec_rpgan():
    torch.manual_seed(0)
    disc = EncodecDiscriminator(filters=4, n_ffts=[128], hop_lengths=[32], win_lengths=[128], loss_type="rpgan")
    reals, fakes = _audio(6, channels=1), _audio(7, channels=1, grad=True)
    dis, adv, _ = disc.loss(reals, fakes)
    (lr,), _ = disc(reals)
    (lf,), _ = disc(fakes)
    assert _f(dis) == pytest.approx(_f(F.softplus(lf - lr).mean()), rel=1e-6)
    assert _f(adv) == pytest.approx(_f(F.softplus(lr - lf).mean()), rel=1e-6)
    adv.backward()
    assert fakes.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="loss_type"):
        EncodecDiscriminator(filters=4, loss_type="wgan")


def test_encodec_key_layout_for_stable_audio_2_vae():
    model_config = json.loads((CONFIGS / "stable_audio_2_0_vae.json").read_text())
    disc_config = model_config["training"]["loss_configs"]["discriminator"]
    before = copy.deepcopy(disc_config)
    disc = create_discriminator_from_config(disc_config, in_channels=model_config["audio_channels"],
                                            sample_rate=model_config["sample_rate"])
    assert disc_config == before
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    expected = {}
    for s, n_fft in enumerate([2048, 1024, 512, 256, 128]):
        prefix = f"discriminators.discriminators.{s}."
        expected[prefix + "spec_transform.window"] = (n_fft,)
        in_shapes = [(64, 4, 3, 9), (64, 64, 3, 9), (64, 64, 3, 9), (64, 64, 3, 9), (64, 64, 3, 3)]
        for i, weight in enumerate(in_shapes):
            expected[f"{prefix}convs.{i}.conv.bias"] = (64,)
            expected[f"{prefix}convs.{i}.conv.weight_g"] = (64, 1, 1, 1)
            expected[f"{prefix}convs.{i}.conv.weight_v"] = weight
        expected[prefix + "conv_post.conv.bias"] = (1,)
        expected[prefix + "conv_post.conv.weight_g"] = (1, 1, 1, 1)
        expected[prefix + "conv_post.conv.weight_v"] = (1, 64, 3, 3)
    assert shapes == expected
    assert list(shapes)[:4] == ["discriminators.discriminators.0.spec_transform.window",
                                "discriminators.discriminators.0.convs.0.conv.bias",
                                "discriminators.discriminators.0.convs.0.conv.weight_g",
                                "discriminators.discriminators.0.convs.0.conv.weight_v"]
    conv = disc.discriminators.discriminators[0].convs[1].conv
    assert conv.stride == (1, 2) and conv.dilation == (1, 1)
    assert disc.discriminators.discriminators[0].convs[3].conv.dilation == (4, 1)
    assert torch.equal(disc.state_dict()["discriminators.discriminators.0.spec_transform.window"],
                       torch.hann_window(2048))


def test_oobleck_structure_and_losses():
    torch.manual_seed(0)
    disc = OobleckDiscriminator(in_channels=1)
    keys = disc.state_dict().keys()
    assert "multi_discriminator.discriminators.0.layers.2.net.8.weight" in keys
    assert "multi_discriminator.discriminators.1.layers.4.net.6.weight_g" in keys
    assert tuple(disc.state_dict()["multi_discriminator.discriminators.1.layers.0.net.0.weight_v"].shape) \
        == (32, 1, 15, 15)
    reals, fakes = _audio(8, channels=1, length=1000), _audio(9, channels=1, length=1000)
    dis, adv, fm = disc.loss(reals, fakes)
    sr, feats_r = disc(reals)
    sf, feats_f = disc(fakes)
    assert len(feats_r) == 8 * 5  # 3 scales + 5 periods, 5 conv outputs each
    assert _f(dis) == pytest.approx(_f(F.relu(1 - sr).mean() + F.relu(1 + sf).mean()), rel=1e-6)
    assert _f(adv) == pytest.approx(_f(-sf.mean()), rel=1e-6)
    assert _f(fm) == pytest.approx(_f(sum((r - f).abs().mean() for r, f in zip(feats_r, feats_f))), rel=1e-6)
    # Period folding zero-pads to a multiple of the period: 1000 samples, period 3 -> 334 rows.
    period_input = disc.multi_discriminator.discriminators[1].fold(reals, 3)
    assert period_input.shape == (2, 1, 334, 3) and float(period_input[..., -1, -2:].abs().sum()) == 0.0


def test_dac_layout_losses_and_spectrogram():
    torch.manual_seed(0)
    default = DACGANLoss(channels=1)
    keys = default.state_dict().keys()
    assert len(default.discriminator.discriminators) == 5 + 3
    assert "discriminator.discriminators.0.convs.4.0.weight_g" in keys
    assert "discriminator.discriminators.0.conv_post.weight_v" in keys
    assert "discriminator.discriminators.7.band_convs.4.4.0.weight_v" in keys
    assert tuple(default.state_dict()["discriminator.discriminators.5.band_convs.0.0.0.weight_v"].shape) \
        == (32, 2, 3, 9)
    assert default.discriminator.discriminators[5].bands == [(int(a * 1025), int(b * 1025)) for a, b in BANDS]

    gan = DACGANLoss(channels=2, periods=[3], fft_sizes=[128], rates=[2])
    reals, fakes = _audio(10), _audio(11)
    dis, adv, fm = gan.loss(reals, fakes)
    d_real, d_fake = gan.discriminator(reals), gan.discriminator(fakes)
    assert _f(dis) == pytest.approx(_f(sum(f[-1].square().mean() + (1 - r[-1]).square().mean()
                                                 for r, f in zip(d_real, d_fake)) / 3), rel=1e-6)
    assert _f(adv) == pytest.approx(_f(sum((1 - f[-1]).square().mean() for f in d_fake) / 3), rel=1e-6)
    assert _f(fm) == pytest.approx(_f(sum(sum((f[j] - r[j]).abs().mean() for j in range(len(f) - 1))
                                                / (len(f) - 1) for r, f in zip(d_real, d_fake)) / 3), rel=1e-6)
    # As upstream, the discriminator loss sees detached fakes.
    grad_fakes = _audio(11, grad=True)
    gan.loss(reals, grad_fakes)[0].backward()
    assert grad_fakes.grad is None
    # MSD at rate 2 sees the signal resampled to half its length.
    assert d_real[1][0].shape == (2, 16, 1024)
    # MRD folds channels into the batch.
    assert d_real[2][-1].shape[0] == 4

    mrd = MRD(128, channels=1)
    x = _audio(12, channels=1, length=1000)
    bands = mrd.spectrogram(x)
    hop, pad = 32, (128 - 32) // 2
    right = math.ceil(1000 / hop) * hop - 1000
    padded = F.pad(x, (pad, pad + right), mode="reflect")
    manual = torch.stft(padded.reshape(2, -1), 128, 32, window=torch.hann_window(128), return_complex=True)
    manual = torch.view_as_real(manual[..., 2:-2]).permute(0, 3, 2, 1)
    assert manual.shape[2] * hop == math.ceil(1000 / hop) * hop
    assert [b.shape[-1] for b in bands] == [hi - lo for lo, hi in mrd.bands]
    assert torch.allclose(torch.cat(bands, dim=-1), manual, atol=1e-6)


def test_dac_preprocess():
    x = torch.tensor([[[1.0, 3.0, -1.0, 1.0]]])
    out = DACDiscriminator.preprocess(x)
    assert _f(out.mean()) == pytest.approx(0.0, abs=1e-7)
    assert _f(out.abs().max()) == pytest.approx(0.8, rel=1e-6)


def test_factory_errors_and_defaults():
    with pytest.raises(ConfigError, match="not available"):
        create_discriminator_from_config({"type": "big_vgan", "config": {}}, 2, 44100)
    with pytest.raises(ConfigError, match="accepted values"):
        create_discriminator_from_config({"type": "encodek", "config": {}}, 2, 44100)
    with pytest.raises(ConfigError, match="n_fft"):
        create_discriminator_from_config({"type": "encodec", "config": {"n_fft": [2048]}}, 2, 44100)
    with pytest.raises(ConfigError, match="type"):
        create_discriminator_from_config({"config": {}}, 2, 44100)
    oobleck = create_discriminator_from_config({"type": "oobleck"}, 2, 44100)
    assert oobleck.multi_discriminator.discriminators[0].layers[0].net[0].in_channels == 2
    dac = create_discriminator_from_config({"type": "dac", "config": {"periods": [2], "fft_sizes": []}}, 2, 48000)
    assert dac.discriminator.discriminators[0].convs[0][0].in_channels == 2
    config = copy.deepcopy(SMALL["dac"])
    create_discriminator_from_config(config, 1, 44100)
    assert config == SMALL["dac"]
    assert isinstance(create_discriminator_from_config(SMALL["encodec"], 1, 44100), EncodecDiscriminator)
