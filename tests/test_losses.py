"""Tests for the training losses: auraloss-compatible spectral losses, filterbanks, A-weighting,
weighted loss modules and the DAC-style multi-scale mel loss.

Reference values marked "auraloss 0.4.0" / "librosa 0.11" were computed once with those packages
(not dependencies of this project) on the deterministic signals built by ``_signals``; with a batch
of one signal per loss, auraloss 0.4.0's batch-global spectral convergence equals upstream's
per-item one.
"""
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from stable_audio_tools.training.losses import (AuralossLoss, FIRFilter, L1Loss, LossWithTarget, MelSTFTLoss,
                                                MSELoss, MultiLoss, MultiResolutionSTFTLoss,
                                                MultiScaleMelSpectrogramLoss, SISDRLoss, STFTLoss,
                                                SumAndDifferenceSTFTLoss, ValueLoss, a_weighting_fir_taps,
                                                chroma_filterbank, mel_filterbank)

MR_CFG = dict(fft_sizes=[512, 256, 64], hop_sizes=[128, 64, 16], win_lengths=[512, 256, 64])

# Relative tolerance for values that pass through float32 FFT / convolution chains. MKL and oneDNN pick
# different kernels (and summation orders) per CPU, so such values differ by up to ~1e-5 relative between
# machines; 1e-4 holds under every code path (MKL_CBWR=COMPATIBLE, AVX2, AVX-512, ATEN_CPU_CAPABILITY=avx2).
FFT_REL = 1e-4


def _signals():
    t = torch.arange(4096, dtype=torch.float64) / 16000

    def sig(f1, f2, ph):
        return (0.5 * torch.sin(2 * math.pi * f1 * t) + 0.2 * torch.sin(2 * math.pi * f2 * t + ph)
                + 0.05 * torch.cos(2 * math.pi * 37 * t)).float()

    x = torch.stack([sig(440, 3000, 0.0), sig(660, 5000, 1.0)]).unsqueeze(0)
    y = torch.stack([0.8 * sig(440, 3100, 0.3), sig(650, 5000, 0.2)]).unsqueeze(0)
    return x, y


# ---------------------------------------------------------------------------------------------------
# STFT losses

def _manual_stft_mag(x: np.ndarray, n_fft: int, hop: int, eps: float) -> np.ndarray:
    """|STFT| as auraloss computes it: centre reflect padding, periodic Hann, clamped power."""
    padded = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[i:i + n_fft] * window for i in range(0, len(padded) - n_fft + 1, hop)]
    spec = np.fft.rfft(np.stack(frames, axis=1), axis=0)
    return np.sqrt(np.maximum(spec.real ** 2 + spec.imag ** 2, eps))


def test_stft_loss_terms_match_hand_computation():
    x = torch.tensor([[[0.0, 1.0, 0.5, -0.5, -1.0, 0.25, 0.75, 0.0]],
                      [[0.3, -0.2, 0.1, 0.9, -0.4, 0.0, 0.2, -0.1]]])
    y = torch.tensor([[[0.1, 0.8, 0.4, -0.7, -0.9, 0.3, 0.5, 0.1]],
                      [[0.0, -0.3, 0.2, 0.7, -0.5, 0.1, 0.1, 0.0]]])
    loss = STFTLoss(fft_size=4, hop_size=2, win_length=4, w_sc=1.0, w_log_mag=1.0, w_lin_mag=1.0, output="full")
    total, sc, log_mag, lin_mag, phs = loss(x, y)
    xm = np.stack([_manual_stft_mag(s[0].double().numpy(), 4, 2, 1e-8) for s in x])
    ym = np.stack([_manual_stft_mag(s[0].double().numpy(), 4, 2, 1e-8) for s in y])
    sc_ref = np.linalg.norm(ym - xm, axis=(1, 2)) / np.linalg.norm(ym, axis=(1, 2))
    log_ref = np.abs(np.log(xm) - np.log(ym)).mean()
    lin_ref = np.abs(xm - ym).mean()
    assert sc.flatten().numpy() == pytest.approx(sc_ref, rel=FFT_REL)
    assert float(log_mag) == pytest.approx(log_ref, rel=FFT_REL)
    assert float(lin_mag) == pytest.approx(lin_ref, rel=FFT_REL)
    assert phs == 0.0
    assert float(total) == pytest.approx(sc_ref.mean() + log_ref + lin_ref, rel=FFT_REL)


