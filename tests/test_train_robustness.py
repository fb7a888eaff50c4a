"""train.py never fails silently nor loses or mixes work: NaN/inf losses and gradients stop the run (or skip a
bounded number of steps) in every training wrapper, no checkpoint holds NaN/inf tensors, a final checkpoint is
written at max steps and on SIGTERM/SIGINT (and resumes), orphaned temporary files are removed, runs without a
logger get their own folder, ``--ckpt-path last`` only takes checkpoints of the same model config, checkpoints
honour the umask, and ``unwrap_model.py`` writes the model config beside the weights."""
import copy
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch

from stable_audio_tools import training
from stable_audio_tools.models.pretrained import get_pretrained_model
from stable_audio_tools.training.export import (AtomicCheckpointIO, NonFiniteCheckpointError, atomic_write,
                                                find_nonfinite, remove_orphaned_temporaries, save_unwrapped)
from stable_audio_tools.training.nonfinite import NonFiniteGuard, NonFiniteTrainingError

from conftest import ROOT
from test_args_loggers import load_train_module
from test_diffusion_e2e import UNCOND
from test_diffusion_training import DIT_COND, ItemDataset, arc_config, cond_metadata, ldm_metadata, loader
from test_diffusion_training import build as build_wrapper
from test_diffusion_training import with_training
from test_lm_training import TokenDataset, lm_config
from test_train_e2e import TINY_AE

