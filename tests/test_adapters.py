"""Adapter math (LoRA, DoRA rows/cols, BoRA, LoRA-XS), patterns, config errors, state-dict invariance, stacking,
merging and per-element sigma gating under batched CFG (stable_audio_tools.models.adapters)."""
import copy
import json

import pytest
import torch
from torch import nn

from stable_audio_tools.models.adapters import (ADAPTER_TYPES, AdaptedConv1d, AdaptedLinear, adapter_parameters,
                                                 adapter_state_dict, apply_adapters, expand_pattern, freeze_base,
                                                 list_adapters, merge_adapters, parse_adapter_config,
                                                 pattern_matches, remove_adapter, set_adapter_sigma_range,
                                                 set_adapter_strength)
from stable_audio_tools.models.adapters.layers import svd_bases
from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.safe_load import load_safetensors

from conftest import FIXTURES

TYPES = [t for t in ADAPTER_TYPES if t != "dora"]
DIT_COND = json.loads((FIXTURES / "golden" / "dit_cond" / "model_config.json").read_text())


class Toy(nn.Module):
    """Linear -> Conv1d (k=3) -> grouped Conv1d, batch-first."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.group = nn.Conv1d(8, 4, 1, groups=2, bias=False)

    def forward(self, x):  # x [B, T, 6]
        h = self.proj(x).transpose(1, 2)
        return self.group(torch.tanh(self.conv(h)))


def toy(seed=0):
    torch.manual_seed(seed)
    return Toy()


def randomize(model, name=None, seed=1, scale=0.3):
    """Give the (identity-initialised) adapters random values so the tests see a real update."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter_parameters(model, None if name is None else [name]):
            param.add_(torch.randn(param.shape, generator=gen) * scale)


def cond_model(seed=0):
    torch.manual_seed(seed)
    model = create_model_from_config(DIT_COND).eval()
    model.load_state_dict(load_safetensors(FIXTURES / "golden" / "dit_cond" / "weights.safetensors"))
    return model


