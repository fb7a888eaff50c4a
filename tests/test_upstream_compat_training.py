"""The training, loss, data and interface pieces added for upstream's import surface."""
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from stable_audio_tools.training import losses
from stable_audio_tools.training.losses import auraloss, semantic
from stable_audio_tools.training.losses import utils as loss_utils

# ------------------------------------------------------------------------------------------------ losses


def test_loss_package_exports_upstream_star_imports():
    from stable_audio_tools.training.losses import losses as loss_modules, metrics

    assert losses.TargetValueLoss is loss_modules.TargetValueLoss
    assert losses.PESQMetric is metrics.PESQMetric
    assert losses.HubertLoss is semantic.HubertLoss and losses.mmd is loss_utils.mmd
    assert semantic.MelSpectrogramLoss is loss_modules.MultiScaleMelSpectrogramLoss


def test_value_stereo_and_mmd_losses():
    target = losses.TargetValueLoss("kl", target=2.0, name="kl_target", weight=0.5)
    assert target({"kl": torch.tensor(5.0)}).item() == pytest.approx(1.5)

    stereo = losses.StereoImageLoss("a", "b")
    a = torch.randn(2, 2, 16)
    assert stereo({"a": a, "b": a}).item() == pytest.approx(0.0, abs=1e-6)
    assert stereo({"a": a, "b": -a}).item() == pytest.approx(1.0, abs=1e-6)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :4] = True
    b = a.clone()
    b[..., 4:] = -b[..., 4:]
    masked = losses.StereoImageLoss("a", "b", mask_key="m")
    assert masked({"a": a, "b": b, "m": mask}).item() == pytest.approx(0.0, abs=1e-6)

    mmd_loss = losses.TimeDomainMMDLoss("x", "y", weight=2.0)
    x = torch.randn(4, 2, 32)
    assert mmd_loss({"x": x, "y": x}).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd_loss({"x": x, "y": x + 3}).item() > 0.01
    assert mmd_loss.input_keys == ("x", "y")


def test_mmd_utilities():
    x = torch.randn(6, 5)
    d = loss_utils.flat_pairwise_sq_distance(x, x)
    brute = ((x[:, None] - x[None]) ** 2).mean(-1)
    assert torch.allclose(d, brute, atol=1e-5)
    assert loss_utils.mmd_loss_flat(x, x, [1.0]).item() == pytest.approx(0.0, abs=1e-6)
    kernel = loss_utils.multi_bandwidth_kernel_2d(x, x + 100, [0.5, 2.0])
    assert 0 < kernel.item() < 0.01
    sig = torch.randn(3, 4, 8)
    assert loss_utils.mmd(sig, sig + 1, dim=1).item() > 0
    assert loss_utils.grouped_mmd(sig, sig, groups=2).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="equal shape"):
        loss_utils.mmd(sig, sig[:, :2])

    weighting = loss_utils.DynamicLossWeighting(init_val=0.0)
    out = weighting(torch.tensor(3.0))
    assert out.item() == pytest.approx(3.0)
    out.backward()
    assert weighting.loss_weight.grad.item() == pytest.approx(-2.0)


def test_spectral_terms_and_sdr():
    stft = auraloss.STFTLoss(fft_size=64, hop_size=16, win_length=64, w_log_mag=0.0)
    x, y = torch.randn(2, 1, 512), torch.randn(2, 1, 512)
    x_mag, _ = stft.spectra(x.reshape(-1, 512))
    y_mag, _ = stft.spectra(y.reshape(-1, 512))
    sc = auraloss.SpectralConvergenceLoss()(x_mag, y_mag)
    assert sc.shape == (2, 1, 1)
    assert torch.allclose(sc.mean(), stft(x, y), atol=1e-6)
    mag = auraloss.STFTMagnitudeLoss()(x_mag, y_mag)
    assert torch.allclose(mag, F.l1_loss(x_mag.log(), y_mag.log()))
    assert auraloss.STFTMagnitudeLoss(log=False, distance="L2")(x_mag, y_mag) == F.mse_loss(x_mag, y_mag)
    with pytest.raises(ValueError, match="distance"):
        auraloss.STFTMagnitudeLoss(distance="L3")

    sig = torch.randn(2, 1, 256)
    est = sig + 0.1 * torch.randn(2, 1, 256)
    si, sd = auraloss.SISDRLoss(), auraloss.SDSDRLoss()
    assert si(0.5 * est, sig).item() == pytest.approx(si(est, sig).item(), rel=1e-4), "SI-SDR ignores the scale"
    assert sd(est, sig).item() == pytest.approx(si(est, sig).item(), abs=0.5)
    assert sd(0.5 * est, sig).item() > sd(est, sig).item() + 10, "SD-SDR penalises it"


