"""Safe checkpoint loading: a malicious pickle never runs on any loading path (library calls and the root scripts),
files that are not checkpoints get a clear error, and checkpoints written by train.py, unwrap_model.py and
Lightning itself still load without trusting pickles. The trust switch (flag / environment variable) allows a
legitimate file that needs arbitrary unpickling."""
import argparse
import builtins
import collections
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from torch import nn

from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.pretrained import get_pretrained_model
from stable_audio_tools.models.safe_load import (TRUST_PICKLE_ENV, NotACheckpointError, UntrustedCheckpointError,
                                                 torch_load, trust_pickle_enabled)
from stable_audio_tools.models.text_conditioners import clap_load_state_dict
from stable_audio_tools.models.utils import (CheckpointKindError, checkpoint_kind, load_ckpt_state_dict,
                                             read_checkpoint)
from stable_audio_tools.training.export import AtomicCheckpointIO, save_unwrapped
from stable_audio_tools.training.pretransform_check import checkpoint_keys, pretransform_is_untrained

from conftest import ROOT
from test_train_e2e import TINY_AE, pretransformed_autoencoder_config


class SystemPayload:
    """Unpickles into ``os.system("touch MARKER")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class BuiltinPayload:
    """Unpickles into ``builtins.exec(...)`` writing MARKER."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",)


PAYLOADS = {"system": (SystemPayload, "posix.system" if os.name != "nt" else "nt.system"),
            "builtin": (BuiltinPayload, "builtins.exec")}


def malicious(path, marker, contents, payload="system", legacy=False):
    """``torch.save`` ``contents`` (a real-looking checkpoint dict) with a code-running payload inside."""
    cls, _ = PAYLOADS[payload]
    torch.save({**contents, "payload": cls(marker)}, path, _use_new_zipfile_serialization=not legacy)
    return path


def assert_refused(message, marker, payload="system"):
    assert "refusing to load" in message and PAYLOADS[payload][1] in message, message
    assert "--trust-pickle" in message and f"{TRUST_PICKLE_ENV}=1" in message, message
    assert "weights_only" not in message and "Traceback" not in message, message
    assert not os.path.exists(marker), "the malicious payload ran"


