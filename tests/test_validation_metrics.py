"""training.validation_metrics: metrics logged during a real train.py run, best checkpoints kept by --monitor,
the generation path of diffusion runs, and config / flag errors."""
import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.validation_metrics import (check_monitor, create_validation_metrics_callback,
                                                            monitor_mode)

from test_diffusion_e2e import text_to_audio_config
from test_train_e2e import TINY_AE, run_script
from tiny_audio_models import make_tiny_clap
from tiny_t5 import make_tiny_t5


def _tones(folder, count, sr=8000, seconds=0.5):
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(count):
        sf.write(folder / f"{i:04d}.wav", (0.5 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32), sr)
    return folder


@pytest.mark.slow
def test_train_logs_a_metric_and_keeps_the_best_checkpoint_by_it(tmp_path):
    data, reference = _tones(tmp_path / "audio", 6), _tones(tmp_path / "reference", 2)
    config = json.loads(json.dumps(TINY_AE))
    config["training"]["validation_metrics"] = {"every": 2, "metrics": ["si_sdr", "mel"],
                                                "reference_dir": str(reference)}
    (tmp_path / "model.json").write_text(json.dumps(config))
    (tmp_path / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "tones", "path": str(data)}], "random_crop": True}))
    save = tmp_path / "run"
    args = ["--model-config", tmp_path / "model.json", "--dataset-config", tmp_path / "dataset.json", "--save-dir",
            save, "--logger", "csv", "--batch-size", 2, "--num-workers", 0, "--checkpoint-every", 2,
            "--monitor", "val/si_sdr", "--save-top-k", 1]
    run_script("train.py", *args, "--max-steps", 6, cwd=tmp_path)

    rows = list(csv.DictReader(next(save.rglob("metrics.csv")).open()))
    logged = {int(r["step"]): float(r["val/si_sdr"]) for r in rows if r.get("val/si_sdr")}
    # computed after steps 2, 4 and 6; Lightning writes a value logged in on_train_batch_end under step - 1 and
    # repeats the latest one on the rows after it
    computed = {step: logged[step - 1] for step in (2, 4, 6)}
    assert min(logged) == 1 and len(set(computed.values())) == 3
    assert all(r.get("val/mel") for r in rows if r.get("val/si_sdr"))
    folder = next(save.rglob("last.ckpt")).parent
    kept = sorted(p.name for p in folder.glob("*.ckpt"))
    assert len(kept) == 2 and "last.ckpt" in kept
    best = torch.load(folder / [k for k in kept if k != "last.ckpt"][0], weights_only=False)
    assert best["global_step"] == max(computed, key=computed.get)
    state = next(v for k, v in best["callbacks"].items() if "RunCheckpoint" in k or "ModelCheckpoint" in k)
    assert state["monitor"] == "val/si_sdr"
    assert float(state["best_model_score"]) == pytest.approx(max(computed.values()), rel=1e-5)
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 6

    # resumable: continue from last.ckpt to step 8
    run_script("train.py", *args, "--max-steps", 8, "--ckpt-path", folder / "last.ckpt", cwd=tmp_path)
    assert max(torch.load(p, weights_only=False)["global_step"] for p in save.rglob("last.ckpt")) == 8


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_diffusion_validation_generates_with_fixed_seeds_and_scores(tmp_path):
    config = text_to_audio_config(make_tiny_t5(tmp_path / "t5"))
    config["training"]["validation_metrics"] = {
        "every": 5, "metrics": ["fd", "clap"], "embedder": "logmel", "reference_dir": str(_tones(tmp_path / "r", 2)),
        "prompts": ["solo piano melody", {"prompt": "punchy drums", "seconds_total": 1}], "steps": 2,
        "seconds": 0.75, "options": {"clap": {"model": make_tiny_clap(tmp_path / "clap")}}}
    callback = create_validation_metrics_callback(config)
    torch.manual_seed(0)
    wrapper = create_training_wrapper_from_config(config, create_model_from_config(config))
    wrapper.train()
    rng = torch.get_rng_state()
    first = callback.compute(wrapper)
    assert set(first) == {"val/fd", "val/clap"} and first["val/fd"] >= 0 and -1 <= first["val/clap"] <= 1
    assert torch.equal(torch.get_rng_state(), rng)  # training randomness untouched
    assert wrapper.training and all(m.training for m in wrapper.diffusion.modules() if m is not None)
    assert callback.compute(wrapper) == first  # fixed prompts and seeds: the same audio again
    assert callback.conditioning[1] == {"seconds_start": 0, "seconds_total": 1, "prompt": "punchy drums"}


