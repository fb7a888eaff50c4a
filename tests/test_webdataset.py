"""WebDataset loaders (wds / s3): local shards, a loopback S3 server (moto), pre-encoded shards, clear errors."""
import io
import os
import shutil
import socket

import numpy as np
import pytest
import soundfile as sf
import torch

wds = pytest.importorskip("webdataset")

from stable_audio_tools.data.dataset import create_dataloader_from_config  # noqa: E402
from stable_audio_tools.data.webdataset import AwsCliNotFoundError, S3AccessError  # noqa: E402
from stable_audio_tools.models.config import ConfigError  # noqa: E402

SR = 8000
SIZE = 4000


def flac_bytes(seconds, freq, sr=16000, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="FLAC")
    return buf.getvalue()


def duration(j):
    return 0.1 + 0.08 * j


def write_shards(directory, n_shards=2, per_shard=5, silent=()):
    directory.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(directory / f"shard-{s:03d}.tar")) as sink:
            for j in range(per_shard):
                idx = s * per_shard + j
                sink.write({"__key__": f"sample{idx:04d}", "flac": flac_bytes(duration(j), 200 + 30 * idx,
                                                                                 amp=0.0 if idx in silent else 0.5),
                            "json": {"text": f"tone {idx}", "idx": idx}})
    return directory


def load(cfg, batch_size=2, num_workers=0, channels=2):
    return create_dataloader_from_config(cfg, batch_size=batch_size, sample_size=SIZE, sample_rate=SR,
                                         audio_channels=channels, num_workers=num_workers)


def local_config(path, **extra):
    return {"dataset_type": "wds", "datasets": [{"id": "local", "path": str(path)}], **extra}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("wds") / "shards", silent=(7,))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_local_shards_each_sample_once(shards, num_workers):
    batches = list(load(local_config(shards, resampled_shards=False), num_workers=num_workers))
    seen = []
    for audio, infos in batches:
        assert audio.shape == (2, 2, SIZE) and audio.dtype == torch.float32
        assert torch.equal(audio[:, 0], audio[:, 1])  # mono shards made stereo
        for a, info in zip(audio, infos):
            seen.append(info["idx"])
            assert info["prompt"] == f"tone {info['idx']}"
            assert info["seconds_start"] == 0 and info["seconds_total"] == 1
            real = int(info["padding_mask"].sum())
            assert real == -(-int(16000 * duration(info["idx"] % 5)) // 2)  # resampled 16 kHz -> 8 kHz
            assert a[:, real:].abs().sum() == 0 and a[:, :real].abs().max() > 0.3
            assert info["timestamps"] == (0.0, 1.0) and info["audio"] is not None
    # sample 7 is silent and filtered out; 9 valid samples in batches of 2 (the last one dropped)
    assert len(seen) == 8 and len(set(seen)) == 8 and 7 not in seen


def test_resampled_shards_epoch_steps(shards):
    assert len(list(load(local_config(shards, epoch_steps=3)))) == 3
    loader = load(local_config(shards, epoch_steps=4), num_workers=2)
    assert len(list(loader)) == 4  # 2 batches per worker
    mono = next(iter(load(local_config(shards, epoch_steps=1), channels=1)))[0]
    assert mono.shape == (2, 1, SIZE)


def test_custom_metadata_and_reject(shards, tmp_path):
    module = tmp_path / "md.py"
    module.write_text("def get_custom_metadata(info, audio):\n"
                      "    return {'__reject__': info['idx'] % 2 == 1, 'peak': float(audio.abs().max())}\n")
    cfg = local_config(shards, resampled_shards=False)
    cfg["datasets"][0]["custom_metadata_module"] = str(module)
    infos = [info for _, batch in load(cfg, batch_size=1) for info in batch]
    assert sorted(i["idx"] for i in infos) == [0, 2, 4, 6, 8]
    assert all(0.3 < i["peak"] <= 0.51 for i in infos)


def test_pre_encoded_shards_crop_updates_seconds_start(tmp_path):
    directory = tmp_path / "latents"
    directory.mkdir()
    with wds.TarWriter(str(directory / "latents-000.tar")) as sink:
        for idx in range(4):
            latents = np.tile(np.arange(50, dtype=np.float32), (3, 1))
            sink.write({"__key__": f"item{idx}", "npy": latents,
                        "json": {"padding_mask": [1] * 30 + [0] * 20, "seconds_start": 0, "seconds_total": 3,
                                 "sample_rate": 100, "downsampling_ratio": 10, "text": "x"}})
    cfg = local_config(directory, pre_encoded=True, latent_crop_length=8, resampled_shards=False)
    batches = list(load(cfg))
    assert len(batches) == 2
    for latents, infos in batches:
        assert latents.shape == (2, 3, 8)
        for lat, info in zip(latents, infos):
            start = int(lat[0, 0])
            assert info["latent_crop_start"] == start and start <= 30 - 8
            assert info["seconds_start"] == start // 10  # 0.1 s per frame
            assert isinstance(info["padding_mask"], torch.Tensor) and info["padding_mask"].tolist() == [1] * 8
            assert info["prompt"] == "x"


def test_unreadable_shards_raise(tmp_path):
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "broken.tar").write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(RuntimeError, match="no shard of this worker could be read"):
        list(load(local_config(directory, resampled_shards=False)))
    with pytest.raises(RuntimeError, match="32 shard reads in a row failed"):
        next(iter(load(local_config(directory))))


