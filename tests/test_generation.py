"""generate_diffusion_* with small stand-in models that expose the wrapper attributes the generators use
(``model``, ``conditioner``, ``pretransform``, ``io_channels``, ``sample_rate``, ``diffusion_objective``,
``dist_shift``, ``get_conditioning_inputs``). The backbone is the exact model for Gaussian data whose mean is
shifted by the conditioning value, so generated clips must land on that mean."""
import logging
import math

import pytest
import torch
from torch import nn

from stable_audio_tools.inference.generation import (
    generate_diffusion_cond, generate_diffusion_cond_inpaint, generate_diffusion_uncond, resolve_device,
)
from stable_audio_tools.inference.utils import build_mask, decode_latents

MU = torch.tensor([1.0, -0.5]).view(1, 2, 1)
S = torch.tensor([0.5, 1.5]).view(1, 2, 1)
RATIO = 4


def exact_output(x, t, mu, objective):
    t = t.view(-1, 1, 1).to(x.dtype)
    if objective == "v":
        alpha, sigma = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
    else:
        alpha, sigma = 1 - t, t
    var = alpha ** 2 * S ** 2 + sigma ** 2
    r = x - alpha * mu
    x0 = mu + alpha * S ** 2 / var * r
    eps = sigma / var * r
    return alpha * eps - sigma * x0 if objective == "v" else eps - x0


class Backbone(nn.Module):
    """Exact v / RF model for N(MU + shift, S^2) data, where ``shift`` comes in as ``cross_attn_cond``."""

    def __init__(self, objective):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.objective = objective
        self.calls = []

    def forward(self, x, t, cross_attn_cond=None, cfg_scale=1.0, **kwargs):
        self.calls.append({"cfg_scale": cfg_scale, "cross_attn_cond": cross_attn_cond, **kwargs})
        shift = 0 if cross_attn_cond is None else cross_attn_cond.view(-1, 1, 1)
        return exact_output(x, t, MU + shift, self.objective) * self.gain


class Conditioner(nn.Module):
    def forward(self, metadata, device):
        values = torch.tensor([[float(m["shift"])] for m in metadata], device=device)
        return {"shift": [values.unsqueeze(-1), torch.ones_like(values)]}


class Pretransform(nn.Module):
    """Frame-local stand-in codec: encode = mean over RATIO samples, decode = repeat."""

    downsampling_ratio = RATIO
    io_channels = 2

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return x.reshape(*x.shape[:-1], -1, RATIO).mean(-1)

    def decode(self, z):
        return z.repeat_interleave(RATIO, -1)


class CondModel(nn.Module):
    def __init__(self, objective="v", pretransform=None):
        super().__init__()
        self.model = Backbone(objective)
        self.conditioner = Conditioner()
        self.pretransform = pretransform
        self.io_channels = 2
        self.sample_rate = 16000
        self.diffusion_objective = objective
        self.dist_shift = None

    def get_conditioning_inputs(self, cond, negative=False):
        inputs = {"cross_attn_cond": cond["shift"][0], "cross_attn_mask": cond["shift"][1]}
        if "inpaint_mask" in cond:
            inputs["input_concat_cond"] = torch.cat([cond["inpaint_mask"][0], cond["inpaint_masked_input"][0]], 1)
        return {f"negative_{k}": v for k, v in inputs.items()} if negative else inputs


class UncondModel(nn.Module):
    def __init__(self, objective="v"):
        super().__init__()
        self.model = Backbone(objective)
        self.pretransform = None
        self.io_channels = 2
        self.sample_size = 256
        self.sample_rate = 16000
        self.min_input_length = 1
        self.diffusion_objective = objective


META = [{"shift": 0.0}, {"shift": 2.0}]


def _item_means(audio):
    return audio.mean(-1)


@pytest.mark.parametrize("objective,sampler", [("v", "dpmpp-2m"), ("v", "v-ddim"), ("rectified_flow", "euler"),
                                               ("rf_denoiser", "dpmpp")])
