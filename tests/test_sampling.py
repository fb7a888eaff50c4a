"""Samplers and schedules against closed-form cases.

Data x0 ~ N(MU, S^2) independently per channel, so the optimal model outputs are known exactly:
- v-objective (x_t = cos(pi t/2) x0 + sin(pi t/2) eps): v* = alpha E[eps|x_t] - sigma E[x0|x_t];
- rectified flow (x_t = (1 - t) x0 + t eps): v* = E[eps|x_t] - E[x0|x_t].
For Gaussian data the probability-flow ODE is an affine map of the starting noise, so deterministic samplers must
reproduce it sample by sample; stochastic samplers must reproduce the data mean and std.
"""
import math

import pytest
import torch

from stable_audio_tools.inference import k_samplers as K
from stable_audio_tools.inference.dpm_solver import sample_dpm_adaptive
from stable_audio_tools.inference.sampling import (
    K_SAMPLER_TYPES, RF_SAMPLER_TYPES, BrownianTreeNoiseSampler, DistributionShift, VDenoiser, alpha_sigma_to_t,
    get_alphas_sigmas, get_bmask, get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential,
    rf_logsnr_schedule, sample, sample_discrete_euler, sample_flow_dpmpp, sample_flow_pingpong, sample_k, sample_rf,
    sample_rf_euler, sample_rk4, sample_timesteps_logsnr, truncated_logistic_normal_rescaled,
)

MU = torch.tensor([1.0, -0.5]).view(1, 2, 1)
S = torch.tensor([0.5, 1.5]).view(1, 2, 1)
N = 4096


def v_model(x, t, return_info=False, **kwargs):
    """Exact v-prediction for Gaussian data (``return_info`` mimics a CFG model for v-ddim-cfgpp)."""
    if return_info:
        v = v_model(x, t)
        return v, {"uncond_output": v}
    t = t.view(-1, 1, 1)
    alpha, sigma = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
    var = alpha ** 2 * S ** 2 + sigma ** 2
    r = x - alpha * MU
    x0 = MU + alpha * S ** 2 / var * r
    eps = sigma / var * r
    return alpha * eps - sigma * x0


def rf_model(x, t, **kwargs):
    """Exact rectified-flow velocity for Gaussian data."""
    t = t.view(-1, 1, 1)
    var = (1 - t) ** 2 * S ** 2 + t ** 2
    r = x - (1 - t) * MU
    return t / var * r - (MU + (1 - t) * S ** 2 / var * r)


def rf_consistency_model(x, t, **kwargs):
    """Velocity of a perfectly distilled RF model: its data prediction x - t v lands on the ODE's endpoint."""
    t = t.view(-1, 1, 1)
    z = (x - (1 - t) * MU) / ((1 - t) ** 2 * S ** 2 + t ** 2).sqrt()
    return (x - (MU + S * z)) / t


def ode_endpoint_v(noise, sigma_max):
    """Exact probability-flow endpoint for k-diffusion samplers started at noise * sigma_max."""
    alpha0, sigma0 = 1 / math.sqrt(sigma_max ** 2 + 1), sigma_max / math.sqrt(sigma_max ** 2 + 1)
    z = (noise * sigma0 - alpha0 * MU) / (alpha0 ** 2 * S ** 2 + sigma0 ** 2).sqrt()
    return MU + S * z


def _noise(seed=0):
    return torch.randn(N, 2, 1, generator=torch.Generator().manual_seed(seed))


def _assert_moments(out, mean_tol=0.05, std_rtol=0.06):
    mean, std = out.mean((0, 2)), out.std((0, 2))
    assert torch.allclose(mean, MU.flatten(), atol=mean_tol), mean
    assert torch.allclose(std, S.flatten(), rtol=std_rtol), std


# ------------------------------------------------------------------------------------------ analytic sampling
@pytest.mark.parametrize("sampler_type,steps,tol", [
    ("k-heun", 25, 0.03), ("k-dpm-2", 25, 0.03), ("k-lms", 50, 0.05), ("dpmpp-2m", 25, 0.03),
    ("k-dpm-fast", 25, 0.03), ("k-dpm-adaptive", 10, 0.03),
])
def test_deterministic_k_samplers_follow_the_exact_ode(sampler_type, steps, tol):
    noise = _noise()
    out = sample_k(v_model, noise, steps=steps, sampler_type=sampler_type, sigma_min=0.01, sigma_max=80,
                   device="cpu", disable_tqdm=True)
    expected = ode_endpoint_v(noise, 80)
    assert (out - expected).abs().max() < tol * 4
    assert (out - expected).abs().mean() < tol