def test_spectral_convergence_is_per_item_and_normalised_by_target():
    x, y = _signals()
    loss = STFTLoss(fft_size=256, hop_size=64, win_length=256, w_log_mag=0.0)
    per_item = [float(loss(x[:, c:c + 1], y[:, c:c + 1])) for c in range(2)]
    assert float(loss(x, y)) == pytest.approx(sum(per_item) / 2, rel=FFT_REL)
    # Swapping input and target changes the normaliser.
    assert float(loss(y, x)) != pytest.approx(float(loss(x, y)), rel=1e-3)


@pytest.mark.parametrize("name,factory,args,expected", [
    ("mrstft", lambda: MultiResolutionSTFTLoss(**MR_CFG), "mono", 1.5908255577087402),
    ("mrstft_pw", lambda: MultiResolutionSTFTLoss(sample_rate=16000, perceptual_weighting=True, **MR_CFG), "mono",
     1.9106067419052124),
    ("sumdiff_pw", lambda: SumAndDifferenceSTFTLoss(sample_rate=16000, perceptual_weighting=True, **MR_CFG), "stereo",
     1.5338129997253418),
    ("mel", lambda: MelSTFTLoss(16000, fft_size=512, hop_size=128, win_length=512, n_mels=40), "mono",
     0.7791872024536133),
    ("lin_l2", lambda: STFTLoss(fft_size=256, hop_size=64, win_length=200, w_lin_mag=0.5, mag_distance="L2"), "right",
     0.5977834463119507),
])
def test_matches_auraloss_reference_values(name, factory, args, expected):
    x, y = _signals()
    x, y = {"mono": (x[:, :1], y[:, :1]), "right": (x[:, 1:], y[:, 1:]), "stereo": (x, y)}[args]
    assert float(factory()(x, y)) == pytest.approx(expected, rel=FFT_REL)


