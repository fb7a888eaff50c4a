"""The pre_encoded dataset type: discovery, latent crops that keep seconds_start honest, filters, metadata."""
import json
import math
import random
import warnings

import numpy as np
import pytest
import torch

from stable_audio_tools.data.dataset import SUPPORTED_DATASET_TYPES, create_dataloader_from_config
from stable_audio_tools.data.pre_encoded import (PreEncodedDataset, crop_pre_encoded, get_latent_filenames,
                                                 latent_frame_seconds)
from stable_audio_tools.models.config import ConfigError, ConfigWarning

SR = 8000
RATIO = 8
L = 40


def write_item(root, rank, name, n_real, seconds_start=0, seconds_total=3, extra=None, length=L, channels=3):
    """Latents whose value at frame t is t (so the crop offset can be read back from the data)."""
    directory = root / str(rank)
    directory.mkdir(parents=True, exist_ok=True)
    latents = np.tile(np.arange(length, dtype=np.float32), (channels, 1))
    np.save(directory / f"{name}.npy", latents)
    info = {"path": f"/audio/{name}.wav", "relpath": f"{name}.wav", "seconds_start": seconds_start,
            "seconds_total": seconds_total, "padding_mask": [1] * n_real + [0] * (length - n_real)}
    info.update(extra if extra is not None else {"sample_rate": SR, "downsampling_ratio": RATIO})
    (directory / f"{name}.json").write_text(json.dumps(info))
    return directory / f"{name}.npy"


def config(root, **extra):
    return {"dataset_type": "pre_encoded", "datasets": [{"id": "latents", "path": str(root)}], **extra}


def test_registered_and_discovery(tmp_path):
    assert "pre_encoded" in SUPPORTED_DATASET_TYPES
    a = write_item(tmp_path, 0, "0000000000000", 30)
    b = write_item(tmp_path, 1, "0010000000000", 30)
    (tmp_path / "details.json").write_text("{}")
    (tmp_path / "0" / ".0000000000001.npy.123.tmp").write_bytes(b"half written")
    assert get_latent_filenames(str(tmp_path)) == [str(a), str(b)]
    (tmp_path / "filelist.txt").write_text("1/0010000000000.npy\n\n")
    assert get_latent_filenames(str(tmp_path)) == [str(b)]


def test_items_without_crop(tmp_path):
    write_item(tmp_path, 0, "0000000000000", 25, seconds_start=2)
    latents, info = PreEncodedDataset([str(tmp_path)])[0]
    assert latents.shape == (3, L) and torch.equal(latents[0], torch.arange(L, dtype=torch.float32))
    assert isinstance(info["padding_mask"], list) and len(info["padding_mask"]) == 1
    assert info["padding_mask"][0].tolist() == [1] * 25 + [0] * (L - 25)
    assert info["seconds_start"] == 2 and "latent_crop_start" not in info
    assert info["latent_filename"].endswith("0000000000000.npy") and info["audio"] is latents


class _Last(random.Random):
    """An rng whose randint always picks the upper bound."""

    def randint(self, a, b):
        return b


def test_random_crop_keeps_seconds_start_consistent_with_offset(tmp_path):
    # 10 audio samples per frame at 100 Hz: one frame is 0.1 s
    write_item(tmp_path, 0, "0000000000000", 36, seconds_start=1, seconds_total=9,
               extra={"sample_rate": 100, "downsampling_ratio": 10})
    dataset = PreEncodedDataset([str(tmp_path)], latent_crop_length=10, random_crop=True)
    seconds = set()
    for seed in range(40):
        latents, info = dataset.get_item(0, random.Random(seed))
        start = int(latents[0, 0])
        assert latents.shape == (3, 10) and torch.equal(latents[0], torch.arange(start, start + 10).float())
        assert info["latent_crop_start"] == start and info["latent_crop_length"] == 10
        assert 0 <= start <= 36 - 10  # the window stays inside the real frames
        assert info["seconds_start"] == math.floor(1 + start * 0.1 + 1e-9)  # 1 s + start frames of 0.1 s
        assert info["seconds_total"] == 9
        assert info["padding_mask"][0].tolist() == [1] * 10
        seconds.add(info["seconds_start"])
    assert seconds == {1, 2, 3}
    latents, info = dataset.get_item(0, _Last())
    assert int(latents[0, -1]) == 35 and info["seconds_start"] == 3  # the last real frame can be included


def test_crop_seconds_start_crosses_whole_seconds(tmp_path):
    # 1000 frames of 8 samples at 8 kHz: frame 1000 starts at 1 s, frame 2500 at 2.5 s
    info = {"seconds_start": 3, "sample_rate": SR, "downsampling_ratio": RATIO, "padding_mask": [1] * 3000}
    latents = torch.arange(3000.0).repeat(2, 1)
    rng = random.Random(0)
    for _ in range(20):
        md = dict(info)
        cropped, unknown = crop_pre_encoded(latents, md, 100, True, rng, latent_frame_seconds(md))
        start = int(cropped[0, 0])
        assert not unknown and md["seconds_start"] == 3 + (start * RATIO) // SR


