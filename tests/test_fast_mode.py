"""Fast mode (bf16 autocast of the diffusion backbone, int8 dynamic quantisation) on tiny random-weight DiTs:
the output stays finite and close to exact mode, the float32 guards (RoPE, norms, timestep features, sampler,
final latent) hold under autocast in inference and in a bf16-mixed training forward, the int8 path runs on the CPU,
and exact mode is untouched. Bounds are loose (a quality check, not a timing)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from stable_audio_tools.inference import cli
from stable_audio_tools.inference.generation import generate_diffusion_cond, generate_diffusion_uncond
from stable_audio_tools.inference.precision import (AutocastBackbone, CastWeightLinear, autocast_dtype_of, enable_fast_mode,
                                                    fast_dtype, maybe_autocast, quantize_int8)
from stable_audio_tools.models import attention
from stable_audio_tools.models.blocks import FourierFeatures
from stable_audio_tools.models.factory import create_model_from_config

from conftest import needs_cpu_bf16
from test_generate_cli import UNCOND, cond_config, read, save_model

STEPS = 4


def _randomised(config, seed=0):
    """The model with weights drawn N(0, 0.2) (the zero-initialised convs / scales would hide any error)."""
    torch.manual_seed(seed)
    model = create_model_from_config(config).eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model


def _rel_err(fast, exact):
    return ((fast - exact).norm() / exact.norm()).item()


@pytest.fixture(scope="module")
def cond_model(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    t5 = make_tiny_t5(tmp_path_factory.mktemp("fast_t5") / "t5")
    return _randomised(cond_config(t5))


COND = [{"prompt": "rain", "seconds_start": 0, "seconds_total": 0.5}]


def _cond(model, **kwargs):
    return generate_diffusion_cond(model, steps=STEPS, cfg_scale=3.0, conditioning=COND, sample_size=4096, seed=5,
                                   disable_tqdm=True, **kwargs)


@needs_cpu_bf16
def test_fast_mode_gives_finite_audio_close_to_exact_mode(cond_model):
    exact = _cond(cond_model)
    enable_fast_mode(cond_model)
    try:
        fast = _cond(cond_model)
        fast_latents = _cond(cond_model, return_latents=True)
    finally:
        enable_fast_mode(cond_model, None)
    assert fast.dtype == torch.float32 and fast_latents.dtype == torch.float32  # the final latent stays float32
    assert torch.isfinite(fast).all()
    assert 0 < _rel_err(fast, exact) < 0.1
    assert torch.equal(_cond(cond_model), exact)  # back in exact mode: the same numbers again


def test_exact_mode_is_untouched_by_the_fast_mode_machinery():
    model = _randomised(UNCOND)
    baseline = generate_diffusion_uncond(model, steps=STEPS, sample_size=2048, seed=2, disable_tqdm=True)
    assert autocast_dtype_of(model) is None
    enable_fast_mode(model)
    enable_fast_mode(model, None)
    assert torch.equal(generate_diffusion_uncond(model, steps=STEPS, sample_size=2048, seed=2, disable_tqdm=True),
                       baseline)


class _DtypeRecorder:
    """Forward hooks recording the output dtype of every FourierFeatures / nn.Linear, plus wrappers around
    ``F.layer_norm`` (the dtype norms compute in), around ``RotaryEmbedding.forward`` and ``apply_rotary_pos_emb`` recording the dtypes of the
    frequencies and of the rotation."""

    def __init__(self, model, monkeypatch):
        self.seen = {"rope_freqs": set(), "rope_apply": set(), "norm": set(), "timestep": set(), "linear": set()}
        self.handles = []
        kinds = ((FourierFeatures, "timestep"), (nn.Linear, "linear"))
        for module in model.modules():
            for cls, kind in kinds:
                if isinstance(module, cls):
                    self.handles.append(module.register_forward_hook(self._hook(kind)))
        original = attention.apply_rotary_pos_emb

        def recording(t, freqs, scale=1.0):
            out = original(t, freqs, scale)
            self.seen["rope_apply"].add((t.dtype, freqs.dtype, out.dtype))
            return out

        monkeypatch.setattr(attention, "apply_rotary_pos_emb", recording)
        layer_norm = F.layer_norm

        def recording_norm(x, *args, **kwargs):  # the dtype the statistics are computed in
            self.seen["norm"].add(x.dtype)
            return layer_norm(x, *args, **kwargs)

        monkeypatch.setattr(F, "layer_norm", recording_norm)
        rope_forward = attention.RotaryEmbedding.forward

        def recording_rope(module, t):  # forward_from_seq_len calls forward directly: no hook fires
            freqs, scale = rope_forward(module, t)
            self.seen["rope_freqs"].add(freqs.dtype)
            return freqs, scale

        monkeypatch.setattr(attention.RotaryEmbedding, "forward", recording_rope)

    def _hook(self, kind):
        def hook(module, inputs, output):
            first = output[0] if isinstance(output, tuple) else output
            self.seen[kind].add(first.dtype)
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@needs_cpu_bf16
def test_fp32_guards_hold_under_autocast_in_inference(cond_model, monkeypatch):
    recorder = _DtypeRecorder(cond_model.model, monkeypatch)
    enable_fast_mode(cond_model)
    try:
        _cond(cond_model, return_latents=True)
    finally:
        enable_fast_mode(cond_model, None)
        recorder.remove()
    seen = recorder.seen
    assert seen["linear"] == {torch.bfloat16}  # autocast is really on inside the backbone
    assert seen["rope_freqs"] == {torch.float32}
    assert seen["rope_apply"] == {(torch.float32, torch.float32, torch.float32)}
    assert seen["norm"] == {torch.float32}
    assert seen["timestep"] == {torch.float32}


@needs_cpu_bf16
def test_fp32_guards_hold_in_a_bf16_mixed_training_forward(monkeypatch):
    """What Lightning's ``precision="bf16-mixed"`` does on the CPU: the forward under bf16 autocast."""
    model = _randomised(UNCOND).requires_grad_(True).train()
    recorder = _DtypeRecorder(model.model, monkeypatch)
    x, t = torch.randn(2, 1, 2048), torch.rand(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.model(x, t)
    recorder.remove()
    out.float().square().mean().backward()
    assert recorder.seen["linear"] == {torch.bfloat16}
    assert recorder.seen["rope_freqs"] == {torch.float32}
    assert recorder.seen["rope_apply"] == {(torch.float32, torch.float32, torch.float32)}
    assert recorder.seen["norm"] == {torch.float32} and recorder.seen["timestep"] == {torch.float32}
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in model.parameters())


