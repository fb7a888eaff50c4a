"""The audio_dir dataset decodes only the crop window of long integer-PCM WAV / FLAC files at the dataset's rate:
the items (chunk, offsets, timing metadata, random draws) equal those of decoding the whole file and cropping it;
float WAVs, files at another rate and files no longer than a chunk are still decoded whole."""
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_tools import audio as audio_mod
from stable_audio_tools.data.dataset import SampleDataset

SR = 8000


def _write(path, seconds, subtype, sr=SR):
    rng = np.random.default_rng(len(str(path)))
    sf.write(path, (0.5 * rng.standard_normal((int(seconds * sr), 2))).clip(-1, 1).astype(np.float32), sr,
             subtype=subtype)


def _items(dataset, seed, n=6):
    rng = random.Random(seed)
    return [dataset.get_item(i % len(dataset), rng) for i in range(n)]


@pytest.mark.parametrize("name,subtype", [("a.flac", "PCM_16"), ("b.wav", "PCM_24"), ("c.wav", "PCM_16")])
def test_window_reads_equal_whole_file_crops(tmp_path, monkeypatch, name, subtype):
    _write(tmp_path / name, 3.0, subtype)
    dataset = SampleDataset([str(tmp_path)], sample_size=2000, sample_rate=SR)
    reads = []
    original = audio_mod.soundfile.read
    monkeypatch.setattr(audio_mod.soundfile, "read", lambda *a, **k: reads.append(k.get("frames", -1)) or
                        original(*a, **k))
    windowed = _items(dataset, seed=3)
    assert reads and all(f == 2000 for f in reads)  # only the window was decoded
    reads.clear()

    monkeypatch.setattr("stable_audio_tools.data.dataset.exact_pcm_frames", lambda path: None)
    whole = _items(SampleDataset([str(tmp_path)], sample_size=2000, sample_rate=SR), seed=3)  # headers not cached
    assert reads and all(f == -1 for f in reads)  # the whole file was decoded
    for (a, info_a), (b, info_b) in zip(windowed, whole):
        assert torch.equal(a, b)
        for key in ("timestamps", "seconds_start", "seconds_total"):
            assert info_a[key] == info_b[key]
        assert torch.equal(info_a["padding_mask"], info_b["padding_mask"])


@pytest.mark.parametrize("seconds,subtype,sr", [(3.0, "FLOAT", SR), (3.0, "PCM_16", 16000), (0.2, "PCM_16", SR)])
def test_other_files_are_decoded_whole(tmp_path, seconds, subtype, sr):
    _write(tmp_path / "x.wav", seconds, subtype, sr)
    dataset = SampleDataset([str(tmp_path)], sample_size=2000, sample_rate=SR)
    header = audio_mod.exact_pcm_frames(tmp_path / "x.wav")
    uses_window = header is not None and header[1] == SR and header[0] > 2000
    assert not uses_window
    chunk, info = dataset.get_item(0, random.Random(0))
    assert chunk.shape == (2, 2000) and torch.isfinite(chunk).all()


def test_min_length_is_checked_from_the_header(tmp_path):
    _write(tmp_path / "short.flac", 0.5, "PCM_16")
    _write(tmp_path / "long.flac", 3.0, "PCM_16")
    dataset = SampleDataset([str(tmp_path)], sample_size=2000, sample_rate=SR, min_length_sec=1.0)
    short = next(i for i, f in enumerate(dataset.filenames) if f.endswith("short.flac"))
    chunk, info = dataset.get_item(short, random.Random(1))
    assert info["path"].endswith("long.flac")
    assert any(path.endswith("short.flac") for path in dataset.unusable)


def test_headers_are_read_once_per_file(tmp_path, monkeypatch):
    _write(tmp_path / "a.mp3.wav", 3.0, "FLOAT")  # not window-readable: the header is still read only once
    _write(tmp_path / "b.flac", 3.0, "PCM_16")
    dataset = SampleDataset([str(tmp_path)], sample_size=2000, sample_rate=SR)
    calls = []
    monkeypatch.setattr("stable_audio_tools.data.dataset.exact_pcm_frames",
                        lambda path: calls.append(path) or audio_mod.exact_pcm_frames(path))
    _items(dataset, seed=0, n=8)
    assert sorted(calls) == sorted(dataset.filenames)