def test_config_and_flag_errors(tmp_path):
    reference = str(_tones(tmp_path / "r", 1))
    base = json.loads(json.dumps(TINY_AE))

    def build(section, model_config=base, val_every=-1):
        cfg = json.loads(json.dumps(model_config))
        cfg["training"]["validation_metrics"] = section
        return create_validation_metrics_callback(cfg, val_every=val_every)

    assert create_validation_metrics_callback(TINY_AE) is None
    with pytest.raises(ConfigError, match="validation_metrics.every.*--val-every"):
        build({"reference_dir": reference})
    assert build({"reference_dir": reference}, val_every=3).every == 3
    with pytest.raises(ConfigError, match="validation_metrics.reference_dir"):
        build({"every": 2, "reference_dir": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="reconstruction metrics only"):
        build({"every": 2, "metrics": ["fd"], "reference_dir": reference})
    with pytest.raises(ConfigError, match="not available for model_type 'diffusion_uncond'"):
        build({"every": 2, "reference_dir": reference}, {**base, "model_type": "diffusion_uncond"})
    cond = {**base, "model_type": "diffusion_cond"}
    with pytest.raises(ConfigError, match="validation_metrics.prompts"):
        build({"every": 2, "reference_dir": reference}, cond)
    with pytest.raises(ConfigError, match="clap needs a text 'prompt'"):
        build({"every": 2, "metrics": ["clap"], "reference_dir": reference, "prompts": [{"seconds_total": 1}]}, cond)
    with pytest.raises(ConfigError, match="--embedder nope"):
        build({"every": 2, "embedder": "nope", "reference_dir": reference, "prompts": ["x"]}, cond)

    callback = build({"every": 2, "reference_dir": reference})
    assert callback.metric_names == ["val/si_sdr", "val/mrstft", "val/mel"]
    check_monitor("val/si_sdr", callback, 4)
    check_monitor("train/loss", None, 3)  # not a validation metric: nothing to check
    with pytest.raises(ValueError, match="multiple of training.validation_metrics.every"):
        check_monitor("val/mel", callback, 3)
    with pytest.raises(ValueError, match="computes val/si_sdr"):
        check_monitor("val/fd", callback, 4)
    with pytest.raises(ValueError, match="no training.validation_metrics section"):
        check_monitor("val/fd", None, 4)
    assert (monitor_mode("val/fd"), monitor_mode("val/clap"), monitor_mode("loss", "max")) == ("min", "max", "max")
    with pytest.raises(ValueError, match="--monitor-mode min or max"):
        monitor_mode("loss")


def test_lm_validation_generates_with_fixed_seeds(tmp_path):
    from test_lm_training import build, lm_config

    config = lm_config()
    config["sample_size"] = 512  # 128 frames of 4 samples at 16 kHz
    config["training"]["validation_metrics"] = {
        "every": 1, "embedder": "logmel", "reference_dir": str(_tones(tmp_path / "r", 2, sr=16000)),
        "prompts": [{"seconds_total": 1}, {"seconds_total": 5}], "top_k": 8}
    callback = create_validation_metrics_callback(config)
    wrapper = build(config)
    first = callback.compute(wrapper)
    assert list(first) == ["val/fd"] and first["val/fd"] >= 0
    assert callback.compute(wrapper) == first
