"""End-to-end diffusion: train.py runs, unwrap_model.py, get_pretrained_model from a local Hugging Face cache and
generation as in the Stable Audio Open model card, for diffusion_cond (text-conditioned latent DiT with a tiny
local T5 and an autoencoder pretransform), diffusion_uncond, diffusion_cond_inpaint and diffusion_autoencoder."""
import copy
import hashlib
import importlib.util
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

SR = 8000
SAMPLE_SIZE = 2048
AE_MODEL = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                               "latent_dim": 8, "use_snake": True}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                               "latent_dim": 4, "use_snake": True, "final_tanh": False}},
    "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 1,
}
PROMPTS = ["solo piano melody", "punchy drums and a deep bass line", "ambient rain on a tin roof"]
METADATA_MODULE = f'''
PROMPTS = {PROMPTS!r}


def get_custom_metadata(info, audio):
    return {{"prompt": PROMPTS[int(info["relpath"].split("_")[1].split(".")[0]) % len(PROMPTS)]}}
'''


def text_to_audio_config(t5_path):
    return {
        "model_type": "diffusion_cond", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": AE_MODEL, "scale": 0.5},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": t5_path, "max_length": 8}},
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}]},
            "diffusion": {"type": "dit", "diffusion_objective": "v",
                          "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"],
                          "config": {"io_channels": 4, "embed_dim": 64, "depth": 1, "num_heads": 2,
                                     "cond_token_dim": 16, "global_cond_dim": 32,
                                     "transformer_type": "continuous_transformer"}},
            "io_channels": 4,
        },
        "training": {"learning_rate": 1e-4, "cfg_dropout_prob": 0.1, "demo": {
            "demo_every": 1000, "demo_steps": 2, "num_demos": 1, "demo_cfg_scales": [3],
            "demo_cond": [{"prompt": PROMPTS[0], "seconds_start": 0, "seconds_total": 1}]}},
    }


UNCOND = {
    "model_type": "diffusion_uncond", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
    "model": {"type": "dit", "config": {"in_channels": 1, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                        "patch_size": 8}},
    "training": {"learning_rate": 1e-4, "demo": {"demo_every": 1000, "demo_steps": 2, "num_demos": 1}},
}

INPAINT = {
    "model_type": "diffusion_cond_inpaint", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
    "model": {
        "pretransform": {"type": "autoencoder", "config": AE_MODEL},
        "conditioning": {"cond_dim": 16, "configs": [
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}]},
        "diffusion": {"type": "dit", "diffusion_objective": "rectified_flow",
                      "cross_attention_cond_ids": ["seconds_total"], "global_cond_ids": ["seconds_total"],
                      "input_concat_ids": ["inpaint_mask", "inpaint_masked_input"],
                      "config": {"io_channels": 4, "embed_dim": 32, "depth": 1, "num_heads": 1, "cond_token_dim": 16,
                                 "global_cond_dim": 16, "input_concat_dim": 5,
                                 "transformer_type": "continuous_transformer"}},
        "io_channels": 4,
    },
    "training": {"learning_rate": 1e-4, "inpainting": {"mask_kwargs": {"max_mask_segments": 4}},
                 "demo": {"demo_every": 1000, "demo_steps": 2, "num_demos": 1, "demo_cfg_scales": [2]}},
}