def test_zero_loss_for_identical_signals():
    x, _ = _signals()
    assert float(MultiResolutionSTFTLoss(**MR_CFG)(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert float(SumAndDifferenceSTFTLoss(sample_rate=16000, perceptual_weighting=True, **MR_CFG)(x, x)) \
        == pytest.approx(0.0, abs=1e-7)
    assert float(MelSTFTLoss(16000, n_mels=32)(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert float(STFTLoss(w_phs=1.0)(x, x)) == pytest.approx(0.0, abs=1e-7)


def test_multiresolution_is_mean_of_resolutions_and_prefilters_once():
    x, y = _signals()
    mr = MultiResolutionSTFTLoss(sample_rate=16000, perceptual_weighting=True, **MR_CFG)
    singles = [STFTLoss(f, h, w, sample_rate=16000, perceptual_weighting=True)
               for f, h, w in zip(*MR_CFG.values())]
    expected = sum(float(s(x, y)) for s in singles) / 3
    assert float(mr(x, y)) == pytest.approx(expected, rel=FFT_REL)
    full = MultiResolutionSTFTLoss(output="full", **MR_CFG)(x, y)
    assert len(full) == 5 and len(full[1]) == 3
    # Perceptual weighting = the A-weighting FIR applied to both signals beforehand.
    taps = torch.from_numpy(a_weighting_fir_taps(16000)).view(1, 1, -1)
    fx = F.conv1d(x.reshape(2, 1, -1), taps, padding=50).reshape(1, 2, -1)
    fy = F.conv1d(y.reshape(2, 1, -1), taps, padding=50).reshape(1, 2, -1)
    assert float(mr(x, y)) == pytest.approx(float(MultiResolutionSTFTLoss(**MR_CFG)(fx, fy)), rel=FFT_REL)


def test_sum_and_difference_loss():
    x, y = _signals()
    mr = MultiResolutionSTFTLoss(**MR_CFG)
    sum_loss = float(mr(x.sum(1, keepdim=True), y.sum(1, keepdim=True)))
    diff_loss = float(mr(x[:, :1] - x[:, 1:], y[:, :1] - y[:, 1:]))
    sd = SumAndDifferenceSTFTLoss(w_sum=1.0, w_diff=0.5, output="full", **MR_CFG)
    loss, s, d = sd(x, y)
    assert float(s) == pytest.approx(sum_loss, rel=FFT_REL)
    assert float(d) == pytest.approx(diff_loss, rel=FFT_REL)
    assert float(loss) == pytest.approx((sum_loss + 0.5 * diff_loss) / 2, rel=FFT_REL)
    with pytest.raises(ValueError, match="stereo"):
        sd(x[:, :1], y[:, :1])
    # Batched input: sum/diff groups are kept apart.
    xb, yb = torch.cat([x, y]), torch.cat([y, x])
    batched = float(SumAndDifferenceSTFTLoss(**MR_CFG)(xb, yb))
    separate = [float(SumAndDifferenceSTFTLoss(**MR_CFG)(a[None], b[None])) for a, b in zip(xb, yb)]
    assert batched == pytest.approx(sum(separate) / 2, rel=FFT_REL)


def test_gradients_reach_the_input():
    x, y = _signals()
    y = y.clone().requires_grad_()
    SumAndDifferenceSTFTLoss(sample_rate=16000, perceptual_weighting=True, **MR_CFG)(x, y).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_phase_scale_and_options():
    x, y = _signals()
    phase = STFTLoss(fft_size=64, hop_size=16, win_length=64, w_sc=0.0, w_log_mag=0.0, w_phs=1.0)
    xs = torch.stft(x[0, :1], 64, 16, 64, torch.hann_window(64), return_complex=True)
    ys = torch.stft(y[0, :1], 64, 16, 64, torch.hann_window(64), return_complex=True)
    ncd = ((xs - ys).abs() / (0.5 * (xs.abs() + ys.abs()) + 1e-7)).mean()
    assert float(phase(x[:, :1], y[:, :1])) == pytest.approx(float(ncd), rel=FFT_REL)
    chroma = STFTLoss(fft_size=512, hop_size=128, win_length=512, scale="chroma", n_bins=12, sample_rate=16000)
    assert chroma.fb.shape == (12, 257) and torch.isfinite(chroma(x, y))
    mel = MultiResolutionSTFTLoss(scale="mel", n_bins=[40, 20, 8], sample_rate=16000, **MR_CFG)
    assert [m.fb.shape[1] for m in mel.stft_losses] == [40, 20, 8]
    per_item = STFTLoss(fft_size=256, hop_size=64, win_length=256, retain_batch_dim=True)
    assert per_item(torch.cat([x, y]), torch.cat([y, x])).shape == (4,)
    scaled = STFTLoss(fft_size=256, hop_size=64, win_length=256, scale_invariance=True)
    noise = torch.randn(2, 1, 2048, generator=torch.Generator().manual_seed(0))
    gains = torch.tensor([3.0, 0.5]).view(2, 1, 1)  # one optimal gain per item
    assert float(scaled(noise, gains * noise)) == pytest.approx(0.0, abs=1e-5)
    assert float(STFTLoss(fft_size=256, hop_size=64, win_length=256)(noise, gains * noise)) > 0.5
    with pytest.raises(ValueError, match="sample_rate"):
        STFTLoss(perceptual_weighting=True)
    with pytest.raises(ValueError, match="reduction"):
        STFTLoss(reduction="max")


def test_state_dict_layout_matches_upstream():
    keys = set(SumAndDifferenceSTFTLoss(sample_rate=44100, perceptual_weighting=True, **MR_CFG).state_dict())
    assert keys == {f"mrstft.stft_losses.{i}.prefilter.fir.weight" for i in range(3)}
    mel = MelSTFTLoss(44100, n_mels=64)
    assert set(mel.state_dict()) == {"fb"} and mel.fb.shape == (1, 64, 513)


# ---------------------------------------------------------------------------------------------------
# Filters

def test_a_weighting_response():
    taps = a_weighting_fir_taps(44100)
    assert taps.shape == (101,) and np.allclose(taps, taps[::-1])  # linear phase
    _, h = scipy.signal.freqz(taps, worN=[50.0, 1000.0, 4000.0], fs=44100)
    db = 20 * np.log10(np.abs(h))
    assert abs(db[1]) < 0.5
    assert db[0] < -15.0
    assert db[2] > 0.0
    assert taps[50] == pytest.approx(0.5443199, rel=1e-5)  # auraloss 0.4.0
    fir = FIRFilter("aw", fs=44100)
    assert not fir.fir.weight.requires_grad
    impulse = torch.zeros(1, 1, 301)
    impulse[..., 150] = 1.0
    assert torch.allclose(fir.filter(impulse)[0, 0, 100:201], torch.from_numpy(taps))


def test_mel_filterbank_properties():
    fb = mel_filterbank(22050, 512, n_mels=40)
    assert fb.shape == (40, 257) and fb.dtype == np.float32 and (fb >= 0).all()
    # librosa 0.11 values.
    assert fb.sum(1)[[0, 10, 20, 39]] == pytest.approx([0.02313261, 0.02313261, 0.02341714, 0.02321291], rel=1e-6)
    assert fb[10].max() == pytest.approx(0.010547914542257786, rel=1e-6) and fb[10].argmax() == 21
    # Slaney area normalisation: wide triangles integrate to ~1 over Hz.
    wide = mel_filterbank(22050, 8192, n_mels=40)
    assert (wide.sum(1) * 22050 / 8192)[10:] == pytest.approx(np.ones(30), rel=0.02)
    peaks = wide.argmax(1)
    assert (np.diff(peaks) > 0).all()
    htk = mel_filterbank(16000, 400, n_mels=20, htk=True, norm=None)
    assert htk.sum(1)[[0, 5, 19]] == pytest.approx([2.3358464, 4.3001747, 23.199318], rel=1e-6)
    assert htk.max() <= 1.0 + 1e-6


def test_chroma_filterbank():
    ch = chroma_filterbank(22050, 2048)
    assert ch.shape == (12, 1025)
    assert ch.sum(1)[[0, 5, 11]] == pytest.approx([57.198807, 53.08321, 55.876179], rel=1e-6)  # librosa 0.11


# ---------------------------------------------------------------------------------------------------
# SI-SDR

def test_sisdr_sign_and_value():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(1, 1, 1000, generator=g)
    target = target - target.mean()
    noise = torch.randn(1, 1, 1000, generator=g)
    noise = noise - noise.mean()
    noise = noise - (noise * target).sum() / target.square().sum() * target  # orthogonal to target
    noise = noise * 0.1
    sisdr = SISDRLoss()
    expected = 10 * math.log10(float(target.square().sum() / noise.square().sum()))
    assert float(sisdr(target + noise, target)) == pytest.approx(-expected, rel=1e-4)
    assert float(sisdr(target + noise, target)) < float(sisdr(target + 10 * noise, target))  # noisier: worse
    assert float(sisdr(2.0 * target, target)) < -60  # scale-invariant: perfect up to gain
    x, y = _signals()
    assert float(sisdr(x, y)) == pytest.approx(8.418876647949219, rel=FFT_REL)  # auraloss 0.4.0


# ---------------------------------------------------------------------------------------------------
# Loss modules

def test_loss_module_decay_and_reset():
    loss = ValueLoss(key="v", name="value", weight=2.0, decay=0.5)
    info = {"v": torch.tensor(3.0)}
    assert [float(loss(info)) for _ in range(3)] == pytest.approx([3.0, 1.5, 0.75])
    assert "weight" in loss.state_dict()
    steady = ValueLoss(key="v", name="steady", weight=0.1)
    steady.weight.fill_(5.0)
    assert float(steady(info)) == pytest.approx(0.3)
    assert float(steady(info)) == pytest.approx(0.3)


def test_multiloss_weighting_and_skipping():
    info = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1.5, 1.0]), "adv": torch.tensor(4.0)}
    losses = MultiLoss([
        L1Loss("a", "b", weight=2.0, name="l1"),
        MSELoss("a", "b", weight=0.5),
        ValueLoss("adv", name="adv", weight=0.1),
        ValueLoss("missing", name="skipped"),
    ])
    total, values = losses(info)
    assert set(values) == {"l1", "mse_loss", "adv"}
    assert float(values["l1"]) == pytest.approx(2.0 * 0.75)
    assert float(values["mse_loss"]) == pytest.approx(0.5 * 0.625)
    assert float(values["adv"]) == pytest.approx(0.4)
    assert float(total) == pytest.approx(1.5 + 0.3125 + 0.4)


def test_masked_losses():
    a = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    b = torch.zeros(1, 2, 3)
    mask = torch.tensor([[True, False, True]])
    info = {"a": a, "b": b, "m": mask}
    assert float(MSELoss("a", "b", mask_key="m")(info)) == pytest.approx((1 + 9) / 4)
    assert float(L1Loss("a", "b", mask_key="m")(dict(info, m=mask.unsqueeze(1).expand(1, 2, 3)))) \
        == pytest.approx(4 / 4)
    assert float(MSELoss("a", "b", mask_key="m")({"a": a, "b": b})) == pytest.approx(14 / 6)


def test_auraloss_loss_calls_target_first():
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, first, second):
            calls.append((first, second))
            return torch.tensor(1.0)

    reals, decoded = torch.zeros(1), torch.ones(1)
    AuralossLoss(Recorder(), input_key="decoded", target_key="reals", name="mrstft", weight=0.5)(
        {"reals": reals, "decoded": decoded})
    LossWithTarget(Recorder(), input_key="decoded", target_key="reals", name="plain")(
        {"reals": reals, "decoded": decoded})
    assert calls[0][0] is reals and calls[0][1] is decoded
    assert calls[1][0] is decoded and calls[1][1] is reals


