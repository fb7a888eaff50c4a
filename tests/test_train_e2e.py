"""End-to-end: train.py on test-written audio, checkpoint, resume, unwrap, strict reload, 2-process DDP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.pretrained import get_pretrained_model
from stable_audio_tools.models.utils import load_ckpt_state_dict

from conftest import ROOT

pytestmark = pytest.mark.slow

TINY_AE = {
    "model_type": "autoencoder", "sample_size": 2048, "sample_rate": 8000, "audio_channels": 1,
    "model": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                   "strides": [2, 4], "latent_dim": 8, "use_snake": True}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                   "strides": [2, 4], "latent_dim": 4, "use_snake": True,
                                                   "final_tanh": False}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 1,
    },
    "training": {
        "learning_rate": 1e-3, "use_ema": True,
        "loss_configs": {
            "discriminator": {"type": "encodec", "config": {"filters": 4, "n_ffts": [256, 128],
                                                            "hop_lengths": [64, 32], "win_lengths": [256, 128]},
                              "weights": {"adversarial": 0.1, "feature_matching": 5.0}},
            "spectral": {"type": "mrstft", "config": {"fft_sizes": [256, 64], "hop_sizes": [64, 16],
                                                      "win_lengths": [256, 64], "perceptual_weighting": True},
                         "weights": {"mrstft": 1.0}},
            "time": {"type": "l1", "weights": {"l1": 0.1}},
            "bottleneck": {"type": "kl", "weights": {"kl": 1e-4}},
        },
        "demo": {"demo_every": 1000},
    },
}


def pretransformed_autoencoder_config():
    """A small autoencoder (no discriminator) whose pretransform is the tiny autoencoder."""
    outer = json.loads(json.dumps(TINY_AE))
    outer["sample_size"] = 2048
    outer["model"] = {
        "pretransform": {"type": "autoencoder", "config": TINY_AE["model"]},
        "encoder": {"type": "oobleck", "config": {"in_channels": 4, "channels": 4, "c_mults": [1], "strides": [2],
                                                   "latent_dim": 4}},
        "decoder": {"type": "oobleck", "config": {"out_channels": 4, "channels": 4, "c_mults": [1], "strides": [2],
                                                   "latent_dim": 4, "final_tanh": False}},
        "latent_dim": 4, "downsampling_ratio": 2, "io_channels": 1,
    }
    del outer["training"]["loss_configs"]["discriminator"]
    outer["training"]["loss_configs"].pop("bottleneck")
    return outer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "audio"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        t = np.arange(4000) / 8000
        sf.write(data / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 8000)
    sf.write(data / "noise.flac", (0.3 * rng.normal(size=(3000, 2))).astype(np.float32), 16000)
    (root / "model.json").write_text(json.dumps(TINY_AE))
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "test", "path": str(data)}], "random_crop": True}))
    return root


def run_script(script, *args, cwd):
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def train_args(ws, save_dir, *extra):
    return ["--model-config", ws / "model.json", "--dataset-config", ws / "dataset.json", "--save-dir", save_dir,
            "--logger", "csv", "--batch-size", 2, "--num-workers", 0, "--checkpoint-every", 2, *extra]


def checkpoints(save_dir):
    return sorted(save_dir.rglob("*.ckpt"), key=lambda p: torch.load(p, weights_only=False)["global_step"])


def test_train_resume_unwrap_reload(workspace):
    save = workspace / "run"
    run_script("train.py", *train_args(workspace, save, "--max-steps", 4), cwd=workspace)
    ckpts = checkpoints(save)
    assert len(ckpts) == 2
    ckpt = torch.load(ckpts[-1], weights_only=False)
    assert ckpt["global_step"] == 4
    assert ckpt["model_config"] == TINY_AE
    assert len(ckpt["optimizer_states"]) == 2  # generator + discriminator
    assert int(ckpt["state_dict"]["autoencoder_ema.step"]) == 2  # EMA updated on the 2 generator steps
    assert not list(save.rglob("*.tmp"))

    # resume from step 2 up to step 6
    first = ckpts[0]
    run_script("train.py", *train_args(workspace, save, "--max-steps", 6, "--ckpt-path", first), cwd=workspace)
    resumed = torch.load(checkpoints(save)[-1], weights_only=False)
    assert resumed["global_step"] == 6
    assert int(resumed["state_dict"]["autoencoder_ema.step"]) == 3
    gen_state = resumed["optimizer_states"][0]["state"]
    assert int(next(iter(gen_state.values()))["step"]) == 3  # optimizer state was restored, not restarted

    # unwrap (config taken from the checkpoint) and reload strictly
    out = workspace / "unwrapped"
    run_script("unwrap_model.py", "--ckpt-path", checkpoints(save)[-1], "--name", out, "--use-safetensors",
               cwd=workspace)
    run_script("unwrap_model.py", "--ckpt-path", checkpoints(save)[-1], "--model-config", workspace / "model.json",
               "--name", out, cwd=workspace)
    model = create_model_from_config(TINY_AE)
    sd = load_ckpt_state_dict(f"{out}.safetensors")
    model.load_state_dict(sd, strict=True)
    ema = {k[len("autoencoder_ema.ema_model."):]: v for k, v in resumed["state_dict"].items()
           if k.startswith("autoencoder_ema.ema_model.")}
    assert all(torch.equal(sd[k], ema[k]) for k in sd)
    assert set(load_ckpt_state_dict(f"{out}.ckpt")) == set(sd)

    # a local "pretrained" directory works with get_pretrained_model (strict)
    local = workspace / "pretrained"
    local.mkdir()
    (local / "model_config.json").write_text(json.dumps(TINY_AE))
    os.replace(f"{out}.safetensors", local / "model.safetensors")
    loaded, config = get_pretrained_model(str(local))
    assert config == TINY_AE
    audio = torch.randn(1, 1, 2048) * 0.1
    with torch.no_grad():
        assert loaded.decode(loaded.encode(audio)).shape == (1, 1, 2048)

    # --pretrained-ckpt-path starts a new run from the unwrapped weights
    run_script("train.py", *train_args(workspace, workspace / "finetune", "--max-steps", 2,
                                       "--pretrained-ckpt-path", f"{out}.ckpt"), cwd=workspace)


def test_wrong_checkpoint_kinds_are_explained(workspace, tmp_path):
    model = create_model_from_config(TINY_AE)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.ckpt")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"),
                           *map(str, train_args(workspace, tmp_path / "r", "--ckpt-path", tmp_path / "bare.ckpt"))],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "unwrapped model checkpoint" in proc.stderr and "--pretrained-ckpt-path" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "unwrap_model.py"), "--ckpt-path", str(tmp_path / "bare.ckpt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "already an unwrapped model checkpoint" in proc.stderr


def test_ddp_two_cpu_processes(workspace):
    save = workspace / "ddp"
    run_script("train.py", *train_args(workspace, save, "--max-steps", 2, "--num-gpus", 2, "--accelerator", "cpu"),
               cwd=workspace)
    ckpts = checkpoints(save)
    assert len(ckpts) == 1
    assert torch.load(ckpts[0], weights_only=False)["global_step"] == 2


def test_pretransform_checkpoint_and_weight_norm_removal(workspace, tmp_path):
    inner = create_model_from_config(TINY_AE)
    torch.save({"state_dict": inner.state_dict()}, tmp_path / "inner.ckpt")
    outer = pretransformed_autoencoder_config()
    (tmp_path / "outer.json").write_text(json.dumps(outer))
    base = ["--model-config", tmp_path / "outer.json", "--dataset-config", workspace / "dataset.json",
            "--logger", "none", "--batch-size", 2, "--num-workers", 0, "--max-steps", 1, "--checkpoint-every", 1]
    run_script("train.py", *base, "--save-dir", tmp_path / "a", "--pretransform-ckpt-path", tmp_path / "inner.ckpt",
               "--remove-pretransform-weight-norm", "post_load", cwd=tmp_path)
    ckpt = torch.load(next((tmp_path / "a").rglob("*.ckpt")), weights_only=False)
    keys = [k for k in ckpt["state_dict"] if k.startswith("autoencoder.pretransform.model.")]
    assert keys and not any(k.endswith("weight_g") for k in keys)  # weight norm folded after loading
    loaded = ckpt["state_dict"]["autoencoder.pretransform.model.decoder.layers.0.bias"]
    assert torch.equal(loaded, inner.state_dict()["decoder.layers.0.bias"])  # frozen pretransform kept its weights

    wrapped = next((tmp_path / "a").rglob("*.ckpt"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, base), "--save-dir", str(tmp_path / "b"),
                           "--pretransform-ckpt-path", str(wrapped)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "wrapped training checkpoint" in proc.stderr
