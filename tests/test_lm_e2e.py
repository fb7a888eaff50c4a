"""End-to-end audio LM: a real ``train.py`` run of a tiny conditioned LM over a tiny ``rvq`` autoencoder
pretransform (``--pretransform-ckpt-path``) on test-written repeated tones, where the loss falls; the demo;
``unwrap_model.py``; strict reload and generation. Then ``pre_encode.py --is-discrete`` tokens of the same audio
train the LM with ``training.pre_encoded``."""
import copy
import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from stable_audio_tools.data.dataset import create_dataloader_from_config
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.utils import load_ckpt_state_dict
from stable_audio_tools.training import create_training_wrapper_from_config

from conftest import ROOT

pytestmark = pytest.mark.slow

pytestmark = [pytest.mark.filterwarnings("ignore:.*eval mode at the start of training"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec")]

SR, RATIO, SAMPLE_SIZE = 8000, 4, 256  # 64 code frames per training crop
AE_MODEL = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 8, "c_mults": [1, 2], "strides": [2, 2],
                                               "latent_dim": 8, "use_snake": False}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 8, "c_mults": [1, 2], "strides": [2, 2],
                                               "latent_dim": 8, "use_snake": False}},
    "bottleneck": {"type": "rvq", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 2,
                                             "kmeans_init": False}},
    "latent_dim": 8, "downsampling_ratio": RATIO, "io_channels": 1,
}
LM_CONFIG = {
    "model_type": "lm", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
    "model": {
        "pretransform": {"type": "autoencoder", "config": AE_MODEL},
        "conditioning": {"cond_dim": 16, "configs": [
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 10}}]},
        "lm": {"type": "continuous_transformer", "codebook_pattern": "delay",
               "cross_attention_cond_ids": ["seconds_total"],
               "config": {"embed_dim": 32, "depth": 1, "dim_heads": 32, "cross_attn_cond_dim": 16,
                          "project_cross_attn_cond": True}},
    },
    "training": {"learning_rate": 3e-3, "use_ema": True, "demo": {
        "demo_every": 1000, "num_demos": 1, "demo_cfg_scales": [3], "demo_cond": [{"seconds_total": 1}]}},
}
STEPS = 15


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tone sequences (2 kHz, 1 kHz, 500 Hz, 32 samples each, repeating) and an unwrapped autoencoder ckpt."""
    root = tmp_path_factory.mktemp("lm_e2e")
    audio_dir = root / "audio"
    audio_dir.mkdir()
    t = np.arange(32) / SR
    cycle = np.concatenate([0.5 * np.sin(2 * np.pi * 2000 * t + np.pi / 4), 0.3 * np.sin(2 * np.pi * 1000 * t),
                            0.6 * np.sin(2 * np.pi * 500 * t)])
    for i in range(4):
        sf.write(audio_dir / f"tones_{i}.wav", np.tile(np.roll(cycle, 32 * i), 12).astype(np.float32), SR)
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "tones", "path": str(audio_dir)}]}))
    torch.manual_seed(0)
    autoencoder = create_model_from_config({"model_type": "autoencoder", "sample_rate": SR, "model": AE_MODEL})
    torch.save({"state_dict": autoencoder.state_dict()}, root / "autoencoder.ckpt")
    (root / "autoencoder.json").write_text(json.dumps({"model_type": "autoencoder", "sample_rate": SR,
                                                       "sample_size": SAMPLE_SIZE, "audio_channels": 1,
                                                       "model": AE_MODEL}))
    return root


def _load_script(filename):
    spec = importlib.util.spec_from_file_location(filename[:-3] + "_lm_e2e", ROOT / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(metrics_csv):
    with open(metrics_csv, newline="") as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def test_train_py_unwrap_reload_and_generate(workspace):
    root = workspace
    (root / "lm.json").write_text(json.dumps(LM_CONFIG))
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--model-config", str(root / "lm.json"), "--dataset-config",
         str(root / "dataset.json"), "--pretransform-ckpt-path", str(root / "autoencoder.ckpt"), "--save-dir",
         str(root / "run"), "--logger", "csv", "--name", "tiny-lm", "--batch-size", "4", "--num-workers", "0",
         "--max-steps", str(STEPS), "--checkpoint-every", str(STEPS)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "RANDOM WEIGHTS" not in proc.stderr

    losses = _losses(next((root / "run").rglob("metrics.csv")))
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    assert list((root / "run").rglob("demo_cfg_3_00000001.wav"))  # the demo ran at step 1

    ckpt_path = next((root / "run").rglob("*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["global_step"] == STEPS and ckpt["model_config"] == LM_CONFIG
    out = _load_script("unwrap_model.py").main(["--ckpt-path", str(ckpt_path), "--name", str(root / "tiny-lm"),
                                                 "--use-safetensors"])
    weights = load_ckpt_state_dict(out)
    ema = {k[len("model_ema.ema_model."):]: v for k, v in ckpt["state_dict"].items()
           if k.startswith("model_ema.ema_model.")}
    assert set(ema) == set(weights) and all(torch.equal(weights[k], v) for k, v in ema.items())
    autoencoder = torch.load(root / "autoencoder.ckpt", weights_only=True)["state_dict"]
    for key, value in autoencoder.items():  # the pretransform checkpoint was loaded and stays frozen
        assert torch.equal(weights[f"pretransform.model.{key}"], value), key

    model = create_model_from_config(LM_CONFIG)
    model.load_state_dict(weights, strict=True)
    model.eval()
    cond = [{"seconds_total": 2}, {"seconds_total": 7}]
    codes = model.generate(max_gen_len=24, conditioning=cond, cfg_scale=2.0, top_k=8, seed=5, disable_tqdm=True)
    again = model.generate(max_gen_len=24, conditioning=cond, cfg_scale=2.0, top_k=8, seed=5, disable_tqdm=True)
    assert codes.shape == (2, 2, 24) and codes.min() >= 0 and codes.max() < 16 and torch.equal(codes, again)
    prompt = model.pretransform.tokenize(torch.from_numpy(sf.read(root / "audio" / "tones_0.wav",
                                                                  dtype="float32")[0][:64]).reshape(1, 1, -1))
    continued = model.generate(max_gen_len=32, init_data=prompt, conditioning=cond[:1], temp=0, disable_tqdm=True)
    assert torch.equal(continued[..., :16], prompt)
    audio = model.generate_audio(max_gen_len=16, conditioning=cond[:1], top_p=0.9, seed=1, disable_tqdm=True)
    assert audio.shape == (1, 1, 16 * RATIO) and torch.isfinite(audio).all()


def test_pre_encoded_tokens_train_the_lm(workspace, tmp_path):
    tokens_dir = tmp_path / "tokens"
    _load_script("pre_encode.py").main([
        "--model-config", str(workspace / "autoencoder.json"), "--ckpt-path", str(workspace / "autoencoder.ckpt"),
        "--dataset-config", str(workspace / "dataset.json"), "--output-path", str(tokens_dir), "--sample-size",
        str(SAMPLE_SIZE), "--is-discrete", "--num-workers", "0", "--accelerator", "cpu", "--no-progress"])
    stored = np.load(next(tokens_dir.rglob("*.npy")))
    assert stored.dtype == np.int64 and stored.shape == (2, SAMPLE_SIZE // RATIO)  # stored codebook-major [Q, T]

    config = copy.deepcopy(LM_CONFIG)
    config["training"] = {"learning_rate": 3e-3, "pre_encoded": True}
    torch.manual_seed(0)
    model = create_model_from_config(config)
    model.pretransform.load_state_dict(load_ckpt_state_dict(str(workspace / "autoencoder.ckpt")))
    wrapper = create_training_wrapper_from_config(config, model)
    seen = []
    original = model.compute_logits

    def compute_logits(codes, **kwargs):
        seen.append(codes)
        return original(codes, **kwargs)

    model.compute_logits = compute_logits
    loader = create_dataloader_from_config(
        {"dataset_type": "pre_encoded", "datasets": [{"id": "tokens", "path": str(tokens_dir)}]},
        batch_size=4, num_workers=0, sample_rate=SR, sample_size=SAMPLE_SIZE, audio_channels=1)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(wrapper, loader)
    assert len(seen) == 2 and seen[0].shape == (4, 2, SAMPLE_SIZE // RATIO)
    stored = [torch.from_numpy(np.load(path)) for path in tokens_dir.rglob("*.npy")]
    for item in torch.cat(seen):  # the LM saw the stored [Q, T] tokens as its codes
        assert any(torch.equal(item, tokens) for tokens in stored)
    assert any(tokens.unique().numel() > 1 for tokens in stored)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