def tiny_model_state():
    torch.manual_seed(0)
    return create_model_from_config(TINY_AE).state_dict()


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    """Every test starts without the trust variable; what a test (or a script's flag) sets is undone after it."""
    monkeypatch.setenv(TRUST_PICKLE_ENV, "0")  # records the original value, so teardown restores it
    monkeypatch.delenv(TRUST_PICKLE_ENV)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Test-written audio, the tiny autoencoder config and a real 2-step train.py checkpoint."""
    root = tmp_path_factory.mktemp("safe_loading")
    data = root / "audio"
    data.mkdir()
    t = np.arange(4000) / 8000
    for i in range(4):
        sf.write(data / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 8000)
    (root / "model.json").write_text(json.dumps(TINY_AE))
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "test", "path": str(data)}], "random_crop": True}))
    proc = run(root, "train.py", *train_args(root, root / "run", "--max-steps", 2))
    assert proc.returncode == 0, proc.stderr[-4000:]
    (ckpt,) = (root / "run").rglob("*.ckpt")
    return {"root": root, "ckpt": ckpt, "wav": data / "tone_0.wav"}


def run(cwd, script, *args, env_extra=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != TRUST_PICKLE_ENV}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def train_args(root, save_dir, *extra):
    return ["--model-config", root / "model.json", "--dataset-config", root / "dataset.json", "--save-dir", save_dir,
            "--logger", "csv", "--batch-size", 2, "--num-workers", 0, "--checkpoint-every", 2, *extra]


def load_script(filename):
    spec = importlib.util.spec_from_file_location(filename[:-3].replace("/", "_"), ROOT / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ the payload is real
def test_the_payloads_run_when_unpickled_unsafely(tmp_path):
    for payload in PAYLOADS:
        marker = tmp_path / f"{payload}.marker"
        path = malicious(tmp_path / f"{payload}.ckpt", marker, {"state_dict": {}}, payload)
        torch.load(path, weights_only=False)
        assert marker.exists(), payload  # so the "never ran" assertions below can fail


# --------------------------------------------------------------------------------------------- library paths
@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_library_loaders_refuse_malicious_pickles(tmp_path, payload, legacy):
    marker = tmp_path / "marker"
    unwrapped = malicious(tmp_path / "model.ckpt", marker, {"state_dict": tiny_model_state()}, payload, legacy)
    wrapped = malicious(tmp_path / "run.ckpt", marker, {"state_dict": {}, "global_step": 3, "optimizer_states": []},
                        payload, legacy)
    calls = [lambda: load_ckpt_state_dict(unwrapped), lambda: checkpoint_kind(unwrapped),
             lambda: checkpoint_kind(wrapped), lambda: read_checkpoint(wrapped), lambda: checkpoint_keys(unwrapped),
             lambda: pretransform_is_untrained(create_model_from_config(pretransformed_autoencoder_config()), unwrapped),
             lambda: AtomicCheckpointIO().load_checkpoint(wrapped),
             lambda: clap_load_state_dict(str(unwrapped), nn.Linear(2, 2))]
    for call in calls:
        with pytest.raises(UntrustedCheckpointError) as e:
            call()
        assert_refused(str(e.value), marker, payload)
        assert str(unwrapped) in str(e.value) or str(wrapped) in str(e.value)


def test_zip_checkpoints_list_every_unsafe_global(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"a": SystemPayload(marker), "b": BuiltinPayload(marker)}, tmp_path / "two.ckpt")
    with pytest.raises(UntrustedCheckpointError) as e:
        torch_load(tmp_path / "two.ckpt")
    assert PAYLOADS["system"][1] in str(e.value) and "builtins.exec" in str(e.value)
    assert not marker.exists()


def _hf_cache_repo(tmp_path, monkeypatch, files):
    """A ``models--test-org--<name>`` repo in a test Hugging Face cache, read offline."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf_cache"
    revision = hashlib.sha1(b"safe-loading").hexdigest()
    repo = cache / "models--test-org--unsafe"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, write in files.items():
        write(snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return "test-org/unsafe"


def test_get_pretrained_model_refuses_a_malicious_model_ckpt(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    local = tmp_path / "local"
    local.mkdir()
    (local / "model_config.json").write_text(json.dumps(TINY_AE))
    malicious(local / "model.ckpt", marker, {"state_dict": tiny_model_state()})
    with pytest.raises(UntrustedCheckpointError) as e:
        get_pretrained_model(str(local))
    assert_refused(str(e.value), marker)

    repo = _hf_cache_repo(tmp_path, monkeypatch, {
        "model_config.json": lambda p: p.write_text(json.dumps(TINY_AE)),
        "model.ckpt": lambda p: malicious(p, marker, {"state_dict": tiny_model_state()}, "builtin")})
    with pytest.raises(UntrustedCheckpointError) as e:
        get_pretrained_model(repo)
    assert_refused(str(e.value), marker, "builtin")
    assert "models--test-org--unsafe" in str(e.value)


# ------------------------------------------------------------------------------------------- not a checkpoint
def _not_checkpoints(tmp_path, wav):
    (tmp_path / "notes.ckpt").write_text("these are my notes\n")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "config.ckpt").write_text(json.dumps(TINY_AE))
    (tmp_path / "audio.ckpt").write_bytes(wav.read_bytes())
    torch.save({"state_dict": tiny_model_state()}, tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    torch.save({"state_dict": tiny_model_state()}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.ckpt").read_bytes()
    (tmp_path / "truncated_legacy.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.ckpt").write_bytes(data[:2] + b"garbage" * 10)
    with zipfile.ZipFile(tmp_path / "archive.ckpt", "w") as z:
        z.writestr("readme.txt", "hello")
    (tmp_path / "folder.ckpt").mkdir()
    save_file({"a": torch.ones(3)}, str(tmp_path / "weights.ckpt"))
    (tmp_path / "bad.safetensors").write_text("not safetensors at all")
    save_file({"a": torch.ones(300)}, str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    return {"notes.ckpt": "text file", "empty.ckpt": "empty", "config.ckpt": "text file", "audio.ckpt": "WAV audio",
            "truncated.ckpt": "truncated or damaged", "archive.ckpt": "truncated or damaged",
            "truncated_legacy.ckpt": "truncated or damaged", "garbage.ckpt": "damaged (Unsupported operand",
            "folder.ckpt": "directory", "weights.ckpt": "rename it to end in .safetensors",
            "bad.safetensors": "not a valid safetensors file", "truncated.safetensors": "not a valid safetensors",
            "empty.safetensors": "not a valid safetensors file", str(wav): "WAV audio"}


def test_files_that_are_not_checkpoints_say_so(tmp_path, ws):
    for name, reason in _not_checkpoints(tmp_path, ws["wav"]).items():
        path = tmp_path / name
        loaders = [load_ckpt_state_dict, checkpoint_kind, checkpoint_keys]
        if not name.endswith(".safetensors"):
            loaders.append(AtomicCheckpointIO().load_checkpoint)
        if path.is_file() and not name.endswith(".safetensors"):  # (a directory is "CLAP checkpoint not found")
            loaders.append(lambda p: clap_load_state_dict(str(p), nn.Linear(1, 1)))
        for load in loaders:
            with pytest.raises(NotACheckpointError) as e:
                load(path)
            message = str(e.value)
            assert f"{path} is not a checkpoint" in message and reason in message, (name, message)
            assert "weights_only" not in message and "pop from empty list" not in message, message
            assert isinstance(e.value, CheckpointKindError)


def test_missing_files_are_file_not_found(tmp_path):
    for name in ("missing.ckpt", "missing.safetensors"):
        with pytest.raises(FileNotFoundError, match="not found"):
            load_ckpt_state_dict(tmp_path / name)


# -------------------------------------------------------------------------------------- legitimate checkpoints
def test_plain_types_load_without_trust(tmp_path):
    """The allowlist: what Lightning checkpoints and saved arguments hold, rebuilt without running file code."""
    from lightning_fabric.utilities.data import AttributeDict

    hparams = {"args": argparse.Namespace(lr=1e-3, root=pathlib.Path("/data/run")), "when": datetime.datetime(2024, 5,
               1, 12, 30, tzinfo=datetime.timezone.utc), "delta": datetime.timedelta(seconds=3),
               "date": datetime.date(2024, 5, 1), "np_float": np.float64(0.25), "np_int": np.int64(7),
               "array": np.arange(6, dtype=np.float32).reshape(2, 3), "dtype": np.dtype("int16"),
               "attrs": AttributeDict(a=1), "tags": frozenset({"x"}), "window": slice(1, 5),
               "torch_version": torch.__version__, "pure": pathlib.PureWindowsPath("C:/runs/a"),
               "ordered": collections.OrderedDict(a=1), "counter": collections.Counter("aab")}
    for legacy in (False, True):
        path = tmp_path / f"hp_{legacy}.ckpt"
        torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 1, "hyper_parameters": hparams}, path,
                   _use_new_zipfile_serialization=not legacy)
        kind, ckpt = read_checkpoint(path)
        assert kind == "wrapped"
        loaded = ckpt["hyper_parameters"]
        assert loaded["args"] == hparams["args"] and loaded["when"] == hparams["when"]
        assert np.array_equal(loaded["array"], hparams["array"]) and loaded["np_float"] == 0.25
        assert {k: v for k, v in loaded.items() if k != "array"} == {k: v for k, v in hparams.items() if k != "array"}


def test_windows_paths_load_as_pure_paths_elsewhere(tmp_path):
    path = tmp_path / "win.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "dir": pathlib.PureWindowsPath("C:/runs")}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b"PureWindowsPath" in data
    path.write_bytes(data.replace(b"PureWindowsPath", b"WindowsPath"))  # as written by Python on Windows
    loaded = read_checkpoint(path)[1]["dir"]
    assert str(loaded) == "C:\\runs"


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_lightning_written_checkpoint_loads_and_resumes_safely(tmp_path):
    """A checkpoint written by Lightning's own IO with save_hyperparameters() (Namespace, Path, numpy, datetime)
    loads without trust and resumes through AtomicCheckpointIO (what train.py --ckpt-path uses)."""
    import pytorch_lightning as pl

    class HParamsModule(pl.LightningModule):
        def __init__(self, args, root, started, scale):
            super().__init__()
            self.save_hyperparameters()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), 1e-3)

    def data():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)

    def trainer(max_steps, **kwargs):
        return pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=tmp_path, **kwargs)

    module = HParamsModule(argparse.Namespace(batch_size=2), pathlib.Path(tmp_path), datetime.datetime(2024, 1, 1),
                           np.float32(0.5))
    trainer(2).fit(module, data())
    (ckpt_path,) = tmp_path.rglob("*.ckpt")
    kind, ckpt = read_checkpoint(ckpt_path)
    assert kind == "wrapped" and ckpt["hyper_parameters"]["args"] == argparse.Namespace(batch_size=2)
    assert ckpt["hyper_parameters"]["root"] == pathlib.Path(tmp_path)

    resumed = HParamsModule(argparse.Namespace(batch_size=2), pathlib.Path(tmp_path), datetime.datetime(2024, 1, 1),
                            np.float32(0.5))
    resume = trainer(4, plugins=[AtomicCheckpointIO()], enable_checkpointing=False)
    resume.fit(resumed, data(), ckpt_path=str(ckpt_path))
    assert resume.global_step == 4

    marker = tmp_path / "marker"
    bad = malicious(tmp_path / "bad.ckpt", marker, dict(ckpt))
    with pytest.raises(UntrustedCheckpointError) as e:
        trainer(6, plugins=[AtomicCheckpointIO()], enable_checkpointing=False).fit(resumed, data(), ckpt_path=str(bad))
    assert_refused(str(e.value), marker)