def test_timestep_features_keep_float32_phases_under_autocast():
    torch.manual_seed(0)
    features = FourierFeatures(1, 256)
    t = torch.rand(16, 1)
    exact = features(t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        guarded = features(t)
    assert guarded.dtype == torch.float32 and torch.equal(guarded, exact)


def test_int8_quantisation_runs_on_the_cpu_and_stays_close():
    model = _randomised(UNCOND)
    exact = generate_diffusion_uncond(model, steps=STEPS, sample_size=2048, seed=1, disable_tqdm=True)
    quantize_int8(model)
    quantised = [m for m in model.model.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(quantised) == 4  # to_qkv, to_out and the two feed-forward layers of the one block
    assert type(model.model.model.transformer.project_in) is nn.Linear  # only the transformer blocks are quantised
    int8 = generate_diffusion_uncond(model, steps=STEPS, sample_size=2048, seed=1, disable_tqdm=True)
    assert torch.isfinite(int8).all() and 0 < _rel_err(int8, exact) < 0.1
    with pytest.raises(ValueError, match="do not combine"):
        enable_fast_mode(model)


def test_fast_mode_refuses_a_cpu_without_working_bf16_kernels(monkeypatch):
    from stable_audio_tools.inference import precision

    monkeypatch.setattr(precision, "cpu_bf16_problem", lambda: "pack_vnni2 is only supported when avx512 is supported")
    with pytest.raises(ValueError, match="bf16 fast mode cannot run on this CPU.*pack_vnni2.*--dtype float32"):
        precision.check_fast_mode("diffusion_cond", "bf16", device="cpu")
    precision.check_fast_mode("diffusion_cond", "bf16", device="cuda")  # the probe is about the CPU only


def test_helper_errors_name_the_problem():
    with pytest.raises(ValueError, match="--dtype 'fp8'"):
        fast_dtype("fp8")
    with pytest.raises(ValueError, match="float16 autocast needs a GPU"):
        with maybe_autocast("cpu", torch.float16):
            pass
    with pytest.raises(ValueError, match="dtype must be"):
        enable_fast_mode(nn.Linear(2, 2), torch.float32)
    with pytest.raises(ValueError, match="float32 weights"):
        quantize_int8(nn.Linear(2, 2).to(torch.bfloat16))
    with pytest.raises(ValueError, match="do not combine"):
        quantize_int8(enable_fast_mode(nn.Linear(2, 2)))
    info_out = AutocastBackbone(lambda x, t: (x.to(torch.bfloat16), {"uncond_output": x.to(torch.bfloat16)}),
                                torch.bfloat16)(torch.ones(1, 1, 2), torch.zeros(1))
    assert info_out[0].dtype == torch.float32 and info_out[1]["uncond_output"].dtype == torch.float32


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("fast_cli")
    return save_model(root / "cond", cond_config(make_tiny_t5(root / "t5")))


@pytest.mark.parametrize("flags", [pytest.param(("--dtype", "bf16"), marks=needs_cpu_bf16),
                                   ("--dtype", "float32", "--quantize", "int8")])
def test_generate_py_fast_mode_flags_are_recorded_and_reproduce(saved, tmp_path, flags):
    [path] = cli.main(["--pretrained-name", str(saved), "--prompt", "rain", "--seconds", "0.25", "--steps", "3",
                       "--seed", "4", "--device", "cpu", *flags, "--output-dir", str(tmp_path / "a")])
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["dtype"] == flags[1]
    assert sidecar["quantize"] == (flags[3] if len(flags) > 2 else "none")
    [again] = cli.main(["--from-sidecar", str(path.with_suffix(".json")), "--output-dir", str(tmp_path / "b")])
    assert np.array_equal(read(again), read(path)) and np.isfinite(read(path)).all()


def test_generate_py_refuses_fast_mode_combinations(saved, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--pretrained-name", str(saved), "--prompt", "x", "--device", "cpu", "--dtype", "bfloat16",
                  "--quantize", "int8", "--output-dir", str(tmp_path)])
    assert "--quantize int8 runs with float32 weights" in str(e.value)
    with pytest.raises(SystemExit) as e:
        cli.main(["--pretrained-name", str(saved), "--prompt", "x", "--device", "cpu", "--dtype", "bf16",
                  "--quantize", "int8", "--output-dir", str(tmp_path)])
    assert "not --dtype bf16" in str(e.value)


@needs_cpu_bf16
def test_gradio_loads_fast_and_int8_models_and_refuses_model_half_with_them(saved):
    import run_gradio
    from stable_audio_tools.interface import gradio

    model, _ = gradio.load_model(pretrained_name=str(saved), device="cpu", dtype="bf16")
    assert autocast_dtype_of(model) == torch.bfloat16
    model, _ = gradio.load_model(pretrained_name=str(saved), device="cpu", quantize="int8")
    assert any(isinstance(m, DynamicQuantizedLinear) for m in model.model.modules())
    with pytest.raises(ValueError, match="--quantize int8 runs with float32"):
        gradio.load_model(pretrained_name=str(saved), device="cpu", dtype="bf16", quantize="int8")
    with pytest.raises(SystemExit):
        run_gradio.main(["--pretrained-name", str(saved), "--model-half", "--dtype", "bf16"])


def test_generate_py_refuses_int8_with_adapters(saved, tmp_path):
    adapter = tmp_path / "lora.safetensors"
    adapter.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        cli.main(["--pretrained-name", str(saved), "--prompt", "x", "--device", "cpu", "--quantize", "int8",
                  "--adapter", str(adapter), "--output-dir", str(tmp_path)])
    assert "--quantize int8 does not combine with --adapter" in str(e.value)


@needs_cpu_bf16
def test_fast_mode_linear_layers_keep_a_bf16_copy_that_gives_autocasts_own_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4, bias=False))
    x = torch.randn(3, 8)
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x)
        keys = list(model.state_dict())
        enable_fast_mode(model)
        assert all(isinstance(m, CastWeightLinear) and m._cast_weight.dtype == torch.bfloat16
                   for m in model if isinstance(m, nn.Linear))
        assert list(model.state_dict()) == keys  # the copies stay out of the state dict
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(x), autocast)
        assert torch.equal(model(x), exact)  # outside autocast: the float32 weights
        enable_fast_mode(model, None)
        assert all(type(m) is nn.Linear and not hasattr(m, "_cast_weight") for m in (model[0], model[2]))
        assert torch.equal(model(x), exact)
