"""Unusable items in the training datasets: reasons, replacement with a record, per-epoch counts (also with workers)."""
import io
import json
import logging
import os
import random
import re

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from stable_audio_tools.data.dataset import SampleDataset, create_dataloader_from_config, load_custom_metadata_fn
from stable_audio_tools.data.pre_encoded import PreEncodedDataset
from stable_audio_tools.data.skips import SKIPPED_KEY, SkipReportingDataLoader, UnusableItem, pop_skips
from stable_audio_tools.models.config import ConfigError

from conftest import deny_reading

SR = 8000
SKIP_LOGGER = "stable_audio_tools.data.skips"


def tone(n=1200, freq=300.0):
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


@pytest.fixture
def mixed(tmp_path):
    """Four good files, a NaN file, a 0.05 s file (too short for min_length_sec 0.1), a text file named .wav,
    an infinite-valued file and an unreadable one (made unreadable by ``deny_reading``)."""
    root = tmp_path / "mixed"
    root.mkdir()
    good = []
    for i in range(4):
        sf.write(root / f"good{i}.wav", tone(freq=200 + 100 * i), SR)
        good.append(str(root / f"good{i}.wav"))
    nan = tone()
    nan[5] = np.nan
    sf.write(root / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(root / "inf.wav", np.full(900, np.inf, np.float32), SR, subtype="FLOAT")
    sf.write(root / "short.wav", tone(400), SR)
    (root / "text.wav").write_text("hello")
    sf.write(root / "locked.wav", tone(), SR)
    return root, good


EXPECTED = {"nan.wav": "non-finite", "inf.wav": "non-finite", "short.wav": "too short", "text.wav": "undecodable",
            "locked.wav": "permission denied"}


def test_load_exact_gives_the_reason_never_another_file(mixed, monkeypatch):
    root, good = mixed
    deny_reading(monkeypatch, root / "locked.wav")
    ds = SampleDataset(str(root), sample_size=1000, sample_rate=SR, min_length_sec=0.1)
    for idx, path in enumerate(ds.filenames):
        name = os.path.basename(path)
        if path in good:
            audio, info = ds.load_exact(idx, random.Random(0))
            assert info["path"] == path and SKIPPED_KEY not in info
            continue
        with pytest.raises(UnusableItem) as caught:
            ds.load_exact(idx, random.Random(0))
        assert caught.value.reason == EXPECTED[name] and caught.value.path == path, (name, caught.value)
    assert "Permission denied" in ds.bad_files[str(root / "locked.wav")]
    assert "NaN or infinite" in ds.bad_files[str(root / "nan.wav")]  # NaN is not reported as silence


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading (see the monkeypatched test)")
def test_real_unreadable_file(mixed):
    root, _ = mixed
    (root / "locked.wav").chmod(0)
    try:
        ds = SampleDataset(str(root), sample_size=1000, sample_rate=SR)
        with pytest.raises(UnusableItem, match="permission denied"):
            ds.load_exact(ds.filenames.index(str(root / "locked.wav")), random.Random(0))
    finally:
        (root / "locked.wav").chmod(0o644)


def test_getitem_replaces_and_records_the_skip(mixed, monkeypatch):
    root, good = mixed
    deny_reading(monkeypatch, root / "locked.wav")
    ds = SampleDataset(str(root), sample_size=1000, sample_rate=SR, min_length_sec=0.1)
    audio, info = ds.get_item(ds.filenames.index(str(root / "nan.wav")), random.Random(1))
    assert info["path"] in good
    records = pop_skips([audio[None], (info,)])
    assert records and records[0].path == str(root / "nan.wav") and records[0].reason == "non-finite"
    assert SKIPPED_KEY not in info


def epoch_messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == SKIP_LOGGER and "unusable files" in r.getMessage()]


def config(root, **extra):
    return {"dataset_type": "audio_dir", "datasets": [{"path": str(root)}], "drop_last": False, **extra}


def test_audio_dir_loader_logs_counts_per_epoch(mixed, monkeypatch, caplog):
    root, good = mixed
    deny_reading(monkeypatch, root / "locked.wav")
    dl = create_dataloader_from_config(config(root, min_length_sec=0.1), batch_size=3, sample_size=1000,
                                       sample_rate=SR, audio_channels=1, num_workers=0, shuffle=False)
    assert isinstance(dl, SkipReportingDataLoader)
    with caplog.at_level(logging.INFO):
        for epoch in range(2):
            infos = [info for _, batch_infos in dl for info in batch_infos]
            assert len(infos) == 9 and {info["path"] for info in infos} <= set(good)  # every index yields an item
            assert all(SKIPPED_KEY not in info for info in infos)  # the loader took the records out
            assert dl.skips.counts() == {"non-finite": 2, "too short": 1, "undecodable": 1, "permission denied": 1}
    messages = epoch_messages(caplog)
    assert [m.split(":")[0] for m in messages] == ["epoch 1", "epoch 2"]
    for message in messages:  # the same files are skipped (and counted) every epoch
        assert re.search(r"skipped 5 unusable files \(2 non-finite, 1 permission denied, 1 too short, 1 undecodable\); "
                         r"\d+ items were replaced by random other items, 9 items delivered", message), message
        assert str(root / "locked.wav") + " (permission denied)" in message
    # one warning per file naming it, in the first epoch only (the file is not loaded again)
    per_file = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping audio file")]
    assert len(per_file) == 5


