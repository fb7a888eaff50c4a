"""Library side of generate.py: length planning, known-region replacement, ODE inversion and sample-domain joins.

Inversion and known-region checks use the exact Gaussian stand-in model of test_generation (clean data
N(MU + shift, S^2), the shift coming from the conditioning), so round-trip errors measure the method, not a model."""
import math

import pytest
import torch

from stable_audio_tools.inference.audio_edit import keep_mask_from_regions, kept_runs, parse_regions, paste_known
from stable_audio_tools.inference.editing import latent_keep_mask
from stable_audio_tools.inference.generation import generate_diffusion_cond
from stable_audio_tools.inference.lengths import config_extends_beyond_window, extends_beyond_window, plan_length
from stable_audio_tools.models.factory import create_model_from_config

from test_generate_cli import cond_config
from test_generation import MU, S, CondModel, Pretransform

SR = 16000


def _clip(seed=0, frames=256):
    generator = torch.Generator().manual_seed(seed)
    latents = MU + S * torch.randn(1, 2, frames, generator=generator)
    return latents.repeat_interleave(4, -1)  # the stand-in pretransform encodes this back to `latents` exactly


def _kwargs(objective_sampler, **extra):
    return dict(steps=60, cfg_scale=1.0, conditioning=[{"shift": 0.0}], sample_size=1024, device="cpu",
                sampler_type=objective_sampler, disable_tqdm=True, seed=1, **extra)


# ------------------------------------------------------------------------------------------------ lengths
def test_latent_length_is_proportional_to_the_asked_seconds():
    config = cond_config("t5-base")
    model = create_model_from_config(config)
    plans = [plan_length(model, config, seconds) for seconds in (0.1, 0.2, 0.4)]
    assert [p.latent_length for p in plans] == [100, 200, 400]
    assert [p.sample_size for p in plans] == [800, 1600, 3200]
    odd = plan_length(model, config, 0.101)  # 808 samples -> next multiple of 16 (ratio 8 x patch 2)
    assert (odd.samples, odd.sample_size, odd.latent_length) == (808, 816, 102)
    full = plan_length(model, config, 0.1, full_window=True)
    assert (full.sample_size, full.latent_length, full.samples) == (4096, 512, 800)


def test_lengths_beyond_the_window_need_rotary_positions(caplog):
    config = cond_config("t5-base")
    model = create_model_from_config(config)
    assert extends_beyond_window(model) and config_extends_beyond_window(config)
    plan = plan_length(model, config, 1.0)
    assert plan.beyond_window and plan.latent_length == 1000
    assert "beyond the model's training window" in caplog.text
    config["model"]["diffusion"]["config"].update(rotary_pos_emb=False, use_abs_pos_emb=True)
    model = create_model_from_config(config)
    assert not extends_beyond_window(model) and not config_extends_beyond_window(config)
    with pytest.raises(ValueError, match=r"--seconds 1 s is longer than this model can generate \(0.51 s"):
        plan_length(model, config, 1.0)
    with pytest.raises(ValueError, match="positive"):
        plan_length(model, config, 0.0)


def test_generation_computes_only_the_planned_latents():
    model = CondModel("v", Pretransform())
    for sample_size in (256, 512, 1024):
        latents = generate_diffusion_cond(model, return_latents=True, **{**_kwargs("dpmpp-2m"), "steps": 2,
                                                                          "sample_size": sample_size})
        assert latents.shape[-1] == sample_size // 4
        assert model.model.calls[-1]["cross_attn_cond"] is not None


# ------------------------------------------------------------------------------------------------ inversion
@pytest.mark.parametrize("objective,sampler,level", [("v", "dpmpp-2m", math.tan(math.pi / 2 * 0.8)),
                                                     ("v", "v-ddim", 0.8), ("rectified_flow", "euler", 0.8)])
def test_inversion_round_trip_returns_the_input(objective, sampler, level):
    model = CondModel(objective, Pretransform())
    clip = _clip()
    kwargs = _kwargs(sampler, init_audio=(SR, clip[0]), init_noise_level=level)
    inverted = generate_diffusion_cond(model, init_mode="invert", **kwargs)
    noised = generate_diffusion_cond(model, init_mode="noise", **kwargs)
    rms = lambda a: float(a.pow(2).mean().sqrt())  # noqa: E731
    assert rms(inverted - clip) < 0.08 * rms(clip)
    assert rms(noised - clip) > 5 * rms(inverted - clip)


