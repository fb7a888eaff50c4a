"""Checkpoint utilities: every checkpoint kind, wrong-kind errors, lenient copy, weight-norm removal, atomic writes."""
import copy

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from stable_audio_tools.models.utils import (CheckpointKindError, checkpoint_kind, copy_state_dict,
                                             load_ckpt_state_dict, remove_weight_norm_from_model)
from stable_audio_tools.models.wn import WNConv1d, WNConvTranspose1d
from stable_audio_tools.training.ema import EMA
from stable_audio_tools.training.export import atomic_write, save_unwrapped


def _model():
    torch.manual_seed(0)
    return nn.Sequential(WNConv1d(2, 4, 3, padding=1), nn.Conv1d(4, 4, 1), WNConvTranspose1d(4, 2, 4, 2, padding=1))


def test_unwrapped_formats_round_trip(tmp_path):
    model = _model()
    save_unwrapped(model, tmp_path / "m.ckpt")
    save_unwrapped(model, tmp_path / "m.safetensors", use_safetensors=True)
    assert checkpoint_kind(tmp_path / "m.ckpt") == "unwrapped-ckpt"
    assert checkpoint_kind(tmp_path / "m.safetensors") == "unwrapped-safetensors"
    for name in ("m.ckpt", "m.safetensors"):
        other = _model()
        with torch.no_grad():
            for p in other.parameters():
                p.zero_()
        other.load_state_dict(load_ckpt_state_dict(tmp_path / name), strict=True)
        for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), k


def test_wrapped_checkpoint_is_explained(tmp_path):
    model = _model()
    torch.save({"state_dict": {f"autoencoder.{k}": v for k, v in model.state_dict().items()}, "global_step": 7,
                "optimizer_states": [], "pytorch-lightning_version": "2.6"}, tmp_path / "run.ckpt")
    assert checkpoint_kind(tmp_path / "run.ckpt") == "wrapped"
    with pytest.raises(CheckpointKindError) as e:
        load_ckpt_state_dict(tmp_path / "run.ckpt")
    msg = str(e.value)
    assert "wrapped training checkpoint" in msg and "global_step 7" in msg
    assert "--ckpt-path" in msg and "unwrap_model.py" in msg


def test_not_a_checkpoint(tmp_path):
    torch.save({"hello": "world"}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointKindError, match="not a model checkpoint"):
        load_ckpt_state_dict(tmp_path / "x.ckpt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_ckpt_state_dict(tmp_path / "missing.safetensors")


def test_prefix_and_bare_state_dict(tmp_path):
    sd = {"pretransform.model.a": torch.ones(2), "model.b": torch.zeros(1)}
    save_file(sd, str(tmp_path / "x.safetensors"))
    assert list(load_ckpt_state_dict(tmp_path / "x.safetensors", prefix="pretransform.model.")) == ["a"]
    torch.save(sd, tmp_path / "bare.pt")
    assert checkpoint_kind(tmp_path / "bare.pt") == "bare-state-dict"


def test_copy_state_dict_reports_skips(caplog):
    model = _model()
    sd = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    sd["0.bias"] = torch.zeros(99)
    sd["nope.weight"] = torch.zeros(1)
    caplog.set_level("INFO")
    copied, mismatched, unknown = copy_state_dict(model, sd)
    assert mismatched == ["0.bias"] and unknown == ["nope.weight"]
    assert "1.weight" in copied and torch.equal(model.state_dict()["1.weight"], sd["1.weight"])
    assert "shape mismatch" in caplog.text


def test_remove_weight_norm_mixed_model():
    model = _model()
    legacy = nn.utils.weight_norm(nn.Conv1d(2, 2, 1))
    full = nn.Sequential(model, legacy)
    x = torch.randn(1, 2, 8)
    before = full(x)
    remove_weight_norm_from_model(full)
    keys = list(full.state_dict())
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    torch.testing.assert_close(full(x), before)


def test_weight_norm_modules_deepcopy_after_forward_and_ema():
    model = _model()
    model(torch.randn(1, 2, 8)).sum().backward()
    ema = EMA(model, beta=0.9, update_after_step=0, update_every=1, power=1.0)
    twin = copy.deepcopy(model)
    assert list(twin.state_dict()) == list(model.state_dict())
    keys = list(ema.state_dict())
    assert "initted" in keys and "step" in keys
    assert any(k.startswith("online_model.") for k in keys) and any(k.startswith("ema_model.") for k in keys)
    ema.update()  # step 0: copy
    ema.update()  # step 1: initialise from the online model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()  # step 2: decay = 1 - (1 + 2) ** -1 = 2/3, so the EMA moves 1/3 of the way
    diff = (model[1].weight - ema.ema_model[1].weight).abs().max()
    torch.testing.assert_close(diff, torch.tensor(2 / 3))


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "last.ckpt"
    torch.save({"v": 1}, target)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert torch.load(target)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