def _tiny_ssl_model(kind, directory):
    import transformers

    common = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
                  conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                  do_stable_layer_norm=True, feat_extract_norm="layer")
    config_cls, model_cls = {"hubert": ("HubertConfig", "HubertModel"), "wavlm": ("WavLMConfig", "WavLMModel"),
                             "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model")}[kind]
    if kind == "wavlm":
        common.update(num_buckets=16, max_bucket_distance=32)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**common))
    model.save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("kind", ["hubert", "wavlm", "wav2vec2"])
def test_hubert_loss_with_tiny_local_models(kind, tmp_path):
    path = _tiny_ssl_model(kind, tmp_path / kind)
    loss = losses.HubertLoss(model_name=path, weight=2.0)
    x = torch.randn(2, 2, 1600, requires_grad=True)
    y = torch.randn(2, 2, 1600)
    assert loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    value = loss(x, y)
    assert value.item() > 0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.model.parameters())
    loss.train()
    assert not loss.model.training, "the feature model stays in eval mode"

    features = loss.features(y)
    assert len(features) == 3 and features[0].shape[0] == 4, "every layer, channels folded into the batch"
    one_layer = losses.HubertLoss(feature_ids=[1], model_name=path)
    expected = F.l1_loss(loss.features(x)[1], features[1]) / (features[1].std() + 1e-5)
    assert torch.allclose(one_layer(x, y), expected, atol=1e-6)
    conv = losses.HubertLoss(feature_ids=[-1], model_name=path)
    assert conv.conv_features and conv.features(y)[0].shape[:2] == (4, 8)
    resampled = losses.HubertLoss(model_name=path, sample_rate=32000)
    assert resampled.features(y)[0].shape[1] < features[0].shape[1]
    with pytest.raises(ValueError, match="out of range"):
        losses.HubertLoss(feature_ids=[5], model_name=path)


def test_hubert_loss_names_the_missing_model(tmp_path):
    with pytest.raises(OSError, match="HUBERT_LARGE, WAVLM_LARGE, WAV2VEC2_LARGE_LV60K"):
        losses.HubertLoss(model_name=str(tmp_path / "nothing-here"))


# ------------------------------------------------------------------------------------------------ training


def test_flow_dpmpp_with_intermediates():
    from stable_audio_tools.inference.sampling import DistributionShift
    from stable_audio_tools.training.arc import euler_step, sample_flow_dpmpp_w_intermediates

    def model(x, t):
        return torch.ones_like(x)  # constant velocity: x_t = x_1 - (1 - t)

    calls = []
    noise = torch.zeros(2, 1, 8)
    out = sample_flow_dpmpp_w_intermediates(model, noise, steps=4, callback=calls.append)
    assert out["x"].shape == (4, 2, 1, 8) and out["t"].shape == (4, 1)
    assert torch.allclose(out["target"], torch.full_like(noise, -1.0), atol=1e-5)
    assert [c["i"] for c in calls] == [0, 1, 2, 3] and set(calls[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    shift = DistributionShift()
    shifted = sample_flow_dpmpp_w_intermediates(model, noise, steps=4, dist_shift=shift)
    assert torch.allclose(shifted["t"].flatten(), shift.time_shift(torch.linspace(1, 0, 5), 8)[:-1])
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    assert sample_flow_dpmpp_w_intermediates(model, noise, sigmas)["t"].flatten().tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="steps or sigmas"):
        sample_flow_dpmpp_w_intermediates(model, noise)

    x = torch.zeros(2, 1, 3)
    assert torch.allclose(euler_step(x, torch.ones_like(x), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.0])),
                          torch.tensor([-0.5, -1.0])[:, None, None].expand(2, 1, 3))


