"""Tests for demo plotting helpers (interface/aeiou.py), logger-agnostic media logging and the autoencoder demo."""
import copy
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from stable_audio_tools.interface.aeiou import (
    audio_spectrogram_image,
    mel_filterbank,
    mel_spectrogram,
    pca_point_cloud,
    tokens_spectrogram_image,
)
from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.training.demo_callbacks import (
    AutoencoderDemoCallback,
    DemoCallbackBase,
    create_demo_callback_from_config,
    demo_autoencoder,
)
from stable_audio_tools.training.logging_utils import (
    log_audio,
    log_image,
    log_metric,
    log_point_cloud,
    media_dir,
    save_wav,
)

SR = 8000


def _chirp(seconds=1.0, sr=SR, f0=50.0, f1=3500.0):
    t = torch.arange(int(seconds * sr)) / sr
    phase = 2 * math.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t ** 2)
    return torch.sin(phase)


# ---------------------------------------------------------------- aeiou

def test_audio_spectrogram_image_of_chirp():
    chirp = _chirp()
    stereo = torch.stack([chirp, 0.5 * chirp]) * 0.5 * 32767
    image = audio_spectrogram_image(stereo, sample_rate=SR)
    assert image.size == (500, 400) and image.mode == "RGBA"
    pixels = np.asarray(image.convert("RGB")).astype(np.float64)
    assert pixels.std() > 20
    # the plot area (centre of the figure) must vary: the chirp sweeps across mel bins over time
    centre = pixels[120:300, 100:350]
    assert centre.std() > 10 and len(np.unique(centre.reshape(-1, 3), axis=0)) > 20

    just = audio_spectrogram_image(stereo, sample_rate=SR, justimage=True)
    assert just.size == (384, 384) and just.mode == "RGBA"
    # very short audio is padded instead of failing
    assert audio_spectrogram_image(torch.zeros(1, 100), sample_rate=SR).size == (500, 400)


