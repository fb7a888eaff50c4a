"""Adapter fine-tuning end to end: train.py --adapter-config on a tiny DiT (loss falls, adapter-only checkpoints,
resume with the base-hash check), unwrap_model.py to an adapter file and to a merged model, loading into a fresh
base and generating with generate_diffusion_cond; plus the low-precision base in-process."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stable_audio_tools.inference.generation import generate_diffusion_cond
from stable_audio_tools.models.adapters import list_adapters, load_adapter, set_adapter_strength
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.safe_load import load_safetensors, torch_load
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.adapters import AdapterRun

from conftest import ROOT, needs_cpu_bf16

TINY_DIT = {
    "model_type": "diffusion_cond", "sample_size": 256, "sample_rate": 8000, "audio_channels": 1,
    "model": {
        "io_channels": 1,
        "conditioning": {"cond_dim": 16, "configs": [
            {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 16}},
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 16}}]},
        "diffusion": {"type": "dit", "cross_attention_cond_ids": ["seconds_start", "seconds_total"],
                      "global_cond_ids": ["seconds_total"],
                      "config": {"io_channels": 1, "embed_dim": 128, "depth": 2, "num_heads": 2, "cond_token_dim": 16,
                                 "global_cond_dim": 16}},
    },
    "training": {"learning_rate": 2e-2, "use_ema": True, "cfg_dropout_prob": 0.1,
                 "demo": {"demo_every": 100000, "num_demos": 1, "demo_cfg_scales": [3],
                          "demo_cond": [{"seconds_start": 0, "seconds_total": 2}]}},
}
ADAPTER = {"type": "lora", "rank": 4, "alpha": 8, "exclude": ["cross_attn.to_kv"]}
COND = [{"seconds_start": 0, "seconds_total": 2}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter_train")
    data = root / "audio"
    data.mkdir()
    for i in range(4):
        t = np.arange(2048) / 8000
        sf.write(data / f"tone_{i}.wav", (0.6 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), 8000)
    (root / "model.json").write_text(json.dumps(TINY_DIT))
    (root / "adapter.json").write_text(json.dumps(ADAPTER))
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "tones", "path": str(data)}], "random_crop": True}))
    torch.manual_seed(0)
    save_file(create_model_from_config(TINY_DIT).state_dict(), str(root / "base.safetensors"))
    return root


def run(script, *args, cwd, ok=True):
    env = {**__import__("os").environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def train(ws, save, *extra, ok=True):
    return run("train.py", "--model-config", ws / "model.json", "--dataset-config", ws / "dataset.json",
               "--save-dir", save, "--logger", "csv", "--batch-size", 4, "--num-workers", 0, "--precision", "32",
               "--accelerator", "cpu", "--adapter-config", ws / "adapter.json", *extra, cwd=ws, ok=ok)


def base_model(ws):
    torch.manual_seed(1)
    model = create_model_from_config(TINY_DIT).eval()
    model.load_state_dict(load_safetensors(ws / "base.safetensors"), strict=True)
    return model


def generate(model):
    return generate_diffusion_cond(model, steps=4, cfg_scale=3.0, conditioning=COND, sample_size=256, seed=7,
                                   sampler_type="dpmpp-2m", disable_tqdm=True)


@pytest.mark.slow
def test_train_resume_unwrap_load_generate(workspace):
    ws = workspace
    save = ws / "run"
    train(ws, save, "--pretrained-ckpt-path", ws / "base.safetensors", "--max-steps", 60, "--checkpoint-every", 30)
    ckpts = sorted(save.rglob("*.ckpt"), key=lambda p: torch_load(p)["global_step"])
    assert [torch_load(p)["global_step"] for p in ckpts] == [30, 60]
    ckpt = torch_load(ckpts[-1])
    assert set(ckpt["adapter_run"]) >= {"adapter_config", "base_hash", "base_model_config_hash"}
    adapter_keys = [k for k in ckpt["state_dict"] if ".adapters.default." in k]
    assert adapter_keys and all(".adapters.default." in k for k in ckpt["state_dict"] if k.startswith("diffusion"))
    assert not any(k.startswith("diffusion_ema") for k in ckpt["state_dict"])  # EMA off, no base weights
    assert ckpts[-1].stat().st_size < 0.3 * (ws / "base.safetensors").stat().st_size  # adapter + Adam states
    exp_avg = [s["exp_avg"].numel() for s in ckpt["optimizer_states"][0]["state"].values()]
    assert sum(exp_avg) == sum(ckpt["state_dict"][k].numel() for k in adapter_keys)  # optimizer state: adapters

    metrics = next(save.rglob("metrics.csv")).read_text().splitlines()
    column = metrics[0].split(",").index("train/loss")
    losses = [float(r.split(",")[column]) for r in metrics[1:] if r.split(",")[column]]
    assert np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10]), losses

    # resume: continues from step 30; a different base is refused
    resumed = ws / "resumed"
    train(ws, resumed, "--pretrained-ckpt-path", ws / "base.safetensors", "--ckpt-path", ckpts[0],
          "--max-steps", 34, "--checkpoint-every", 100)
    assert max(torch_load(p)["global_step"] for p in resumed.rglob("*.ckpt")) == 34
    wrong = train(ws, ws / "wrong", "--ckpt-path", ckpts[0], "--max-steps", 34, ok=False)
    assert wrong.returncode != 0 and "base model weights differ" in wrong.stderr

    # release: the adapter alone (fp16 + metadata), and the merged model
    run("unwrap_model.py", "--ckpt-path", ckpts[-1], "--name", ws / "out" / "tones", cwd=ws)
    adapter_file = ws / "out" / "tones.safetensors"
    with safe_open(str(adapter_file), framework="pt") as f:
        meta = f.metadata()
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    assert meta["training_steps"] == "60" and json.loads(meta["adapter_config"])["rank"] == 4
    assert "base_model_config_hash" in meta
    run("unwrap_model.py", "--ckpt-path", ckpts[-1], "--name", ws / "out" / "merged", "--merge-adapters",
        "--base-ckpt-path", ws / "base.safetensors", "--use-safetensors", cwd=ws)

    model = base_model(ws)
    base_audio = generate(model)
    name = load_adapter(model, adapter_file)
    assert list_adapters(model)[name].layers
    adapted = generate(model)
    assert (adapted - base_audio).abs().max() > 1e-3
    merged = create_model_from_config(TINY_DIT).eval()
    merged.load_state_dict(load_safetensors(ws / "out" / "merged.safetensors"), strict=True)
    run("unwrap_model.py", "--ckpt-path", ckpts[-1], "--name", ws / "out" / "tones32", "--adapter-dtype", "fp32",
        cwd=ws)
    exact = base_model(ws)
    load_adapter(exact, ws / "out" / "tones32.safetensors")
    torch.testing.assert_close(generate(merged), generate(exact), atol=1e-3, rtol=1e-3)  # merged = unmerged
    assert (generate(exact) - adapted).abs().mean() < 1e-2  # the fp16 file is close to the fp32 one
    set_adapter_strength(model, name, 0.0)
    assert torch.equal(generate(model), base_audio)


def test_adapter_flags_are_checked(workspace, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "lora", "rank": 2, "include": ["no_such_layer"]}))
    proc = run("train.py", "--model-config", workspace / "model.json", "--dataset-config",
               workspace / "dataset.json", "--save-dir", tmp_path, "--num-workers", 0, "--batch-size", 2,
               "--adapter-config", bad, cwd=tmp_path, ok=False)
    assert proc.returncode != 0 and "include[0]" in proc.stderr and "no_such_layer" in proc.stderr


@pytest.mark.parametrize("precision", [pytest.param("bf16", marks=needs_cpu_bf16), "fp32"])
def test_low_precision_base_trains_fp32_adapters(precision):
    torch.manual_seed(0)
    model = create_model_from_config(TINY_DIT)
    run_ = AdapterRun(ADAPTER, base_precision=precision)
    run_.prepare(model, TINY_DIT)
    wrapper = create_training_wrapper_from_config(run_.wrapper_config(TINY_DIT), model)
    assert wrapper.diffusion_ema is None  # EMA off for adapter runs by default
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    qkv = model.model.model.transformer.layers[0].self_attn.to_qkv
    assert qkv.weight.dtype == dtype and not qkv.weight.requires_grad
    assert qkv.adapters["default"].lora_A.dtype == torch.float32
    x, t = torch.randn(2, 1, 256), torch.rand(2)
    cond = model.conditioner(COND * 2, "cpu")
    out = model(x, t, cond)
    assert out.dtype == torch.float32
    out.pow(2).mean().backward()
    assert qkv.adapters["default"].lora_B.grad is not None and qkv.weight.grad is None
    with pytest.raises(ValueError, match="--base-precision"):
        AdapterRun(ADAPTER, base_precision="int8")