@pytest.mark.parametrize("sampler_type,steps", [("dpmpp-2m-sde", 25), ("dpmpp-3m-sde", 25),
                                                ("k-dpmpp-2s-ancestral", 50)])
def test_stochastic_k_samplers_match_data_moments(sampler_type, steps):
    torch.manual_seed(3)
    out = sample_k(v_model, _noise(), steps=steps, sampler_type=sampler_type, sigma_min=0.01, sigma_max=80,
                   disable_tqdm=True)
    _assert_moments(out)


@pytest.mark.parametrize("sampler_type", ["v-ddim", "v-ddim-cfgpp"])
def test_v_ddim_follows_the_exact_ode(sampler_type):
    noise = _noise()
    out = sample_k(v_model, noise, steps=100, sampler_type=sampler_type, sigma_max=100, disable_tqdm=True)
    expected = MU + S * noise  # starts exactly at t = 1 (sigma_max clamped to 1)
    assert (out - expected).abs().mean() < 0.02


def test_v_ddim_with_eta_adds_noise_but_keeps_moments():
    torch.manual_seed(0)
    out = sample(v_model, _noise(), 250, eta=1.0, disable_tqdm=True)
    _assert_moments(out)
    assert (out - (MU + S * _noise())).abs().mean() > 0.05


@pytest.mark.parametrize("fn,steps,tol", [(sample_discrete_euler, 100, 0.02), (sample_rk4, 10, 1e-4),
                                          (sample_flow_dpmpp, 20, 0.01)])
def test_rectified_flow_ode_samplers_follow_the_exact_map(fn, steps, tol):
    noise = _noise()
    out = fn(rf_model, noise, steps=steps, disable_tqdm=True)
    assert (out - (MU + S * noise)).abs().mean() < tol


def test_pingpong_with_a_consistency_model_samples_the_data_distribution():
    torch.manual_seed(0)
    out = sample_flow_pingpong(rf_consistency_model, _noise(), sigmas=rf_logsnr_schedule(8), disable_tqdm=True)
    _assert_moments(out)


@pytest.mark.parametrize("sampler_type", RF_SAMPLER_TYPES)
def test_sample_rf_dispatch_uses_the_logsnr_schedule(sampler_type):
    noise = _noise()[:64]
    torch.manual_seed(1)
    out = sample_rf(rf_model, noise, steps=6, sampler_type=sampler_type, disable_tqdm=True)
    assert out.shape == noise.shape and torch.isfinite(out).all()
    if sampler_type == "euler":
        torch.testing.assert_close(out, sample_rf_euler(rf_model, noise, rf_logsnr_schedule(6), disable=True))


