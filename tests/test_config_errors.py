"""Config errors name the JSON path, what was expected and the accepted values; configs are never mutated.

Also: the "did you mean" / warning policy for unknown keys, constructor arguments checked with their JSON path,
declared geometry checked against the model, several problems reported at once, NaN / inf numbers, the
learning-rate rule, and the layering of the config foundation.
"""
import ast
import copy
import json
import math
import time
import warnings

import pytest
import torch

from stable_audio_tools import config as foundation
from stable_audio_tools.config import (ConfigError, ConfigWarning, check_number, check_positive_int, close_key,
                                       get_bool, get_positive, resolve_learning_rate)
from stable_audio_tools.models import config as models_config
from stable_audio_tools.models.factory import create_model_from_config, create_model_from_config_path

from conftest import FIXTURES, ROOT


def golden(name="oobleck_tanh_mono"):
    return json.loads((FIXTURES / "golden" / name / "model_config.json").read_text())


def base_config():
    return golden()


def error_for(mutate, name="oobleck_tanh_mono"):
    cfg = golden(name)
    mutate(cfg)
    frozen = copy.deepcopy(cfg)
    with pytest.raises(ConfigError) as e:
        create_model_from_config(cfg)
    assert cfg == frozen
    return str(e.value)


def test_unknown_model_type_lists_accepted():
    msg = error_for(lambda c: c.update(model_type="autoencodr"))
    assert "'model_type'" in msg and "'autoencoder'" in msg and "did you mean 'autoencoder'" in msg


def test_missing_latent_dim_names_path():
    msg = error_for(lambda c: c["model"].pop("latent_dim"))
    assert "'model.latent_dim'" in msg and "required" in msg


def test_unknown_encoder_type():
    msg = error_for(lambda c: c["model"]["encoder"].update(type="oobleek"))
    assert "'model.encoder.type'" in msg and "'oobleck'" in msg and "'dac'" in msg and "'taae'" in msg


def test_unknown_encoder_option_names_key_and_accepted():
    msg = error_for(lambda c: c["model"]["encoder"]["config"].update(chanels=4))
    assert "'model.encoder.config.chanels'" in msg and "did you mean 'channels'" in msg


def test_unknown_bottleneck_type():
    msg = error_for(lambda c: c["model"]["bottleneck"].update(type="vea"))
    assert "'model.bottleneck.type'" in msg and "'vae'" in msg and "'dithered_fsq'" in msg


def test_sample_size_not_divisible_warns_for_autoencoders():
    cfg = base_config()
    cfg["sample_size"] = 500
    with pytest.warns(ConfigWarning) as caught:
        create_model_from_config(cfg)
    msg = " ".join(str(w.message) for w in caught)
    assert "'sample_size'" in msg and "downsampling ratio 16" in msg and "496" in msg


def test_vae_encoder_width_checked():
    def mutate(c):
        c["model"]["bottleneck"] = {"type": "vae"}
    msg = error_for(mutate)
    assert "'model.encoder.config.latent_dim'" in msg and "2 x latent_dim = 12" in msg


def test_wrong_type_of_value():
    msg = error_for(lambda c: c["model"].update(latent_dim="six"))
    assert "'model.latent_dim'" in msg and "expected a positive integer, got str 'six'" in msg


def test_bad_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "autoencoder",,}')
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        create_model_from_config_path(bad)


@pytest.mark.parametrize("pretransform,needle", [
    ({"type": "wavlet", "config": {}}, "'model.pretransform.type'"),
    ({"type": "wavelet", "config": {"channels": 1}}, "'model.pretransform.config.levels'"),
])
def test_pretransform_errors(pretransform, needle):
    msg = error_for(lambda c: c["model"].update(pretransform=pretransform))
    assert needle in msg


# ---------------------------------------------------------------------- unknown keys: typo errors, other warnings
def test_typo_of_an_accepted_key_is_an_error_other_unknown_keys_warn():
    msg = error_for(lambda c: c["model"].update(latnt_dim=3))
    assert "'model.latnt_dim'" in msg and "did you mean 'latent_dim'" in msg
    cfg = base_config()
    cfg["model"]["release_notes"] = "trained on a lot of audio"
    cfg["extra_top"] = 1
    cfg["_comment"] = "comments are never reported"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_model_from_config(cfg)
    texts = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert any("'model.release_notes'" in t for t in texts) and any("'extra_top'" in t for t in texts)
    assert not any("_comment" in t for t in texts)