def test_inversion_distance_grows_with_strength_and_vanishes_at_zero():
    model = CondModel("v", Pretransform())
    clip = _clip(3)
    distances = []
    for strength in (0.02, 0.2, 0.5, 0.8, 0.95):
        out = generate_diffusion_cond(model, init_mode="invert", init_audio=(SR, clip[0]),
                                      init_noise_level=math.tan(math.pi / 2 * strength),
                                      **{**_kwargs("dpmpp-2m"), "conditioning": [{"shift": 2.0}]})
        distances.append(float((out - clip).pow(2).mean().sqrt()))
    assert distances[0] < 0.05
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_init_mode_is_checked():
    with pytest.raises(ValueError, match="init_mode must be one of 'noise', 'invert'"):
        generate_diffusion_cond(CondModel("v", Pretransform()), init_mode="inverse", **_kwargs("dpmpp-2m"))


# ------------------------------------------------------------------------------------------------ known regions
@pytest.mark.parametrize("objective,sampler", [("v", "dpmpp-3m-sde"), ("v", "k-heun"), ("v", "v-ddim"),
                                               ("rectified_flow", "euler"), ("rf_denoiser", "pingpong")])
def test_known_region_replacement_keeps_known_latents(objective, sampler):
    model = CondModel(objective, Pretransform())
    clip = _clip(5)
    keep = torch.zeros(1024)
    keep[:300] = 1
    keep[700:] = 1
    latents = generate_diffusion_cond(model, keep_audio=(SR, clip[0]), keep_mask=keep, return_latents=True,
                                      **{**_kwargs(sampler), "conditioning": [{"shift": 2.0}]})
    known = Pretransform().encode(clip)
    torch.testing.assert_close(latents[..., :75], known[..., :75], atol=1e-4, rtol=0)
    torch.testing.assert_close(latents[..., 175:], known[..., 175:], atol=1e-4, rtol=0)
    gap = latents[..., 76:174].mean(-1).flatten()
    torch.testing.assert_close(gap, MU.flatten() + 2, atol=0.5, rtol=0)  # the gap follows the prompt


def test_keep_audio_and_mask_go_together():
    with pytest.raises(ValueError, match="keep_audio and keep_mask go together"):
        generate_diffusion_cond(CondModel("v", Pretransform()), keep_mask=torch.ones(1024), **_kwargs("dpmpp-2m"))


def test_latent_keep_mask_rounds_inwards():
    keep = torch.zeros(32)
    keep[3:21] = 1  # samples 3..20: frames of 4 samples 1..4 are fully kept, 0 and 5 only partly
    mask = latent_keep_mask(keep, 8)
    assert mask.shape == (1, 1, 8)
    assert mask.flatten().tolist() == [0, 1, 1, 1, 1, 0, 0, 0]


# ------------------------------------------------------------------------------------------------ joins
def test_parse_regions_sorts_merges_and_names_the_flag():
    assert parse_regions("5:6, 1:2,1.5:3") == [(1.0, 3.0), (5.0, 6.0)]
    for bad, message in (("", "is empty"), ("1-2", "not START:END"), ("a:2", "must be numbers"),
                         ("3:2", "START < END"), ("-1:2", "START < END")):
        with pytest.raises(ValueError, match=f"--mask.*{message}"):
            parse_regions(bad)
    mask = keep_mask_from_regions([(0.001, 0.002), (0.004, 0.005)], 100, 10000)
    assert kept_runs(mask) == [(0, 10), (20, 40), (50, 100)]


def test_paste_known_is_exact_and_continuous():
    n = 400
    t = torch.arange(n, dtype=torch.float64)
    given = torch.sin(t / 30).view(1, -1)
    generated = (torch.cos(t / 40) + 0.3).view(1, 1, -1)  # the decoder's output: other content and an offset
    keep = torch.zeros(n)
    keep[:100] = 1
    keep[250:300] = 1
    out = paste_known(generated, given, keep, fade=40)
    assert torch.equal(out[0, :, :100], given[:, :100]) and torch.equal(out[0, :, 250:300], given[:, 250:300])
    torch.testing.assert_close(out[0, :, 340:], generated[0, :, 340:], rtol=0, atol=0)
    torch.testing.assert_close(out[0, :, 140:210], generated[0, :, 140:210], rtol=0, atol=0)
    natural = (generated[0, 0, 1:] - generated[0, 0, :-1]).abs().max()
    for join in (100, 250, 300):  # each join steps no more than the decoder's own signal does
        step = (out[0, 0, join] - out[0, 0, join - 1]).abs()
        plain = (paste_known(generated, given, keep, fade=0)[0, 0, join]
                 - paste_known(generated, given, keep, fade=0)[0, 0, join - 1]).abs()
        assert step <= natural * 1.05 and plain > 4 * natural


def test_paste_known_checks_lengths():
    with pytest.raises(ValueError, match="same length"):
        paste_known(torch.zeros(1, 1, 10), torch.zeros(1, 9), torch.ones(10), 2)