# ---------------------------------------------------------------------------------------------------
# Multi-scale mel (mrmel)

def test_mrmel_matches_independent_computation():
    x, y = _signals()
    loss = MultiScaleMelSpectrogramLoss(16000, n_mels=[20, 40], window_lengths=[128, 512], pow=1.5,
                                        log_weight=2.0, mag_weight=0.5)
    expected = 0.0
    for n_mels, w in [(20, 128), (40, 512)]:
        fb = torch.from_numpy(mel_filterbank(16000, w, n_mels=n_mels))
        window = torch.from_numpy(scipy.signal.get_window("hann", w)).float()

        def mel(s):
            spec = torch.stft(s.reshape(-1, s.shape[-1]), w, w // 4, window=window, return_complex=True).abs()
            return fb @ spec

        xm, ym = mel(x), mel(y)
        expected += 2.0 * (xm.clamp(1e-5).pow(1.5).log10() - ym.clamp(1e-5).pow(1.5).log10()).abs().mean()
        expected += 0.5 * (xm - ym).abs().mean()
    assert float(loss(x, y)) == pytest.approx(float(expected), rel=FFT_REL)
    assert float(loss(x, x)) == 0.0
    assert loss.state_dict() == {}
    with pytest.raises(ValueError, match="equal length"):
        MultiScaleMelSpectrogramLoss(16000, n_mels=[20, 40, 80], window_lengths=[128, 512])


def test_pesq_metric_orders_quality():
    from stable_audio_tools.training.losses.metrics import PESQMetric

    metric = PESQMetric(sample_rate=16000)
    t = torch.arange(32000) / 16000
    speechy = (torch.sin(2 * torch.pi * 220 * t) * (torch.sin(2 * torch.pi * 3 * t) > 0)).reshape(1, 1, -1) * 0.5
    gen = torch.Generator().manual_seed(0)
    slightly = speechy + 0.001 * torch.randn(speechy.shape, generator=gen)
    very = speechy + 0.2 * torch.randn(speechy.shape, generator=gen)
    assert float(metric(slightly, speechy)) > float(metric(very, speechy))