DIFFAE = {
    "model_type": "diffusion_autoencoder", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
    "model": {
        "pretransform": {"type": "patched", "config": {"channels": 1, "patch_size": 2}},
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 4, "c_mults": [1, 2], "strides": [2, 2],
                                                   "latent_dim": 8}},
        "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 4, "io_channels": 2,
        "diffusion": {"type": "dit", "config": {"io_channels": 2, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                                 "input_concat_dim": 4}},
    },
    "training": {"learning_rate": 1e-4, "demo": {"demo_every": 1000, "demo_steps": 2}},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("diffusion_e2e")
    data = root / "audio"
    data.mkdir()
    t = np.arange(SAMPLE_SIZE + 500) / SR
    for i in range(4):
        sf.write(data / f"clip_{i}.wav", (0.4 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), SR)
    (root / "prompts_md.py").write_text(METADATA_MODULE)
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "clips", "path": str(data), "custom_metadata_module": str(root / "prompts_md.py")}]}))
    torch.manual_seed(0)
    autoencoder = create_model_from_config({"model_type": "autoencoder", "sample_rate": SR, "model": AE_MODEL})
    torch.save({"state_dict": autoencoder.state_dict()}, root / "autoencoder.ckpt")
    return {"root": root, "t5": make_tiny_t5(root / "tiny_t5")}


