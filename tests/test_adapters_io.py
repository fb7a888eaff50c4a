"""Adapter files: the native safetensors format, PEFT read/write, Stable Audio 3 files, T5 conditioner adapters
and clear errors for bad files (stable_audio_tools.models.adapters.io / interop)."""
import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stable_audio_tools.models.adapters import (AdapterFileError, adapter_state_dict, apply_adapters,
                                                 list_adapters, load_adapter, save_adapter, set_adapter_strength)
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.safe_load import UntrustedCheckpointError

from test_adapters import DIT_COND, TYPES, cond_model, randomize


def _inputs(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 8, 16, generator=gen), torch.tensor([0.3, 0.8])
    cond = model.conditioner([{"seconds_start": 1, "seconds_total": 7, "class_id": 3},
                              {"seconds_start": 2, "seconds_total": 9, "class_id": 4}], "cpu")
    return x, t, cond


def _out(model):
    x, t, cond = _inputs(model)
    with torch.no_grad():
        return model(x, t, cond)


# ---------------------------------------------------------------------- native
@pytest.mark.parametrize("kind", TYPES)
def test_native_round_trip(kind, tmp_path):
    model = cond_model()
    apply_adapters(model, {"type": kind, "rank": 2, "alpha": 3, "targets": ["diffusion", "conditioner"],
                           "exclude": ["to_timestep_embed"]}, name="style")
    randomize(model)
    expected = _out(model)
    path = save_adapter(model, tmp_path / "style.safetensors", metadata={"training_steps": 12})
    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["format"] == "stable-audio-tools-adapter" and meta["training_steps"] == "12"
    assert json.loads(meta["adapter_config"])["type"] == kind
    assert set(keys) == set(adapter_state_dict(model))  # only adapter tensors, never base weights
    assert not any(k.endswith((".weight", ".bias", ".U", ".V")) for k in keys)

    fresh = cond_model()
    name = load_adapter(fresh, path)
    assert name == "style" and list_adapters(fresh)["style"].config.type == kind
    torch.testing.assert_close(_out(fresh), expected, atol=1e-5, rtol=1e-5)
    set_adapter_strength(fresh, name, 0.0)
    assert torch.equal(_out(fresh), _out(cond_model()))


def test_native_fp16_and_strength_and_sigma_on_load(tmp_path):
    model = cond_model()
    apply_adapters(model, {"type": "lora", "rank": 4})
    randomize(model, scale=0.05)
    expected = _out(model)
    assert (expected - _out(cond_model())).abs().max() > 1e-2
    path = save_adapter(model, tmp_path / "a.safetensors", dtype=torch.float16)
    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    fresh = cond_model()
    load_adapter(fresh, path)
    torch.testing.assert_close(_out(fresh), expected, atol=2e-3, rtol=2e-3)
    load_adapter(fresh, path, strength=0.5, sigma_range=(0.9, 1.0))  # a second copy, stacked, gated
    info = list_adapters(fresh)
    assert list(info) == ["a", "a_2"] and info["a_2"].strength == 0.5 and info["a_2"].sigma_range == (0.9, 1.0)


# ---------------------------------------------------------------------- PEFT
@pytest.mark.parametrize("kind", ["lora", "dora-rows"])
def test_peft_round_trip(kind, tmp_path):
    model = cond_model()
    apply_adapters(model, {"type": kind, "rank": 2, "alpha": 4,
                           "include": ["self_attn", "preprocess_conv", "to_cond_embed"]})
    randomize(model)
    expected = _out(model)
    directory = save_adapter(model, tmp_path / "peft", format="peft")
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 4
    assert config["use_dora"] == (kind == "dora-rows")
    with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = list(f.keys())
        conv_a = f.get_tensor("base_model.model.model.model.preprocess_conv.lora_A.weight")
        conv_b = f.get_tensor("base_model.model.model.model.preprocess_conv.lora_B.weight")
    assert all(k.startswith("base_model.model.") for k in keys)
    assert conv_a.shape == (2, 8, 1) and conv_b.shape == (8, 2, 1)  # PEFT's Conv1d layout
    if kind == "dora-rows":
        with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as f:
            assert f.get_tensor("base_model.model.model.model.preprocess_conv.lora_magnitude_vector").shape == \
                (1, 8, 1)
    fresh = cond_model()
    assert load_adapter(fresh, directory) == "peft"
    torch.testing.assert_close(_out(fresh), expected, atol=1e-5, rtol=1e-5)


def test_peft_file_written_by_peft_for_the_dit_itself(tmp_path):
    """A PEFT LoRA made on the inner DiT (names without the model.model. prefix), with rsLoRA scaling."""
    model = cond_model()
    layer = model.model.model.transformer.layers[0].self_attn.to_qkv
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, layer.in_features, generator=gen), torch.randn(layer.out_features, 4, generator=gen) * 0.1
    save_file({"base_model.model.transformer.layers.0.self_attn.to_qkv.lora_A.weight": a,
               "base_model.model.transformer.layers.0.self_attn.to_qkv.lora_B.weight": b},
              str(tmp_path / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": True, "bias": "none",
        "target_modules": ["to_qkv"], "lora_dropout": 0.1}))
    x = torch.randn(3, 5, layer.in_features)
    expected = layer(x) + x @ (8 / 4 ** 0.5 * b @ a).T
    load_adapter(model, tmp_path / "adapter_model.safetensors")
    with torch.no_grad():
        adapted = model.model.model.transformer.layers[0].self_attn.to_qkv.eval()(x)
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=1e-5)


