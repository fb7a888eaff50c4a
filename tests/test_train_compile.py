"""``train.py --compile`` (training.compile): the trained model's transformers are compiled while its EMA copy stays
eager, state dict keys are unchanged, a compiled bf16-mixed run of train.py trains and writes a checkpoint that
loads strictly, and a model without transformers or a CPU run without a C++ compiler is refused naming the flag.
No timings."""
import csv
import importlib.util
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_tools.inference import precision
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.compile import compile_for_training, training_compile_targets

from conftest import ROOT, needs_cpu_bf16
from test_diffusion_e2e import UNCOND, run_script
from test_train_e2e import TINY_AE

needs_compiler = pytest.mark.skipif(precision.cpp_compiler() is None, reason="no C++ compiler for TorchInductor")


def _wrapper(config):
    torch.manual_seed(0)
    return create_training_wrapper_from_config(config, create_model_from_config(config))


def _compiled(module):
    return getattr(module, "_compiled_call_impl", None) is not None


def test_the_online_transformer_is_compiled_and_the_ema_copy_is_not():
    wrapper = _wrapper(UNCOND)
    keys = list(wrapper.state_dict())
    (name, online), = training_compile_targets(wrapper)
    assert name.startswith("diffusion.") and online is wrapper.diffusion.model.model.transformer
    assert compile_for_training(wrapper) == [name]
    assert _compiled(online) and list(wrapper.state_dict()) == keys
    ema = wrapper.diffusion_ema.ema_model
    assert not any(_compiled(m) for m in ema.modules())
    assert compile_for_training(wrapper) == [name]  # idempotent


def test_models_without_transformers_and_missing_compilers_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="--compile compiles the model's transformers.*AutoencoderTrainingWrapper"):
        compile_for_training(_wrapper(TINY_AE))
    monkeypatch.setattr(precision, "cpp_compiler", lambda: None)
    wrapper = _wrapper(UNCOND)
    with pytest.raises(ValueError, match="--compile needs a C\\+\\+ compiler"):
        compile_for_training(wrapper, "cpu")
    assert compile_for_training(wrapper, "cuda")  # the compiler check is the CPU's


def test_train_py_refuses_compile_for_a_model_without_transformers(tmp_path):
    spec = importlib.util.spec_from_file_location("train", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", np.zeros(4000, dtype=np.float32), 8000)
    (tmp_path / "model.json").write_text(json.dumps(TINY_AE))
    (tmp_path / "data.json").write_text(json.dumps({"dataset_type": "audio_dir",
                                                    "datasets": [{"id": "a", "path": str(audio)}]}))
    with pytest.raises(SystemExit, match="train.py: --compile compiles the model's transformers"):
        train.main(["--model-config", str(tmp_path / "model.json"), "--dataset-config", str(tmp_path / "data.json"),
                    "--save-dir", str(tmp_path / "run"), "--logger", "none", "--batch-size", "1",
                    "--num-workers", "0", "--accelerator", "cpu", "--compile"])


@pytest.mark.slow
@needs_cpu_bf16
@needs_compiler
def test_train_py_compile_with_bf16_mixed_trains_and_checkpoints(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(UNCOND["sample_size"] + 500) / UNCOND["sample_rate"]
    for i in range(4):
        sf.write(audio / f"clip_{i}.wav", (0.4 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32),
                 UNCOND["sample_rate"])
    (tmp_path / "model.json").write_text(json.dumps(UNCOND))
    (tmp_path / "data.json").write_text(json.dumps({"dataset_type": "audio_dir",
                                                    "datasets": [{"id": "clips", "path": str(audio)}]}))
    save = tmp_path / "run"
    proc = run_script("train.py", "--model-config", tmp_path / "model.json", "--dataset-config",
                      tmp_path / "data.json", "--save-dir", save, "--logger", "csv", "--batch-size", 2,
                      "--num-workers", 0, "--max-steps", 3, "--checkpoint-every", 3, "--accelerator", "cpu",
                      "--precision", "bf16-mixed", "--compile", cwd=tmp_path)
    assert "--compile: compiled diffusion." in proc.stderr
    ckpt = torch.load(next(save.rglob("*.ckpt")), weights_only=False)
    assert ckpt["global_step"] == 3
    _wrapper(UNCOND).load_state_dict(ckpt["state_dict"], strict=True)
    with open(next(save.rglob("metrics.csv"))) as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