pytestmark = [pytest.mark.filterwarnings("ignore:.*eval mode at the start of training"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec"),
              pytest.mark.filterwarnings("ignore:.*val_dataloader")]

ENV = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    data = root / "audio"
    data.mkdir()
    t = np.arange(4000) / 8000
    for i in range(8):
        sf.write(data / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 8000)
    (root / "dataset.json").write_text(json.dumps({"dataset_type": "audio_dir", "datasets": [
        {"id": "tones", "path": str(data)}], "random_crop": True}))
    for name, config in (("ae", TINY_AE), ("uncond", UNCOND)):
        (root / f"{name}.json").write_text(json.dumps(config))
    diverging = copy.deepcopy(TINY_AE)
    diverging["training"]["learning_rate"] = 1e12
    (root / "diverging.json").write_text(json.dumps(diverging))
    return root


def args(ws, model, save_dir, *extra):
    return ["--model-config", str(ws / f"{model}.json"), "--dataset-config", str(ws / "dataset.json"),
            "--save-dir", str(save_dir), "--logger", "none", "--batch-size", "2", "--num-workers", "0",
            "--checkpoint-every", "2", *map(str, extra)]


def train_in_process(*argv):
    load_train_module().main(list(argv))


def step_of(path):
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def checkpoints(folder):
    return sorted(folder.rglob("*.ckpt"), key=step_of)


def at_step(folder, step):
    (path,) = [p for p in folder.rglob("*.ckpt") if step_of(p) == step]
    return path


def assert_finite(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert find_nonfinite({"state_dict": ckpt["state_dict"], "optimizer_states": ckpt["optimizer_states"]}) == []


# ---------------------------------------------------------------- NaN / inf: stop

def test_diverging_run_stops_with_a_report_and_writes_no_nan_checkpoint(ws, tmp_path):
    save = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"),
                           *args(ws, "diverging", save, "--max-steps", 20, "--checkpoint-every", 1)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-4000:]
    report = proc.stderr.splitlines()[-1]
    match = re.search(r"non-finite (loss|gradients|loss and gradients) at training step (\d+), optimizer", report)
    assert report.startswith("train.py: ") and match, report
    failed = int(match.group(2))
    assert "non-finite logged values: train/" in report and "= nan" in report
    assert "Training stopped (--nonfinite-skip-steps is 0)" in report and "--gradient-clip-val" in report
    written = checkpoints(save)
    assert written, "the finite steps before the failure are checkpointed"
    assert all(step_of(p) < failed for p in written)  # nothing of the failed step or later
    for path in written:
        assert_finite(path)


class PoisonAt(pl.Callback):
    """Fills every parameter with NaN before global step ``step`` (any wrapper's loss then becomes NaN)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


def _autoencoder():
    return build_wrapper(TINY_AE), loader(ItemDataset(1, 2048), batch_size=2)


def _diffusion_cond():
    return build_wrapper(with_training(DIT_COND, {"learning_rate": 1e-3})), loader(ItemDataset(8, 16, cond_metadata))


def _lm():
    config = lm_config(conditioned=False, training={"learning_rate": 1e-3, "pre_encoded": True})
    return build_wrapper(config), loader(TokenDataset(count=16))


@pytest.mark.parametrize("family, make, poison, term", [
    ("autoencoder (manual, generator step)", "_autoencoder", 2, "train/loss"),
    ("autoencoder (manual, discriminator step)", "_autoencoder", 1, "train/discriminator_loss"),
    ("diffusion_cond (automatic)", "_diffusion_cond", 1, "train/loss"),
    ("lm (automatic)", "_lm", 1, "train/loss"),
    ("arc (manual)", "arc", 2, "train/gen_loss"),
])
def test_every_wrapper_stops_with_the_step_and_the_non_finite_terms(family, make, poison, term, tmp_path):
    if make == "arc":
        wrapper, train_dl = build_wrapper(arc_config(tmp_path)), loader(ItemDataset(2, 256, ldm_metadata), 2)
    else:
        wrapper, train_dl = globals()[make]()
    guard = NonFiniteGuard()
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[guard, PoisonAt(poison)])
    with pytest.raises(NonFiniteTrainingError) as info:
        trainer.fit(wrapper, train_dl)
    message = str(info.value)
    assert f"non-finite loss and gradients at training step {poison + 1}" in message, message
    assert f"{term} = nan" in message
    assert "no checkpoint of it is written" in message
    assert trainer.global_step == poison + 1  # stopped right there


def test_last_finite_value_is_reported():
    wrapper, train_dl = _diffusion_cond()
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[NonFiniteGuard(), PoisonAt(3)])
    with pytest.raises(NonFiniteTrainingError, match=r"train/loss = nan \(last finite value [0-9.e+-]+ at step 3\)"):
        trainer.fit(wrapper, train_dl)


def test_guard_argument_is_checked():
    with pytest.raises(ValueError, match="skip_steps"):
        NonFiniteGuard(-1)


# ---------------------------------------------------------------- NaN / inf: skip N steps

def poison_batches(monkeypatch, steps):
    """Make train.py's wrapper see NaN audio at the given (0-based) global steps."""
    real = training.create_training_wrapper_from_config

    def create(model_config, model, **overrides):
        wrapper = real(model_config, model, **overrides)
        step = wrapper.training_step

        def training_step(batch, batch_idx):
            if wrapper.global_step in steps:
                batch = [batch[0] * float("nan"), *batch[1:]]
            return step(batch, batch_idx)

        wrapper.training_step = training_step
        return wrapper

    monkeypatch.setattr(training, "create_training_wrapper_from_config", create)


def test_skip_steps_skips_updates_then_stops(ws, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    poison_batches(monkeypatch, {1, 3})
    save = tmp_path / "skip"
    train_in_process(*args(ws, "uncond", save, "--max-steps", 6, "--nonfinite-skip-steps", 2))
    assert "Skipped this step's update (1 of at most 2, --nonfinite-skip-steps)" in caplog.text
    assert "Skipped this step's update (2 of at most 2" in caplog.text
    assert "non-finite loss and gradients at training step 2" in caplog.text
    assert "train/loss = nan" in caplog.text
    final = checkpoints(save)[-1]
    assert step_of(final) == 6
    assert_finite(final)
    state = torch.load(final, weights_only=False)["optimizer_states"][0]["state"]
    assert {int(s["step"]) for s in state.values()} == {4}  # 6 steps, 2 updates skipped

    caplog.clear()
    with pytest.raises(SystemExit) as info:
        train_in_process(*args(ws, "uncond", tmp_path / "stop", "--max-steps", 6, "--nonfinite-skip-steps", 1))
    message = str(info.value)
    assert "at training step 4" in message and "more than --nonfinite-skip-steps 1 steps had non-finite" in message
    assert re.search(r"train/loss = nan \(last finite value [0-9.e+-]+ at step 3\)", message)
    assert [step_of(p) for p in checkpoints(tmp_path / "stop")] == [2]  # the skipped step 2 kept finite weights


# ---------------------------------------------------------------- checkpoints never hold NaN / inf

def test_nan_checkpoints_and_model_files_are_refused(tmp_path):
    weights = {"layer.weight": torch.ones(3), "layer.bias": torch.tensor([0.0, float("inf")])}
    with pytest.raises(NonFiniteCheckpointError, match=r"refusing to write the checkpoint .*state_dict.layer.bias"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": weights, "optimizer_states": []}, tmp_path / "a.ckpt")
    adam = {"state": {0: {"exp_avg": torch.tensor([float("nan")]), "step": torch.tensor(3.0)}}}
    with pytest.raises(NonFiniteCheckpointError, match=r"optimizer_states\[0\].state.0.exp_avg"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "optimizer_states": [adam]}, tmp_path / "b.ckpt")
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    for name, safetensors in (("m.ckpt", False), ("m.safetensors", True)):
        with pytest.raises(NonFiniteCheckpointError, match="weight"):
            save_unwrapped(model, tmp_path / name, use_safetensors=safetensors)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_trainer_refuses_to_save_nan_weights(tmp_path):
    wrapper, train_dl = _diffusion_cond()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, plugins=[AtomicCheckpointIO()])
    trainer.fit(wrapper, train_dl)
    trainer.save_checkpoint(tmp_path / "ok.ckpt")
    with torch.no_grad():
        next(wrapper.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteCheckpointError):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.ckpt"]


# ---------------------------------------------------------------- flags

def test_invalid_checkpoint_every_max_steps_and_batch_size(ws, tmp_path):
    for every in (0, -3):
        with pytest.raises(SystemExit) as info:
            train_in_process(*args(ws, "ae", tmp_path, "--checkpoint-every", every, "--max-steps", 0,
                                   "--nonfinite-skip-steps", -1))
        message = str(info.value)
        assert f"--checkpoint-every {every}: must be a positive number of steps" in message
        assert "--max-steps 0" in message and "--nonfinite-skip-steps -1" in message
    with pytest.raises(SystemExit) as info:
        train_in_process(*args(ws, "ae", tmp_path, "--batch-size", 9))
    assert str(info.value) == (f"--batch-size 9 is larger than the dataset of --dataset-config {ws / 'dataset.json'} "
                               f"(8 items); lower --batch-size to at most 8 or add data")
    assert list(tmp_path.iterdir()) == []  # refused before any run folder was made


# ---------------------------------------------------------------- final checkpoint, run folders, last, umask

@pytest.fixture(scope="module")
def first_run(ws, tmp_path_factory):
    save = tmp_path_factory.mktemp("runs")
    old = os.umask(0o027)
    try:
        train_in_process(*args(ws, "ae", save, "--max-steps", 3, "--name", "exp"))
    finally:
        os.umask(old)
    return save


def test_final_checkpoint_run_folder_and_umask(first_run):
    folder = first_run / "exp" / "version_0" / "checkpoints"
    written = checkpoints(first_run)
    assert [p.parent for p in written] == [folder, folder]
    assert [step_of(p) for p in written] == [2, 3]  # periodic step 2 and the final step 3
    assert all(p.stat().st_mode & 0o777 == 0o640 for p in written)  # 0o666 & ~umask 027, not mkstemp's 0600
    assert (first_run / "exp" / "version_0" / "media").is_dir()  # demo media stays in the run folder


def test_resume_last_orphans_and_config_mismatch(ws, first_run, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    old_folder = first_run / "exp" / "version_0" / "checkpoints"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    orphan = old_folder / f".epoch=1-step=4.ckpt.{host}-{dead.pid}.k2j4h5g6.tmp"
    legacy = old_folder / ".epoch=1-step=4.ckpt.ab12cd34.tmp"
    live = old_folder / f".epoch=1-step=4.ckpt.{host}-{os.getpid()}.zz99yy88.tmp"
    for path in (orphan, legacy, live):
        path.write_bytes(b"partial")

    train_in_process(*args(ws, "ae", first_run, "--max-steps", 5, "--name", "exp", "--ckpt-path", "last"))
    assert f"resuming from the newest checkpoint of this model config: {at_step(old_folder, 3)}" in caplog.text
    assert not orphan.exists() and not legacy.exists() and live.exists()  # the live writer's file is kept
    assert f"removed {orphan}" in caplog.text
    live.unlink()
    new_folder = first_run / "exp" / "version_1" / "checkpoints"
    assert [step_of(p) for p in checkpoints(new_folder)] == [4, 5]  # resumed at 3: periodic 4, final 5

    changed = copy.deepcopy(TINY_AE)
    changed["training"]["learning_rate"] = 5e-4
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    argv = args(ws, "ae", first_run, "--max-steps", 6, "--name", "exp", "--ckpt-path", "last")
    argv[1] = str(tmp_path / "changed.json")
    with pytest.raises(SystemExit) as info:
        train_in_process(*argv)
    message = str(info.value)
    assert message.startswith(f"--ckpt-path last: no checkpoint under {first_run} was written with this model config")
    listed = re.findall(r"^  (\S+): a different model config \(differs at training.learning_rate\)$", message, re.M)
    assert sorted(listed) == sorted(str(p) for p in checkpoints(first_run))
    assert not (first_run / "exp" / "version_2").exists()

    caplog.clear()
    argv[argv.index("last")] = str(at_step(new_folder, 5))
    train_in_process(*argv)  # an explicit path is resumed, with a warning
    assert "was written with a different model config (differs at training.learning_rate)" in caplog.text
    assert at_step(first_run / "exp" / "version_2", 6)


def test_orphaned_temporaries_only_of_gone_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    gone = tmp_path / "a" / "checkpoints" / f".x.ckpt.{host}-{dead.pid}.abc_1234.tmp"
    kept = [tmp_path / f".x.ckpt.{host}-{os.getpid()}.abcd1234.tmp",  # its writer is running
            tmp_path / f".x.ckpt.otherhost-{dead.pid}.abcd1234.tmp",  # written from another machine
            tmp_path / ".notes.tmp", tmp_path / "x.ckpt"]  # not ours
    for path in [gone, *kept]:
        path.write_bytes(b"")
    assert remove_orphaned_temporaries(tmp_path) == [gone]
    assert all(p.exists() for p in kept)
    assert remove_orphaned_temporaries(tmp_path / "missing") == []


def test_atomic_write_honours_the_umask_and_keeps_a_replaced_files_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.bin", lambda tmp: open(tmp, "wb").close())
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.bin", 0o600)
        atomic_write(tmp_path / "new.bin", lambda tmp: open(tmp, "wb").close())
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ---------------------------------------------------------------- SIGTERM / SIGINT

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_writes_a_resumable_checkpoint_and_exits_non_zero(ws, tmp_path, signum):
    save = tmp_path / "run"
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args(ws, "ae", save, "--max-steps", 100000)],
                            cwd=tmp_path, env=ENV, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not list(save.rglob("*.ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signum)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
        err.close()
    stderr = (tmp_path / "err.txt").read_text()
    assert rc == 128 + signum, stderr[-3000:]
    name = signal.Signals(signum).name
    match = re.search(rf"training stopped by {name} at step (\d+); resume with --ckpt-path (\S+)", stderr)
    assert match, stderr[-3000:]
    step, path = int(match.group(1)), match.group(2)
    assert step >= 2 and step_of(path) == step
    assert_finite(path)
    assert not list(save.rglob("*.tmp"))
    if signum == signal.SIGTERM:
        train_in_process(*args(ws, "ae", save, "--max-steps", step + 1, "--ckpt-path", path))
        assert step_of(checkpoints(save)[-1]) == step + 1


# ---------------------------------------------------------------- unwrap_model.py writes the config

def test_unwrap_writes_the_model_config_for_get_pretrained_model(first_run, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("unwrap_script", ROOT / "unwrap_model.py")
    unwrap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unwrap)
    final = at_step(first_run / "exp" / "version_0", 3)
    folder = tmp_path / "pretrained"
    assert unwrap.main(["--ckpt-path", str(final), "--name", str(folder / "model")]) == f"{folder / 'model'}.ckpt"
    assert json.loads((folder / "model_config.json").read_text()) == TINY_AE
    model, config = get_pretrained_model(str(folder))
    assert config == TINY_AE
    with torch.no_grad():
        assert model.decode(model.encode(torch.randn(1, 1, 2048) * 0.1)).shape == (1, 1, 2048)
    unwrap.main(["--ckpt-path", str(final), "--name", str(folder / "model"), "--use-safetensors"])  # same config

    other = copy.deepcopy(TINY_AE)
    other["model"]["latent_dim"] = 8
    (folder / "model_config.json").write_text(json.dumps(other))
    (folder / "model.ckpt").unlink()
    with pytest.raises(ValueError, match=r"model_config.json already exists and describes a different model "
                                         r"\(differs at model.latent_dim\); it is not overwritten"):
        unwrap.main(["--ckpt-path", str(final), "--name", str(folder / "model")])
    assert not (folder / "model.ckpt").exists()  # refused before writing the weights
    assert json.loads((folder / "model_config.json").read_text()) == other
