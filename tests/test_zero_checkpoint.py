"""scripts/ds_zero_to_pl_ckpt.py: DeepSpeed ZeRO 1/2/3 checkpoint directories (written here in DeepSpeed's file
layout, with DeepSpeed's own class names pickled) -> a Lightning checkpoint that unwrap_model.py unwraps."""
import collections
import dataclasses
import enum
import importlib.util
import math
import os
import subprocess
import sys
import types

import pytest
import torch

from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.safe_load import UntrustedCheckpointError
from stable_audio_tools.models.utils import load_ckpt_state_dict
from stable_audio_tools.training import create_training_wrapper_from_config
from stable_audio_tools.training.zero_checkpoint import ZeroCheckpointError, load_zero_checkpoint

from conftest import ROOT
from tiny_autoencoder import tiny_autoencoder_config

WORLD = 2
TINY_AE = tiny_autoencoder_config(use_ema=True)


@pytest.fixture
def deepspeed_classes(monkeypatch):
    """Classes under DeepSpeed's module names, so the files reference them exactly as real checkpoints do."""
    class ZeroStageEnum(enum.IntEnum):
        disabled = 0
        optimizer_states = 1
        gradients = 2
        weights = 3

    class LossScaler:
        def __init__(self, scale):
            self.cur_scale = scale

    @dataclasses.dataclass
    class fragment_address:  # noqa: N801 (DeepSpeed's name)
        numel: int
        start: int

    found = {}
    for module_name, cls in (("deepspeed.runtime.zero.config", ZeroStageEnum),
                             ("deepspeed.runtime.fp16.loss_scaler", LossScaler),
                             ("deepspeed.utils.tensor_fragment", fragment_address)):
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        cls.__module__, cls.__qualname__ = module_name, cls.__name__
        setattr(sys.modules[module_name], cls.__name__, cls)
        found[cls.__name__] = cls
    return found


def lightning_state(wrapper):
    """The LightningModule's state: trainable parameters in two groups, frozen parameters (the EMA), buffers."""
    state = wrapper.state_dict()
    trainable = [n for n, p in wrapper.named_parameters() if p.requires_grad]
    groups = [[n for n in trainable if n.startswith("autoencoder.encoder.")],
              [n for n in trainable if not n.startswith("autoencoder.encoder.")]]
    frozen = [n for n, p in wrapper.named_parameters() if not p.requires_grad]
    buffers = [n for n, _ in wrapper.named_buffers()]
    first_name = {}
    for name, value in state.items():
        first_name.setdefault(value.data_ptr(), name)
    shared = {n: first_name[v.data_ptr()] for n, v in state.items() if first_name[v.data_ptr()] != n}
    assert shared  # the EMA's online_model is the autoencoder itself
    return state, groups, frozen, buffers, shared