def run_script(script, *args, cwd):
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def train_and_unwrap(ws, name, config, *extra):
    """Train 2 steps with train.py, unwrap the checkpoint with unwrap_model.py; returns (stderr, ckpt, weights)."""
    root = ws["root"]
    (root / f"{name}.json").write_text(json.dumps(config))
    save = root / f"run_{name}"
    proc = run_script("train.py", "--model-config", root / f"{name}.json", "--dataset-config", root / "dataset.json",
                      "--save-dir", save, "--logger", "csv", "--batch-size", 2, "--num-workers", 0, "--max-steps", 2,
                      "--checkpoint-every", 2, "--name", name, *extra, cwd=root)
    ckpt_path = next(save.rglob("*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["model_config"] == config
    unwrap_model = _load_script("unwrap_model.py")  # in-process: a subprocess would re-import torch (~5 s)
    assert unwrap_model.main(["--ckpt-path", str(ckpt_path), "--name", str(root / name), "--use-safetensors"]) \
        == f"{root / name}.safetensors"
    return proc.stderr, ckpt, load_ckpt_state_dict(root / f"{name}.safetensors")


def _load_script(filename):
    spec = importlib.util.spec_from_file_location(filename[:-3], ROOT / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish_to_hf_cache(ws, name, config, monkeypatch):
    """Lay out ``models--org--<name>`` in a test Hugging Face cache and point huggingface_hub at it, offline."""
    import huggingface_hub.constants as hf_constants

    cache = ws["root"] / "hf_cache"
    revision = hashlib.sha1(name.encode()).hexdigest()
    repo = cache / f"models--test-org--{name}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "model_config.json").write_text(json.dumps(config))
    os.replace(ws["root"] / f"{name}.safetensors", snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return f"test-org/{name}"


def assert_ema_exported(ckpt, weights, prefix="diffusion"):
    ema = {k[len(f"{prefix}_ema.ema_model."):]: v for k, v in ckpt["state_dict"].items()
           if k.startswith(f"{prefix}_ema.ema_model.")}
    assert ema
    for key, value in ema.items():
        exported = weights[f"model.{key}"] if prefix == "diffusion" else weights[key]
        assert torch.equal(exported, value), key


def save_like_model_card(output, path):
    """Upstream model card post-processing: ``b d n -> d (b n)``, peak-normalise, int16, write."""
    output = output.permute(1, 0, 2).reshape(output.shape[1], -1)
    output = output.to(torch.float32).div(torch.max(torch.abs(output))).clamp(-1, 1).mul(32767).to(torch.int16)
    sf.write(path, output.T.numpy(), SR)
    return output


def test_text_to_audio_latent_dit(workspace, monkeypatch):
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    config = text_to_audio_config(workspace["t5"])
    stderr, ckpt, weights = train_and_unwrap(workspace, "tiny-sao", config, "--pretransform-ckpt-path",
                                             workspace["root"] / "autoencoder.ckpt")
    assert "RANDOM WEIGHTS" not in stderr
    assert_ema_exported(ckpt, weights)
    autoencoder = torch.load(workspace["root"] / "autoencoder.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(weights["pretransform.model.decoder.layers.0.bias"], autoencoder["decoder.layers.0.bias"])
    assert not any(k.startswith("conditioner.conditioners.prompt.") for k in weights)  # frozen T5 is not saved
    assert list((workspace["root"] / "run_tiny-sao").rglob("demo_cfg_3_00000001.wav"))  # demo at step 1

    model, model_config = get_pretrained_model(publish_to_hf_cache(workspace, "tiny-sao", config, monkeypatch))
    assert model_config == config
    device = "cpu"
    model = model.to(device)
    output = generate_diffusion_cond(
        model, steps=4, cfg_scale=7, seed=123,
        conditioning=[{"prompt": PROMPTS[1], "seconds_start": 0, "seconds_total": 1}],
        sample_size=model_config["sample_size"], sigma_min=0.3, sigma_max=500, sampler_type="dpmpp-3m-sde",
        device=device)
    assert output.shape == (1, 1, SAMPLE_SIZE) and torch.isfinite(output).all()
    audio = save_like_model_card(output, workspace["root"] / "output.wav")
    assert audio.abs().max() == 32767
    written, rate = sf.read(workspace["root"] / "output.wav", dtype="int16")
    assert rate == SR and written.shape == (SAMPLE_SIZE,)


def test_unconditional(workspace, monkeypatch):
    from stable_audio_tools.inference.generation import generate_diffusion_uncond

    stderr, ckpt, weights = train_and_unwrap(workspace, "tiny-uncond", UNCOND)
    assert_ema_exported(ckpt, weights)
    assert any(k.startswith("diffusion_ema.online_model.") for k in ckpt["state_dict"])
    model, model_config = get_pretrained_model(publish_to_hf_cache(workspace, "tiny-uncond", UNCOND, monkeypatch))
    output = generate_diffusion_uncond(model, steps=4, batch_size=2, sample_size=model_config["sample_size"],
                                       seed=7, device="cpu")
    assert output.shape == (2, 1, SAMPLE_SIZE) and torch.isfinite(output).all()


def test_inpainting(workspace, monkeypatch):
    from stable_audio_tools.inference.generation import generate_diffusion_cond_inpaint

    stderr, ckpt, weights = train_and_unwrap(workspace, "tiny-inpaint", INPAINT)
    assert "RANDOM WEIGHTS" in stderr  # no --pretransform-ckpt-path: the loud warning
    assert_ema_exported(ckpt, weights)
    model, model_config = get_pretrained_model(publish_to_hf_cache(workspace, "tiny-inpaint", INPAINT, monkeypatch))
    audio = torch.sin(torch.arange(SAMPLE_SIZE) / SR * 2 * torch.pi * 330)[None] * 0.5
    mask = torch.zeros(1, SAMPLE_SIZE)
    mask[:, : SAMPLE_SIZE // 2] = 1
    output = generate_diffusion_cond_inpaint(
        model, steps=4, cfg_scale=3, seed=1, conditioning=[{"seconds_total": 1}],
        sample_size=model_config["sample_size"], inpaint_audio=(SR, audio), inpaint_mask=mask,
        sampler_type="euler", device="cpu")
    assert output.shape == (1, 1, SAMPLE_SIZE) and torch.isfinite(output).all()


def test_diffusion_autoencoder(workspace, monkeypatch):
    stderr, ckpt, weights = train_and_unwrap(workspace, "tiny-diffae", DIFFAE)
    assert_ema_exported(ckpt, weights, prefix="diffae")
    model, _ = get_pretrained_model(publish_to_hf_cache(workspace, "tiny-diffae", copy.deepcopy(DIFFAE),
                                                        monkeypatch))
    audio = torch.randn(1, 1, SAMPLE_SIZE) * 0.1
    with torch.no_grad():
        latents = model.encode(audio)
        decoded = model.decode(latents, steps=2)
    assert latents.shape == (1, 4, SAMPLE_SIZE // 8)
    assert decoded.shape == (1, 1, SAMPLE_SIZE) and torch.isfinite(decoded).all()