def test_peft_refuses_what_it_cannot_represent(tmp_path):
    model = cond_model()
    apply_adapters(model, {"type": "lora-xs", "rank": 2})
    with pytest.raises(ValueError, match="PEFT cannot represent"):
        save_adapter(model, tmp_path / "p", format="peft")
    model2 = cond_model()
    apply_adapters(model2, {"type": "lora", "rank": 2, "include": ["to_qkv"]})
    directory = save_adapter(model2, tmp_path / "ok", format="peft")
    config = json.loads((directory / "adapter_config.json").read_text())
    for key, value in (("bias", "all"), ("modules_to_save", ["proj"]), ("peft_type", "IA3")):
        bad = dict(config, **{key: value})
        (directory / "adapter_config.json").write_text(json.dumps(bad))
        with pytest.raises(AdapterFileError, match=f"'{key}'"):
            load_adapter(cond_model(), directory)


# ---------------------------------------------------------------------- Stable Audio 3
def _sa3_file(path, model, kind="dora-rows", legacy=False, layer=0):
    target = model.model.model.transformer.layers[0].self_attn.to_qkv
    gen = torch.Generator().manual_seed(1)
    fan_out, fan_in = target.weight.shape
    root = f"model.transformer.layers.{layer}.self_attn.to_qkv.parametrizations.weight.0."
    tensors = {root + "lora_A": torch.randn(2, fan_in, generator=gen), root + "lora_B": torch.randn(fan_out, 2,
                                                                                                  generator=gen) * 0.1}
    magnitude = target.weight.detach().norm(dim=1) * 1.1
    if kind.startswith("dora"):
        tensors[root + "magnitude"] = magnitude.reshape(-1, 1) if legacy else magnitude
        tensors[root + "baked_vnorm_row"] = torch.ones(fan_out)
    seconds = model.conditioner.conditioners["seconds_total"].embedder.embedding[1]
    croot = "conditioners.seconds_total.embedder.embedding.1.parametrizations.weight.0."
    tensors[croot + "lora_A"] = torch.randn(2, seconds.in_features, generator=gen)
    tensors[croot + "lora_B"] = torch.randn(seconds.out_features, 2, generator=gen) * 0.1
    if kind.startswith("dora"):
        tensors[croot + "magnitude"] = seconds.weight.detach().norm(dim=1)
    tensors = {k: v.half() if not k.endswith("baked_vnorm_row") else v for k, v in tensors.items()}
    config = {"rank": 2, "alpha": 4.0, "adapter_type": "dora" if legacy else kind, "include": None}
    save_file(tensors, str(path), metadata={"lora_config": json.dumps(config)})
    return tensors, root


@pytest.mark.parametrize("legacy", [False, True])
def test_stable_audio_3_file(tmp_path, legacy):
    model = cond_model()
    path = tmp_path / "sa3_lora.safetensors"
    tensors, root = _sa3_file(path, model, legacy=legacy)
    layer = model.model.model.transformer.layers[0].self_attn.to_qkv
    w0 = layer.weight.detach().clone()
    a, b, m = (tensors[root + p].float().reshape(-1) if p == "magnitude" else tensors[root + p].float()
               for p in ("lora_A", "lora_B", "magnitude"))
    v = w0 + 2.0 * b @ a
    w = m[:, None] * v / v.norm(dim=1, keepdim=True)
    x = torch.randn(3, 4, layer.in_features)
    expected = x @ w.T
    name = load_adapter(model, path)
    info = list_adapters(model)[name]
    assert info.config.type == "dora-rows" and info.config.rank == 2 and info.config.alpha == 4.0
    assert "model.model.transformer.layers.0.self_attn.to_qkv" in info.layers
    assert "conditioner.conditioners.seconds_total.embedder.embedding.1" in info.layers
    adapted = model.model.model.transformer.layers[0].self_attn.to_qkv
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), expected, atol=1e-4, rtol=1e-4)
    # the legacy .ckpt container of the same tensors
    torch.save({"state_dict": tensors, "lora_config": {"rank": 2, "alpha": 4.0, "adapter_type": "dora-rows"}},
               tmp_path / "sa3.ckpt")
    fresh = cond_model()
    load_adapter(fresh, tmp_path / "sa3.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(fresh.model.model.transformer.layers[0].self_attn.to_qkv(x), expected,
                                   atol=1e-4, rtol=1e-4)


