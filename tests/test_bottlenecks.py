"""Tests for the autoencoder bottlenecks, their quantizers and the bottleneck config factory."""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from stable_audio_tools.models.bottleneck import (
    BOTTLENECK_TYPES, DACRVQBottleneck, DitheredFSQBottleneck, FSQBottleneck, RVQBottleneck, SoftNormBottleneck,
    VAEBottleneck, WassersteinBottleneck, create_bottleneck_from_config)
from stable_audio_tools.models.config import ConfigError, ConfigWarning
from stable_audio_tools.models.quantizers import FSQ, ResidualVQ

FIXTURES = Path(__file__).parent / "fixtures"

# (config, encoder channels, latent channels after decode, expected info keys in train / eval)
CASES = {
    "tanh": ({"type": "tanh", "config": {"scale": 2.0}}, 8, 8, set(), set()),
    "vae": ({"type": "vae"}, 8, 4, {"kl"}, {"kl"}),
    "rvq": ({"type": "rvq", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 3, "kmeans_iters": 3}},
            8, 8, {"quantizer_indices", "quantizer_loss"}, {"quantizer_indices", "quantizer_loss"}),
    "rvq_vae": ({"type": "rvq_vae", "config": {"dim": 4, "codebook_size": 16, "num_quantizers": 2,
                                               "kmeans_init": False}},
                8, 4, {"kl", "quantizer_indices", "quantizer_loss"}, {"kl", "quantizer_indices", "quantizer_loss"}),
    "dac_rvq": ({"type": "dac_rvq", "config": {"input_dim": 8, "n_codebooks": 3, "codebook_size": 16,
                                               "codebook_dim": 4, "noise_augment_dim": 2}},
                8, 10, *([{"pre_quantizer", "z", "codes", "latents", "vq/commitment_loss", "vq/codebook_loss"}] * 2)),
    "dac_rvq_vae": ({"type": "dac_rvq_vae", "config": {"input_dim": 4, "n_codebooks": 2, "codebook_size": 16,
                                                       "codebook_dim": 2}},
                    8, 4, *([{"kl", "pre_quantizer", "z", "codes", "latents", "vq/commitment_loss",
                              "vq/codebook_loss"}] * 2)),
    "l2_norm": ({"type": "l2_norm"}, 8, 8, set(), set()),
    "wasserstein": ({"type": "wasserstein", "config": {"noise_augment_dim": 3, "use_tanh": True}},
                    8, 11, {"mmd"}, set()),
    "fsq": ({"type": "fsq", "config": {"levels": [5, 4, 3], "num_codebooks": 2, "dim": 8, "noise_augment_dim": 1}},
            8, 9, {"quantizer_indices"}, {"quantizer_indices"}),
    "dithered_fsq": ({"type": "dithered_fsq", "config": {"dim": 4, "levels": 5, "num_codebooks": 2}},
                     8, 8, {"quantizer_indices"}, {"quantizer_indices"}),
}
DISCRETE = ["rvq", "rvq_vae", "dac_rvq", "dac_rvq_vae", "fsq", "dithered_fsq"]