def test_backbone_typo_names_the_json_path():
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(embed_dimm=64), "dit_cond")
    assert "'model.diffusion.config.embed_dimm'" in msg and "did you mean 'embed_dim'" in msg


def test_routing_key_typo():
    def mutate(c):
        c["model"]["diffusion"]["cross_attention_cond_id"] = c["model"]["diffusion"].pop("cross_attention_cond_ids")
    msg = error_for(mutate, "dit_cond")
    assert "'model.diffusion.cross_attention_cond_id'" in msg and "did you mean 'cross_attention_cond_ids'" in msg


def test_unknown_backbone_argument_is_a_config_error_not_a_type_error():
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(flux_capacitor=1), "dit_cond")
    assert "'model.diffusion.config.flux_capacitor'" in msg and "is not an option of DiTWrapper" in msg
    assert "embed_dim" in msg and "sliding_window" in msg  # the accepted list follows DiT -> transformer -> blocks


def test_nested_attention_options_are_checked():
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_normm": "ln"}), "dit_cond")
    assert "'model.diffusion.config.attn_kwargs.qk_normm'" in msg and "did you mean 'qk_norm'" in msg
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_norm": "layer"}),
                    "dit_cond")
    assert "'model.diffusion.config.attn_kwargs.qk_norm'" in msg


def test_constructor_choice_is_named_with_its_path():
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(global_cond_type="adaln"), "dit_cond")
    assert "'model.diffusion.config.global_cond_type'" in msg and "did you mean 'adaLN'" in msg


# ---------------------------------------------------------------------- geometry
def test_downsampling_ratio_must_match_the_strides():
    msg = error_for(lambda c: c["model"].update(downsampling_ratio=32))
    assert "'model.encoder.config.strides'" in msg and "declares downsampling_ratio 32" in msg
    assert "'model.decoder.config.strides'" in msg


def test_pretransform_chain_geometry():
    msg = error_for(lambda c: c["model"]["pretransform"]["config"].update(downsampling_ratio=8),
                    "ldm_dit_pretransform")
    assert "'model.pretransform.config.encoder.config.strides'" in msg and "downsampling_ratio 8" in msg
    msg = error_for(lambda c: c["model"].update(io_channels=6), "ldm_dit_pretransform")
    assert "'model.io_channels'" in msg and "4-channel latents" in msg


def test_sample_size_must_be_positive_and_a_multiple_where_the_model_needs_it():
    msg = error_for(lambda c: c.update(sample_size=0), "dit_cond")
    assert "'sample_size'" in msg and "positive integer" in msg
    msg = error_for(lambda c: c.update(sample_size=250), "ldm_dit_pretransform")
    assert "'sample_size'" in msg and "multiple" in msg and "252" in msg


def test_global_cond_dim_must_match_the_conditioners():
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(global_cond_dim=48), "dit_cond")
    assert "'model.diffusion.config.global_cond_dim'" in msg and "[seconds_start, seconds_total]" in msg
    assert "set it to 64" in msg
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(prepend_cond_dim=16), "dit_cond")
    assert "'model.diffusion.config.prepend_cond_dim'" in msg and "set it to 32" in msg


def test_encoder_and_decoder_channels_match_the_autoencoder():
    msg = error_for(lambda c: c["model"]["decoder"]["config"].update(out_channels=2))
    assert "'model.decoder.config.out_channels'" in msg and "writes 1-channel audio" in msg


def test_list_versus_object_and_null():
    msg = error_for(lambda c: c["model"]["encoder"].update(config=[1, 2]))
    assert "'model.encoder.config'" in msg and "expected a JSON object" in msg
    msg = error_for(lambda c: c["model"]["encoder"]["config"].update(strides={"0": 2}))
    assert "'model.encoder.config.strides'" in msg and "expected Sequence[int]" in msg
    msg = error_for(lambda c: c["model"]["encoder"]["config"].update(channels=None))
    assert "'model.encoder.config.channels'" in msg and "null" in msg


def test_several_problems_are_reported_at_once():
    def mutate(c):
        c["model"]["io_channels"] = 0
        c["model"]["latent_dim"] = -1
        c["sample_rate"] = float("nan")
    cfg = golden()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        create_model_from_config(cfg)
    assert {"model.io_channels", "model.latent_dim", "sample_rate"} <= set(e.value.paths)
    assert str(e.value).startswith(f"{len(e.value.errors)} config problems:")