def test_not_random_crop_short_items_are_padded(tmp_path):
    write_item(tmp_path, 0, "0000000000000", 6, length=8, seconds_start=4)
    latents, info = PreEncodedDataset([str(tmp_path)], latent_crop_length=12, random_crop=True)[0]
    assert latents.shape == (3, 12) and latents[0, :8].tolist() == list(range(8)) and latents[:, 8:].abs().sum() == 0
    assert info["padding_mask"][0].tolist() == [1] * 6 + [0] * 6
    assert info["latent_crop_start"] == 0 and info["seconds_start"] == 4


def test_frame_rate_from_details_json_for_older_data(tmp_path):
    write_item(tmp_path, 0, "0000000000000", 40, seconds_start=0, extra={"sample_rate": 100})
    (tmp_path / "details.json").write_text(json.dumps({"sample_size": 400}))  # 400 samples -> 40 frames: ratio 10
    dataset = PreEncodedDataset([str(tmp_path)], latent_crop_length=5, random_crop=True)
    for seed in range(20):
        latents, info = dataset.get_item(0, random.Random(seed))
        assert info["seconds_start"] == (int(latents[0, 0]) * 10) // 100


def test_unknown_frame_rate_warns_and_keeps_seconds_start(tmp_path):
    write_item(tmp_path, 0, "0000000000000", 40, seconds_start=7, extra={})
    dataset = PreEncodedDataset([str(tmp_path)], latent_crop_length=5, random_crop=True)
    with pytest.warns(UserWarning, match="seconds_start cannot be updated"):
        seen = [dataset.get_item(0, random.Random(seed)) for seed in range(10)]
    assert any(info["latent_crop_start"] > 0 for _, info in seen)
    assert all(info["seconds_start"] == 7 for _, info in seen)


def test_length_filters_and_broken_files(tmp_path, caplog):
    write_item(tmp_path, 0, "0000000000000", 40, seconds_total=2)
    write_item(tmp_path, 0, "0000000000001", 40, seconds_total=20)
    broken = write_item(tmp_path, 0, "0000000000002", 40, seconds_total=5)
    broken.with_suffix(".json").unlink()
    dataset = PreEncodedDataset([str(tmp_path)], min_length_sec=3, max_length_sec=10)
    with pytest.raises(RuntimeError, match="min_length_sec=3"):
        dataset.get_item(0, random.Random(0))
    assert str(broken) in dataset.bad_files and "metadata" in dataset.bad_files[str(broken)]
    dataset = PreEncodedDataset([str(tmp_path)], min_length_sec=10)
    for seed in range(5):
        assert dataset.get_item(0, random.Random(seed))[1]["seconds_total"] == 20


def test_custom_metadata_reject_replace(tmp_path):
    write_item(tmp_path, 0, "0000000000000", 40)
    write_item(tmp_path, 0, "0000000000001", 40)
    module = tmp_path / "md.py"
    module.write_text(
        "import torch\n"
        "def get_custom_metadata(info, audio):\n"
        "    assert audio is None\n"
        "    if info['latent_filename'].endswith('0000000000000.npy'):\n"
        "        return {'__reject__': True}\n"
        "    return {'prompt': info['relpath'], '__replace__': torch.zeros(2, 5)}\n")
    cfg = config(tmp_path)
    cfg["datasets"][0]["custom_metadata_module"] = str(module)
    loader = create_dataloader_from_config(cfg, batch_size=2, sample_size=1, sample_rate=SR, num_workers=0,
                                           shuffle=False)
    latents, infos = next(iter(loader))
    assert latents.shape == (2, 2, 5) and latents.abs().sum() == 0
    assert [i["prompt"] for i in infos] == ["0000000000001.wav"] * 2
    assert all("__replace__" not in i for i in infos)


def test_dataloader_from_config(tmp_path):
    for n in range(5):
        write_item(tmp_path, n % 2, f"{n % 2:03d}{n:06d}0000", 30 + n, seconds_start=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = create_dataloader_from_config(config(tmp_path, latent_crop_length=16, random_crop=True,
                                                      drop_last=False), batch_size=2, sample_size=1,
                                               sample_rate=SR, num_workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(2, 3, 16), (2, 3, 16), (1, 3, 16)]
    for latents, infos in batches:
        for lat, info in zip(latents, infos):
            assert info["latent_crop_start"] == int(lat[0, 0])
            assert info["seconds_start"] == (info["latent_crop_start"] * RATIO) // SR
            assert info["padding_mask"][0].shape == (16,)


def test_config_errors_and_warnings(tmp_path):
    def err(cfg):
        with pytest.raises(ConfigError) as info:
            create_dataloader_from_config(cfg, batch_size=1, sample_size=1, sample_rate=SR, num_workers=0)
        return str(info.value)

    msg = err(config(tmp_path / "missing"))
    assert "'datasets[0].path'" in msg and "not an existing directory" in msg
    (tmp_path / "empty").mkdir()
    assert "no .npy latent files" in err(config(tmp_path / "empty"))
    write_item(tmp_path / "ok", 0, "0000000000000", 40)
    assert "'latent_crop_length'" in err(config(tmp_path / "ok", latent_crop_length=0))
    cfg = config(tmp_path / "ok")
    cfg["datasets"][0]["latent_crop_length"] = 10
    with pytest.warns(ConfigWarning, match="top-level 'latent_crop_length'"):
        loader = create_dataloader_from_config(cfg, batch_size=1, sample_size=1, sample_rate=SR, num_workers=0)
    assert next(iter(loader))[0].shape == (1, 3, L)  # the entry-level key is ignored, as upstream
