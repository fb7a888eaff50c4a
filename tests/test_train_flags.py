"""train.py flag precedence (command line > --wandb-config > defaults.ini) and W&B ``logger.watch``."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml

from stable_audio_tools.training.args import get_all_args, wandb_run_config

from conftest import ROOT
from tiny_autoencoder import tiny_autoencoder_config

TINY_AE = tiny_autoencoder_config()


def write_wandb_config(path, values):
    """A config.yaml laid out as W&B writes it into ``<run dir>/files/``."""
    data = {"_wandb": {"value": {"cli_version": "0.31.0", "python_version": "3.11"}}}
    data.update({k: {"desc": None, "value": v} for k, v in values.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("wandb_version: 1\n\n" + yaml.safe_dump(data))
    return path


@pytest.fixture
def ini(tmp_path):
    path = tmp_path / "flags.ini"
    path.write_text("[DEFAULTS]\n# per-device batch\nbatch_size = 4\nseed = 42\nname = 'ini_name'\n"
                    "precision = '16-mixed'\nflag = False\nsizes = [1, 2]\nmodel_config = ''\nmax_steps = -1\n")
    return path


def test_command_line_beats_wandb_beats_ini_in_both_spellings(ini, tmp_path, monkeypatch):
    run = write_wandb_config(tmp_path / "run" / "files" / "config.yaml", {
        "batch_size": 8, "seed": 5, "name": "wandb_name", "precision": "bf16-mixed", "flag": True,
        "sizes": "[7]", "model_config": {"model_type": "autoencoder"}, "wandb_config": "old/run/path",
        "config_file": "old.ini", "not_a_flag_here": 1, "max_steps": "OMITTED"}).parent.parent
    # argv=None: the real command line (sys.argv) counts, as when train.py is run
    monkeypatch.setattr(sys, "argv", ["train.py", "--config-file", str(ini), "--wandb-config", str(run),
                                      "--batch-size=2", "--seed", "9", "--flag=false"])
    args = get_all_args()
    assert (args.batch_size, args.seed, args.flag) == (2, 9, False)  # typed: command line wins
    assert (args.name, args.precision, args.sizes) == ("wandb_name", "bf16-mixed", [7])  # the run's values
    assert args.model_config == {"model_type": "autoencoder"}  # the run recorded the config itself
    assert args.max_steps == -1 and args.wandb_config == str(run) and args.config_file == str(ini)
    assert not hasattr(args, "not_a_flag_here")
    # an explicit argv list behaves the same; without --wandb-config the INI defaults hold
    argv = ["--config-file", str(ini), "--wandb-config", str(run / "files" / "config.yaml"), "--name=cli"]
    assert (get_all_args(argv=argv).name, get_all_args(argv=argv).batch_size) == ("cli", 8)
    assert get_all_args(argv=["--config-file", str(ini)]).batch_size == 4


def test_abbreviated_flags_are_refused_with_the_full_name(ini, capsys):
    with pytest.raises(SystemExit):
        get_all_args(argv=["--config-file", str(ini), "--batch", "3"])
    err = capsys.readouterr().err
    assert "--batch: flags must be written in full" in err and "--batch-size" in err
    with pytest.raises(SystemExit):
        get_all_args(argv=["--config-file", str(ini), "--nope=1"])
    assert "unrecognized arguments: --nope=1" in capsys.readouterr().err


def test_wandb_config_sources_and_errors(ini, tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("batch_size: 6\n_internal: 1\n")
    assert wandb_run_config(str(plain)) == {"batch_size": 6}
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(SystemExit, match="no config.yaml in that directory"):
        wandb_run_config(str(empty_dir))
    with pytest.raises(SystemExit, match="no such file or directory"):
        wandb_run_config(str(tmp_path / "wandb" / "run-x" / "files" / "config.yaml"))
    bad = write_wandb_config(tmp_path / "bad.yaml", {"batch_size": "many"})
    with pytest.raises(SystemExit, match="'many' of 'batch_size' does not fit --batch-size"):
        get_all_args(argv=["--config-file", str(ini), "--wandb-config", str(bad)])


@pytest.fixture
def workspace(tmp_path):
    data = tmp_path / "audio"
    data.mkdir()
    for i in range(2):
        t = np.arange(2000) / 8000
        sf.write(data / f"tone_{i}.wav", (0.5 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32), 8000)
    dataset = {"dataset_type": "audio_dir", "datasets": [{"id": "tones", "path": str(data)}], "random_crop": True}
    (tmp_path / "model.json").write_text(json.dumps(TINY_AE))
    return tmp_path, dataset


def test_train_py_subprocess_precedence(workspace):
    """A run reproduced from a W&B run directory: the recorded configs and flags are used, except those typed."""
    ws, dataset = workspace
    run = ws / "wandb" / "run-20260101_000000-abc123"
    write_wandb_config(run / "files" / "config.yaml", {
        "model_config": TINY_AE, "dataset_config": dataset, "val_dataset_config": None, "batch_size": 2,
        "seed": 5, "num_workers": 3, "logger": "wandb", "max_steps": 1, "checkpoint_every": 1,
        "name": "from_wandb", "precision": "32-true", "accelerator": "cpu"})
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--wandb-config", str(run), "--logger=csv",
                           "--num-workers", "0", "--seed=11", "--save-dir", str(ws / "out"), "--batch-size=1"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    hparams = yaml.safe_load(next((ws / "out" / "from_wandb").rglob("hparams.yaml")).read_text())
    assert (hparams["logger"], hparams["num_workers"], hparams["seed"], hparams["batch_size"]) == ("csv", 0, 11, 1)
    assert (hparams["max_steps"], hparams["precision"], hparams["name"]) == (1, "32-true", "from_wandb")
    assert hparams["save_top_k"] == -1 and hparams["model_config"] == TINY_AE  # INI default; the recorded config
    assert len(list((ws / "out" / "from_wandb").rglob("*.ckpt"))) == 1


def test_wandb_watch_hooks_the_training_wrapper(tmp_path, monkeypatch):
    import importlib.util

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.training import create_training_wrapper_from_config

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    monkeypatch.setenv("WANDB_MODE", "offline")
    wrapper = create_training_wrapper_from_config(TINY_AE, create_model_from_config(TINY_AE))
    assert not train.watch_model(CSVLogger(str(tmp_path)), wrapper, "gradients")
    logger = WandbLogger(project="watch", save_dir=str(tmp_path))
    try:
        assert not train.watch_model(logger, wrapper, "none")
        assert train.watch_model(logger, wrapper, "gradients", log_freq=1)
        hooked = set(logger.experiment._torch._hook_handles)
        trainable = {f"gradients/{n}" for n, p in wrapper.named_parameters() if p.requires_grad}
        assert trainable and trainable <= hooked
        audio = torch.utils.data.DataLoader([torch.randn(1, 512) for _ in range(2)], batch_size=1)
        pl.Trainer(max_steps=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                   accelerator="cpu").fit(wrapper, audio)
        assert wrapper.global_step == 2
    finally:
        logger.experiment.finish()
    with pytest.raises(SystemExit, match="--wandb-watch 'weights'"):
        train.watch_model(None, wrapper, "weights")