def test_local_config_errors(tmp_path, shards):
    def err(cfg):
        with pytest.raises(ConfigError) as info:
            load(cfg)
        return str(info.value)

    (tmp_path / "empty").mkdir()
    assert "no .tar shards" in err(local_config(tmp_path / "empty"))
    assert "not an existing directory" in err(local_config(tmp_path / "nope"))
    both = {"dataset_type": "s3", "datasets": [{"path": str(shards), "s3_path": "s3://b/x"}]}
    assert "exactly one of" in err(both)
    assert "s3://bucket/prefix" in err({"dataset_type": "s3", "datasets": [{"s3_path": "bucket/x"}]})
    assert "'epoch_steps'" in err(local_config(shards, epoch_steps=0))


# ------------------------------------------------------------------------------------------ loopback S3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory, shards):
    """A moto S3 server on 127.0.0.1 holding the shards in s3://sat-test-bucket/data/ (and a profile 'sat')."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    if shutil.which("aws") is None:
        pytest.skip("the S3 tests stream shards through the AWS CLI: pip install awscli")
    from moto.server import ThreadedMotoServer

    home = tmp_path_factory.mktemp("aws")
    (home / "credentials").write_text("[sat]\naws_access_key_id = profilekey\naws_secret_access_key = secret\n")
    (home / "config").write_text("[profile sat]\nregion = us-east-1\n")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="sat-test-bucket")
        for name in sorted(os.listdir(shards)):
            client.upload_file(str(shards / name), "sat-test-bucket", f"data/sub dir/{name}")
        client.put_object(Bucket="sat-test-bucket", Key="data/readme.txt", Body=b"not a shard")
        yield endpoint
    server.stop()


def s3_config(path="s3://sat-test-bucket/data/", **extra):
    source = {"id": "s3", "s3_path": path}
    source.update(extra.pop("source", {}))
    return {"dataset_type": "s3", "datasets": [source], **extra}


@pytest.mark.slow
def test_s3_shards(s3):
    batches = list(load(s3_config(resampled_shards=False), num_workers=2))
    seen = sorted(info["idx"] for _, infos in batches for info in infos)
    assert len(seen) == 8 and len(set(seen)) == 8 and 7 not in seen
    audio = batches[0][0]
    assert audio.shape == (2, 2, SIZE) and audio.abs().max() > 0.3
    # "wds" with a named profile and resampled shards
    cfg = s3_config(source={"profile": "sat"}, epoch_steps=2)
    cfg["dataset_type"] = "wds"
    assert len(list(load(cfg))) == 2


@pytest.mark.slow
def test_s3_errors(s3, tmp_path, monkeypatch):
    with pytest.raises(S3AccessError) as info:
        load(s3_config("s3://no-such-bucket/data/"))
    msg = str(info.value)
    assert "s3://no-such-bucket/data/" in msg and "NoSuchBucket" in msg and s3 in msg and "AWS_ENDPOINT_URL" in msg
    with pytest.raises(S3AccessError, match="profile 'nobody'"):
        load(s3_config(source={"profile": "nobody"}))
    with pytest.raises(ConfigError, match="no .tar shards found under 's3://sat-test-bucket/empty/'"):
        load(s3_config("s3://sat-test-bucket/empty/"))
    # the CLI disappears after listing: reading shards fails with a message naming the fix
    loader = load(s3_config(resampled_shards=False))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="pip install awscli"):
        list(loader)


def test_missing_aws_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `aws` anywhere
    with pytest.raises(AwsCliNotFoundError, match="pip install awscli"):
        load(s3_config())