def test_every_type_is_covered():
    assert set(CASES) == set(BOTTLENECK_TYPES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_encode_decode_shapes_and_info(name):
    cfg, c_in, c_dec, keys_train, keys_eval = CASES[name]
    frozen = copy.deepcopy(cfg)
    torch.manual_seed(0)
    bn = create_bottleneck_from_config(cfg)
    assert cfg == frozen, "factory must not mutate the config"
    assert bn.is_discrete == (name in DISCRETE)
    x = torch.randn(2, c_in, 12)
    for training, keys in ((True, keys_train), (False, keys_eval)):
        bn.train(training)
        z, info = bn.encode(x, return_info=True)
        assert set(info) == keys, (name, training)
        c_lat = c_in // 2 if name in ("vae", "rvq_vae", "dac_rvq_vae") else c_in
        assert z.shape == (2, c_lat, 12)
        assert torch.is_tensor(bn.encode(x))
        assert bn.decode(z).shape == (2, c_dec, 12)
    if name in DISCRETE:
        assert bn.num_quantizers >= 1 and bn.codebook_size > 1
        assert bn.tokens_id == ("codes" if name.startswith("dac") else "quantizer_indices")


@pytest.mark.parametrize("name", DISCRETE)
def test_decode_tokens_roundtrip(name):
    torch.manual_seed(1)
    bn = create_bottleneck_from_config(CASES[name][0]).eval()
    x = torch.randn(2, CASES[name][1], 10)
    torch.manual_seed(2)
    z, info = bn.encode(x, return_info=True)
    tokens = info[bn.tokens_id]
    torch.manual_seed(3)
    expected = bn.decode(z)
    torch.manual_seed(3)
    got = bn.decode_tokens(tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    layout = {"rvq": (2, 10, 3), "rvq_vae": (2, 10, 2), "dac_rvq": (2, 3, 10), "dac_rvq_vae": (2, 2, 10),
              "fsq": (2, 2, 10), "dithered_fsq": (2, 10, 2)}
    assert tokens.shape == layout[name]
    assert int(tokens.min()) >= 0 and int(tokens.max()) < bn.codebook_size


def test_fsq_single_codebook_tokens_and_dtype():
    bn = FSQBottleneck(levels=[8, 5, 5, 5])
    x = torch.randn(2, 4, 6, dtype=torch.float16)
    z, info = bn.encode(x, return_info=True)
    assert z.dtype == torch.float16 and info["quantizer_indices"].shape == (2, 1, 6)
    ref = bn.quantizer(x.float().transpose(1, 2))[0].transpose(1, 2)
    assert torch.equal(z, ref.half())
    torch.testing.assert_close(bn.decode_tokens(info["quantizer_indices"]), ref)
    assert set(bn.state_dict()) == set()
    assert {n for n, _ in bn.quantizer.named_buffers()} == {"_levels", "_basis", "implicit_codebook"}
    proj = FSQ(levels=[4, 4], dim=6)
    assert {k: tuple(v.shape) for k, v in proj.state_dict().items()} == {
        "project_in.weight": (2, 6), "project_in.bias": (2,), "project_out.weight": (6, 2), "project_out.bias": (6,)}


def test_vae_kl_formula():
    x = torch.randn(3, 8, 5)
    torch.manual_seed(7)
    z, info = VAEBottleneck().encode(x, return_info=True)
    mean, scale = x.chunk(2, dim=1)
    std = F.softplus(scale) + 1e-4
    torch.manual_seed(7)
    torch.testing.assert_close(z, mean + torch.randn_like(mean) * std)
    kl = (mean ** 2 + std ** 2 - torch.log(std ** 2) - 1).sum(1).mean()
    torch.testing.assert_close(info["kl"], kl)
    with pytest.raises(ValueError, match="even number of channels"):
        VAEBottleneck().encode(torch.randn(1, 5, 3))


def test_wasserstein_mmd_and_bypass():
    x = torch.randn(2, 4, 6)
    bn = WassersteinBottleneck()
    torch.manual_seed(0)
    mmd = bn.encode(x, return_info=True)[1]["mmd"]
    torch.manual_seed(0)
    flat = x.permute(0, 2, 1).reshape(-1, 4)
    noise = torch.randn_like(flat)

    def k(a, b):
        return torch.exp(-((a[:, None] - b[None]) ** 2).mean(2) / 4).mean()
    torch.testing.assert_close(mmd, k(flat, flat) + k(noise, noise) - 2 * k(flat, noise))
    assert WassersteinBottleneck(bypass_mmd=True).encode(x, return_info=True)[1]["mmd"].item() == 0.0
    assert "mmd" not in bn.eval().encode(x, return_info=True)[1]


def test_dithered_fsq_train_and_eval():
    bn = DitheredFSQBottleneck(dim=3, levels=[5, 3, 9], noise_dropout=0.0)
    x = torch.randn(4, 3, 16) * 2
    half_l = (2.0 / (torch.tensor([5.0, 3.0, 9.0]) - 1)).view(1, 3, 1)
    grid = torch.round((torch.tanh(x) + 1) / half_l) * half_l - 1
    bn.eval()
    z1, info = bn.encode(x, return_info=True)
    torch.testing.assert_close(z1, grid)
    assert torch.equal(z1, bn.encode(x))
    assert info["quantizer_indices"].shape == (4, 16, 1)
    bn.train()
    z2 = bn.encode(x)  # always dithered: tanh(x) + U(-half_l/2, half_l/2)
    assert not torch.allclose(z2, grid)
    assert bool(((z2 - torch.tanh(x)).abs() <= half_l / 2 + 1e-6).all())
    keep = DitheredFSQBottleneck(dim=3, levels=5, noise_dropout=1.0).train()
    torch.testing.assert_close(keep.encode(x), torch.tanh(x))
    with pytest.raises(ValueError, match="must match dim"):
        DitheredFSQBottleneck(dim=3, levels=[5, 5])


def _rvq(**kw) -> ResidualVQ:
    args = dict(dim=4, num_quantizers=2, codebook_size=8, decay=0.8, kmeans_init=False, threshold_ema_dead_code=0)
    args.update(kw)
    return ResidualVQ(**args)


def test_rvq_ema_update_only_in_training():
    torch.manual_seed(0)
    rvq = _rvq()
    x = torch.randn(2, 32, 4)
    before = rvq.layers[0]._codebook.embed.clone()
    rvq.eval()(x)
    assert torch.equal(rvq.layers[0]._codebook.embed, before)
    _, idx, loss = rvq.train()(x)
    after = rvq.layers[0]._codebook
    assert not torch.equal(after.embed, before)
    counts = torch.bincount(idx[..., 0].flatten(), minlength=8).float()
    torch.testing.assert_close(after.cluster_size[0], 0.2 * counts)
    assert loss.shape == (1, 2) and bool((loss > 0).all())


def test_rvq_dead_code_expiry_and_kmeans_init():
    torch.manual_seed(0)
    rvq = _rvq(threshold_ema_dead_code=2, num_quantizers=1, decay=0.99)
    x = torch.randn(1, 40, 4)
    rvq.train()(x)
    cb = rvq.layers[0]._codebook
    # after one EMA step every cluster size is <= 0.01 * 40 < 2, so all codes were replaced by batch vectors
    # exact pairwise distances (cdist's matmul path loses ~1e-3 to cancellation on some MKL code paths)
    dists = (cb.embed[0].double()[:, None] - x[0].double()[None]).norm(dim=-1)
    assert bool((dists.min(dim=1).values < 1e-5).all())
    assert bool((cb.cluster_size >= 2 - 1e-6).all())
    km = _rvq(kmeans_init=True, kmeans_iters=3, num_quantizers=1)
    assert km.layers[0]._codebook.initted.item() == 0.0
    km.eval()(x)
    assert km.layers[0]._codebook.initted.item() == 1.0
    assert torch.count_nonzero(km.layers[0]._codebook.embed) > 0


def test_rvq_coarse_tokens_and_shared_codebook():
    torch.manual_seed(0)
    bn = RVQBottleneck(dim=4, codebook_size=8, num_quantizers=3, kmeans_init=False).eval()
    z, info = bn.encode(torch.randn(1, 4, 5), return_info=True)
    coarse = bn.decode_tokens(info["quantizer_indices"][..., :1])
    torch.testing.assert_close(coarse, bn.quantizer.codebooks[0][info["quantizer_indices"][0, :, 0]].T[None])
    shared = RVQBottleneck(dim=4, codebook_size=8, num_quantizers=2, shared_codebook=True)
    assert shared.quantizer.layers[0]._codebook is shared.quantizer.layers[1]._codebook


def test_dac_quantize_on_decode_and_n_quantizers():
    torch.manual_seed(0)
    bn = DACRVQBottleneck(input_dim=6, n_codebooks=3, codebook_size=16, codebook_dim=2,
                          quantize_on_decode=True).eval()
    x = torch.randn(2, 6, 7)
    out = bn.encode(x)
    assert torch.is_tensor(out) and torch.equal(out, x)
    z, info = bn.encode(x, return_info=True)
    assert set(info) == {"pre_quantizer"}
    quantized, codes = bn.quantizer(x)[:2]
    torch.testing.assert_close(bn.decode(z), quantized)
    torch.testing.assert_close(bn.decode_tokens(codes), quantized, atol=1e-6, rtol=1e-5)
    bn.quantize_on_decode = False
    _, info2 = bn.encode(x, return_info=True, n_quantizers=1)
    assert info2["codes"].shape == (2, 1, 7) and info2["latents"].shape == (2, 2, 7)


def test_training_straight_through_and_dac_dropout():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, requires_grad=True)
    rvq = RVQBottleneck(dim=6, codebook_size=8, num_quantizers=2, kmeans_init=False).train()
    z, info = rvq.encode(x, return_info=True)
    z.sum().backward()
    # straight-through: each of the 2 layers passes the gradient of its (residual) input unchanged
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    assert info["quantizer_loss"].requires_grad and info["quantizer_loss"] > 0
    dac = DACRVQBottleneck(input_dim=6, n_codebooks=3, codebook_size=8, codebook_dim=2, quantizer_dropout=1.0).train()
    z, info = dac.encode(x, return_info=True, n_quantizers=1)  # n_quantizers is ignored in training
    assert info["codes"].shape == (4, 3, 5)
    (info["vq/commitment_loss"] + info["vq/codebook_loss"]).backward()
    assert dac.quantizer.quantizers[0].codebook.weight.grad is not None


def test_soft_norm_bottleneck():
    bn = SoftNormBottleneck(dim=4, noise_augment_dim=2, auto_scale=True)
    assert set(bn.state_dict()) == {"scaling_factor", "bias", "noise_scaling_factor", "running_std"}
    x = torch.randn(2, 4, 8) * 3
    z, info = bn.train().encode(x, return_info=True)
    assert "softnorm_loss" in info and bn.running_std.item() != 1.0
    assert bn.eval().decode(z).shape == (2, 6, 8)


# ----------------------------------------------------------------------------- factory errors
def test_unknown_type_lists_accepted_values():
    with pytest.raises(ConfigError) as err:
        create_bottleneck_from_config({"type": "rvqq"})
    msg = str(err.value)
    assert "model.bottleneck.type" in msg and "'dac_rvq'" in msg and "'dithered_fsq'" in msg and "'rvq'" in msg
    with pytest.raises(ConfigError, match="model.bottleneck.type"):
        create_bottleneck_from_config({"config": {}})


def test_unknown_config_key_names_path():
    with pytest.raises(ConfigError, match=r"ae\.bn\.config\.num_quantiser"):
        create_bottleneck_from_config({"type": "rvq", "config": {"num_quantiser": 4}}, "ae.bn")
    with pytest.raises(ConfigError, match=r"model\.bottleneck\.config\.levels"):
        create_bottleneck_from_config({"type": "fsq", "config": {}})
    with pytest.warns(ConfigWarning, match="model.bottleneck.extra"):
        create_bottleneck_from_config({"type": "tanh", "extra": 1})
    with pytest.warns(ConfigWarning, match="model.bottleneck.config.foo"):
        create_bottleneck_from_config({"type": "vae", "config": {"foo": 1}})


def test_requires_grad_false_freezes():
    cfg = {"type": "dac_rvq", "requires_grad": False,
           "config": {"input_dim": 4, "n_codebooks": 2, "codebook_size": 8, "codebook_dim": 2}}
    bn = create_bottleneck_from_config(cfg)
    assert all(not p.requires_grad for p in bn.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dfsq = create_bottleneck_from_config({"type": "dithered_fsq", "requires_grad": False,
                                              "config": {"dim": 2, "levels": [3, 3]}})
    assert isinstance(dfsq, DitheredFSQBottleneck)


# ----------------------------------------------------------------------------- checkpoint compatibility
def _bottleneck_weights(name: str):
    weights = load_file(str(FIXTURES / "golden" / name / "weights.safetensors"))
    return {k[len("bottleneck."):]: v for k, v in weights.items() if k.startswith("bottleneck.")}


def _golden_bottleneck(name: str):
    config = json.loads((FIXTURES / "golden" / name / "model_config.json").read_text())
    bn = create_bottleneck_from_config(config["model"]["bottleneck"])
    bn.load_state_dict(_bottleneck_weights(name), strict=True)
    return bn.eval(), load_file(str(FIXTURES / "golden" / name / "io.safetensors"))


def test_rvq_state_dict_matches_manifest():
    manifest = json.loads((FIXTURES / "manifests" / "encodec_musicgen_rvq.json").read_text())
    expected = {k: tuple(shape) for k, shape, _ in manifest["state_dict"] if k.startswith("bottleneck.")}
    config_path = Path(__file__).parents[1] / "stable_audio_tools" / manifest["config"]
    bn = create_bottleneck_from_config(json.loads(config_path.read_text())["model"]["bottleneck"])
    got = {f"bottleneck.{k}": tuple(v.shape) for k, v in bn.state_dict().items()}
    assert got == expected
    assert list(got) == list(expected)


@torch.no_grad()
def test_golden_dac_rvq():
    bn, io = _golden_bottleneck("dac_rvq")
    x = io["out.pre_bottleneck_latents"]
    z, info = bn.encode(x, return_info=True)
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z, io["out.z"], **tol)
    assert torch.equal(info["codes"], io["out.codes"])
    torch.testing.assert_close(info["latents"], io["out.latents_projected"], **tol)
    torch.testing.assert_close(info["vq/commitment_loss"], io["out.commitment_loss"], **tol)
    torch.testing.assert_close(info["vq/codebook_loss"], io["out.codebook_loss"], **tol)
    torch.testing.assert_close(bn.decode_tokens(io["out.codes"]), io["out.z"], **tol)
    z2, info2 = bn.encode(x, return_info=True, n_quantizers=2)
    torch.testing.assert_close(z2, io["out.z_nq2"], **tol)
    assert torch.equal(info2["codes"], io["out.codes_nq2"])


@torch.no_grad()
def test_golden_seanet_rvq():
    bn, io = _golden_bottleneck("seanet_rvq")
    z, info = bn.encode(io["out.pre_bottleneck_latents"], return_info=True)
    torch.testing.assert_close(z, io["out.latents"], atol=1e-4, rtol=1e-4)
    assert torch.equal(info["quantizer_indices"], io["out.quantizer_indices"])
    torch.testing.assert_close(info["quantizer_loss"], io["out.quantizer_loss"])
    torch.testing.assert_close(bn.decode_tokens(info["quantizer_indices"]), io["out.latents"], atol=1e-5, rtol=1e-5)
    assert math.isclose(bn.quantizer.layers[0]._codebook.initted.item(), 1.0)