def test_foreign_file_with_missing_modules_names_them(tmp_path):
    model = cond_model()
    path = tmp_path / "other.safetensors"
    _sa3_file(path, model, kind="lora", layer=7)  # this DiT has 2 blocks
    with pytest.raises(AdapterFileError, match=r"do not exist in this model.*layers\.7\.self_attn\.to_qkv"):
        load_adapter(model, path)
    assert not list_adapters(model)


# ---------------------------------------------------------------------- T5 conditioner
def test_t5_conditioner_adapters(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tiny_t5 import make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5")
    config = copy.deepcopy(DIT_COND)
    config["model"]["conditioning"]["configs"].append(
        {"id": "prompt", "type": "t5", "config": {"t5_model_name": t5, "max_length": 6}})
    config["model"]["diffusion"]["cross_attention_cond_ids"].append("prompt")
    config["model"]["conditioning"]["cond_dim"] = 32
    torch.manual_seed(0)
    model = create_model_from_config(config).eval()
    meta = [{"seconds_start": 0, "seconds_total": 5, "class_id": 1, "prompt": "warm synth pad"}]
    base = model.conditioner(meta, "cpu")["prompt"][0]
    layers = apply_adapters(model, {"type": "lora", "rank": 2, "targets": ["conditioner"],
                                    "include": ["model.encoder.block.[0-0]"]})
    assert layers and all(n.startswith("conditioner.conditioners.prompt.model.encoder.block.0.") for n in layers)
    randomize(model)
    adapted = model.conditioner(meta, "cpu")["prompt"][0]
    assert adapted.shape == base.shape == (1, 6, 32)
    assert (adapted - base).abs().max() > 1e-4
    assert "conditioner.conditioners.prompt.model.encoder.block.0.layer.0.SelfAttention.q" in layers
    path = save_adapter(model, tmp_path / "t5.safetensors")
    torch.manual_seed(0)
    fresh = create_model_from_config(config).eval()
    load_adapter(fresh, path)
    torch.testing.assert_close(fresh.conditioner(meta, "cpu")["prompt"][0], adapted)


# ---------------------------------------------------------------------- bad files
def test_bad_files_give_clear_errors(tmp_path):
    model = cond_model()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_adapter(model, tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"RIFF....WAVEfmt " + bytes(64))
    with pytest.raises(AdapterFileError, match="garbage.safetensors is not an adapter file"):
        load_adapter(model, garbage)
    from test_adapters import FIXTURES

    with pytest.raises(AdapterFileError, match="not an adapter file.*full model checkpoint"):
        load_adapter(model, FIXTURES / "golden" / "dit_cond" / "weights.safetensors")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(AdapterFileError, match="without adapter_config.json"):
        load_adapter(model, empty_dir)
    peft_only = tmp_path / "peft_tensors.safetensors"
    save_file({"base_model.model.x.lora_A.weight": torch.zeros(2, 2)}, str(peft_only))
    with pytest.raises(AdapterFileError, match="no adapter_config.json"):
        load_adapter(model, peft_only)

    apply_adapters(model, {"type": "dora-rows", "rank": 2, "include": ["to_qkv"]})
    good = save_adapter(model, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    bad_meta = tmp_path / "bad_meta.safetensors"
    save_file(tensors, str(bad_meta), metadata=dict(meta, adapter_config="{not json"))
    with pytest.raises(AdapterFileError, match="bad_meta.safetensors: its adapter_config metadata is not valid JSON"):
        load_adapter(cond_model(), bad_meta)
    bad_type = tmp_path / "bad_type.safetensors"
    save_file(tensors, str(bad_type), metadata=dict(meta, adapter_config=json.dumps({"type": "x", "rank": 2})))
    with pytest.raises(AdapterFileError, match="config key 'type'"):
        load_adapter(cond_model(), bad_type)
    key = next(k for k in tensors if k.endswith("lora_A"))
    shaped = tmp_path / "shape.safetensors"
    save_file({**tensors, key: torch.zeros(2, 5)}, str(shaped), metadata=meta)
    fresh = cond_model()
    with pytest.raises(AdapterFileError, match=r"lora_A has shape \(2, 5\)"):
        load_adapter(fresh, shaped)
    assert not list_adapters(fresh)  # nothing half-applied stays behind
    missing = tmp_path / "missing_magnitude.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.endswith("magnitude")}, str(missing), metadata=meta)
    with pytest.raises(AdapterFileError, match="lacks magnitude"):
        load_adapter(cond_model(), missing)
    nan = tmp_path / "nan.safetensors"
    save_file({**tensors, key: torch.full_like(tensors[key], float("nan"))}, str(nan), metadata=meta)
    with pytest.raises(AdapterFileError, match="NaN"):
        load_adapter(cond_model(), nan)


class Payload:
    """A class the safe loader refuses to rebuild."""


def test_pickled_adapter_needing_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "lora_config": Payload()}, path)
    with pytest.raises(UntrustedCheckpointError):
        load_adapter(cond_model(), path)
    plain = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.model.x.weight": torch.zeros(1)}}, plain)
    with pytest.raises(AdapterFileError, match="must be a Stable Audio 3 LoRA checkpoint"):
        load_adapter(cond_model(), plain)
