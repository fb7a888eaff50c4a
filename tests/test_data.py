"""Tests for the local audio data pipeline (stable_audio_tools.data)."""
import copy
import logging
import math
import os
import pickle
import random

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from stable_audio_tools.data import dataset as ds_mod
from stable_audio_tools.data.dataset import (SampleDataset, collation_fn, create_dataloader_from_config,
                                             get_audio_filenames)
from stable_audio_tools.data.utils import (Mono, PadCrop, PadCrop_Normalized_T, PhaseFlipper, Stereo, VolumeNorm,
                                           integrated_loudness, k_weighting_coefficients, load_audio, prepare_audio,
                                           remove_long_silence, resample, set_audio_channels)
from stable_audio_tools.models.config import ConfigError, ConfigWarning

SR = 16000
EXAMPLE_MD = os.path.join(os.path.dirname(ds_mod.__file__), "..", "configs", "dataset_configs", "custom_metadata",
                          "custom_md_example.py")


def sine(seconds, sr=SR, freq=440.0, channels=1, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def write(path, data, sr=SR, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, data, sr, **kw)
    return str(path)


@pytest.fixture
def audio_tree(tmp_path):
    root = tmp_path / "audio"
    files = {
        "a.wav": write(str(root / "a.wav"), sine(1.0, channels=1)),
        "b.flac": write(str(root / "sub" / "b.flac"), sine(2.0, sr=22050, channels=2), sr=22050),
        "c.ogg": write(str(root / "sub" / "deep" / "c.ogg"), sine(1.5, channels=2)),
        "d.mp3": write(str(root / "d.mp3"), sine(1.2, sr=24000, channels=1), sr=24000),
        "E.WAV": write(str(root / "sub" / "E.WAV"), sine(0.5, channels=2)),
    }
    write(str(root / ".hidden.wav"), sine(0.5))
    (root / "notes.txt").write_text("not audio")
    return root, files


def make_config(*paths, **extra):
    cfg = {"dataset_type": "audio_dir", "datasets": [{"id": f"d{i}", "path": str(p)} for i, p in enumerate(paths)]}
    cfg.update(extra)
    return cfg


# ---------------------------------------------------------------------------------------------- I/O, discovery


def test_discovery_recursive_case_insensitive_skips_hidden(audio_tree):
    root, files = audio_tree
    found = get_audio_filenames(str(root))
    assert sorted(found) == sorted(files.values())
    assert not any(os.path.basename(f).startswith(".") for f in found)
    assert sorted(get_audio_filenames(str(root), keywords=["B", "c."])) == sorted([files["b.flac"], files["c.ogg"]])


def test_discovery_logs_count(audio_tree, caplog):
    root, files = audio_tree
    with caplog.at_level(logging.INFO, logger="stable_audio_tools.data.dataset"):
        SampleDataset([str(root)], sample_size=1000, sample_rate=SR)
    assert f"Found {len(files)} files" in caplog.text


@pytest.mark.parametrize("name,channels,sr,kw", [
    ("x.wav", 1, 16000, {}), ("x.flac", 2, 22050, {}), ("x.ogg", 2, 16000, {}), ("x.mp3", 1, 24000, {}),
    ("x.aif", 2, 16000, {"format": "AIFF"}), ("x.opus", 1, 48000, {"format": "OGG", "subtype": "OPUS"}),
])
def test_load_audio_formats(tmp_path, name, channels, sr, kw):
    path = write(str(tmp_path / name), sine(0.5, sr=sr, channels=channels), sr=sr, **kw)
    audio, got_sr = load_audio(path)
    assert got_sr == sr and audio.dtype == torch.float32 and audio.shape[0] == channels
    assert abs(audio.shape[1] - int(0.5 * sr)) <= 0.02 * sr  # lossy codecs may add/remove padding
    assert 0.3 < audio.abs().max() < 0.7


def test_resample_length_and_frequency():
    sr_in, sr_out = 22050, 48000
    x = torch.from_numpy(sine(1.0, sr=sr_in, freq=1000.0)).T
    y = resample(x, sr_in, sr_out)
    assert y.shape == (1, math.ceil(x.shape[1] * sr_out / sr_in))
    spectrum = torch.fft.rfft(y[0, 4800:-4800]).abs()
    peak_hz = spectrum.argmax().item() * sr_out / (y.shape[1] - 9600)
    assert abs(peak_hz - 1000.0) < 5.0
    assert resample(x, sr_in, sr_in) is x


# ---------------------------------------------------------------------------------------------- transforms


def test_pad_crop_normalized_short_audio_pads_and_masks():
    src = torch.ones(2, 1500)
    chunk, t0, t1, s0, stot, mask = PadCrop_Normalized_T(4000, 1000, randomize=True)(src)
    assert chunk.shape == (2, 4000) and chunk[:, :1500].eq(1).all() and chunk[:, 1500:].eq(0).all()
    assert mask.shape == (4000,) and mask[:1500].eq(1).all() and mask[1500:].eq(0).all()
    assert (t0, t1, s0, stot) == (0.0, 1.0, 0, 2)


def test_pad_crop_normalized_random_offset_is_consistent():
    src = torch.arange(10000, dtype=torch.float32).unsqueeze(0)
    crop = PadCrop_Normalized_T(3000, 1000, randomize=True)
    offsets = set()
    for seed in range(30):
        chunk, t0, t1, s0, stot, mask = crop(src, random.Random(seed))
        offset = int(chunk[0, 0].item())
        offsets.add(offset)
        assert torch.equal(chunk[0], src[0, offset:offset + 3000])
        assert t0 == pytest.approx(offset / 10000) and t1 == pytest.approx((offset + 3000) / 10000)
        assert s0 == offset // 1000 and stot == 10 and mask.eq(1).all()
        assert 0 <= offset <= 7000
    assert len(offsets) > 20
    chunk, t0, *_ = PadCrop_Normalized_T(3000, 1000, randomize=False)(src)
    assert t0 == 0 and chunk[0, 0] == 0


def test_pad_crop_any_leading_dims():
    x = torch.randn(3, 2, 100)
    assert torch.equal(PadCrop(60, randomize=False)(x), x[..., :60])
    out = PadCrop(150, randomize=True)(x)
    assert torch.equal(out[..., :100], x) and out[..., 100:].eq(0).all()


def test_channel_transforms():
    mono, stereo, five = torch.randn(1, 10), torch.randn(2, 10), torch.randn(5, 10)
    assert torch.equal(Stereo()(mono), mono.repeat(2, 1)) and torch.equal(Stereo()(five), five[:2])
    assert Stereo()(torch.randn(10)).shape == (2, 10)
    assert torch.allclose(Mono()(stereo), stereo.mean(0, keepdim=True))
    assert set_audio_channels(five.unsqueeze(0), 1).shape == (1, 1, 10)
    assert set_audio_channels(mono.unsqueeze(0), 2).shape == (1, 2, 10)
    with pytest.raises(ValueError, match="only 1 .*and 2"):
        set_audio_channels(stereo.unsqueeze(0), 4)
    flipped = [PhaseFlipper(0.5)(stereo, random.Random(s)) for s in range(20)]
    assert any(torch.equal(f, -stereo) for f in flipped) and any(torch.equal(f, stereo) for f in flipped)


def test_prepare_audio():
    x = torch.randn(8000)
    out = prepare_audio(x, in_sr=8000, target_sr=16000, target_length=20000, target_channels=2, device="cpu")
    assert out.shape == (1, 2, 20000) and out[..., 16000:].eq(0).all() and out[..., :16000].abs().sum() > 0
    out = prepare_audio(torch.randn(2, 500), 16000, 16000, 300, 1, "cpu")
    assert out.shape == (1, 1, 300)


def test_remove_long_silence():
    x = torch.zeros(1, 10 * SR)
    x[0, 2 * SR:3 * SR] = 0.5  # 2 s silence, 1 s tone, 7 s silence
    x[0, 3 * SR + 100:3 * SR + 200] = 0.5  # then a 100-sample gap (shorter than the limit: kept) and tone
    out = remove_long_silence(x, SR, (0.01, 0.5), 0.25, rng=random.Random(0))
    assert out.shape == (1, SR // 2 + SR + 200 + SR // 2)  # both long silences collapse to 0.5 s
    assert out[0, SR // 2:SR // 2 + SR].eq(0.5).all() and out[0, SR // 2 + SR:SR // 2 + SR + 100].eq(0).all()
    assert torch.equal(remove_long_silence(torch.full((1, 50), 0.5), SR), torch.full((1, 50), 0.5))


# ---------------------------------------------------------------------------------------------- loudness


def test_k_weighting_matches_bs1770_table_and_sine_loudness():
    sos = k_weighting_coefficients(48000)
    np.testing.assert_allclose(sos[0], [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0,
                                        -1.69065929318241, 0.73248077421585], atol=1e-10)
    np.testing.assert_allclose(sos[1, 4:], [-1.99004745483398, 0.99007225036621], atol=1e-10)
    full_scale = torch.from_numpy(sine(2.0, sr=48000, freq=997.0, amp=1.0)).T
    assert integrated_loudness(full_scale, 48000) == pytest.approx(-3.01, abs=0.05)  # BS.1770 reference
    assert integrated_loudness(torch.zeros(2, 48000), 48000) == float("-inf")


@pytest.mark.parametrize("target", [-16.0, -23.0, -30.0])
def test_volume_norm_reaches_target_lufs(target):
    x = torch.from_numpy(sine(3.0, sr=44100, freq=440.0, channels=2, amp=0.05)).T
    out = VolumeNorm((target, 0), sample_rate=44100)(x)
    assert integrated_loudness(out, 44100) == pytest.approx(target, abs=0.5)
    ranged = VolumeNorm((target, 2), sample_rate=44100)(x, random.Random(1))
    assert target - 2.5 < integrated_loudness(ranged, 44100) < target + 2.5


def test_volume_norm_declips_and_skips_silence():
    x = torch.from_numpy(sine(1.0, sr=44100, freq=440.0, amp=0.5)).T
    loud = VolumeNorm((0, 0), sample_rate=44100)(x)
    assert loud.abs().max().item() == pytest.approx(0.95, abs=1e-4)
    quiet = torch.full((1, 44100), 1e-4)
    assert VolumeNorm(sample_rate=44100)(quiet) is quiet


# ---------------------------------------------------------------------------------------------- dataset items


def test_items_metadata_and_resampling(audio_tree):
    root, files = audio_tree
    ds = SampleDataset([str(root)], sample_size=20000, sample_rate=SR, random_crop=False)
    by_path = {ds.filenames[i]: i for i in range(len(ds))}
    audio, info = ds[by_path[files["b.flac"]]]  # 2 s stereo @ 22.05 kHz -> 32000 samples @ 16 kHz
    assert audio.shape == (2, 20000) and audio.dtype == torch.float32
    assert info["path"] == files["b.flac"] and info["relpath"] == os.path.join("sub", "b.flac")
    assert info["seconds_start"] == 0 and info["seconds_total"] == 2 and info["sample_rate"] == SR
    assert info["timestamps"] == pytest.approx((0.0, 20000 / 32000))
    assert info["padding_mask"].eq(1).all() and info["load_time"] >= 0
    audio, info = ds[by_path[files["a.wav"]]]  # 1 s mono -> duplicated to stereo, padded
    assert audio.shape == (2, 20000) and torch.equal(audio[0], audio[1])
    assert info["padding_mask"][:SR].eq(1).all() and info["padding_mask"][SR:].eq(0).all()
    assert audio[:, SR:].eq(0).all() and info["seconds_total"] == 1 and info["timestamps"] == (0.0, 1.0)


def test_random_crop_seconds_start(tmp_path):
    path = write(str(tmp_path / "long" / "x.wav"), sine(6.0, freq=3.0, amp=0.9))
    ds = SampleDataset(str(tmp_path / "long"), sample_size=SR, sample_rate=SR, random_crop=True, force_channels=None)
    starts = set()
    for seed in range(20):
        audio, info = ds.get_item(0, random.Random(seed))
        offset = round(info["timestamps"][0] * 6 * SR)
        ref, _ = load_audio(path)
        assert torch.allclose(audio.abs(), ref[:, offset:offset + SR].abs())
        assert info["seconds_start"] == offset // SR and info["seconds_total"] == 6
        starts.add(info["seconds_start"])
    assert len(starts) >= 3


def test_force_mono(audio_tree):
    root, files = audio_tree
    ds = SampleDataset(str(root), sample_size=4000, sample_rate=SR, force_channels="mono")
    for i in range(len(ds)):
        assert ds[i][0].shape == (1, 4000)


def test_reproducible_crops(tmp_path):
    write(str(tmp_path / "r" / "x.wav"), sine(5.0, freq=2.0, amp=0.9))
    ds = SampleDataset(str(tmp_path / "r"), sample_size=SR, sample_rate=SR)
    torch.manual_seed(7)
    first = [ds[0] for _ in range(5)]
    torch.manual_seed(7)
    second = [ds[0] for _ in range(5)]
    for (a, ia), (b, ib) in zip(first, second):
        assert torch.equal(a, b) and ia["timestamps"] == ib["timestamps"]
    assert len({info["timestamps"] for _, info in first}) > 1


# ---------------------------------------------------------------------------------------------- custom metadata


def test_custom_metadata_example_module_prompt(audio_tree):
    root, files = audio_tree
    cfg = make_config(root)
    cfg["datasets"][0]["custom_metadata_module"] = EXAMPLE_MD
    dl = create_dataloader_from_config(cfg, batch_size=5, sample_size=1000, sample_rate=SR, num_workers=0,
                                       shuffle=False)
    _, infos = next(iter(dl))
    assert sorted(i["prompt"] for i in infos) == sorted(os.path.relpath(f, root) for f in files.values())


def test_custom_metadata_reject_and_extra_audio(tmp_path):
    root = tmp_path / "src"
    keep = write(str(root / "keep.wav"), sine(1.0))
    write(str(root / "reject_me.wav"), sine(1.0))
    module = tmp_path / "md.py"
    module.write_text(
        "import torch\n"
        "def get_custom_metadata(info, audio):\n"
        "    if 'reject' in info['relpath']:\n"
        "        return {'__reject__': True}\n"
        "    return {'prompt': 'kept', '__audio__': {'ref': torch.full((1, 300), 2.0)}}\n")
    other = tmp_path / "other"
    write(str(other / "o.wav"), sine(1.0))
    cfg = make_config(root, other)
    cfg["datasets"][0]["custom_metadata_module"] = str(module)
    dl = create_dataloader_from_config(cfg, batch_size=1, sample_size=800, sample_rate=SR, num_workers=0,
                                       shuffle=False, audio_channels=2)
    seen = []
    for _ in range(3):
        for _, (info,) in dl:
            seen.append(info["path"])
            if info["path"] == keep:
                assert info["prompt"] == "kept" and "__audio__" not in info
                assert info["ref"].shape == (2, 800) and info["ref"][:, :300].eq(1).all()
                assert info["ref"][:, 300:].eq(0).all()
            else:
                assert "prompt" not in info and "ref" not in info  # the module only applies to its source
    assert not any("reject_me" in p for p in seen) and keep in seen


# ---------------------------------------------------------------------------------------------- broken files


@pytest.fixture
def tree_with_bad_files(tmp_path):
    root = tmp_path / "mixed"
    good = [write(str(root / f"good{i}.wav"), sine(1.0, freq=300 + 50 * i)) for i in range(3)]
    corrupt = root / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + os.urandom(200))
    empty = root / "empty.flac"
    empty.write_bytes(b"")
    silent = write(str(root / "silent.wav"), np.zeros((SR, 1), np.float32))
    return root, good, [str(corrupt), str(empty), silent]


def test_bad_files_skipped_with_one_warning_each(tree_with_bad_files, caplog):
    root, good, bad = tree_with_bad_files
    ds = SampleDataset(str(root), sample_size=4000, sample_rate=SR)
    with caplog.at_level(logging.WARNING, logger="stable_audio_tools.data.dataset"):
        for _ in range(4):
            for i in range(len(ds)):
                audio, info = ds[i]
                assert info["path"] in good and audio.abs().max() > 0.01
    for path in bad:
        assert sum(path in r.getMessage() for r in caplog.records) == 1, path
    assert len(caplog.records) == 3
    assert ds.skipped_files == 3 and set(ds.bad_files) == set(bad)


def test_all_files_bad_raises_clear_error(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "x.wav").write_bytes(b"garbage")
    (root / "y.mp3").write_bytes(b"")
    ds = SampleDataset(str(root), sample_size=100, sample_rate=SR)
    with pytest.raises(RuntimeError, match="all 2 audio files .* unusable"):
        ds[0]


def test_all_items_rejected_raises_after_bounded_retries(tmp_path):
    write(str(tmp_path / "s" / "x.wav"), sine(0.2))
    ds = SampleDataset(str(tmp_path / "s"), sample_size=100, sample_rate=SR,
                       custom_metadata_fn=lambda info, audio: {"__reject__": True}, max_retries=20)
    with pytest.raises(RuntimeError, match="after 20 retries .*21 rejected"):
        ds[0]


# ---------------------------------------------------------------------------------------------- dataloader


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batches(audio_tree, num_workers):
    root, files = audio_tree
    cfg = make_config(root)
    frozen = copy.deepcopy(cfg)
    dl = create_dataloader_from_config(cfg, batch_size=2, sample_size=3000, sample_rate=SR,
                                       num_workers=num_workers)
    assert cfg == frozen
    assert dl.drop_last and dl.persistent_workers == (num_workers > 0) and dl.pin_memory == torch.cuda.is_available()
    batches = list(dl)
    assert len(batches) == 2  # 5 files, drop_last
    for audio, infos in batches:
        assert audio.shape == (2, 2, 3000) and isinstance(infos, tuple) and len(infos) == 2
        assert all(set(i) >= {"path", "relpath", "timestamps", "seconds_start", "seconds_total", "padding_mask",
                              "sample_rate", "load_time"} for i in infos)
    mono = create_dataloader_from_config({**cfg, "drop_last": False}, batch_size=2, sample_size=3000,
                                         sample_rate=SR, audio_channels=1, num_workers=num_workers)
    shapes = [a.shape for a, _ in mono]
    assert len(shapes) == 3 and shapes[0] == (2, 1, 3000) and shapes[-1] == (1, 1, 3000)


def test_dataloader_warns_when_drop_last_leaves_no_batch(audio_tree):
    root, _ = audio_tree
    with pytest.warns(UserWarning, match="drop_last"):
        dl = create_dataloader_from_config(make_config(root), batch_size=8, sample_size=100, sample_rate=SR,
                                           num_workers=0)
    assert len(dl) == 0


def test_collation_fn_types():
    samples = [(torch.ones(2, 3), 1, 0.5, np.zeros(2), {"a": 1}), (torch.zeros(2, 3), 2, 1.5, np.ones(2), {"a": 2})]
    audio, ints, floats, arrays, infos = collation_fn(samples)
    assert audio.shape == (2, 2, 3) and isinstance(ints, np.ndarray) and ints.tolist() == [1, 2]
    assert floats.tolist() == [0.5, 1.5] and arrays.shape == (2, 2) and infos == ({"a": 1}, {"a": 2})


def test_dataloader_reproducible_with_seed_everything(tmp_path):
    for i in range(4):
        write(str(tmp_path / "s" / f"{i}.wav"), sine(3.0, freq=1.0 + i, amp=0.9))
    cfg = make_config(tmp_path / "s")

    def run(seed):
        pl.seed_everything(seed, workers=True)
        dl = create_dataloader_from_config(cfg, batch_size=2, sample_size=2000, sample_rate=SR, num_workers=2)
        return [(a, [i["path"] for i in infos]) for a, infos in dl]

    first, second, other = run(3), run(3), run(4)
    for (a, pa), (b, pb) in zip(first, second):
        assert torch.equal(a, b) and pa == pb
    assert any(not torch.equal(a, b) for (a, _), (b, _) in zip(first, other))


def test_dataset_pickles_with_custom_module(tmp_path):
    write(str(tmp_path / "p" / "x.wav"), sine(0.5))
    module = tmp_path / "md.py"
    module.write_text("def get_custom_metadata(info, audio):\n    return {'n': len(info['relpath'])}\n")
    cfg = make_config(tmp_path / "p")
    cfg["datasets"][0]["custom_metadata_module"] = str(module)
    dl = create_dataloader_from_config(cfg, batch_size=1, sample_size=100, sample_rate=SR, num_workers=0)
    clone = pickle.loads(pickle.dumps(dl.dataset))
    assert clone[0][1]["n"] == len("x.wav")


# ---------------------------------------------------------------------------------------------- config errors


def _err(cfg, **kw):
    with pytest.raises(ConfigError) as info:
        create_dataloader_from_config(cfg, batch_size=1, sample_size=100, sample_rate=SR, num_workers=0, **kw)
    return str(info.value)


def test_config_errors(audio_tree, tmp_path):
    root, _ = audio_tree
    msg = _err({"datasets": [{"path": str(root)}]})
    assert "'dataset_type'" in msg and "missing" in msg and "'audio_dir'" in msg
    msg = _err({"dataset_type": "wds", "datasets": []})
    assert "'datasets'" in msg and "is empty" in msg
    msg = _err({"dataset_type": "audio_dri", "datasets": []})
    assert "accepted values: 'audio_dir'" in msg and "did you mean 'audio_dir'" in msg
    assert "'datasets'" in _err({"dataset_type": "audio_dir"})
    msg = _err({"dataset_type": "audio_dir", "datasets": [{"id": "x"}]})
    assert "'datasets[0].path'" in msg and "missing" in msg
    msg = _err(make_config(tmp_path / "nope"))
    assert "'datasets[0].path'" in msg and "does not exist" in msg and "nope" in msg
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("x")
    msg = _err(make_config(root, empty_dir))
    assert "'datasets[1].path'" in msg and "no audio files" in msg
    cfg = make_config(root)
    cfg["datasets"][0]["custom_metadata_module"] = str(tmp_path / "missing.py")
    msg = _err(cfg)
    assert "'datasets[0].custom_metadata_module'" in msg and "does not exist" in msg
    bad_module = tmp_path / "nofn.py"
    bad_module.write_text("def something_else(info, audio):\n    return {}\n")
    cfg["datasets"][0]["custom_metadata_module"] = str(bad_module)
    msg = _err(cfg)
    assert "get_custom_metadata" in msg and "'datasets[0].custom_metadata_module'" in msg
    assert "'random_crop'" in _err(make_config(root, random_crop="yes"))


def test_config_unknown_keys_warn(audio_tree):
    root, _ = audio_tree
    cfg = make_config(root, volume_norm=True)
    cfg["datasets"][0]["s3_path"] = "s3://x"
    with pytest.warns(ConfigWarning) as record:
        create_dataloader_from_config(cfg, batch_size=1, sample_size=100, sample_rate=SR, num_workers=0)
    text = " ".join(str(w.message) for w in record)
    assert "'volume_norm'" in text and "'datasets[0].s3_path'" in text


def test_invalid_arguments(audio_tree):
    root, _ = audio_tree
    with pytest.raises(ValueError, match="batch_size"):
        create_dataloader_from_config(make_config(root), batch_size=0, sample_size=100, sample_rate=SR)
    with pytest.raises(ValueError, match="force_channels"):
        SampleDataset(str(root), force_channels="surround")
