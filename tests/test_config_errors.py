"""Config errors name the JSON path, what was expected and the accepted values; configs are never mutated."""
import copy
import json
import warnings

import pytest

from stable_audio_tools.models.config import ConfigError, ConfigWarning
from stable_audio_tools.models.factory import create_model_from_config, create_model_from_config_path

from conftest import FIXTURES


def base_config():
    return json.loads((FIXTURES / "golden" / "oobleck_tanh_mono" / "model_config.json").read_text())


def error_for(mutate):
    cfg = base_config()
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
    assert "'model.latent_dim'" in msg and "expected int" in msg


def test_unknown_keys_warn():
    cfg = base_config()
    cfg["model"]["latnt_dim"] = 3
    cfg["extra_top"] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_model_from_config(cfg)
    texts = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert any("'model.latnt_dim'" in t for t in texts) and any("'extra_top'" in t for t in texts)


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