def test_sample_rf_variation_starts_from_interpolated_init():
    init, noise = torch.full((4, 2, 8), 0.25), _noise()[:4].expand(-1, -1, 8)
    seen = []
    sample_rf(rf_model, noise, init_data=init, steps=3, sigma_max=0.4, disable_tqdm=True,
              callback=lambda info: seen.append(info))
    first_t = seen[0]["t"]
    assert float(first_t) == pytest.approx(0.4)
    # sampling from t = 0 only copies the init data
    out = sample_rf(rf_model, noise, init_data=init, steps=3, sigma_max=0.0 + 1e-9, sampler_type="rk4",
                    disable_tqdm=True)
    torch.testing.assert_close(out, init, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("sampler_type", ["dpmpp-2m-sde", "dpmpp-3m-sde", "k-dpmpp-2s-ancestral"])
def test_stochastic_samplers_reproduce_with_manual_seed(sampler_type):
    noise = _noise()[:8]

    def run(seed):
        torch.manual_seed(seed)
        return sample_k(v_model, noise, steps=5, sampler_type=sampler_type, disable_tqdm=True)

    torch.testing.assert_close(run(11), run(11), rtol=0, atol=0)
    assert not torch.equal(run(11), run(12))


@pytest.mark.parametrize("sampler_type", ["k-heun", "dpmpp-2m", "v-ddim"])
def test_deterministic_samplers_ignore_the_global_rng(sampler_type):
    noise = _noise()[:8]
    torch.manual_seed(1)
    a = sample_k(v_model, noise, steps=5, sampler_type=sampler_type, disable_tqdm=True)
    torch.manual_seed(2)
    b = sample_k(v_model, noise, steps=5, sampler_type=sampler_type, disable_tqdm=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_brownian_noise_sampler_is_unit_variance_and_seeded_from_torch():
    x = torch.zeros(20000)
    torch.manual_seed(5)
    ns = BrownianTreeNoiseSampler(x, 0.01, 10.0)
    after_construction = torch.rand(1)
    a = ns(torch.tensor(10.0), torch.tensor(1.0))
    assert abs(float(a.std()) - 1) < 0.03 and abs(float(a.mean())) < 0.03
    torch.manual_seed(5)
    ns2 = BrownianTreeNoiseSampler(x, 0.01, 10.0)
    torch.testing.assert_close(torch.rand(1), after_construction)
    torch.testing.assert_close(ns2(torch.tensor(10.0), torch.tensor(1.0)), a)
    # increments over adjacent intervals are independent; a batched tree needs one seed per item
    b = ns(torch.tensor(1.0), torch.tensor(0.1))
    assert abs(float((a * b).mean())) < 0.03
    with pytest.raises(ValueError, match="one seed per batch"):
        K.BatchedBrownianTree(torch.zeros(3, 2), torch.tensor(0.0), torch.tensor(1.0), seed=[1, 2])


# ------------------------------------------------------------------------------------------ schedules / helpers
def test_schedules_endpoints():
    for sigmas in (get_sigmas_polyexponential(10, 0.01, 100, rho=1.0), get_sigmas_polyexponential(10, 0.01, 100, 2.0),
                   get_sigmas_karras(10, 0.01, 100), get_sigmas_exponential(10, 0.01, 100)):
        assert sigmas.shape == (11,)
        assert float(sigmas[0]) == pytest.approx(100, rel=1e-5)
        assert float(sigmas[-2]) == pytest.approx(0.01, rel=1e-5)
        assert float(sigmas[-1]) == 0
        assert (sigmas[1:] < sigmas[:-1]).all()
    # rho = 1 is log-linear
    logs = get_sigmas_polyexponential(5, 0.01, 100)[:-1].log()
    torch.testing.assert_close(logs[1:] - logs[:-1], torch.full((4,), -math.log(1e4) / 4))
    t = rf_logsnr_schedule(4)
    assert float(t[0]) == 1 and float(t[-1]) == 0
    torch.testing.assert_close(t[1:-1], torch.sigmoid(-torch.linspace(-6, 2, 5))[1:-1])
    t = rf_logsnr_schedule(4, sigma_max=0.5)
    assert float(t[0]) == 0.5 and (t[1:] < t[:-1]).all()


def test_distribution_shift_formula_and_clamping():
    shift = DistributionShift(base_shift=0.5, max_shift=1.15, max_length=4096, min_length=256)
    t = torch.linspace(0, 1, 11)
    length = 1024
    mu = -(0.5 + 0.65 * (length - 256) / (4096 - 256))
    expected = 1 - math.exp(mu) / (math.exp(mu) + (1 / (1 - t) - 1))
    torch.testing.assert_close(shift.time_shift(t, length), expected)
    out = shift.time_shift(t, length)
    assert float(out[0]) == 0 and float(out[-1]) == 1 and (out[1:-1] > t[1:-1]).all()
    torch.testing.assert_close(shift.time_shift(t, 10), shift.time_shift(t, 256))
    torch.testing.assert_close(shift.time_shift(t, 10 ** 6), shift.time_shift(t, 4096))
    sine = DistributionShift(use_sine=True)
    torch.testing.assert_close(sine.time_shift(t, 512), torch.sin(DistributionShift().time_shift(t, 512) * math.pi / 2))
    with pytest.raises(ValueError):
        DistributionShift(max_length=10, min_length=10)


def test_alpha_sigma_helpers_and_vdenoiser():
    t = torch.rand(16)
    alpha, sigma = get_alphas_sigmas(t)
    torch.testing.assert_close(alpha_sigma_to_t(alpha, sigma), t)
    den = VDenoiser(v_model)
    s = torch.tensor([0.5, 3.0])
    c_skip, c_out, c_in = den.get_scalings(s)
    torch.testing.assert_close(c_skip, 1 / (s ** 2 + 1))
    torch.testing.assert_close(c_out, -s / (s ** 2 + 1).sqrt())
    torch.testing.assert_close(c_in, 1 / (s ** 2 + 1).sqrt())
    torch.testing.assert_close(den.t_to_sigma(den.sigma_to_t(s)), s)
    # with the exact v-model the denoiser returns E[x0 | x0 + sigma eps]
    x = torch.randn(2, 2, 3)
    var = S ** 2 + s.view(-1, 1, 1) ** 2
    torch.testing.assert_close(den(x, s), MU + S ** 2 / var * (x - MU), atol=1e-5, rtol=1e-5)


def test_timestep_samplers_and_masks():
    torch.manual_seed(0)
    t = sample_timesteps_logsnr(1000)
    assert t.shape == (1000,) and float(t.min()) >= 1e-4 and float(t.max()) <= 1 - 1e-4
    u = truncated_logistic_normal_rescaled((2000,))
    assert float(u.min()) >= 0 and float(u.max()) <= 1
    assert float(truncated_logistic_normal_rescaled((2000,), left_trunc=0.3).min()) >= 0
    mask = torch.tensor([0.0, 0.3, 0.6, 1.0])
    assert get_bmask(0, 4, mask).tolist() == [0, 1, 1, 1]
    assert get_bmask(3, 4, mask).tolist() == [0, 0, 0, 1]


# ------------------------------------------------------------------------------------------ callbacks / errors
@pytest.mark.parametrize("sampler_type", K_SAMPLER_TYPES + ("v-ddim", "v-ddim-cfgpp"))
def test_sample_k_callbacks(sampler_type):
    seen = []
    sample_k(v_model, _noise()[:4], steps=4, sampler_type=sampler_type, disable_tqdm=True,
             callback=lambda info: seen.append(info))
    assert seen
    for info in seen:
        assert {"x", "i", "sigma", "t", "denoised"} <= set(info), set(info)
        assert info["denoised"].shape == (4, 2, 1)
    if sampler_type not in ("k-dpm-adaptive",):
        assert [info["i"] for info in seen] == list(range(len(seen)))


@pytest.mark.parametrize("sampler_type", RF_SAMPLER_TYPES)
def test_sample_rf_callbacks(sampler_type):
    seen = []
    sample_rf(rf_model, _noise()[:4], steps=3, sampler_type=sampler_type, disable_tqdm=True,
              callback=lambda info: seen.append(info))
    assert len(seen) == 3
    for info in seen:
        assert {"x", "i", "sigma", "t", "denoised"} <= set(info)


def test_unknown_sampler_names_raise_with_the_accepted_list():
    with pytest.raises(ValueError, match="dpmpp-3m-sde") as err:
        sample_k(v_model, _noise()[:2], steps=2, sampler_type="euler")
    assert "v-ddim" in str(err.value)
    with pytest.raises(ValueError, match="pingpong"):
        sample_rf(rf_model, _noise()[:2], steps=2, sampler_type="dpmpp-2m-sde")
    with pytest.raises(ValueError, match="sigma_min and sigma_max"):
        sample_dpm_adaptive(VDenoiser(v_model), _noise()[:2], 0.0, 1.0, disable=True)
    with pytest.raises(ValueError, match="steps"):
        sample_discrete_euler(rf_model, _noise()[:2])


def test_cond_fn_guidance_moves_samples():
    noise = _noise()[:256]

    def push_up(x, sigma, denoised=None, **kwargs):  # moves the data prediction by +0.1 at every step
        return 0.1 / K.append_dims(sigma, x.ndim) ** 2 * torch.ones_like(x)

    base = sample_k(v_model, noise, steps=10, sampler_type="dpmpp-2m", disable_tqdm=True)
    guided = sample_k(v_model, noise, steps=10, sampler_type="dpmpp-2m", disable_tqdm=True, cond_fn=push_up)
    assert 0.05 < float((guided - base).mean()) < 2
    base_rf = sample_rf(rf_model, noise, steps=10, disable_tqdm=True)
    guided_rf = sample_rf(rf_model, noise, steps=10, disable_tqdm=True, cond_fn=push_up)
    assert 0.05 < float((guided_rf - base_rf).mean()) < 2