def test_rank_and_logger_helpers(monkeypatch, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from stable_audio_tools.training import utils as training_utils

    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert training_utils.get_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert training_utils.get_rank() == 3
    assert training_utils.logger_project_name(CSVLogger(tmp_path, name="my_run")) == "my_run"
    assert training_utils.logger_project_name(None) is None


def test_demo_callback_factory_is_exported_from_the_factory():
    import stable_audio_tools.training as training
    from stable_audio_tools.training import demo_callbacks, factory

    assert training.create_demo_callback_from_config is demo_callbacks.create_demo_callback_from_config
    assert factory.create_demo_callback_from_config is demo_callbacks.create_demo_callback_from_config


# ------------------------------------------------------------------------------------------------ data


def test_dataset_module_exposes_upstream_names(tmp_path):
    from stable_audio_tools.data import dataset, pre_encoded, webdataset

    assert dataset.PreEncodedDataset is pre_encoded.PreEncodedDataset
    assert dataset.WebDatasetDataLoader is webdataset.WebDatasetDataLoader
    assert "get_latent_filenames" in dir(dataset)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dataset.nope

    (tmp_path / "sub").mkdir()
    for name in ("drum_loop.wav", "sub/Drum_hit.flac", "bass.wav", "sub/drum.txt"):
        sf.write(tmp_path / name, np.zeros(16), 8000) if name.endswith((".wav", ".flac")) else \
            (tmp_path / name).write_text("x")
    with pytest.warns(DeprecationWarning, match="fast_scandir"):
        folders, files = dataset.keyword_scandir(str(tmp_path), ["wav", ".flac"], ["drum"])
    assert folders == [str(tmp_path / "sub")]
    assert sorted(files) == sorted([str(tmp_path / "drum_loop.wav"), str(tmp_path / "sub" / "Drum_hit.flac")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert dataset.keyword_scandir(str(tmp_path), ["wav"], [])[1] == []


def test_is_silence_audio():
    from stable_audio_tools.data.dataset import is_silence_audio

    loud = torch.ones(2, 100)
    assert not is_silence_audio(loud)
    half_quiet = loud.clone()
    half_quiet[1, :50] = 0
    assert is_silence_audio(half_quiet) and not is_silence_audio(half_quiet, max_silence_ratio=0.6)
    with pytest.raises(ValueError, match="channels, samples"):
        is_silence_audio(torch.ones(100))


# ------------------------------------------------------------------------------------------------ interface


def test_point_cloud_outputs():
    from stable_audio_tools.interface import aeiou

    torch.manual_seed(0)
    tokens = torch.randn(3, 5, 4)
    points = aeiou.point_cloud(tokens, output_type="points")
    assert np.array_equal(points, aeiou.pca_point_cloud(tokens))
    assert points.shape == (12, 6)
    by_time = aeiou.point_cloud(tokens, color_scheme="time", output_type="points", rgb_float=True)
    assert np.array_equal(by_time[:4, 3:], by_time[4:8, 3:]) and by_time[:, 3:].max() <= 1.0
    grouped = aeiou.point_cloud(tokens, color_scheme=3, output_type="points")
    assert len({tuple(row) for row in grouped[:, 3:]}) == 3
    assert aeiou.proj_pca(tokens, proj_dims=2).shape == (3, 4, 2)
    assert type(aeiou.point_cloud(tokens)).__name__ == "Object3D"
    with pytest.raises(ValueError, match="output_type"):
        aeiou.point_cloud(tokens, output_type="svg")
    with pytest.raises(ValueError, match="method"):
        aeiou.point_cloud(tokens, method="tsne", output_type="points")

    table = aeiou.embeddings_table(tokens)
    assert table.columns == [f"dim_{i}" for i in range(5)] + ["LABEL"]
    assert len(table.data) == 12 and table.data[4][-1] == "demo1"
