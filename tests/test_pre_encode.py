"""pre_encode.py: output layout, metadata, latents equal model.encode, resume after interruption, limits, DDP."""
import importlib.util
import logging
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_tools.data.dataset import create_dataloader_from_config
from stable_audio_tools.data.utils import load_audio
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training import pre_encode as pe_module
from stable_audio_tools.training.pre_encode import PreEncodeSampler

from conftest import ROOT, deny_reading, needs_cpu_bf16

SR = 8000
SIZE = 2048
RATIO = 8
N_FILES = 7


def ae_config(bottleneck, latent_dim=4, encoder_dim=8):
    return {
        "model_type": "autoencoder", "sample_size": SIZE, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                       "strides": [2, 4], "latent_dim": encoder_dim}},
            "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                       "strides": [2, 4], "latent_dim": latent_dim}},
            "bottleneck": bottleneck, "latent_dim": latent_dim, "downsampling_ratio": RATIO, "io_channels": 1,
        },
    }


VAE = ae_config({"type": "vae"})
FSQ = ae_config({"type": "fsq", "config": {"levels": [5, 5, 5, 5]}}, encoder_dim=4)


def _load_script():
    spec = importlib.util.spec_from_file_location("pre_encode_script", ROOT / "pre_encode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


def file_length(i):
    return 600 + 200 * i


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre_encode")
    audio = root / "audio"
    audio.mkdir()
    for i in range(N_FILES):
        t = np.arange(file_length(i)) / SR
        sf.write(audio / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), SR)
    for name, cfg in (("vae", VAE), ("fsq", FSQ)):
        torch.manual_seed(0)
        model = create_model_from_config(cfg)
        torch.save({"state_dict": model.state_dict()}, root / f"{name}.ckpt")
        (root / f"{name}.json").write_text(json.dumps(cfg))
    (root / "data.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "tones", "path": str(audio)}], "random_crop": False, "drop_last": False}))
    return root


def args(ws, out, *extra, model="vae", data="data.json"):
    return ["--model-config", str(ws / f"{model}.json"), "--ckpt-path", str(ws / f"{model}.ckpt"),
            "--dataset-config", str(ws / data), "--output-path", str(out), "--sample-size", str(SIZE),
            "--num-workers", "0", "--no-progress", *map(str, extra)]


def load_model(ws, model="vae"):
    model_obj = create_model_from_config(VAE if model == "vae" else FSQ)
    model_obj.load_state_dict(torch.load(ws / f"{model}.ckpt")["state_dict"])
    return model_obj.eval()


def item_audio(info):
    audio, sr = load_audio(info["path"])
    assert sr == SR
    return torch.nn.functional.pad(audio, (0, SIZE - audio.shape[-1]))[None]


@torch.no_grad()
def vae_moments(model, audio):
    """(mean, std) of the VAE posterior for the audio and for its phase-flipped copy (the loader flips at random)."""
    out = []
    for sign in (1, -1):
        mean, scale = model.encode(sign * audio, skip_bottleneck=True).chunk(2, dim=1)
        out.append((mean[0], torch.nn.functional.softplus(scale[0]) + 1e-4))
    return out


def items(out):
    found = {}
    for rank_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for npy in sorted(rank_dir.glob("*.npy")):
            found[(rank_dir.name, npy.stem)] = (np.load(npy), json.loads(npy.with_suffix(".json").read_text()))
    return found


def check_vae_mean_items(ws, found):
    model = load_model(ws)
    paths = []
    for (_, name), (latent, info) in found.items():
        assert len(name) == 13 and latent.shape == (4, SIZE // RATIO) and latent.dtype == np.float32
        index = int(os.path.basename(info["path"])[5:-4])
        paths.append(info["path"])
        assert info["relpath"] == f"tone_{index}.wav" and info["seconds_start"] == 0 and info["seconds_total"] == 1
        assert info["sample_rate"] == SR and info["downsampling_ratio"] == RATIO
        assert info["padding_mask"] == [1] * -(-file_length(index) // RATIO) + [0] * (
            SIZE // RATIO - -(-file_length(index) // RATIO))
        errors = [float((torch.from_numpy(latent) - mean).abs().max()) for mean, _ in vae_moments(
            model, item_audio(info))]
        assert min(errors) < 1e-5, errors
    assert sorted(paths) == sorted(str(ws / "audio" / f"tone_{i}.wav") for i in range(N_FILES))  # each once


def test_single_process_layout_metadata_and_latents(ws, tmp_path):
    out = tmp_path / "out"
    stats = SCRIPT.main(args(ws, out, "--batch-size", 3, "--vae-mean"))
    assert stats["encoded"] == N_FILES and stats["skipped"] == 0 and stats["audio_seconds"] == N_FILES * SIZE / SR
    found = items(out)
    assert sorted(found) == [("0", f"000{b:06d}{i:04d}") for b, n in ((0, 3), (1, 3), (2, 1)) for i in range(n)]
    check_vae_mean_items(ws, found)
    details = json.loads((out / "details.json").read_text())
    assert details["model_config"] == str(ws / "vae.json") and details["dataset_config"] == str(ws / "data.json")
    assert details["sample_size"] == SIZE and details["args"]["batch_size"] == 3 and details["args"]["vae_mean"]
    assert details["layout"]["world_size"] == 1 and details["layout"]["num_items"] == N_FILES

    # the output is a pre_encoded dataset; random crops keep seconds_start in step with the offset
    loader = create_dataloader_from_config(
        {"dataset_type": "pre_encoded", "datasets": [{"path": str(out)}], "latent_crop_length": 64,
         "random_crop": True}, batch_size=2, sample_size=1, sample_rate=SR, num_workers=0)
    latents, infos = next(iter(loader))
    assert latents.shape == (2, 4, 64)
    for info in infos:
        assert info["seconds_start"] == info["latent_crop_start"] * RATIO // SR
        n_real = -(-file_length(int(info["relpath"][5:-4])) // RATIO)
        assert info["latent_crop_start"] + 64 <= n_real  # the window stays inside the real frames


def test_sampled_half_precision_latents_and_limit_batches(ws, tmp_path):
    out = tmp_path / "out"
    stats = SCRIPT.main(args(ws, out, "--batch-size", 2, "--model-half", "--limit-batches", 2, "--seed", 3))
    found = items(out)
    assert stats["encoded"] == 4 and len(found) == 4  # --limit-batches really limits
    model = load_model(ws)
    for latent, info in found.values():
        assert latent.dtype == np.float16
        z = [((torch.from_numpy(latent).float() - mean) / std) for mean, std in vae_moments(model, item_audio(info))]
        z = min(z, key=lambda v: float(v.abs().max()))
        assert float(z.abs().max()) < 6 and 0.5 < float(z.std()) < 1.5  # a sample of the posterior, not its mean


@needs_cpu_bf16
def test_bf16_fast_encoder_stores_float32_latents_close_to_exact(ws, tmp_path, monkeypatch):
    from stable_audio_tools.inference import fast_convnet, precision

    built = []
    original = precision.build_fast_convnet
    monkeypatch.setattr(precision, "build_fast_convnet", lambda net, dtype: built.append(original(net, dtype)) or
                        built[-1])
    calls = []
    conv_forward = fast_convnet.ChannelsLastConv1d.forward
    monkeypatch.setattr(fast_convnet.ChannelsLastConv1d, "forward",
                        lambda self, x: calls.append(x.dtype) or conv_forward(self, x))
    stats = SCRIPT.main(args(ws, tmp_path / "out", "--batch-size", 2, "--dtype", "bf16", "--vae-mean",
                             "--limit-batches", 1))
    assert len(built) == 1 and calls and set(calls) == {torch.bfloat16}  # the encoder ran as the bf16 copy
    found = items(tmp_path / "out")
    assert stats["encoded"] == 2 and len(found) == 2
    model = load_model(ws)
    for latent, info in found.values():
        assert latent.dtype == np.float32
        errors = [float((torch.from_numpy(latent) - mean).norm() / mean.norm())
                  for mean, _ in vae_moments(model, item_audio(info))]
        assert 0 < min(errors) < 0.05, errors  # bf16 rounding, not the exact latents and not garbage
    with pytest.raises(ValueError, match="--model-half .* do not combine"):
        SCRIPT.main(args(ws, tmp_path / "bad", "--model-half", "--dtype", "bf16"))


def test_interrupt_and_resume(ws, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert SCRIPT.main(args(ws, out, "--batch-size", 2, "--limit-batches", 1))["encoded"] == 2
    first = {p.name: p.stat().st_mtime_ns for p in (out / "0").iterdir()}
    assert sorted(first) == ["0000000000000.json", "0000000000000.npy", "0000000000001.json", "0000000000001.npy"]

    real_save = np.save
    calls = []

    def crashing_save(f, array):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"\x93NUMPY half written")
            raise RuntimeError("simulated crash")
        real_save(f, array)

    monkeypatch.setattr(pe_module.np, "save", crashing_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        SCRIPT.main(args(ws, out, "--batch-size", 2))
    monkeypatch.setattr(pe_module.np, "save", real_save)
    assert [p.name for p in (out / "0").iterdir() if p.name.endswith(".tmp")]  # the crash left a temporary file
    complete = {p.stem for p in (out / "0").glob("*.json")}
    assert len(complete) == 4  # batch 0 from the first run + batch 1 written before the crash
    (out / "0" / "0000000010001.json").unlink()  # as if the crash had hit between .npy and .json

    stats = SCRIPT.main(args(ws, out, "--batch-size", 2))
    assert stats["encoded"] == N_FILES - 3 and stats["skipped"] == 3  # nothing encoded twice
    names = sorted(p.name for p in (out / "0").iterdir())
    assert not [n for n in names if n.startswith(".")]  # nothing half-written left behind
    assert len(names) == 2 * N_FILES
    assert all((out / "0" / n).stat().st_mtime_ns == t for n, t in first.items())  # earlier files untouched
    found = items(out)
    assert sorted(info["path"] for _, info in found.values()) == sorted(
        str(ws / "audio" / f"tone_{i}.wav") for i in range(N_FILES))
    again = SCRIPT.main(args(ws, out, "--batch-size", 2))
    assert again["encoded"] == 0 and again["skipped"] == N_FILES
    with pytest.raises(ValueError, match="batch_size: 2 before, 3 now"):
        SCRIPT.main(args(ws, out, "--batch-size", 3))


@pytest.mark.slow
def test_two_cpu_processes(ws, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "pre_encode.py"), *args(
        ws, out, "--batch-size", 2, "--vae-mean", "--devices", 2, "--accelerator", "cpu")], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = items(out)
    assert sorted(found) == [("0", "0000000000000"), ("0", "0000000000001"), ("0", "0000000010000"),
                             ("0", "0000000010001"), ("1", "0010000000000"), ("1", "0010000000001"),
                             ("1", "0010000010000")]
    check_vae_mean_items(ws, found)
    assert json.loads((out / "details.json").read_text())["layout"]["world_size"] == 2


def test_discrete_tokens(ws, tmp_path):
    out = tmp_path / "out"
    SCRIPT.main(args(ws, out, "--batch-size", 2, "--is-discrete", "--limit-batches", 1, model="fsq"))
    model = load_model(ws, "fsq")
    found = items(out)
    assert len(found) == 2
    for tokens, info in found.values():
        assert tokens.shape == (1, SIZE // RATIO) and np.issubdtype(tokens.dtype, np.integer)
        assert len(info["padding_mask"]) == SIZE // RATIO and info["downsampling_ratio"] == RATIO
        with torch.no_grad():
            expected = [model.encode(s * item_audio(info), return_info=True)[1]["quantizer_indices"][0].numpy()
                        for s in (1, -1)]
        assert any(np.array_equal(tokens, e) for e in expected)


def test_model_option_errors(ws, tmp_path):
    with pytest.raises(ValueError, match="--vae-mean needs a model with a 'vae' bottleneck"):
        SCRIPT.main(args(ws, tmp_path / "a", "--vae-mean", model="fsq"))
    with pytest.raises(ValueError, match="--is-discrete needs a quantizing bottleneck"):
        SCRIPT.main(args(ws, tmp_path / "b", "--is-discrete"))


def test_webdataset_source_with_limit(ws, tmp_path):
    wds = pytest.importorskip("webdataset")
    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "s-000.tar")) as sink:
        for i in range(6):
            buf = io.BytesIO()
            sf.write(buf, (0.4 * np.sin(np.arange(800 + 100 * i) / SR * 2 * np.pi * 300)).astype(np.float32), SR,
                     format="WAV")
            sink.write({"__key__": f"k{i}", "wav": buf.getvalue(), "json": {"text": f"tone {i}"}})
    (tmp_path / "wds.json").write_text(json.dumps({"dataset_type": "wds", "datasets": [{"path": str(shards)}],
                                                   "resampled_shards": False}))
    out = tmp_path / "out"
    stats = SCRIPT.main(args(ws, out, "--batch-size", 2, "--limit-batches", 2, data=str(tmp_path / "wds.json")))
    found = items(out)
    assert stats["encoded"] == 4 and sorted(n for _, n in found) == ["0000000000000", "0000000000001",
                                                                      "0000000010000", "0000000010001"]
    assert all(info["prompt"].startswith("tone") and "audio" not in info for _, info in found.values())
    assert SCRIPT.main(args(ws, out, "--batch-size", 2, "--limit-batches", 2,
                            data=str(tmp_path / "wds.json")))["skipped"] == 4


def test_sampler_assignment():
    world = [PreEncodeSampler(11, 3, rank, 2, shuffle=True, seed=5) for rank in range(2)]
    flat = [key for sampler in world for batch in sampler for key in batch]
    assert sorted(k[2] for k in flat) == list(range(11))  # every item once, no padding duplicates
    assert [len(b) for b in world[0]] == [3, 3] and [len(b) for b in world[1]] == [3, 2]
    again = PreEncodeSampler(11, 3, 0, 2, shuffle=True, seed=5)
    assert list(again) == list(world[0]) and list(PreEncodeSampler(11, 3, 0, 2, shuffle=True, seed=6)) != list(again)
    assert [k[2] for b in PreEncodeSampler(6, 2, 0, 1) for k in b] == list(range(6))
    done = {(0, 0), (0, 1), (1, 1)}
    partial = PreEncodeSampler(6, 2, 0, 1, limit_batches=2, is_done=lambda b, i: (b, i) in done)
    assert list(partial) == [[(1, 0, 2)]] and partial.assigned == 4 and partial.pending == 1


def latent_dit_config():
    return {
        "model_type": "diffusion_cond", "sample_size": 64 * RATIO, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": VAE["model"]},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 16}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 16}}]},
            "diffusion": {"type": "dit", "diffusion_objective": "v",
                          "cross_attention_cond_ids": ["seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"],
                          "config": {"io_channels": 4, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                     "cond_token_dim": 16, "global_cond_dim": 32,
                                     "transformer_type": "continuous_transformer"}},
            "io_channels": 4,
        },
        "training": {"learning_rate": 1e-3, "pre_encoded": True, "use_ema": True},
    }


def test_train_tiny_latent_dit_on_pre_encoded_output(ws, tmp_path):
    import pytorch_lightning as pl

    from stable_audio_tools.training import create_training_wrapper_from_config

    out = tmp_path / "out"
    SCRIPT.main(args(ws, out, "--batch-size", 4))
    config = latent_dit_config()
    loader = create_dataloader_from_config(
        {"dataset_type": "pre_encoded", "datasets": [{"path": str(out)}], "latent_crop_length": 64,
         "random_crop": True}, batch_size=2, sample_size=config["sample_size"], sample_rate=SR, num_workers=0)
    model = create_model_from_config(config)
    model.pretransform.load_state_dict(torch.load(ws / "vae.ckpt")["state_dict"])

    def no_encoding(*a, **k):
        raise AssertionError("pre-encoded latents must not be encoded again")

    model.pretransform.encode = no_encoding
    wrapper = create_training_wrapper_from_config(config, model)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(wrapper, loader)
    assert trainer.global_step == 3
    assert any(not torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.model.state_dict().values())


# ---------------------------------------------------------------------------------------------- checkpoints


def run_script(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "pre_encode.py"), *map(str, argv)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_checkpoint_that_does_not_fit_is_an_error_listing_keys(ws, tmp_path):
    other = ae_config({"type": "vae"}, latent_dim=4, encoder_dim=8)
    other["model"]["encoder"]["config"]["channels"] = 6  # every encoder conv changes shape
    state = create_model_from_config(other).state_dict()
    state.pop("decoder.layers.0.bias", None)
    missing = next(k for k in create_model_from_config(VAE).state_dict() if k not in state)
    state["extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    cli = args(ws, tmp_path / "out", "--batch-size", 2)
    cli[cli.index("--ckpt-path") + 1] = str(tmp_path / "other.ckpt")
    proc = run_script(*cli, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    assert "--ckpt-path" in err and "other.ckpt does not fit the model config" in err
    assert "model key(s) missing from the checkpoint" in err and missing in err
    assert "checkpoint key(s) unknown to the model: extra.weight" in err
    assert "tensor(s) with another shape" in err and "encoder.layers.0" in err
    assert "copied" not in err and not list((tmp_path / "out").rglob("*.npy"))


def test_prefixed_and_safetensors_checkpoints_load_exactly(ws, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(ws / "vae.ckpt")["state_dict"]
    prefixed = {f"pretransform.model.{k}": v for k, v in state.items()}
    prefixed["model.transformer.weight"] = torch.zeros(2)  # the rest of an unwrapped latent diffusion model
    torch.save({"state_dict": prefixed}, tmp_path / "ldm.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vae.safetensors"))
    for name in ("ldm.ckpt", "vae.safetensors"):
        model = SCRIPT.load_model(VAE, str(tmp_path / name))
        loaded = model.state_dict()
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    broken = dict(prefixed)
    del broken["pretransform.model.decoder.layers.0.bias"]
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match=r"1 model key\(s\) missing from the checkpoint: decoder\.layers\.0\.bias "
                                         r".*under the prefix 'pretransform\.model\.'"):
        SCRIPT.load_model(VAE, str(tmp_path / "broken.ckpt"))


# ---------------------------------------------------------------------------------------------- unusable files


@pytest.fixture
def mixed_dir(tmp_path):
    """Two good files and one of every kind of unusable file."""
    audio = tmp_path / "mixed"
    audio.mkdir()
    t = np.arange(1500) / SR
    for i in range(2):
        sf.write(audio / f"good_{i}.wav", (0.5 * np.sin(2 * np.pi * (200 + 90 * i) * t)).astype(np.float32), SR)
    nan = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    nan[100:110] = np.nan
    sf.write(audio / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(audio / "no_samples.wav", np.zeros(0, np.float32), SR)
    (audio / "zero_bytes.flac").write_bytes(b"")
    (audio / "text.wav").write_text("this is not audio")
    sf.write(audio / "silent.wav", np.zeros(1500, np.float32), SR)
    sf.write(audio / "locked.wav", (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), SR)
    (audio / "notes.txt").write_text("not an audio extension: never scanned")
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [{"path": str(audio)}],
                                "random_crop": False}))
    return audio, data


EXPECTED_REASONS = {"non-finite": ["nan.wav"], "too short": ["no_samples.wav", "zero_bytes.flac"],
                    "undecodable": ["text.wav"], "silent": ["silent.wav"], "permission denied": ["locked.wav"]}


def check_skip_report(out, stats, audio, model):
    reasons = {reason: sorted(files) for reason, files in EXPECTED_REASONS.items()}
    assert stats["encoded"] == 2 and stats["skipped"] == 6
    assert stats["skip_reasons"] == {r: len(f) for r, f in reasons.items()}
    report = json.loads((out / "skipped_0.json").read_text())
    assert report["encoded"] == 2 and report["counts"] == stats["skip_reasons"]
    found = {}
    for entry in report["files"]:
        found.setdefault(entry["reason"], []).append(os.path.basename(entry["path"]))
    assert {r: sorted(f) for r, f in found.items()} == reasons
    permission = next(e for e in report["files"] if e["reason"] == "permission denied")
    assert "Permission denied" in permission["detail"]
    encoded = items(out)
    paths = sorted(info["path"] for _, info in encoded.values())
    assert paths == [str(audio / "good_0.wav"), str(audio / "good_1.wav")]  # each once, nothing in place of a skip
    for latent, info in encoded.values():  # every latent encodes its own file
        errors = [float((torch.from_numpy(latent) - mean).abs().max()) for mean, _ in vae_moments(
            model, item_audio(info))]
        assert min(errors) < 1e-5


def test_unusable_files_are_skipped_with_reasons_never_replaced(ws, mixed_dir, tmp_path, monkeypatch, caplog):
    audio, data = mixed_dir
    deny_reading(monkeypatch, audio / "locked.wav")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        stats = SCRIPT.main(args(ws, out, "--batch-size", 3, "--vae-mean", data=str(data)))
    check_skip_report(out, stats, audio, load_model(ws))
    summary = [r.getMessage() for r in caplog.records if "rank 0: encoded 2 files" in r.getMessage()]
    assert len(summary) == 1 and "skipped 6 (2 too short" in summary[0] and "1 non-finite" in summary[0]
    assert "1 permission denied" in summary[0] and str(out / "skipped_0.json") in summary[0]
    # items keep the ids of their place in the sorted file list (good_0, good_1, locked, ...): skips leave gaps
    assert sorted(p.stem for p in (out / "0").glob("*.npy")) == ["0000000000000", "0000000000001"]

    rerun = SCRIPT.main(args(ws, out, "--batch-size", 3, "--vae-mean", data=str(data)))  # resumes: retries skips
    assert rerun["encoded"] == 0 and rerun["skip_reasons"]["already written"] == 2 and rerun["skipped"] == 8


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod 000 does not stop root from reading (the in-process test "
                           "simulates the permission error instead)")
def test_unreadable_file_through_the_script(ws, mixed_dir, tmp_path):
    audio, data = mixed_dir
    (audio / "locked.wav").chmod(0)
    try:
        proc = run_script(*args(ws, tmp_path / "out", "--batch-size", 3, "--vae-mean", data=str(data)), cwd=tmp_path)
    finally:
        (audio / "locked.wav").chmod(0o644)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "permission denied" in proc.stderr
    report = json.loads((tmp_path / "out" / "skipped_0.json").read_text())
    assert report["counts"]["permission denied"] == 1


def test_nothing_usable_exits_non_zero(ws, tmp_path):
    audio = tmp_path / "bad"
    audio.mkdir()
    (audio / "a.wav").write_text("no audio here")
    sf.write(audio / "b.wav", np.full(800, np.inf, np.float32), SR, subtype="FLOAT")
    (tmp_path / "bad.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [{"path": str(audio)}]}))
    proc = run_script(*args(ws, tmp_path / "out", data=str(tmp_path / "bad.json")), cwd=tmp_path)
    assert proc.returncode == 1
    assert "no file could be encoded: all 2 items were unusable (1 non-finite, 1 undecodable)" in proc.stderr


def test_output_inside_input_is_an_error(ws, tmp_path):
    for out in (ws / "audio" / "latents", ws / "audio"):
        proc = run_script(*args(ws, out), cwd=tmp_path)
        assert proc.returncode == 1
        assert f"--output-path '{out}' is inside the input directory '{ws / 'audio'}'" in proc.stderr
        assert "datasets[0].path" in proc.stderr and "Seed set" not in proc.stderr  # refused before any work
    assert not (ws / "audio" / "latents").exists() and not (ws / "audio" / "details.json").exists()


def test_webdataset_unusable_samples_are_reported(ws, tmp_path):
    wds = pytest.importorskip("webdataset")
    shards = tmp_path / "shards"
    shards.mkdir()
    nan = (0.4 * np.sin(np.arange(900) / SR * 2 * np.pi * 300)).astype(np.float32)
    nan[3] = np.nan
    with wds.TarWriter(str(shards / "s-000.tar")) as sink:
        for key, audio in (("a", np.full(900, 0.3, np.float32)), ("b", np.full(900, 0.2, np.float32)), ("nan", nan)):
            buf = io.BytesIO()
            sf.write(buf, audio, SR, format="WAV", subtype="FLOAT")
            sink.write({"__key__": key, "wav": buf.getvalue(), "json": {"text": key}})
    (tmp_path / "wds.json").write_text(json.dumps({"dataset_type": "wds", "datasets": [{"path": str(shards)}],
                                                   "resampled_shards": False}))
    out = tmp_path / "out"
    stats = SCRIPT.main(args(ws, out, "--batch-size", 1, data=str(tmp_path / "wds.json")))
    assert stats["encoded"] == 2 and stats["skip_reasons"] == {"non-finite": 1}
    assert sorted(info["prompt"] for _, info in items(out).values()) == ["a", "b"]
    report = json.loads((out / "skipped_0.json").read_text())
    assert [(e["path"].endswith("s-000.tar#nan"), e["reason"]) for e in report["files"]] == [(True, "non-finite")]


def test_webdataset_without_usable_samples_exits_non_zero(ws, tmp_path):
    wds = pytest.importorskip("webdataset")
    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "s-000.tar")) as sink:
        sink.write({"__key__": "x", "wav": b"not audio", "json": {"text": "x"}})
    (tmp_path / "wds.json").write_text(json.dumps({"dataset_type": "wds", "datasets": [{"path": str(shards)}],
                                                   "resampled_shards": False}))
    proc = run_script(*args(ws, tmp_path / "out", data=str(tmp_path / "wds.json")), cwd=tmp_path)
    assert proc.returncode == 1 and "the WebDataset stream gave no usable sample" in proc.stderr
    assert "Skipping WebDataset sample" in proc.stderr and "s-000.tar#x" in proc.stderr
