"""``--compile`` (inference.precision.compile_backbone): fast mode with the backbone's transformer compiled by
torch.compile gives finite audio close to eager fast mode, keeps the state dict keys, is undone by exact mode, is
recorded in the sidecar, and the flag combinations it needs are checked before any model loads. No timings."""
import json

import numpy as np
import pytest
import torch

from stable_audio_tools.inference import cli, precision
from stable_audio_tools.inference.generation import generate_diffusion_uncond
from stable_audio_tools.inference.precision import backbone_is_compiled, check_fast_mode, enable_fast_mode

from conftest import needs_cpu_bf16
from test_fast_mode import STEPS, _randomised, _rel_err
from test_generate_cli import UNCOND, cond_config, read, save_model

needs_compiler = pytest.mark.skipif(precision.cpp_compiler() is None, reason="no C++ compiler for TorchInductor")


def _generate(model):
    return generate_diffusion_uncond(model, steps=STEPS, sample_size=2048, seed=3, disable_tqdm=True)


@needs_cpu_bf16
@needs_compiler
def test_compiled_fast_mode_is_close_to_eager_fast_mode_and_exact_mode_undoes_it():
    model = _randomised(UNCOND)
    exact = _generate(model)
    keys = list(model.state_dict())
    enable_fast_mode(model)
    eager_fast = _generate(model)
    enable_fast_mode(model, compile=True)
    assert backbone_is_compiled(model) and list(model.state_dict()) == keys
    compiled = _generate(model)
    assert torch.isfinite(compiled).all() and _rel_err(compiled, eager_fast) < 0.05
    enable_fast_mode(model, None)
    assert not backbone_is_compiled(model)
    assert torch.equal(_generate(model), exact)


@needs_cpu_bf16
@needs_compiler
def test_compiled_backbone_runs_with_gradients_enabled():
    """A compiled fast-mode model called directly, outside ``torch.no_grad()``: its frozen transformer is not
    gradient-checkpointed, which torch.compile of attention refuses on torch 2.13 (RNG ops in recompute
    regions)."""
    model = _randomised(UNCOND)
    x, t = torch.randn(1, 1, 2048), torch.tensor([0.4])
    with torch.no_grad():
        reference = model.model(x, t)
    enable_fast_mode(model, compile=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.model(x, t)
    assert torch.isfinite(out).all() and _rel_err(out.float(), reference) < 0.05


def test_compile_needs_bf16_fast_mode_and_a_compiler(monkeypatch):
    with pytest.raises(ValueError, match="--compile compiles the bf16 fast mode.*--dtype bf16"):
        check_fast_mode("diffusion_cond", "float32", compile=True)
    with pytest.raises(ValueError, match="--compile .* not --dtype bf16 --quantize int8"):
        check_fast_mode("diffusion_cond", "bf16", "int8", compile=True)
    with pytest.raises(ValueError, match="compile=True needs a fast dtype"):
        enable_fast_mode(_randomised(UNCOND), None, compile=True)
    monkeypatch.setattr(precision, "cpp_compiler", lambda: None)
    with pytest.raises(ValueError, match="--compile needs a C\\+\\+ compiler"):
        check_fast_mode("diffusion_cond", "bf16", device="cpu", compile=True)
    check_fast_mode("diffusion_cond", "bf16", device="cuda", compile=True)  # the compiler check is the CPU's


def test_cpp_compiler_honours_cxx(monkeypatch, tmp_path):
    compiler = tmp_path / "my-c++"
    compiler.write_text("#!/bin/sh\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    assert precision.cpp_compiler() == str(compiler)
    monkeypatch.setenv("CXX", str(tmp_path / "missing"))
    assert precision.cpp_compiler() is None


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("compile_cli")
    return save_model(root / "cond", cond_config(make_tiny_t5(root / "t5")))


@pytest.mark.slow
@needs_cpu_bf16
@needs_compiler
def test_generate_py_compile_is_recorded_and_reproduces(saved, tmp_path):
    [path] = cli.main(["--pretrained-name", str(saved), "--prompt", "rain", "--seconds", "0.25", "--steps", "3",
                       "--seed", "4", "--device", "cpu", "--dtype", "bf16", "--compile",
                       "--output-dir", str(tmp_path / "a")])
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["dtype"] == "bf16" and sidecar["compile"] is True
    [again] = cli.main(["--from-sidecar", str(path.with_suffix(".json")), "--output-dir", str(tmp_path / "b")])
    assert np.array_equal(read(again), read(path)) and np.isfinite(read(path)).all()


def test_generate_py_and_run_gradio_refuse_compile_without_bf16(saved, tmp_path):
    import run_gradio

    with pytest.raises(SystemExit) as e:
        cli.main(["--pretrained-name", str(saved), "--prompt", "x", "--device", "cpu", "--compile",
                  "--output-dir", str(tmp_path)])
    assert "--compile compiles the bf16 fast mode" in str(e.value)
    with pytest.raises(SystemExit):
        run_gradio.main(["--pretrained-name", str(saved), "--compile"])