def test_trust_variable_allows_a_file_that_needs_pickle(tmp_path, monkeypatch, caplog):
    path = tmp_path / "needs_pickle.ckpt"
    state = tiny_model_state()
    torch.save({"state_dict": state, "counts": collections.defaultdict(list)}, path)
    with pytest.raises(UntrustedCheckpointError, match="collections.defaultdict"):
        load_ckpt_state_dict(path)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    caplog.set_level("WARNING")
    assert set(load_ckpt_state_dict(path)) == set(state)
    assert "arbitrary unpickling" in caplog.text and "collections.defaultdict" in caplog.text
    for value, expected in (("0", False), ("", False), ("yes", True), ("TRUE", True)):
        monkeypatch.setenv(TRUST_PICKLE_ENV, value)
        assert trust_pickle_enabled() is expected
    monkeypatch.setenv(TRUST_PICKLE_ENV, "maybe")
    with pytest.raises(ValueError, match=f"{TRUST_PICKLE_ENV}='maybe'"):
        load_ckpt_state_dict(path)


def test_clap_checkpoint_loads_safely(tmp_path):
    model = nn.Linear(3, 2)
    state = {f"module.{k}": torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    torch.save({"epoch": 40, "name": "630k", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               tmp_path / "clap.pt")
    clap_load_state_dict(str(tmp_path / "clap.pt"), model)
    assert torch.equal(model.weight, torch.full((2, 3), 0.5))


def test_every_loader_goes_through_the_safe_module():
    """No copy of a checkpoint loader exists: torch.load / safetensors reads only in models/safe_load.py."""
    pattern = re.compile(r"torch\.load\(|torch\.jit\.load\(|safetensors\.torch import .*load|safe_open\(|"
                         r"pickle\.load|weights_only\s*=\s*False")
    offenders = []
    for path in [*(ROOT / "stable_audio_tools").rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "scripts").rglob("*.py"),
                 *(ROOT / "bench").rglob("*.py")]:
        if path.name == "safe_load.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if pattern.search(line)]
    assert not offenders


# ---------------------------------------------------------------------------------------------- the scripts
@pytest.mark.parametrize("flag", ["--ckpt-path", "--pretrained-ckpt-path", "--pretransform-ckpt-path"])
def test_train_refuses_malicious_checkpoints(ws, tmp_path, flag):
    marker = tmp_path / "marker"
    contents = ({"state_dict": {}, "global_step": 2, "optimizer_states": [], "loops": {}} if flag == "--ckpt-path"
                else {"state_dict": tiny_model_state()})
    bad = malicious(tmp_path / "bad.ckpt", marker, contents)
    args = train_args(ws["root"], tmp_path / "run", "--max-steps", 4, flag, bad)
    if flag == "--pretransform-ckpt-path":
        (tmp_path / "outer.json").write_text(json.dumps(pretransformed_autoencoder_config()))
        args[1] = tmp_path / "outer.json"
    proc = run(tmp_path, "train.py", *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert_refused(proc.stderr.strip().splitlines()[-1], marker)
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_train_says_a_wav_is_not_a_checkpoint(ws, tmp_path):
    proc = run(tmp_path, "train.py", *train_args(ws["root"], tmp_path / "run", "--max-steps", 4, "--pretrained-ckpt-path",
                                                 ws["wav"]))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{ws['wav']} is not a checkpoint: it is a RIFF/WAV audio file" in proc.stderr


def test_train_resume_unwrap_and_reload_need_no_trust(ws, tmp_path):
    """Checkpoints of our own train.py: resume with --ckpt-path, unwrap to .ckpt and .safetensors, reload."""
    kind, ckpt = read_checkpoint(ws["ckpt"])
    assert kind == "wrapped" and ckpt["global_step"] == 2
    proc = run(tmp_path, "train.py", *train_args(ws["root"], tmp_path / "run", "--max-steps", 4, "--ckpt-path",
                                                 ws["ckpt"]))
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = max((tmp_path / "run").rglob("*.ckpt"), key=lambda p: read_checkpoint(p)[1]["global_step"])
    assert read_checkpoint(last)[1]["global_step"] == 4

    unwrap_model = load_script("unwrap_model.py")
    model = create_model_from_config(TINY_AE)
    for extra, suffix, kind in (([], ".ckpt", "unwrapped-ckpt"), (["--use-safetensors"], ".safetensors",
                                                                   "unwrapped-safetensors")):
        out = unwrap_model.main(["--ckpt-path", str(last), "--name", str(tmp_path / "bare"), *extra])
        assert out.endswith(suffix) and checkpoint_kind(out) == kind
        model.load_state_dict(load_ckpt_state_dict(out), strict=True)
    local = tmp_path / "pretrained"
    local.mkdir()
    (local / "model_config.json").write_text(json.dumps(TINY_AE))
    os.replace(tmp_path / "bare.ckpt", local / "model.ckpt")
    assert get_pretrained_model(str(local))[1] == TINY_AE


def _needs_pickle(ws, tmp_path):
    """The real train.py checkpoint plus an entry only full unpickling rebuilds (legitimate, harmless)."""
    ckpt = read_checkpoint(ws["ckpt"])[1]
    ckpt["notes"] = collections.defaultdict(list, {"a": [1]})
    torch.save(ckpt, tmp_path / "needs_pickle.ckpt")
    return tmp_path / "needs_pickle.ckpt"


def test_train_trust_flag_resumes_a_checkpoint_that_needs_pickle(ws, tmp_path):
    path = _needs_pickle(ws, tmp_path)
    args = train_args(ws["root"], tmp_path / "run", "--max-steps", 4, "--ckpt-path", path)
    refused = run(tmp_path, "train.py", *args)
    assert refused.returncode != 0 and "collections.defaultdict" in refused.stderr
    proc = run(tmp_path, "train.py", *args, "--trust-pickle")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--trust-pickle: checkpoints that need arbitrary unpickling will be loaded" in proc.stderr
    assert max(read_checkpoint(p)[1]["global_step"] for p in (tmp_path / "run").rglob("*.ckpt")) == 4


def test_unwrap_model_refuses_malicious_and_trusts_on_request(ws, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    ckpt = read_checkpoint(ws["ckpt"])[1]
    bad = malicious(tmp_path / "bad.ckpt", marker, ckpt, "builtin")
    proc = run(tmp_path, "unwrap_model.py", "--ckpt-path", bad, "--name", tmp_path / "out")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and not (tmp_path / "out.ckpt").exists()
    assert_refused(proc.stderr.strip().splitlines()[-1], marker, "builtin")

    unwrap_model = load_script("unwrap_model.py")
    path = _needs_pickle(ws, tmp_path)
    with pytest.raises(UntrustedCheckpointError):
        unwrap_model.main(["--ckpt-path", str(path), "--name", str(tmp_path / "trusted")])
    out = unwrap_model.main(["--ckpt-path", str(path), "--name", str(tmp_path / "trusted"), "--trust-pickle"])
    assert checkpoint_kind(out) == "unwrapped-ckpt"


def test_pre_encode_refuses_malicious_and_trusts_on_request(ws, tmp_path):
    marker = tmp_path / "marker"
    bad = malicious(tmp_path / "bad.ckpt", marker, {"state_dict": tiny_model_state()})
    base = ["--model-config", ws["root"] / "model.json", "--dataset-config", ws["root"] / "dataset.json",
            "--batch-size", 1, "--sample-size", 2048, "--num-workers", 0, "--limit-batches", 1, "--no-progress"]
    proc = run(tmp_path, "pre_encode.py", *base, "--ckpt-path", bad, "--output-path", tmp_path / "out")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and not list(tmp_path.rglob("*.npy"))
    assert_refused(proc.stderr.strip().splitlines()[-1], marker)

    pre_encode = load_script("pre_encode.py")
    torch.save({"state_dict": tiny_model_state(), "notes": collections.defaultdict(list)}, tmp_path / "ae.ckpt")
    with pytest.raises(UntrustedCheckpointError):
        pre_encode.main([*map(str, base), "--ckpt-path", str(tmp_path / "ae.ckpt"), "--output-path",
                         str(tmp_path / "a")])
    stats = pre_encode.main([*map(str, base), "--ckpt-path", str(tmp_path / "ae.ckpt"), "--output-path",
                             str(tmp_path / "b"), "--trust-pickle"])
    assert list((tmp_path / "b").rglob("*.npy")), stats


def test_run_gradio_refuses_malicious_at_start_up(ws, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    bad = malicious(tmp_path / "bad.ckpt", marker, {"state_dict": tiny_model_state()})
    proc = run(tmp_path, "run_gradio.py", "--model-config", ws["root"] / "model.json", "--ckpt-path", bad,
               "--device", "cpu", timeout=180)  # a server that started instead would run until the timeout
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("run_gradio.py: refusing to load")
    assert_refused(proc.stderr.strip().splitlines()[-1], marker)
    assert "Running on" not in proc.stdout

    pytest.importorskip("gradio")
    import stable_audio_tools.interface.gradio as gradio_interface

    run_gradio = load_script("run_gradio.py")
    local = tmp_path / "local"
    local.mkdir()
    (local / "model_config.json").write_text(json.dumps(TINY_AE))
    malicious(local / "model.ckpt", marker, {"state_dict": tiny_model_state()}, "builtin")
    with pytest.raises(SystemExit) as e:
        run_gradio.main(["--pretrained-name", str(local), "--device", "cpu"])
    assert_refused(str(e.value.code), marker, "builtin")

    torch.save({"state_dict": tiny_model_state(), "notes": collections.defaultdict(list)}, local / "model.ckpt")
    launched = []
    monkeypatch.setattr(gradio_interface, "launch_ui", lambda ui, **kwargs: launched.append(ui))
    run_gradio.main(["--pretrained-name", str(local), "--device", "cpu", "--trust-pickle"])
    assert len(launched) == 1


def test_unwrapped_files_written_by_us_need_no_trust(tmp_path):
    model = create_model_from_config(TINY_AE)
    save_unwrapped(model, tmp_path / "m.ckpt")
    save_unwrapped(model, tmp_path / "m.safetensors", use_safetensors=True)
    for name in ("m.ckpt", "m.safetensors"):
        create_model_from_config(TINY_AE).load_state_dict(load_ckpt_state_dict(tmp_path / name), strict=True)
        assert set(checkpoint_keys(tmp_path / name)) == set(model.state_dict())