def write_zero_dir(root, wrapper, stage, ds, prefix=""):
    """A Lightning DeepSpeed checkpoint directory: latest, <tag>/*_model_states.pt, <tag>/*_optim_states.pt."""
    state, groups, frozen, buffers, shared = lightning_state(wrapper)
    tag = root / "checkpoint"
    tag.mkdir(parents=True)
    (root / "latest").write_text("checkpoint")
    shapes = [collections.OrderedDict((prefix + n, state[n].shape) for n in group) for group in groups]
    lightning = {"epoch": 0, "global_step": 7, "pytorch-lightning_version": "2.6.6", "loops": {}, "callbacks": {},
                 "lr_schedulers": [], "model_config": TINY_AE}
    ds_keys = {"ds_config": {"zero_optimization": {"stage": stage}}, "ds_version": "0.14.0"}
    common = {"module": {prefix + n: v.half() if v.is_floating_point() else v for n, v in state.items()},
              "buffer_names": [prefix + n for n in buffers], "optimizer": None, "param_shapes": shapes,
              "shared_params": {prefix + k: prefix + v for k, v in shared.items()}, "frozen_param_shapes": collections.OrderedDict((prefix + n, state[n].shape) for n in frozen),
              "lr_scheduler": None, "data_sampler": None, "random_ltd": None, "sparse_tensor_module_names": set(),
              "skipped_steps": 0, "global_steps": 7, "global_samples": 14,
              "dp_world_size": WORLD, "mp_world_size": 1, **ds_keys, **lightning}
    if stage <= 2:
        per_rank = [[] for _ in range(WORLD)]
        for group in groups:
            flat = torch.cat([state[n].float().reshape(-1) for n in group])
            padded = 2 * WORLD * math.ceil(flat.numel() / (2 * WORLD))
            flat = torch.cat([flat, torch.zeros(padded - flat.numel())])
            parts = list(flat.chunk(WORLD))
            parts[-1] = parts[-1][:parts[-1].numel() - (padded - sum(state[n].numel() for n in group))]
            for rank in range(WORLD):
                per_rank[rank].append(parts[rank].clone())
        fragments = {prefix + n: state[n].half() for n in frozen}
        torch.save({**common, "frozen_param_fragments": fragments}, tag / "mp_rank_00_model_states.pt")
        key = "single_partition_of_fp32_groups"
    else:
        per_rank = [[torch.cat([chunk(state[n], rank) for n in group])] for rank in range(WORLD)
                    for group in [[n for g in groups for n in g]]]
        for rank in range(WORLD):
            fragments = {prefix + n: chunk(state[n], rank).half() for n in frozen}
            torch.save({**common, "frozen_param_fragments": fragments},
                       tag / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        key = "fp32_flat_groups"
    for rank in range(WORLD):
        mapping = [collections.OrderedDict((prefix + n, ds["fragment_address"](state[n].numel(), 0)) for n in g) for g in groups]
        optim = {"zero_stage": ds["ZeroStageEnum"](stage), "loss_scaler": ds["LossScaler"](1.0),
                 "dynamic_loss_scale": False, "overflow": False, "clip_grad": 0.0, "partition_count": [WORLD, WORLD],
                 "base_optimizer_state": {"state": {}, "param_groups": []}, key: per_rank[rank],
                 "param_slice_mappings": mapping, "ds_version": "0.14.0"}
        torch.save({"optimizer_state_dict": optim, **ds_keys}, tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    return root


def chunk(tensor, rank):
    """ZeRO 3's slice of a parameter for ``rank``: ceil(numel / world) values, the last slice zero-padded."""
    flat = tensor.float().reshape(-1)
    part = math.ceil(flat.numel() / WORLD)
    flat = torch.cat([flat, torch.zeros(part * WORLD - flat.numel())])
    return flat[rank * part:(rank + 1) * part].clone()


@pytest.fixture
def wrapper():
    torch.manual_seed(0)
    wrapper = create_training_wrapper_from_config(TINY_AE, create_model_from_config(TINY_AE))
    with torch.no_grad():  # make the EMA (exported by unwrap_model.py) differ from the online weights
        for p in wrapper.autoencoder_ema.ema_model.parameters():
            p.add_(0.25)
    return wrapper


def run_unwrap(ckpt, name):
    spec = importlib.util.spec_from_file_location("unwrap_script", ROOT / "unwrap_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--ckpt-path", str(ckpt), "--name", str(name)])


@pytest.mark.parametrize("stage,prefix", [(1, ""), (2, ""), (3, "_forward_module.")])
def test_zero_stages_consolidate_exactly(stage, prefix, wrapper, deepspeed_classes, tmp_path):
    zero_dir = write_zero_dir(tmp_path / "epoch=0-step=7.ckpt", wrapper, stage, deepspeed_classes, prefix)
    checkpoint = load_zero_checkpoint(zero_dir)
    expected = wrapper.state_dict()
    assert set(checkpoint["state_dict"]) == set(expected)
    master = {n for n, p in wrapper.named_parameters() if p.requires_grad}
    master |= {n for n in expected if n.startswith("autoencoder_ema.online_model.")}  # shared with autoencoder.*
    for name, value in expected.items():
        got = checkpoint["state_dict"][name]
        assert got.dtype == (torch.float32 if value.is_floating_point() else value.dtype), name
        # trainable weights come from the fp32 master copy; frozen ones and buffers only exist in 16 bits
        assert torch.equal(got, value if name in master or not value.is_floating_point() else value.half().float())
    assert checkpoint["global_step"] == 7 and checkpoint["model_config"] == TINY_AE
    assert not {"module", "param_shapes", "ds_config", "buffer_names"} & set(checkpoint)


def test_script_then_unwrap_model(wrapper, deepspeed_classes, tmp_path):
    zero_dir = write_zero_dir(tmp_path / "epoch=0-step=7.ckpt", wrapper, 2, deepspeed_classes)
    out = tmp_path / "lightning_model.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # no DeepSpeed classes in this process
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "ds_zero_to_pl_ckpt.py"), "--save_path",
                           str(zero_dir), "--output_path", str(out)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global step 7" in proc.stdout
    written = run_unwrap(out, tmp_path / "model")
    model = create_model_from_config(TINY_AE)
    model.load_state_dict(load_ckpt_state_dict(written), strict=True)
    ema = wrapper.autoencoder_ema.ema_model.state_dict()
    for name, value in model.state_dict().items():  # the EMA weights, through DeepSpeed's 16-bit frozen copy
        torch.testing.assert_close(value, ema[name].half().float(), rtol=0, atol=0)


def test_refusals_name_the_problem(wrapper, deepspeed_classes, tmp_path, monkeypatch):
    zero_dir = write_zero_dir(tmp_path / "z", wrapper, 2, deepspeed_classes)
    (zero_dir / "checkpoint" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ZeroCheckpointError, match="written by 2 data-parallel ranks but 1"):
        load_zero_checkpoint(zero_dir)
    (zero_dir / "latest").unlink()
    with pytest.raises(ZeroCheckpointError, match="no 'latest' file.*--tag"):
        load_zero_checkpoint(zero_dir)
    with pytest.raises(ZeroCheckpointError, match="tag 'other' has no folder"):
        load_zero_checkpoint(zero_dir, tag="other")

    # a file that needs any other class is refused by the safe loader, unless trusted
    evil = write_zero_dir(tmp_path / "evil", wrapper, 2, deepspeed_classes)
    model_file = evil / "checkpoint" / "mp_rank_00_model_states.pt"
    contents = torch.load(model_file, weights_only=False)
    contents["callbacks"] = {"hook": os.system}
    torch.save(contents, model_file)
    monkeypatch.delenv("STABLE_AUDIO_TOOLS_TRUST_PICKLE", raising=False)
    with pytest.raises(UntrustedCheckpointError, match="posix.system.*--trust-pickle"):
        load_zero_checkpoint(evil)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "ds_zero_to_pl_ckpt.py"), "--save_path", str(evil),
                           "--output_path", str(tmp_path / "out.pt")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr and not (tmp_path / "out.pt").exists()