def test_generate_cond_follows_conditioning_and_reproduces(objective, sampler):
    model = CondModel(objective, Pretransform())
    kwargs = dict(steps=30, cfg_scale=3.0, conditioning=META, batch_size=2, sample_size=4096, device="cpu",
                  sampler_type=sampler, disable_tqdm=True)
    a = generate_diffusion_cond(model, seed=3, **kwargs)
    assert a.shape == (2, 2, 4096)
    means = _item_means(a)
    torch.testing.assert_close(means[0], MU.flatten(), atol=0.15, rtol=0)
    torch.testing.assert_close(means[1], MU.flatten() + 2, atol=0.15, rtol=0)
    torch.testing.assert_close(generate_diffusion_cond(model, seed=3, **kwargs), a, rtol=0, atol=0)
    assert not torch.equal(generate_diffusion_cond(model, seed=4, **kwargs), a)
    latents = generate_diffusion_cond(model, seed=3, return_latents=True, **kwargs)
    assert latents.shape == (2, 2, 4096 // RATIO)
    torch.testing.assert_close(model.pretransform.decode(latents), a)
    call = model.model.calls[-1]
    assert call["cfg_scale"] == 3.0 and call["batch_cfg"] is True and call["rescale_cfg"] is True
    assert "dist_shift" not in call and "sampler_type" not in call


def test_generate_cond_seed_minus_one_is_logged(caplog):
    model = CondModel()
    with caplog.at_level(logging.INFO, logger="stable_audio_tools.inference.generation"):
        generate_diffusion_cond(model, steps=2, conditioning=META, batch_size=2, sample_size=16, seed=-1,
                                disable_tqdm=True)
    assert any("seed" in rec.getMessage() for rec in caplog.records)


def test_generate_cond_negative_conditioning_and_tensors():
    model = CondModel()
    tensors = model.conditioner(META, "cpu")
    frozen = {k: [t.clone() for t in v] for k, v in tensors.items()}
    out = generate_diffusion_cond(model, steps=3, conditioning_tensors=tensors, negative_conditioning=META,
                                  batch_size=2, sample_size=32, seed=0, device="cpu", disable_tqdm=True)
    assert out.shape == (2, 2, 32)
    assert "negative_cross_attn_cond" in model.model.calls[-1]
    assert set(tensors) == set(frozen)
    with pytest.raises(ValueError, match="conditioning"):
        generate_diffusion_cond(model, steps=2, sample_size=16, seed=0)


@pytest.mark.parametrize("objective,level", [("v", 0.02), ("rectified_flow", 0.02)])
def test_init_audio_variation_stays_close_to_the_init(objective, level):
    model = CondModel(objective, Pretransform())
    init = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0)) * S.view(2, 1) + MU.view(2, 1)
    out = generate_diffusion_cond(model, steps=10, conditioning=META[:1], batch_size=1, sample_size=4096, seed=1,
                                  device="cpu", init_audio=(16000, init), init_noise_level=level,
                                  sampler_type="dpmpp-2m" if objective == "v" else "euler", disable_tqdm=True)
    expected = model.pretransform.decode(model.pretransform.encode(init.unsqueeze(0)))
    assert (out - expected).abs().mean() < 0.05
    far = generate_diffusion_cond(model, steps=10, conditioning=META[:1], batch_size=1, sample_size=4096, seed=1,
                                  device="cpu", init_audio=(16000, init), init_noise_level=80.0,
                                  sampler_type="dpmpp-2m" if objective == "v" else "euler", disable_tqdm=True)
    assert (far - expected).abs().mean() > 0.1


def test_generate_uncond_dispatches_on_objective():
    v_model = UncondModel("v")
    out = generate_diffusion_uncond(v_model, steps=20, batch_size=2, sample_size=2048, seed=7, device="cpu",
                                    sampler_type="dpmpp-2m", disable_tqdm=True)
    assert out.shape == (2, 2, 2048)
    torch.testing.assert_close(out.mean((0, 2)), MU.flatten(), atol=0.1, rtol=0)
    again = generate_diffusion_uncond(v_model, steps=20, batch_size=2, sample_size=2048, seed=7,
                                      sampler_type="dpmpp-2m", disable_tqdm=True)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    default = generate_diffusion_uncond(v_model, steps=3, batch_size=1, sample_size=64, seed=7, disable_tqdm=True)
    assert default.shape == (1, 2, 64)
    with pytest.raises(ValueError, match="sample_rf"):
        generate_diffusion_uncond(v_model, steps=2, sample_size=16, seed=0, sampler_type="euler")
    rf_model = UncondModel("rectified_flow")
    out = generate_diffusion_uncond(rf_model, steps=20, batch_size=2, sample_size=2048, seed=7,
                                    sampler_type="rk4", sigma_min=0.3, rho=1.0, disable_tqdm=True)
    torch.testing.assert_close(out.mean((0, 2)), MU.flatten(), atol=0.1, rtol=0)
    torch.testing.assert_close(out.std((0, 2)), S.flatten(), rtol=0.1, atol=0)