# ---------------------------------------------------------------------- math per type
@pytest.mark.parametrize("kind", TYPES)
def test_identity_at_init_strength_zero_and_merge(kind):
    model = toy()
    x = torch.randn(3, 5, 6)
    base = model(x)
    layers = apply_adapters(model, {"type": kind, "rank": 2, "alpha": 4})
    assert layers == ["proj", "conv", "group"]
    assert isinstance(model.proj, AdaptedLinear) and isinstance(model.conv, AdaptedConv1d)
    assert torch.allclose(model(x), base, atol=1e-5)  # a fresh adapter is the identity
    randomize(model)
    adapted = model(x)
    assert (adapted - base).abs().max() > 1e-3
    set_adapter_strength(model, "default", 0.0)
    assert torch.equal(model(x), base)  # strength 0 = the base output exactly
    set_adapter_strength(model, "default", 0.7)
    unmerged = model(x)
    merged_model = copy.deepcopy(model)
    merge_adapters(merged_model)
    assert type(merged_model.proj) is nn.Linear and type(merged_model.conv) is nn.Conv1d
    assert not list_adapters(merged_model)
    assert torch.allclose(merged_model(x), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", TYPES)
def test_weight_matches_the_formula(kind):
    """The layer output equals x @ W_eff^T + b with W_eff = W0 + strength * (W_type(W0) - W0) from first principles."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 5))
    w0, b = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    apply_adapters(model, {"type": kind, "rank": 3, "alpha": 6})
    randomize(model, seed=2)
    set_adapter_strength(model, "default", 0.6)
    adapter = model[0].adapters["default"]
    s = 6 / 3
    if kind.endswith("-xs"):
        u, v = svd_bases(w0, 3)
        delta = u @ adapter.M_xs.detach() @ v.T
    else:
        delta = adapter.lora_B.detach() @ adapter.lora_A.detach()
    w = w0 + s * delta
    if kind.startswith("dora-rows"):
        w = adapter.magnitude.detach()[:, None] * w / w.norm(dim=1, keepdim=True)
    elif kind.startswith("dora-cols"):
        w = adapter.magnitude.detach()[None, :] * w / w.norm(dim=0, keepdim=True)
    elif kind.startswith("bora"):
        w = adapter.magnitude_r.detach()[:, None] * w / w.norm(dim=1, keepdim=True)
        w = adapter.magnitude_c.detach()[None, :] * w / w.norm(dim=0, keepdim=True)
    w_eff = w0 + 0.6 * (w - w0)
    x = torch.randn(4, 7)
    assert torch.allclose(model(x), x @ w_eff.T + b, atol=1e-5)


def test_dora_magnitudes_start_at_the_base_norms():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(6, 4))
    w0 = layer[0].weight.detach()
    apply_adapters(layer, {"type": "dora-rows", "rank": 2}, name="rows")
    apply_adapters(layer, {"type": "dora-cols", "rank": 2}, name="cols")
    apply_adapters(layer, {"type": "bora", "rank": 2}, name="both")
    adapters = layer[0].adapters
    assert adapters["rows"].magnitude.shape == (4,) and torch.allclose(adapters["rows"].magnitude, w0.norm(dim=1))
    assert adapters["cols"].magnitude.shape == (6,) and torch.allclose(adapters["cols"].magnitude, w0.norm(dim=0))
    assert torch.allclose(adapters["both"].magnitude_r, w0.norm(dim=1))
    assert torch.allclose(adapters["both"].magnitude_c, w0.norm(dim=0))
    # the norm is part of the graph: the magnitude and the low-rank factors all get gradients
    layer(torch.randn(3, 6)).pow(2).sum().backward()
    assert adapters["rows"].magnitude.grad is not None and adapters["rows"].lora_A.grad is not None


def test_lora_xs_bases_are_frozen_svd_bases_and_only_the_core_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(9, 6))
    w0 = model[0].weight.detach().clone()
    apply_adapters(model, {"type": "lora-xs", "rank": 3})
    adapter = model[0].adapters["default"]
    names = [n for n, _ in adapter.named_parameters()]
    assert names == ["M_xs"] and adapter.M_xs.shape == (3, 3)
    assert not adapter.U.requires_grad and not adapter.V.requires_grad
    u, s, vh = torch.linalg.svd(w0)
    assert torch.allclose((adapter.U * s[:3]) @ adapter.V.T, (u[:, :3] * s[:3]) @ vh[:3], atol=1e-5)
    assert torch.allclose(adapter.U.T @ adapter.U, torch.eye(3), atol=1e-5)
    assert set(adapter_state_dict(model)) == {"0.M_xs"}  # bases are not saved (recomputed from W0)
    model(torch.randn(2, 9)).sum().backward()
    assert adapter.M_xs.grad is not None and adapter.U.grad is None
    with pytest.raises(ValueError, match="exceeds min"):
        apply_adapters(model, {"type": "lora-xs", "rank": 7}, name="big")


# ---------------------------------------------------------------------- patterns and config
def test_pattern_expansion_and_matching():
    assert expand_pattern("layers.[0-2].ff") == ["layers.0.ff", "layers.1.ff", "layers.2.ff"]
    assert expand_pattern("a[2-1]b[0-1]") == ["a2b0", "a2b1", "a1b0", "a1b1"]
    name = "model.model.transformer.layers.10.self_attn.to_qkv"
    assert pattern_matches("to_qkv", name)
    assert pattern_matches("transformer.layers.[9-11]", name)
    assert not pattern_matches("transformer.layers.[0-1]", name)  # whole parts: layers.1 is not layers.10
    assert pattern_matches("self_attn.to_*", name) and not pattern_matches("cross_attn.to_*", name)
    assert not pattern_matches("qkv", name)


def test_include_exclude_on_a_dit():
    model = cond_model()
    layers = apply_adapters(model, {"type": "lora", "rank": 2, "include": ["transformer.layers.[1-1]"],
                                    "exclude": ["cross_attn", "ff"]})
    assert layers and all(".transformer.layers.1." in n for n in layers)
    assert not any("cross_attn" in n or ".ff." in n for n in layers)
    assert "model.model.transformer.layers.1.self_attn.to_qkv" in layers
    everything = apply_adapters(model, {"type": "lora", "rank": 2}, name="all")
    assert "model.model.preprocess_conv" in everything and "model.model.to_timestep_embed.0" in everything
    assert not any(n.startswith("conditioner.") for n in everything)
    cond = apply_adapters(model, {"type": "lora", "rank": 2, "targets": ["conditioner"]}, name="cond")
    assert cond and all(n.startswith("conditioner.conditioners.") for n in cond)


@pytest.mark.parametrize("config, key", [
    ({"rank": 2}, "type"),
    ({"type": "lorra", "rank": 2}, "type"),
    ({"type": "lora"}, "rank"),
    ({"type": "lora", "rank": 0}, "rank"),
    ({"type": "lora", "rank": 2, "alpha": -1}, "alpha"),
    ({"type": "lora", "rank": 2, "dropout": 1.5}, "dropout"),
    ({"type": "lora", "rank": 2, "include": "layers[0-1"}, "include[0]"),
    ({"type": "lora", "rank": 2, "targets": ["dit"]}, "targets[0]"),
    ({"type": "lora", "rank": 2, "exlude": ["x"]}, "exlude"),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ConfigError) as err:
        parse_adapter_config(config)
    assert err.value.path == key


def test_apply_errors_name_the_key():
    model = cond_model()
    with pytest.raises(ConfigError) as err:
        apply_adapters(model, {"type": "lora", "rank": 2, "include": ["transformer.layers.[7-8]"]})
    assert err.value.path == "include[0]"
    with pytest.raises(ConfigError) as err:
        apply_adapters(model, {"type": "lora", "rank": 2, "targets": ["lm"]})
    assert err.value.path == "targets[0]"
    with pytest.raises(ConfigError) as err:
        apply_adapters(model, {"type": "lora", "rank": 2, "include": ["to_qkv"], "exclude": ["transformer"]})
    assert err.value.path == "exclude"
    apply_adapters(model, {"type": "lora", "rank": 2, "include": ["to_qkv"]})
    with pytest.raises(ValueError, match="already applied"):
        apply_adapters(model, {"type": "lora", "rank": 2})


# ---------------------------------------------------------------------- state dict invariance
def test_base_state_dict_keys_unchanged_and_released_checkpoint_loads_strictly():
    model = cond_model()
    keys = list(model.state_dict())
    released = load_safetensors(FIXTURES / "golden" / "dit_cond" / "weights.safetensors")
    apply_adapters(model, {"type": "dora-rows", "rank": 2, "targets": ["diffusion", "conditioner"]})
    apply_adapters(model, {"type": "lora-xs", "rank": 2}, name="xs")
    randomize(model)
    assert list(model.state_dict()) == keys
    before = {k: v.clone() for k, v in adapter_state_dict(model, "default").items()}
    model.load_state_dict(released, strict=True)  # a released checkpoint loads strictly into the adapted model
    after = adapter_state_dict(model, "default")
    assert all(torch.equal(before[k], after[k]) for k in before)  # and leaves the adapters alone
    assert all(".adapters." in n for n, p in model.named_parameters() if n not in keys)


def test_freeze_base_trains_only_adapters():
    model = cond_model()
    apply_adapters(model, {"type": "lora", "rank": 2})
    count = freeze_base(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters.default." in n for n in trainable)
    assert count == sum(p.numel() for p in adapter_parameters(model))


def test_remove_restores_plain_layers():
    model = cond_model()
    x, t = torch.randn(2, 8, 16), torch.rand(2)
    cond = model.conditioner([{"seconds_start": 1, "seconds_total": 5, "class_id": 2}] * 2, "cpu")
    base = model(x, t, cond)
    apply_adapters(model, {"type": "lora", "rank": 2}, name="a")
    apply_adapters(model, {"type": "bora", "rank": 2, "include": ["to_qkv"]}, name="b")
    randomize(model)
    remove_adapter(model, "a")
    assert isinstance(model.model.model.transformer.layers[0].self_attn.to_qkv, AdaptedLinear)
    assert type(model.model.model.preprocess_conv) is nn.Conv1d
    remove_adapter(model, "b")
    assert not any(isinstance(m, (AdaptedLinear, AdaptedConv1d)) for m in model.modules())
    assert torch.equal(model(x, t, cond), base)
    with pytest.raises(KeyError, match="no adapter named"):
        set_adapter_strength(model, "a", 1.0)


# ---------------------------------------------------------------------- stacking and sigma gating
def test_stacking_rule_is_additive_and_order_independent():
    x = torch.randn(3, 5, 6)
    outputs = []
    for order in (("r", "c"), ("c", "r")):
        model = toy()
        configs = {"r": {"type": "dora-rows", "rank": 2}, "c": {"type": "lora", "rank": 3}}
        for name in order:
            torch.manual_seed(ord(name))  # the same initial values in both orders
            apply_adapters(model, configs[name], name=name)
            randomize(model, name, seed=ord(name))
        set_adapter_strength(model, "r", 0.5)
        set_adapter_strength(model, "c", 1.5)
        outputs.append(model(x))
        singles = {}
        for name in order:  # each adapter alone against the same base
            solo = copy.deepcopy(model)
            remove_adapter(solo, "c" if name == "r" else "r")
            singles[name] = solo.proj(x)
        base = toy().proj(x)
        assert torch.allclose(model.proj(x), base + (singles["r"] - base) + (singles["c"] - base), atol=1e-5)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)


def test_sigma_gate_per_element_under_batched_cfg():
    """Elements whose noise level is outside an adapter's range get exactly the base output, also in the 2B CFG
    batch; the elements inside get the adapter's output."""
    model = cond_model()
    torch.manual_seed(3)
    x = torch.randn(3, 8, 16)
    t = torch.tensor([0.1, 0.5, 0.9])  # v objective: sigma = sin(pi t / 2) = 0.156, 0.707, 0.988
    cond = model.conditioner([{"seconds_start": i, "seconds_total": 5, "class_id": i} for i in range(3)], "cpu")
    inputs = model.get_conditioning_inputs(cond)
    kwargs = dict(cfg_scale=3.0, batch_cfg=True)
    base = model.model(x, t, **inputs, **kwargs)
    apply_adapters(model, {"type": "dora-rows", "rank": 2}, name="high", sigma_range=(0.5, 1.0))
    apply_adapters(model, {"type": "lora", "rank": 2}, name="low", sigma_range=(0.0, 0.2))
    randomize(model)
    gated = model.model(x, t, **inputs, **kwargs)

    def ungated(keep):
        copy_ = copy.deepcopy(model)
        for name in ("high", "low"):
            if name == keep:
                set_adapter_sigma_range(copy_, name, None)
            else:
                remove_adapter(copy_, name)
        return copy_.model(x, t, **inputs, **kwargs)

    high, low = ungated("high"), ungated("low")
    assert torch.allclose(gated[0], low[0], atol=1e-5) and (low[0] - base[0]).abs().max() > 1e-3
    assert torch.allclose(gated[1], high[1], atol=1e-5) and torch.allclose(gated[2], high[2], atol=1e-5)
    assert (high[1] - base[1]).abs().max() > 1e-3
    # strength 0 everywhere: exactly the base
    set_adapter_strength(model, "high", 0.0)
    set_adapter_strength(model, "low", 0.0)
    assert torch.equal(model.model(x, t, **inputs, **kwargs), base)


def test_sigma_gate_for_rectified_flow_uses_t():
    config = copy.deepcopy(DIT_COND)
    config["model"]["diffusion"]["diffusion_objective"] = "rectified_flow"
    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    x, t = torch.randn(2, 8, 16), torch.tensor([0.3, 0.7])
    cond = model.conditioner([{"seconds_start": 0, "seconds_total": 5, "class_id": 1}] * 2, "cpu")
    base = model(x, t, cond)
    apply_adapters(model, {"type": "lora", "rank": 2}, sigma_range=(0.5, 1.0))
    randomize(model)
    out = model(x, t, cond)
    assert torch.equal(out[0], base[0]) and (out[1] - base[1]).abs().max() > 1e-3


def test_merge_refuses_sigma_gated_adapters():
    model = toy()
    apply_adapters(model, {"type": "lora", "rank": 2}, sigma_range=(0.2, 0.8))
    with pytest.raises(ValueError, match="noise level"):
        merge_adapters(model)


# ---------------------------------------------------------------------- language models
def test_lm_generation_honours_adapters():
    config = json.loads((FIXTURES / "golden" / "lm_delay" / "model_config.json").read_text())
    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    kwargs = dict(max_gen_len=6, conditioning=[{"seconds_total": 3}], seed=5, temp=0.0, disable_tqdm=True)
    with torch.no_grad():
        base = model.generate(**kwargs)
        layers = apply_adapters(model, {"type": "dora-rows", "rank": 2})  # default target for an LM: the LM
        assert layers and all(n.startswith("lm.") for n in layers)
        randomize(model, scale=1.0)
        adapted = model.generate(**kwargs)
        set_adapter_strength(model, "default", 0.0)
        again = model.generate(**kwargs)
    assert not torch.equal(adapted, base) and torch.equal(again, base)


def test_gradient_checkpointing_keeps_the_sigma_gate():
    """The DiT recomputes checkpointed blocks during backward; the gate must see the same per-element sigma then."""
    grads = []
    for checkpointing in (True, False):
        model = cond_model()
        torch.manual_seed(4)
        apply_adapters(model, {"type": "lora", "rank": 2}, sigma_range=(0.0, 0.5))
        randomize(model)
        freeze_base(model)
        model.train()
        x, t = torch.randn(2, 8, 16), torch.tensor([0.2, 0.9])  # sigma 0.31 (inside), 0.99 (outside)
        cond = model.conditioner([{"seconds_start": 0, "seconds_total": 5, "class_id": 1}] * 2, "cpu")
        out = model(x, t, cond, use_checkpointing=checkpointing)
        out[1].pow(2).sum().backward()  # only the element outside the range: no adapter gradient at all
        assert all(p.grad is None or p.grad.abs().max() == 0 for p in adapter_parameters(model))
        out = model(x, t, cond, use_checkpointing=checkpointing)
        out.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in adapter_parameters(model)]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