def test_nan_loss_weight_is_a_config_error():
    cfg = golden()
    cfg["training"] = {"learning_rate": 1e-4, "loss_configs": {"time": {"weights": {"l1": float("nan")}}}}
    with pytest.raises(ConfigError, match=r"'training\.loss_configs\.time\.weights\.l1': must be a finite number"):
        create_model_from_config(cfg)


def test_huge_size_is_refused_before_anything_is_allocated():
    start = time.perf_counter()
    msg = error_for(lambda c: c["model"]["diffusion"]["config"].update(embed_dim=10 ** 9), "dit_cond")
    assert "'model.diffusion.config.embed_dim'" in msg and "larger than the limit 65536" in msg
    assert time.perf_counter() - start < 10


def test_kv_heads_above_query_heads_still_build():
    cfg = golden("dit_cond_wide_tokens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        with torch.device("meta"):
            create_model_from_config(cfg)


# ---------------------------------------------------------------------- training block
def test_learning_rate_rule():
    with pytest.raises(ConfigError, match=r"'training\.learning_rate': is required when 'training\.optimizer_configs'"):
        resolve_learning_rate({}, ("lm",))
    with pytest.raises(ConfigError, match=r"'training\.learning_rate': must be > 0"):
        resolve_learning_rate({"learning_rate": 0}, ("lm",))
    with pytest.raises(ConfigError, match=r"'training\.optimizer_configs\.lm'"):
        resolve_learning_rate({"optimizer_configs": {"diffusion": {"optimizer": {}}}}, ("lm",))
    configs = {"lm": {"optimizer": {"type": "AdamW", "config": {"lr": 1e-4}}}}
    with pytest.warns(ConfigWarning, match="optimizer_configs wins"):
        lr, resolved = resolve_learning_rate({"learning_rate": 1e-3, "optimizer_configs": configs}, ("lm",))
    assert lr == 1e-3 and resolved == configs and resolved is not configs
    assert resolve_learning_rate({"learning_rate": 2e-4}, ("lm",)) == (2e-4, None)


def test_autoencoder_training_options_checked():
    from stable_audio_tools.training.factory import create_training_wrapper_from_config

    cfg = golden()
    model = create_model_from_config(cfg)
    for training, needle in [({"learning_rate": 1e-4, "warmup_steps": -1}, "'training.warmup_steps'"),
                             ({"learning_rate": 1e-4, "warmup_mode": "ful"}, "did you mean 'full'"),
                             ({"learning_rate": 1e-4, "use_ema": "yes"}, "'training.use_ema'"),
                             ({"learning_rate": 1e-4, "latent_mask_ratio": 2}, "'training.latent_mask_ratio'"),
                             ({"learning_rate": float("inf")}, "'training.learning_rate': must be a finite"),
                             ({}, "'training.learning_rate': is required")]:
        with pytest.raises(ConfigError) as e:
            create_training_wrapper_from_config(dict(cfg, training=training), model)
        assert needle in str(e.value)


# ---------------------------------------------------------------------- the foundation
def test_small_validators():
    assert close_key("embed_dimm", ["embed_dim", "depth"]) == "embed_dim"
    assert close_key("dimm", ["dim"]) == "dim"
    assert close_key("heads", ["depth"]) is None
    assert close_key("in_chanels", ["in_channels"]) == "in_channels"
    assert close_key("flux_capacitor", ["embed_dim"]) is None
    assert check_positive_int(3, "x") == 3
    for bad in (0, -1, True, 2.0, None, 10 ** 9):
        with pytest.raises(ConfigError, match="'x'"):
            check_positive_int(bad, "x")
    with pytest.raises(ConfigError, match="finite"):
        check_number(math.inf, "x")
    with pytest.raises(ConfigError, match="'a.b': expected true or false"):
        get_bool({"b": 1}, "b", False, "a")
    assert get_positive({}, "k", None, "") is None
    with pytest.raises(ConfigError, match="'k': expected a positive number"):
        get_positive({"k": 0.0}, "k", None, "", integer=False)


def test_old_import_paths_are_the_foundation():
    for name in ("ConfigError", "ConfigWarning", "require", "require_mapping", "check_choice", "warn_unknown_keys"):
        assert getattr(models_config, name) is getattr(foundation, name)
    assert callable(models_config.build_from_config)


def _imports(path):
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_foundation_is_the_lowest_layer():
    package = ROOT / "stable_audio_tools"
    assert not [m for m in _imports(package / "config.py") if m.startswith(".") or m.startswith("stable_audio_tools")]
    for path in (package / "data").glob("*.py"):
        assert not [m for m in _imports(path) if "models" in m], path
