"""DiT backbone (SPEC 4.10, 6.5): state-dict layout, upstream golden numerics, options and CFG."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from stable_audio_tools.models.dit import DiffusionTransformer, DiTUncondWrapper, DiTWrapper, FourierFeatures

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = Path(__file__).parents[1] / "stable_audio_tools" / "configs" / "model_configs"
GOLDEN = FIXTURES / "golden" / "dit_cond"

E, IO = 64, 4
BASE = dict(io_channels=IO, embed_dim=E, depth=2, num_heads=2)


def _perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make zero-initialised projections non-trivial so every path reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g) / math.sqrt(max(p[0].numel(), 1)))
    return module.eval()


def _dit(seed: int = 0, **kwargs) -> DiffusionTransformer:
    torch.manual_seed(seed)
    return _perturb(DiffusionTransformer(**{**BASE, **kwargs}), seed)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ checkpoint layout


@pytest.mark.parametrize("manifest,config", [
    ("stable_audio_open_1_0", "released/stable_audio_open_1_0"),
    ("stable_audio_open_small", "released/stable_audio_open_small"),
    ("stable_audio_2_0", "txt2audio/stable_audio_2_0"),
])
def test_released_state_dict_matches_manifest(manifest, config):
    diffusion = json.loads((CONFIGS / f"{config}.json").read_text())["model"]["diffusion"]
    with torch.device("meta"):
        wrapper = DiTWrapper(diffusion_objective=diffusion.get("diffusion_objective", "v"), **diffusion["config"])
    ours = [(f"model.{k}", list(v.shape)) for k, v in wrapper.state_dict().items()]
    reference = json.loads((FIXTURES / "manifests" / f"{manifest}.json").read_text())
    expected = [(k, list(shape)) for k, shape, _ in reference["state_dict"] if k.startswith("model.model.")]
    assert ours == expected  # names, shapes and registration order
    assert sum(p.numel() for p in wrapper.parameters()) == reference["params_by_child"]["model"]
    assert [name for name, _ in wrapper.named_children()] == ["model"]


def test_fourier_features():
    torch.manual_seed(0)
    ff = FourierFeatures(1, 256)
    assert ff.weight.shape == (128, 1)
    t = torch.tensor([[0.25], [0.5]])
    f = 2 * math.pi * t * ff.weight[:, 0]
    torch.testing.assert_close(ff(t), torch.cat([f.cos(), f.sin()], dim=-1))
    with pytest.raises(ValueError, match="even"):
        FourierFeatures(1, 7)


# ------------------------------------------------------------------------------ upstream golden


def test_golden_dit_cond():
    diffusion = json.loads((GOLDEN / "model_config.json").read_text())["model"]["diffusion"]
    model = DiTWrapper(diffusion_objective=diffusion["diffusion_objective"], **diffusion["config"]).eval()
    weights = load_file(str(GOLDEN / "weights.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.model.")},
                          strict=True)
    io = load_file(str(GOLDEN / "io.safetensors"))
    cond = {k[len("out.cond_inputs."):]: v for k, v in io.items() if k.startswith("out.cond_inputs.")}
    assert set(cond) == {"cross_attn_cond", "cross_attn_mask", "global_cond", "prepend_cond", "prepend_cond_mask"}
    x, t = io["in.x"], io["in.t"]
    with torch.no_grad():
        outputs = {
            "model_out_cfg1": model(x, t, **cond),
            "model_out_cfg3": model(x, t, **cond, cfg_scale=3.0),
            "model_out_cfg3_phi05": model(x, t, **cond, cfg_scale=3.0, scale_phi=0.5),
            "model_out_cfg1_return_info_hidden0": model(x, t, **cond, return_info=True)[1]["hidden_states"][0],
        }
    for key, value in outputs.items():
        torch.testing.assert_close(value, io[f"out.{key}"], atol=1e-4, rtol=0, msg=key)


# ------------------------------------------------------------------------------ options change the module tree


def _reference(dit, x, t, cross=None, glob=None, prepend=None, concat=None):
    """Independent restatement of SPEC 4.10's forward, built from the DiT's submodules."""
    f = 2 * math.pi * t[:, None] * dit.timestep_features.weight[:, 0]
    t_embed = dit.to_timestep_embed(torch.cat([f.cos(), f.sin()], dim=-1))
    if concat is not None:
        x = torch.cat([x, F.interpolate(concat, size=x.shape[2], mode="nearest")], dim=1)
    g = dit.to_global_embed(glob) if glob is not None else None
    if dit.timestep_cond_type == "global":
        g = t_embed if g is None else g + t_embed
    else:
        x = torch.cat([x, t_embed[:, :, None].repeat(1, 1, x.shape[2])], dim=1)
    pre = dit.to_prepend_embed(prepend) if prepend is not None else None
    if dit.global_cond_type == "prepend" and g is not None:
        pre = g[:, None] if pre is None else torch.cat([pre, g[:, None]], dim=1)
    x = x + torch.einsum("oi,bit->bot", dit.preprocess_conv.weight[:, :, 0], x)
    b, c, n = x.shape
    p = dit.patch_size
    tokens = x.reshape(b, c, n // p, p).permute(0, 2, 1, 3).reshape(b, n // p, c * p)
    ctx = dit.to_cond_embed(cross) if cross is not None else None
    out = dit.transformer(tokens, prepend_embeds=pre, context=ctx,
                          global_cond=g if dit.global_cond_type == "adaLN" else None)
    out = out[:, 0 if pre is None else pre.shape[1]:]
    out = out.reshape(b, n // p, IO, p).permute(0, 2, 1, 3).reshape(b, IO, n)
    return out + torch.einsum("oi,bit->bot", dit.postprocess_conv.weight[:, :, 0], out)


OPTION_CASES = {
    "prepend_global_and_tokens": (dict(cond_token_dim=16, global_cond_dim=24, prepend_cond_dim=8), {
        "to_cond_embed.0.weight": [E, 16], "to_global_embed.0.weight": [E, 24], "to_prepend_embed.0.weight": [E, 8],
        "to_prepend_embed.2.weight": [E, E], "transformer.layers.0.cross_attn.to_kv.weight": [2 * E, E],
    }, ["transformer.global_cond_embedder.0.weight", "transformer.layers.0.to_scale_shift_gate"]),
    "adaLN_patch2": (dict(cond_token_dim=16, global_cond_dim=24, global_cond_type="adaLN", patch_size=2), {
        "transformer.global_cond_embedder.0.weight": [E, E], "transformer.global_cond_embedder.2.weight": [6 * E, E],
        "transformer.layers.1.to_scale_shift_gate": [6 * E], "transformer.project_in.weight": [E, 2 * IO],
        "transformer.project_out.weight": [2 * IO, E], "preprocess_conv.weight": [IO, IO, 1],
    }, ["to_prepend_embed.0.weight"]),
    "timestep_concat_unprojected_tokens": (dict(cond_token_dim=32, project_cond_tokens=False, input_concat_dim=3,
                                                timestep_cond_type="input_concat", timestep_embed_dim=5), {
        "to_timestep_embed.0.weight": [5, 256], "to_timestep_embed.2.weight": [5, 5],
        "to_cond_embed.0.weight": [32, 32], "to_cond_embed.2.weight": [32, 32],
        "transformer.layers.0.cross_attn.to_kv.weight": [64, 32], "preprocess_conv.weight": [IO + 8, IO + 8, 1],
        "transformer.project_in.weight": [E, IO + 8],
    }, ["to_global_embed.0.weight"]),
    "adaLN_timestep_only_with_prepend": (dict(global_cond_type="adaLN", prepend_cond_dim=8), {
        "to_timestep_embed.0.weight": [E, 256], "transformer.layers.0.to_scale_shift_gate": [6 * E],
    }, ["to_cond_embed.0.weight", "transformer.layers.0.cross_attn.to_q.weight"]),
    "patch2_input_concat_global_prepend": (dict(global_cond_dim=24, input_concat_dim=3, patch_size=2), {
        "preprocess_conv.weight": [IO + 3, IO + 3, 1], "transformer.project_in.weight": [E, 2 * (IO + 3)],
        "postprocess_conv.weight": [IO, IO, 1],
    }, ["to_cond_embed.0.weight"]),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_module_tree_and_numerics(case):
    kwargs, shapes, absent = OPTION_CASES[case]
    dit = _dit(**kwargs)
    state = {k: list(v.shape) for k, v in dit.state_dict().items()}
    for key, shape in shapes.items():
        assert state[key] == shape, key
    assert not set(absent) & set(state)

    b, n = 2, 8
    inputs = dict(
        cross=_randn(1, b, 3, kwargs["cond_token_dim"]) if kwargs.get("cond_token_dim") else None,
        glob=_randn(2, b, kwargs["global_cond_dim"]) if kwargs.get("global_cond_dim") else None,
        prepend=_randn(3, b, 2, kwargs["prepend_cond_dim"]) if kwargs.get("prepend_cond_dim") else None,
        concat=_randn(4, b, 3, n // 2) if kwargs.get("input_concat_dim") else None,  # nearest-upsampled
    )
    x, t = _randn(5, b, IO, n), torch.tensor([0.2, 0.7])
    with torch.no_grad():
        out, info = dit(x, t, cross_attn_cond=inputs["cross"], global_embed=inputs["glob"],
                        prepend_cond=inputs["prepend"], input_concat_cond=inputs["concat"], return_info=True)
        expected = _reference(dit, x, t, **inputs)
    assert out.shape == (b, IO, n)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    has_global = inputs["glob"] is not None or dit.timestep_cond_type == "global"
    n_prepend = (2 if inputs["prepend"] is not None else 0) + (dit.global_cond_type == "prepend" and has_global)
    assert len(info["hidden_states"]) == 2
    assert info["hidden_states"][0].shape == (b, n_prepend + n // dit.patch_size, E)


def test_invalid_options_and_inputs():
    with pytest.raises(ValueError, match="global_cond_type"):
        DiffusionTransformer(**BASE, global_cond_type="film")
    with pytest.raises(ValueError, match="timestep_embed_dim"):
        DiffusionTransformer(**BASE, timestep_cond_type="input_concat")
    with pytest.raises(ValueError, match="transformer_type"):
        DiffusionTransformer(**BASE, transformer_type="x-transformers")
    with pytest.raises(ValueError, match="diffusion_objective"):
        DiffusionTransformer(**BASE, diffusion_objective="eps")
    dit = _dit(patch_size=2)
    x, t = torch.randn(1, IO, 7), torch.rand(1)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        dit(x, t)
    with pytest.raises(ValueError, match="causal"):
        dit(torch.randn(1, IO, 8), t, causal=True)
    with pytest.raises(ValueError, match="cond_token_dim"):
        dit(torch.randn(1, IO, 8), t, cross_attn_cond=torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="batch_cfg"):
        DiTWrapper(**BASE)(torch.randn(1, IO, 8), t, batch_cfg=False)


def test_inputs_cast_to_model_dtype():
    dit = _dit(cond_token_dim=16).double()
    out = dit(torch.randn(2, IO, 8), torch.rand(2), cross_attn_cond=torch.randn(2, 3, 16), cfg_scale=2.0)
    assert out.dtype == torch.float64


# ------------------------------------------------------------------------------ CFG

B, N = 3, 8
COND_KW = dict(cond_token_dim=16, global_cond_dim=24, prepend_cond_dim=8)


@pytest.fixture(scope="module")
def cfg_setup():
    torch.manual_seed(1)
    wrapper = _perturb(DiTWrapper(**BASE, **COND_KW), 1)
    x, t = _randn(10, B, IO, N), torch.tensor([0.3, 0.6, 0.9])
    cond = dict(cross_attn_cond=_randn(11, B, 5, 16), cross_attn_mask=torch.ones(B, 5),
                global_cond=_randn(12, B, 24), prepend_cond=_randn(13, B, 2, 8), prepend_cond_mask=torch.ones(B, 2))
    return wrapper, x, t, cond


def _null(cond, cross=True, prepend=True):
    out = dict(cond)
    if cross:
        out["cross_attn_cond"] = torch.zeros_like(cond["cross_attn_cond"])
    if prepend:
        out["prepend_cond"] = torch.zeros_like(cond["prepend_cond"])
    return out


@torch.no_grad()
def test_batched_cfg_equals_separate_passes(cfg_setup):
    model, x, t, cond = cfg_setup
    cond_out, uncond_out = model(x, t, **cond), model(x, t, **_null(cond))
    assert not torch.allclose(cond_out, uncond_out, atol=1e-3)
    guided = uncond_out + (cond_out - uncond_out) * 4.0
    out, info = model(x, t, **cond, cfg_scale=4.0, return_info=True)
    torch.testing.assert_close(out, guided, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(info["uncond_output"], uncond_out, atol=1e-5, rtol=1e-5)
    assert info["hidden_states"][0].shape[0] == 2 * B  # one batched pass
    phi = 0.7
    rescaled = guided * (cond_out.std(dim=1, keepdim=True) / guided.std(dim=1, keepdim=True))
    torch.testing.assert_close(model(x, t, **cond, cfg_scale=4.0, scale_phi=phi),
                               phi * rescaled + (1 - phi) * guided, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_negative_conditioning(cfg_setup):
    model, x, t, cond = cfg_setup
    negative = _randn(20, B, 5, 16)
    neg_mask = torch.tensor([[1, 1, 0, 0, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.float32)
    cond_out = model(x, t, **cond)
    neg_out = model(x, t, **{**cond, "cross_attn_cond": negative * neg_mask[:, :, None],
                             "prepend_cond": torch.zeros_like(cond["prepend_cond"])})
    out = model(x, t, **cond, negative_cross_attn_cond=negative, negative_cross_attn_mask=neg_mask, cfg_scale=3.0,
                negative_global_cond=torch.zeros(B, 24))  # negative global conditioning is ignored, as upstream
    torch.testing.assert_close(out, neg_out + (cond_out - neg_out) * 3.0, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_cfg_interval_uses_first_sigma_of_the_objective(cfg_setup):
    model, x, t, cond = cfg_setup  # v objective: sigma[0] = sin(0.3 * pi / 2) ~ 0.454
    plain, guided = model(x, t, **cond), model(x, t, **cond, cfg_scale=3.0)
    assert not torch.allclose(plain, guided, atol=1e-3)
    torch.testing.assert_close(model(x, t, **cond, cfg_scale=3.0, cfg_interval=(0.5, 1.0)), plain)
    torch.testing.assert_close(model(x, t, **cond, cfg_scale=3.0, cfg_interval=(0.4, 0.5)), guided)
    rf = DiTWrapper(**BASE, **COND_KW, diffusion_objective="rectified_flow").eval()
    rf.load_state_dict(model.state_dict())
    # rectified flow: sigma = t = 0.3 lies outside (0.4, 0.5) -> no guidance
    torch.testing.assert_close(rf(x, t, **cond, cfg_scale=3.0, cfg_interval=(0.4, 0.5)), plain)
    torch.testing.assert_close(rf(x, t, **cond, cfg_scale=3.0, cfg_interval=(0.25, 0.35)), guided)


@torch.no_grad()
def test_cfg_dropout(cfg_setup):
    model, x, t, cond = cfg_setup
    # p = 1 drops cross-attention and prepend tokens of every item; global conditioning is kept
    dropped = model(x, t, **cond, cfg_dropout_prob=1.0)
    torch.testing.assert_close(dropped, model(x, t, **_null(cond)))
    assert not torch.allclose(dropped, model(x, t, **{**_null(cond), "global_cond": torch.zeros(B, 24)}), atol=1e-3)
    # dropout only applies when cfg_scale == 1
    torch.testing.assert_close(model(x, t, **cond, cfg_scale=2.0, cfg_dropout_prob=1.0),
                               model(x, t, **cond, cfg_scale=2.0))
    # per-item Bernoulli draws from the global RNG: first the cross-attention tokens, then the prepend tokens
    torch.manual_seed(123)
    drop_cross = torch.bernoulli(torch.full((B, 1, 1), 0.5)).bool()
    drop_prepend = torch.bernoulli(torch.full((B, 1, 1), 0.5)).bool()
    expected = model(x, t, **{**cond,
                              "cross_attn_cond": cond["cross_attn_cond"].masked_fill(drop_cross, 0.0),
                              "prepend_cond": cond["prepend_cond"].masked_fill(drop_prepend, 0.0)})
    torch.manual_seed(123)
    torch.testing.assert_close(model(x, t, **cond, cfg_dropout_prob=0.5), expected)


@torch.no_grad()
def test_exit_layer_ix_returns_raw_hidden_states(cfg_setup):
    model, x, t, cond = cfg_setup
    _, info = model(x, t, **cond, return_info=True)
    hidden = model(x, t, **cond, exit_layer_ix=0, cfg_scale=5.0, cfg_dropout_prob=1.0)  # CFG and dropout bypassed
    assert hidden.shape == (B, 2 + 1 + N, E)  # prepend tokens + global token + frames
    torch.testing.assert_close(hidden, info["hidden_states"][0])
    hidden1, info1 = model(x, t, **cond, exit_layer_ix=1, return_info=True)
    torch.testing.assert_close(hidden1, info["hidden_states"][1])
    assert len(info1["hidden_states"]) == 2


def test_wrapper_scaling():
    torch.manual_seed(7)
    reference = DiffusionTransformer(**BASE, global_cond_dim=8)
    torch.manual_seed(7)
    cond_wrapper = DiTWrapper(**BASE, global_cond_dim=8)
    torch.manual_seed(7)
    uncond = DiTUncondWrapper(IO, **{k: v for k, v in BASE.items() if k != "io_channels"}, global_cond_dim=8)
    assert uncond.io_channels == IO and cond_wrapper.supports_global_cond and not cond_wrapper.supports_prepend_cond
    ref_params = dict(reference.named_parameters())
    for name, param in cond_wrapper.model.named_parameters():
        torch.testing.assert_close(param, ref_params[name], atol=0, rtol=0)  # the conditional wrapper is not scaled
    for name, param in uncond.model.named_parameters():
        torch.testing.assert_close(param, 0.5 * ref_params[name], atol=0, rtol=0)
    _perturb(uncond)
    with torch.no_grad():
        out = uncond(torch.randn(2, IO, 8), torch.rand(2), global_embed=torch.randn(2, 8))
    assert out.shape == (2, IO, 8) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------ cross-attention masks


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@torch.no_grad()
def test_cross_attention_masks(cfg_setup):
    model, x, t, cond = cfg_setup
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    changed = {**cond, "cross_attn_cond": torch.where(mask[:, :, None], cond["cross_attn_cond"], 5.0)}
    # default (upstream, the released models): the mask is discarded, padded tokens take part
    assert not torch.allclose(model(x, t, **{**cond, "cross_attn_mask": mask}),
                              model(x, t, **{**changed, "cross_attn_mask": mask}), atol=1e-3)

    masked = DiTWrapper(**BASE, **COND_KW, use_cross_attn_mask=True).eval()
    masked.load_state_dict(model.state_dict())
    torch.testing.assert_close(masked(x, t, **cond), model(x, t, **cond), atol=1e-5, rtol=1e-5)  # all-true mask
    out = masked(x, t, **{**cond, "cross_attn_mask": mask})
    torch.testing.assert_close(masked(x, t, **{**changed, "cross_attn_mask": mask}), out, atol=1e-5, rtol=1e-5)
    # a row without valid tokens gets no cross-attention contribution (same as all-zero tokens)
    zero_row = {**cond, "cross_attn_cond": torch.zeros_like(cond["cross_attn_cond"])}
    torch.testing.assert_close(out[2], model(x, t, **zero_row)[2], atol=1e-5, rtol=1e-5)
    # under CFG the conditioned half keeps its mask
    guided = masked(x, t, **{**cond, "cross_attn_mask": mask}, cfg_scale=2.0)
    torch.testing.assert_close(masked(x, t, **{**changed, "cross_attn_mask": mask}, cfg_scale=2.0), guided,
                               atol=1e-5, rtol=1e-5)


def test_cross_attention_mask_training_on_cpu_is_rejected(cfg_setup):
    model, x, t, cond = cfg_setup
    masked = DiTWrapper(**BASE, **COND_KW, use_cross_attn_mask=True)
    with pytest.raises(ValueError, match="no backward pass on CPU"):
        masked(x, t, **cond)