def test_generate_casts_to_the_model_dtype():
    model = CondModel()
    model.model.double()
    out = generate_diffusion_cond(model, steps=3, conditioning=META, batch_size=2, sample_size=16, seed=0,
                                  disable_tqdm=True)
    assert out.dtype == torch.float64


def test_inpaint_passes_mask_and_masked_input():
    model = CondModel("v", Pretransform())
    audio = torch.ones(2, 256)
    mask = torch.zeros(1, 256)
    mask[:, :128] = 1
    tensors = model.conditioner(META, "cpu")
    out = generate_diffusion_cond_inpaint(model, steps=3, conditioning_tensors=tensors, negative_conditioning=META,
                                          batch_size=2, sample_size=256, seed=0, device="cpu",
                                          inpaint_audio=(16000, audio), inpaint_mask=mask, disable_tqdm=True)
    assert out.shape == (2, 2, 256)
    assert "inpaint_mask" not in tensors
    call = model.model.calls[-1]
    concat = call["input_concat_cond"]
    assert concat.shape == (2, 3, 256 // RATIO)
    expected_mask = torch.zeros(2, 1, 64)
    expected_mask[..., :32] = 1
    torch.testing.assert_close(concat[:, :1], expected_mask)
    torch.testing.assert_close(concat[:, 1:], expected_mask.expand(-1, 2, -1))
    assert call["negative_input_concat_cond"].shape == (2, 3, 64)
    plain = generate_diffusion_cond_inpaint(model, steps=3, conditioning=META, batch_size=2, sample_size=256,
                                            seed=0, device="cpu", disable_tqdm=True)
    assert plain.shape == (2, 2, 256)
    assert float(model.model.calls[-1]["input_concat_cond"].abs().sum()) == 0


def test_chunked_decode_matches_full_decode():
    pretransform = Pretransform()
    latents = torch.randn(2, 2, 300)
    full = decode_latents(pretransform, latents)
    chunked = decode_latents(pretransform, latents, chunked=True, chunk_size=64, overlap=16)
    torch.testing.assert_close(chunked, full, rtol=0, atol=0)
    model = CondModel("v", pretransform)
    kwargs = dict(steps=3, conditioning=META, batch_size=2, sample_size=1200, seed=0, disable_tqdm=True)
    torch.testing.assert_close(generate_diffusion_cond(model, decode_chunked=True, decode_chunk_size=64,
                                                       decode_overlap=8, **kwargs),
                               generate_diffusion_cond(model, **kwargs))
    with pytest.raises(ValueError, match="overlap"):
        decode_latents(pretransform, latents, chunked=True, chunk_size=16, overlap=16)


def test_build_mask_and_default_device():
    mask = build_mask(100, {"maskstart": 20, "maskend": 80, "softnessL": 10, "softnessR": 10, "marination": 0})
    assert mask.shape == (100,)
    assert float(mask[:20].abs().sum()) == 0 and float(mask[80:].abs().sum()) == 0
    assert torch.all(mask[30:70] == 1)
    assert float(mask[20]) == 0 and 0 < float(mask[25]) < 1 and (mask[20:30][1:] >= mask[20:30][:-1]).all()
    marinated = build_mask(100, {"maskstart": 20, "maskend": 80, "softnessL": 0, "softnessR": 0, "marination": 0.25})
    assert float(marinated.max()) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="marination"):
        build_mask(100, {"maskstart": 0, "maskend": 10})
    assert resolve_device(CondModel()) == torch.device("cpu")
    assert resolve_device(CondModel(), "cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------------------ upstream goldens
def _golden(name):
    import json

    from safetensors.torch import load_file

    from conftest import FIXTURES
    from stable_audio_tools.models.factory import create_model_from_config

    folder = FIXTURES / "golden" / name
    model = create_model_from_config(json.loads((folder / "model_config.json").read_text()))
    model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    return model.eval(), load_file(str(folder / "io.safetensors"))


def test_generate_uncond_reproduces_the_upstream_sample_k_golden():
    """Upstream's generate_diffusion_uncond crashed; ours must give exactly what it intended: seed, noise, then
    sample_k(model.model, noise, None, steps) with the default dpmpp-2m-sde sampler."""
    model, io = _golden("adp_uncond")
    with torch.no_grad():
        out = generate_diffusion_uncond(model, steps=3, batch_size=2, sample_size=64, seed=7, device="cpu",
                                        disable_tqdm=True)
    torch.testing.assert_close(out, io["out.sample_k_dpmpp2msde_steps3_seed7"], atol=1e-4, rtol=1e-4)