def test_mel_spectrogram_peaks_at_tone_bin_and_slaney_area():
    sr = 44100
    t = torch.arange(sr) / sr
    mel = mel_spectrogram(torch.sin(2 * math.pi * 1000.0 * t)[None], sample_rate=sr)
    assert mel.shape == (1, 128, sr // 512 + 1)
    # HTK: mel(1000 Hz) = 1000; centres are evenly spaced in mel from 0 to mel(sr / 2) over 130 points
    mel_max = 2595 * math.log10(1 + (sr / 2) / 700)
    expected_bin = round(1000 / (mel_max / 129)) - 1
    assert abs(int(mel[0].mean(-1).argmax()) - expected_bin) <= 1

    fb = mel_filterbank(513, sr, n_mels=128)
    assert fb.shape == (513, 128) and float(fb.min()) >= 0
    # Slaney normalisation gives every triangle unit area in Hz (checked on a fine frequency grid)
    fine = mel_filterbank(8193, sr, n_mels=128)
    areas = fine.sum(0) * (sr / 16384)
    assert torch.allclose(areas, torch.ones(128), atol=0.03)


def test_tokens_spectrogram_image():
    tokens = torch.randn(3, 16, 40)
    image = tokens_spectrogram_image(tokens, mark_batches=True)
    assert image.size == (800, 400) and image.mode == "RGBA"
    assert np.asarray(image.convert("RGB"))[100:300, 100:700].std() > 10
    flat = tokens_spectrogram_image(torch.zeros(1, 4, 8), symmetric=False)
    assert flat.size == (800, 400)
    with pytest.raises(ValueError):
        tokens_spectrogram_image(torch.zeros(4, 8))


def test_pca_point_cloud_shape_colours_and_geometry():
    torch.manual_seed(0)
    basis = torch.randn(8, 3)
    coords = torch.randn(2, 3, 50)
    tokens = torch.einsum("dk,bkn->bdn", basis, coords)  # rank-3 data in 8-D
    points = pca_point_cloud(tokens)
    assert points.shape == (100, 6)
    first, second = points[:50, 3:], points[50:, 3:]
    assert (first == first[0]).all() and (second == second[0]).all()
    assert not np.array_equal(first[0], second[0])
    assert points[:, 3:].min() >= 0 and points[:, 3:].max() <= 255
    # projecting rank-3 data onto its 3 principal axes preserves all pairwise distances
    flat = tokens.permute(0, 2, 1).reshape(100, 8).double().numpy()
    d_orig = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    d_proj = np.linalg.norm(points[:, None, :3] - points[None, :, :3], axis=-1)
    np.testing.assert_allclose(d_proj, d_orig, atol=1e-3)

    low = pca_point_cloud(torch.randn(3, 2, 5), rgb_float=True)
    assert low.shape == (15, 6) and (low[:, 2] == 0).all() and low[:, 3:].max() <= 1.0


# ---------------------------------------------------------------- logging utils

def test_save_wav_round_trip_and_atomic(tmp_path):
    audio = torch.tensor([[0.0, 0.5, -0.5, 1.5], [0.25, -1.0, 0.999, -2.0]])
    path = save_wav(tmp_path / "sub" / "a.wav", audio, 16000)
    data, sr = sf.read(path, dtype="int16", always_2d=True)
    assert sr == 16000 and data.shape == (4, 2)
    expected = audio.clamp(-1, 1).mul(32767).to(torch.int16).numpy().T
    np.testing.assert_array_equal(data, expected)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav"]  # no temp file left behind
    ints = torch.tensor([[1, -2, 32767, -32768]], dtype=torch.int16)
    save_wav(path, ints, 8000)  # overwrite atomically
    data, _ = sf.read(path, dtype="int16", always_2d=True)
    np.testing.assert_array_equal(data[:, 0], ints[0].numpy())


def _media(points=20):
    audio = 0.3 * _chirp(0.25)[None].repeat(2, 1)
    image = tokens_spectrogram_image(torch.randn(1, 4, 10))
    cloud = pca_point_cloud(torch.randn(2, 5, points // 2))
    return audio, image, cloud


def test_csv_logger_writes_media_files(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, name="run")
    audio, image, cloud = _media()
    wav = save_wav(tmp_path / "outside.wav", audio, SR)
    log_metric(logger, "train/loss", torch.tensor(0.5), step=7)
    log_audio(logger, "recon", wav, SR, step=7)
    log_audio(logger, "demo/cfg", audio, SR, step=7)
    log_image(logger, "spec", image, step=7)
    log_point_cloud(logger, "pca", cloud, step=7)
    logger.save()
    media = Path(logger.log_dir) / "media"
    names = sorted(p.name for p in media.iterdir())
    assert names == ["demo_cfg_00000007.wav", "pca_00000007.csv", "recon_00000007.wav", "spec_00000007.png"]
    data, sr = sf.read(media / "demo_cfg_00000007.wav", always_2d=True)
    assert sr == SR and data.shape == (audio.shape[1], 2)
    assert np.loadtxt(media / "pca_00000007.csv", delimiter=",", skiprows=1).shape == cloud.shape
    assert "train/loss" in (Path(logger.log_dir) / "metrics.csv").read_text()

    class _Trainer:
        pass

    trainer = _Trainer()
    trainer.logger, trainer.default_root_dir = logger, str(tmp_path / "root")
    assert media_dir(trainer) == media
    trainer.logger = None
    assert media_dir(trainer) == tmp_path / "root" / "media" and (tmp_path / "root" / "media").is_dir()


def test_none_logger_is_a_no_op():
    audio, image, cloud = _media()
    log_audio(None, "a", audio, SR)
    log_image(None, "i", image)
    log_point_cloud(None, "p", cloud)
    log_metric(None, "m", 1.0)


def test_tensorboard_logger_records_media(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=tmp_path, name="tb")
    audio, image, cloud = _media()
    log_audio(logger, "recon", save_wav(tmp_path / "r.wav", audio, SR), SR, step=3)
    log_audio(logger, "mono", audio[:1], SR, step=3)
    log_image(logger, "spec", image, step=3)
    log_point_cloud(logger, "pca", cloud, step=3)
    log_metric(logger, "loss", 0.25, step=3)
    logger.experiment.flush()
    acc = EventAccumulator(logger.log_dir, size_guidance={"audio": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["audio"]) == {"recon/channel_0", "recon/channel_1", "mono"}
    assert tags["images"] == ["spec"]
    assert "loss" in tags["scalars"]
    assert any(tag.startswith("pca") for tag in tags["tensors"])
    assert acc.Images("spec")[0].width == image.size[0]


def test_wandb_offline_logger_records_media(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="demo-test", save_dir=str(tmp_path), offline=True)
    try:
        audio, image, cloud = _media()
        log_audio(logger, "recon", save_wav(tmp_path / "r.wav", audio, SR), SR, caption="c", step=1)
        log_audio(logger, "tensor_audio", audio, SR, step=1)
        log_image(logger, "spec", image, step=1)
        log_point_cloud(logger, "pca", cloud, step=1)
        log_metric(logger, "loss", 1.0, step=1)
        run_id = logger.experiment.id

        class _Trainer:
            default_root_dir = str(tmp_path)

        trainer = _Trainer()
        trainer.logger = logger
        assert media_dir(trainer) == tmp_path / "demo-test" / run_id / "media"
    finally:
        wandb.finish()
    run_dirs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(run_dirs) == 1
    media = run_dirs[0] / "files" / "media"
    assert len(list((media / "audio").glob("*.wav"))) == 2
    assert list((media / "images").glob("*.png"))
    assert list((media / "object3D").glob("*.pts.json"))


# ---------------------------------------------------------------- demo callback

class TinyAutoencoder(nn.Module):
    def __init__(self, channels=2, fail_decode=False):
        super().__init__()
        self.enc = nn.Conv1d(channels, 2, 4, stride=4)
        self.dec = nn.ConvTranspose1d(2, channels, 4, stride=4)
        self.fail_decode = fail_decode
        self.modes_seen = []

    def encode(self, x):
        self.modes_seen.append(self.training)
        return self.enc(x)

    def decode(self, z):
        if self.fail_decode:
            raise RuntimeError("decode exploded")
        return self.dec(z)


class TinyModule(pl.LightningModule):
    def __init__(self, fail_decode=False):
        super().__init__()
        self.autoencoder = TinyAutoencoder(fail_decode=fail_decode)
        self.use_ema = False

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.autoencoder.dec(self.autoencoder.enc(x)) - x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class DemoSet(Dataset):
    def __init__(self, n=3, length=256):
        gen = torch.Generator().manual_seed(1)
        self.audio = torch.rand(n, 2, length, generator=gen) - 0.5

    def __len__(self):
        return len(self.audio)

    def __getitem__(self, i):
        return self.audio[i], {"path": f"item{i}.wav"}


def _collate(items):
    return torch.stack([a for a, _ in items]), tuple(m for _, m in items)


def _fit(tmp_path, module, demo_dl, demo_every=2, max_demos=2):
    logger = CSVLogger(save_dir=tmp_path, name="demo")
    callback = AutoencoderDemoCallback(demo_dl, demo_every=demo_every, sample_size=256, sample_rate=SR,
                                       max_demos=max_demos)
    train_dl = DataLoader(TensorDataset(torch.randn(8, 2, 256)), batch_size=2)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dl)
    return trainer, Path(logger.log_dir) / "media"


def test_autoencoder_demo_callback_writes_recons(tmp_path):
    module = TinyModule()
    demo_set = DemoSet(n=3)
    # a single-batch loader: the second demo must re-create the exhausted iterator
    demo_dl = DataLoader(demo_set, batch_size=3, collate_fn=_collate)
    trainer, media = _fit(tmp_path, module, demo_dl)
    assert trainer.global_step == 3
    assert module.training and module.autoencoder.training  # train mode restored
    assert module.autoencoder.modes_seen == [False, False]  # demos ran in eval mode, at steps 1 and 3
    for step in (1, 3):
        wav = media / f"recon_{step:08}.wav"
        assert wav.is_file()
        for stem in ("embeddings_3dpca", "embeddings_spec", "recon_melspec_left"):
            assert list(media.glob(f"{stem}_{step:08}.*")), stem
    assert not (media / "recon_00000002.wav").exists()

    data, sr = sf.read(media / "recon_00000001.wav", dtype="int16", always_2d=True)
    assert sr == SR and data.shape == (2 * 2 * 256, 2)  # max_demos=2 items, real + fake each
    reals = demo_set.audio[:2].clamp(-1, 1).mul(32767).to(torch.int16).numpy()
    np.testing.assert_array_equal(data[:256].T, reals[0])  # item 0 real first ...
    np.testing.assert_array_equal(data[512:768].T, reals[1])  # ... then its fake, then item 1 real
    assert not np.array_equal(data[256:512].T, reals[0])


def test_demo_exception_is_logged_not_raised(tmp_path, caplog):
    module = TinyModule(fail_decode=True)
    demo_dl = DataLoader(DemoSet(n=2), batch_size=2, collate_fn=_collate)
    with caplog.at_level(logging.ERROR, logger="stable_audio_tools.training.demo_callbacks"):
        trainer, media = _fit(tmp_path, module, demo_dl)
    assert trainer.global_step == 3
    failures = [r for r in caplog.records if r.name == "stable_audio_tools.training.demo_callbacks"]
    assert len(failures) == 2 and all(r.exc_info and "decode exploded" in str(r.exc_info[1]) for r in failures)
    assert not list(media.glob("recon_*.wav"))
    assert module.training and module.autoencoder.training


def test_trigger_logic_and_model_choice():
    class _Demo(DemoCallbackBase):
        def run_demo(self, trainer, module):
            raise AssertionError("not called here")

    cb = _Demo(demo_every=3)
    assert [s for s in range(10) if cb.should_demo(s)] == [1, 4, 7]
    cb.last_demo_step = 4
    assert not cb.should_demo(4) and cb.should_demo(7)
    with pytest.raises(ValueError):
        _Demo(demo_every=0)
    with pytest.raises(ValueError, match="without a demo dataloader"):
        cb.next_demo_batch()

    module = TinyModule()
    assert demo_autoencoder(module) is module.autoencoder
    module.use_ema = True
    assert demo_autoencoder(module) is module.autoencoder  # no EMA object -> online model
    module.autoencoder_ema = nn.Module()
    module.autoencoder_ema.ema_model = TinyAutoencoder()
    assert demo_autoencoder(module) is module.autoencoder_ema.ema_model


def test_demo_iterator_does_not_rewind_persistent_training_loader():
    loader = DataLoader(TensorDataset(torch.arange(6.0)), batch_size=1, num_workers=1, persistent_workers=True)
    training_iter = iter(loader)
    assert float(next(training_iter)[0]) == 0.0
    cb = AutoencoderDemoCallback(loader, demo_every=1)
    assert float(cb.next_demo_batch()[0]) == 0.0
    assert float(next(training_iter)[0]) == 1.0


def test_create_demo_callback_from_config():
    config = {"model_type": "autoencoder", "sample_size": 4096, "sample_rate": 16000,
              "training": {"demo": {"demo_every": 50}}}
    snapshot = copy.deepcopy(config)
    cb = create_demo_callback_from_config(config, demo_dl=[1])
    assert isinstance(cb, AutoencoderDemoCallback)
    assert (cb.demo_every, cb.demo_samples, cb.sample_rate, cb.max_demos) == (50, 4096, 16000, 8)
    assert config == snapshot
    default = create_demo_callback_from_config({"model_type": "autoencoder", "sample_size": 8, "sample_rate": 8},
                                               demo_dl=[1], max_demos=2)
    assert default.demo_every == 2000 and default.max_demos == 2
    with pytest.raises(ConfigError, match="model_type.*'autoencoder'"):
        create_demo_callback_from_config({"model_type": "no_such_type", "sample_size": 8, "sample_rate": 8},
                                         demo_dl=[1])
    with pytest.raises(ConfigError, match="sample_rate"):
        create_demo_callback_from_config({"model_type": "autoencoder", "sample_size": 8}, demo_dl=[1])
    with pytest.raises(ConfigError, match="demo_every"):
        create_demo_callback_from_config({**config, "training": {"demo": {"demo_every": 0}}}, demo_dl=[1])
    with pytest.raises(ValueError, match="demo_dl"):
        create_demo_callback_from_config(config)