def test_counts_travel_from_dataloader_workers_under_lightning(mixed, caplog):
    root, good = mixed
    (root / "locked.wav").unlink()  # workers do not see monkeypatches; the other defects are in the files
    dl = create_dataloader_from_config(config(root, min_length_sec=0.1), batch_size=2, sample_size=1000,
                                       sample_rate=SR, audio_channels=1, num_workers=2, shuffle=True)

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1000, 1)
            self.seen = []

        def training_step(self, batch, batch_idx):
            audio, infos = batch
            assert all(SKIPPED_KEY not in info for info in infos)  # the records never reach the model
            self.seen += [info["path"] for info in infos]
            return self.layer(audio[:, 0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = Tiny()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with caplog.at_level(logging.INFO):
        trainer.fit(model, dl)
    assert len(model.seen) == 16 and set(model.seen) <= set(good)
    messages = epoch_messages(caplog)
    assert [m.split(":")[0] for m in messages] == ["epoch 1", "epoch 2"]
    for message in messages:  # both workers' skips, each file once
        assert "skipped 4 unusable files (2 non-finite, 1 too short, 1 undecodable)" in message, message
        for name in ("nan.wav", "inf.wav", "short.wav", "text.wav"):
            assert str(root / name) in message


def write_latents(root, name, latents, info=None):
    (root / "0").mkdir(parents=True, exist_ok=True)
    np.save(root / "0" / f"{name}.npy", latents)
    if info is not None:
        (root / "0" / f"{name}.json").write_text(json.dumps(info))


def test_pre_encoded_dataset_reasons_and_epoch_counts(tmp_path, caplog):
    root = tmp_path / "latents"
    good = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    write_latents(root, "0000000000000", good, {"seconds_total": 5, "padding_mask": [1] * 16})
    write_latents(root, "0000000000001", good, {"seconds_total": 6, "padding_mask": [1] * 16})
    bad = good.copy()
    bad[0, 3] = np.inf
    write_latents(root, "0000000000002", bad, {"seconds_total": 5})
    write_latents(root, "0000000000003", good)  # no JSON
    write_latents(root, "0000000000004", good[0], {"seconds_total": 5})  # 1-D
    write_latents(root, "0000000000005", good, {"seconds_total": 1})  # below min_length_sec
    dataset = PreEncodedDataset([str(root)], min_length_sec=2)
    reasons = {}
    for idx in range(len(dataset)):
        try:
            dataset.load_exact(idx, random.Random(0))
        except UnusableItem as skip:
            reasons[os.path.basename(skip.path)] = skip.reason
    assert reasons == {"0000000000002.npy": "non-finite", "0000000000003.npy": "bad metadata",
                       "0000000000004.npy": "bad latents", "0000000000005.npy": "too short"}

    dl = create_dataloader_from_config({"dataset_type": "pre_encoded", "datasets": [{"path": str(root)}],
                                        "min_length_sec": 2, "drop_last": False}, batch_size=2, sample_size=1,
                                       sample_rate=SR, num_workers=0, shuffle=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert sum(len(infos) for _, infos in dl) == 6
    messages = epoch_messages(caplog)
    assert len(messages) == 2 and all("skipped 4 unusable files" in m and "1 non-finite" in m
                                      and "1 bad metadata" in m for m in messages)


def test_webdataset_skips_are_counted_per_epoch(tmp_path, caplog):
    wds = pytest.importorskip("webdataset")
    shards = tmp_path / "shards"
    shards.mkdir()

    def wav(data, subtype="PCM_16"):
        buf = io.BytesIO()
        sf.write(buf, data, SR, format="WAV", subtype=subtype)
        return buf.getvalue()

    nan = tone()
    nan[7] = np.nan
    samples = [("good0", wav(tone())), ("nan", wav(nan, "FLOAT")), ("garbage", b"RIFF-not-really"),
               ("silent", wav(np.zeros(1200, np.float32))), ("empty", wav(np.zeros(0, np.float32))),
               ("good1", wav(tone(freq=500)))]
    with wds.TarWriter(str(shards / "s-000.tar")) as sink:
        for key, audio in samples:
            sink.write({"__key__": key, "wav": audio, "json": {"text": key}})
    dl = create_dataloader_from_config({"dataset_type": "wds", "datasets": [{"path": str(shards)}],
                                        "resampled_shards": False}, batch_size=1, sample_size=1000, sample_rate=SR,
                                       audio_channels=1, num_workers=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            prompts = [info["prompt"] for _, infos in dl for info in infos]
            assert prompts == ["good0", "good1"]
            assert dl.skips.counts() == {"non-finite": 1, "undecodable": 1, "silent": 1, "too short": 1}
    messages = epoch_messages(caplog)
    assert len(messages) == 2 and all("left out of the stream" in m and "s-000.tar#nan (non-finite)" in m
                                      for m in messages)


def test_min_length_sec_is_validated(mixed):
    root, _ = mixed
    for bad in (-1, 0, float("nan"), "1"):
        with pytest.raises(ConfigError, match="min_length_sec"):
            create_dataloader_from_config(config(root, min_length_sec=bad), batch_size=1, sample_size=10,
                                          sample_rate=SR)


def test_custom_metadata_module_logs_the_file_it_executes(tmp_path, caplog):
    module = tmp_path / "md.py"
    module.write_text("def get_custom_metadata(info, audio):\n    return {'prompt': 'x'}\n")
    with caplog.at_level(logging.INFO, logger="stable_audio_tools.data.dataset"):
        load_custom_metadata_fn(str(module))
    assert any("Executing custom metadata module" in r.getMessage() and str(module) in r.getMessage()
               for r in caplog.records)
