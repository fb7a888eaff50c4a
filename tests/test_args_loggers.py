"""train.py flags (prefigure semantics from defaults.ini) and logger selection."""
import importlib.util
import logging

import pytest

from stable_audio_tools.training.args import get_all_args, read_ini_defaults

from conftest import ROOT


def load_train_module():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_upstream_ini_key_is_a_flag():
    keys = {k for k, _, _ in read_ini_defaults(ROOT / "defaults.ini")}
    upstream = {"name", "project", "batch_size", "recover", "save_top_k", "num_nodes", "strategy", "precision",
                "num_workers", "seed", "accum_batches", "checkpoint_every", "val_every", "ckpt_path",
                "pretrained_ckpt_path", "pretransform_ckpt_path", "model_config", "dataset_config",
                "val_dataset_config", "save_dir", "gradient_clip_val", "remove_pretransform_weight_norm", "logger"}
    assert upstream <= keys and "num_gpus" in keys


def test_ini_types_help_and_precedence(tmp_path, capsys):
    ini = tmp_path / "my.ini"
    ini.write_text("[DEFAULTS]\n# how many things\ncount = 3\nrate = 0.5\nname = 'x'\nflag = False\n"
                   "nothing = None\nraw = false\nsizes = [1, 2]\n")
    args = get_all_args(argv=["--config-file", str(ini), "--count", "7", "--flag", "--sizes", "[3]"])
    assert (args.count, args.rate, args.name, args.flag, args.nothing, args.raw, args.sizes) == \
        (7, 0.5, "x", True, None, "false", [3])
    assert get_all_args(argv=["--config-file", str(ini), "--flag", "false"]).flag is False
    with pytest.raises(SystemExit):
        get_all_args(argv=["--config-file", str(ini), "--help"])
    assert "how many things" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        get_all_args(argv=["--config-file", str(ini), "--count", "many"])


def test_missing_ini_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config-file"):
        get_all_args(argv=["--config-file", str(tmp_path / "none.ini")])


def test_an_upstream_ini_keeps_the_shipped_defaults_of_newer_flags(tmp_path, caplog):
    # an INI written for upstream declares only upstream's keys; the newer flags keep defaults.ini's values
    ini = tmp_path / "upstream.ini"
    ini.write_text("[DEFAULTS]\nname = 'mine'\nbatch_size = 2\ncheckpoint_every = 500\n")
    with caplog.at_level(logging.INFO, logger="stable_audio_tools.training.args"):
        args = get_all_args(ROOT / "defaults.ini", ["--config-file", str(ini), "--batch-size", "3"])
    shipped = {k: v for k, v, _ in read_ini_defaults(ROOT / "defaults.ini")}
    assert (args.name, args.batch_size, args.checkpoint_every) == ("mine", 3, 500)
    assert args.max_steps == shipped["max_steps"] and args.accelerator == shipped["accelerator"]
    assert "lacks" in caplog.text and "max_steps" in caplog.text


def test_loggers(tmp_path, monkeypatch, caplog):
    train = load_train_module()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    caplog.set_level(logging.WARNING)
    logger, ckpt_dir = train.create_logger("wandb", "proj", str(tmp_path))
    assert "offline" in caplog.text and ckpt_dir.startswith(str(tmp_path / "proj"))
    logger.experiment.finish()
    for kind in ("tensorboard", "csv"):
        logger, ckpt_dir = train.create_logger(kind, "proj", str(tmp_path))
        assert ckpt_dir.endswith("checkpoints") and logger is not None
    # runs without a logger get their own version folder too, like csv / tensorboard
    assert train.create_logger("none", "proj", str(tmp_path)) == (None, str(tmp_path / "proj/version_0/checkpoints"))
    assert train.create_logger("none", "proj", str(tmp_path)) == (None, str(tmp_path / "proj/version_1/checkpoints"))
    with pytest.raises(SystemExit, match="unknown logger"):
        train.create_logger("mlflow", "proj", str(tmp_path))
