"""Fast mode's bf16 decoder (inference.precision.enable_fast_decode): the decoder's convolutions run in bfloat16,
the decoded audio comes back float32, finite and close to the float32 decoder's, the encoder and the backbone's
weights are untouched, and exact mode restores the float32 decoder bit for bit. Loose bounds, no timings."""
import copy

import pytest
import torch
from torch import nn

from stable_audio_tools.inference.precision import enable_fast_decode, enable_fast_mode, fast_decode_dtype_of

from conftest import needs_cpu_bf16
from test_fast_mode import _randomised, _rel_err
from test_generate_cli import cond_config


@pytest.fixture
def config(tmp_path):
    from tiny_t5 import make_tiny_t5

    return cond_config(make_tiny_t5(tmp_path / "t5"))


def _conv_dtypes(module):
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
             for m in module.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    return seen, hooks


@needs_cpu_bf16
def test_fast_decoder_runs_bf16_convolutions_and_returns_float32_audio(config):
    model = _randomised(config)
    latents = torch.randn(1, config["model"]["io_channels"], 8)
    with torch.no_grad():
        exact = model.pretransform.decode(latents)
    backbone = {k: v.clone() for k, v in model.model.state_dict().items()}
    enable_fast_mode(model)
    assert fast_decode_dtype_of(model) == torch.bfloat16
    seen, hooks = _conv_dtypes(model.pretransform.model.decoder)
    with torch.no_grad():
        fast = model.pretransform.decode(latents)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert 0 < _rel_err(fast, exact) < 0.1
    assert all(p.dtype == torch.float32 for p in model.pretransform.model.encoder.parameters())
    assert all(torch.equal(v, backbone[k]) for k, v in model.model.state_dict().items())

    enable_fast_mode(model, None)  # exact mode again: the float32 decoder and its weight-norm keys are back
    assert fast_decode_dtype_of(model) is None
    assert any(k.endswith("weight_v") for k in model.pretransform.state_dict())
    with torch.no_grad():
        assert torch.equal(model.pretransform.decode(latents), exact)


@needs_cpu_bf16
def test_fast_decode_is_idempotent_survives_deepcopy_and_can_be_left_off(config):
    model = _randomised(config)
    enable_fast_decode(model)
    decoder = model.pretransform.model.decoder
    enable_fast_decode(model)
    assert model.pretransform.model.decoder is decoder
    assert fast_decode_dtype_of(copy.deepcopy(model)) == torch.bfloat16

    other = enable_fast_mode(_randomised(config), decoder=False)
    assert fast_decode_dtype_of(other) is None


def test_fast_decode_refuses_float16(config):
    with pytest.raises(ValueError, match="bfloat16"):
        enable_fast_decode(_randomised(config), torch.float16)
