"""Train a model from a JSON model config and a JSON dataset config.

    python train.py --model-config model.json --dataset-config dataset.json --save-dir runs [--flags]

Every flag is declared in defaults.ini (``python train.py --help`` lists them with their help text). A flag's value
comes from the command line, else from the W&B run given with --wandb-config, else from the INI file.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

log = logging.getLogger("train")

HERE = Path(__file__).resolve().parent


def _load_json(path: Any, flag: str) -> Dict[str, Any]:
    """The JSON config file ``path`` names, or ``path`` itself when it is already a config (a ``--wandb-config``
    run records the configs themselves under these keys)."""
    from stable_audio_tools.models.factory import load_model_config

    if isinstance(path, Mapping):
        return dict(path)
    if not path:
        raise SystemExit(f"{flag} is required (a JSON file)")
    try:
        return load_model_config(path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{flag}: {e}") from None


def _wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def create_logger(kind: str, name: str, save_dir: str):
    """Return ``(logger or None, checkpoint directory or None)``."""
    kind = (kind or "none").lower()
    root = save_dir or "."
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        if os.environ.get("WANDB_MODE") is None and not _wandb_has_credentials():
            os.environ["WANDB_MODE"] = "offline"
            log.warning("wandb: no API key found, logging offline to %s/wandb (sync later with `wandb sync`)", root)
        logger = WandbLogger(project=name, save_dir=root)
        run_id = logger.experiment.id
        return logger, os.path.join(root, name, run_id, "checkpoints")
    if kind == "comet":
        try:
            from pytorch_lightning.loggers import CometLogger

            logger = CometLogger(project_name=name, save_dir=root)
        except (ImportError, ModuleNotFoundError) as e:
            raise SystemExit(f"--logger comet needs comet_ml: pip install comet_ml ({e})") from None
        return logger, os.path.join(root, str(logger.name), str(logger.version), "checkpoints")
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=root, name=name)
        return logger, os.path.join(logger.log_dir, "checkpoints")
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        logger = CSVLogger(save_dir=root, name=name)
        return logger, os.path.join(logger.log_dir, "checkpoints")
    if kind in ("none", "", "false"):
        from lightning_fabric.utilities.rank_zero import rank_zero_only

        from stable_audio_tools.training.run_dirs import new_version_dir

        # like csv/tensorboard: <save-dir>/<name>/version_<k>; only rank 0 creates it (ModelCheckpoint broadcasts it)
        run_dir = new_version_dir(Path(root) / name, create=getattr(rank_zero_only, "rank", 0) == 0)
        return None, str(run_dir / "checkpoints")
    raise SystemExit(f"--logger {kind!r}: unknown logger; use wandb, tensorboard, csv, comet or none")


WATCH_MODES = ("gradients", "parameters", "all", "none")


def watch_model(logger: Any, wrapper: torch.nn.Module, mode: str, log_freq: int = 100) -> bool:
    """``logger.watch(wrapper)`` as upstream does for W&B runs: histograms of the gradients (``mode``
    ``"gradients"``, upstream's default), the parameters, or ``"all"`` of them every ``log_freq`` steps, plus the
    model graph. ``"none"`` and loggers other than W&B watch nothing. Returns whether the model is watched."""
    from pytorch_lightning.loggers import WandbLogger

    mode = str(mode).lower()
    if mode not in WATCH_MODES:
        raise SystemExit(f"--wandb-watch {mode!r}: use one of {', '.join(WATCH_MODES)}")
    if not isinstance(logger, WandbLogger) or mode == "none":
        return False
    logger.watch(wrapper, log=mode, log_freq=log_freq)
    return True


def _shown(config_flag_value: Any) -> str:
    """How a config flag's value is named in messages (a config taken from ``--wandb-config`` is no path)."""
    return "(the config recorded by --wandb-config)" if isinstance(config_flag_value, Mapping) else \
        str(config_flag_value)


def resolve_resume_path(ckpt_path: str, save_dir: str,
                        model_config: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """'' -> None; 'last' -> the newest .ckpt under save_dir written with the same model config; a path -> checked
    to be a training checkpoint (with a warning when its embedded model config differs from ``model_config``)."""
    from stable_audio_tools.models.utils import checkpoint_kind
    from stable_audio_tools.training.run_dirs import (config_differences, find_resume_checkpoint,
                                                      read_embedded_model_config)

    if not ckpt_path:
        return None
    if ckpt_path == "last":
        if model_config is None:
            raise ValueError("--ckpt-path last needs the run's model config to pick a matching checkpoint")
        try:
            ckpt_path = str(find_resume_checkpoint(save_dir or ".", model_config))
        except FileNotFoundError as e:
            raise SystemExit(f"--ckpt-path last: {e}") from None
        log.info("resuming from the newest checkpoint of this model config: %s", ckpt_path)
    kind = checkpoint_kind(ckpt_path)
    if kind != "wrapped":
        raise SystemExit(f"--ckpt-path {ckpt_path} is an unwrapped model checkpoint ({kind}), which has no optimizer "
                         f"or step state to resume. To start from its weights use --pretrained-ckpt-path instead.")
    if model_config is not None:
        embedded, _ = read_embedded_model_config(ckpt_path)
        diff = config_differences(embedded, model_config) if embedded is not None else []
        if diff:
            log.warning("--ckpt-path %s was written with a different model config (differs at %s)", ckpt_path,
                        ", ".join(diff[:5]))
    return ckpt_path


def validate_args(args: Any) -> None:
    """Exit with every invalid flag value named (before anything is built)."""
    errors = []
    if args.checkpoint_every < 1:
        errors.append(f"--checkpoint-every {args.checkpoint_every}: must be a positive number of steps (a final "
                      f"checkpoint is also written when training ends or is stopped)")
    if args.max_steps == 0 or args.max_steps < -1:
        errors.append(f"--max-steps {args.max_steps}: use a positive number of steps, or -1 for no limit")
    if args.batch_size < 1:
        errors.append(f"--batch-size {args.batch_size}: must be at least 1")
    if args.nonfinite_skip_steps < 0:
        errors.append(f"--nonfinite-skip-steps {args.nonfinite_skip_steps}: must be 0 (stop at the first NaN/inf "
                      f"loss or gradient) or a positive number of steps to skip")
    watch = str(getattr(args, "wandb_watch", "gradients")).lower()
    if watch not in WATCH_MODES:
        errors.append(f"--wandb-watch {watch!r}: use one of {', '.join(WATCH_MODES)}")
    if errors:
        raise SystemExit("train.py: invalid flags:\n  " + "\n  ".join(errors))


def check_batch_fits(loader: Any, batch_size: int, world_size: int, flag: str, path: str) -> None:
    """Exit when a device's share of a map-style dataset is smaller than one batch (with ``drop_last`` such a
    loader yields no batch at all; without, every batch is smaller than asked). Streaming datasets are not checked."""
    dataset = loader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return
    try:
        size = len(dataset)
    except TypeError:
        return
    share = math.ceil(size / world_size)
    if batch_size > share:
        devices = f", {share} per device over {world_size} devices" if world_size > 1 else ""
        raise SystemExit(f"--batch-size {batch_size} is larger than the dataset of {flag} {path} ({size} items"
                         f"{devices}); lower --batch-size to at most {max(share, 1)} or add data")


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from stable_audio_tools.training.args import get_all_args

    default_ini = "defaults.ini" if Path("defaults.ini").exists() else str(HERE / "defaults.ini")
    args = get_all_args(default_ini, argv, description=__doc__)
    validate_args(args)
    from stable_audio_tools.allocator import tune_malloc

    tune_malloc()
    if getattr(args, "trust_pickle", False):
        from stable_audio_tools.models.safe_load import enable_trust_pickle

        enable_trust_pickle("--trust-pickle")

    import pytorch_lightning as pl
    from lightning_fabric.utilities.rank_zero import rank_zero_only
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from stable_audio_tools.data.dataset import create_dataloader_from_config
    from stable_audio_tools.models.factory import create_model_from_config
    from stable_audio_tools.models.utils import copy_state_dict, load_ckpt_state_dict, remove_weight_norm_from_model
    from stable_audio_tools.training import create_demo_callback_from_config, create_training_wrapper_from_config
    from stable_audio_tools.training.callbacks import ExceptionCallback, ModelConfigEmbedderCallback, RunCheckpoint
    from stable_audio_tools.training.export import AtomicCheckpointIO, NonFiniteError, remove_orphaned_temporaries
    from stable_audio_tools.training.nonfinite import NonFiniteGuard
    from stable_audio_tools.training.pretransform_check import warn_if_pretransform_untrained
    from stable_audio_tools.training.validation_metrics import (check_monitor, create_validation_metrics_callback,
                                                                monitor_mode)

    # Our checkpoints intentionally hold the post-step state; the validation loop is skipped without val data.
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
    # each run has its own checkpoint folder, so a resumed run's top-k bookkeeping starts afresh there
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    # frozen pretransforms / teachers are deliberately kept in eval mode
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    torch.multiprocessing.set_sharing_strategy("file_system")
    seed = args.seed + int(os.environ.get("SLURM_PROCID", 0))
    pl.seed_everything(seed, workers=True)

    model_config = _load_json(args.model_config, "--model-config")
    dataset_config = _load_json(args.dataset_config, "--dataset-config")
    val_dataset_config = _load_json(args.val_dataset_config, "--val-dataset-config") \
        if args.val_dataset_config else None
    loader_kwargs = dict(batch_size=args.batch_size, num_workers=args.num_workers,
                         sample_rate=model_config["sample_rate"], sample_size=model_config["sample_size"],
                         audio_channels=model_config.get("audio_channels", 2))
    train_dl = create_dataloader_from_config(dataset_config, shuffle=True, **loader_kwargs)
    val_dl = create_dataloader_from_config(val_dataset_config, shuffle=False, **loader_kwargs) \
        if val_dataset_config else None

    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices = args.num_gpus if args.num_gpus > 0 else ("auto" if accelerator == "gpu" else 1)
    n_devices = torch.cuda.device_count() if devices == "auto" else devices
    world_size = max(int(n_devices), 1) * max(args.num_nodes, 1)
    check_batch_fits(train_dl, args.batch_size, world_size, "--dataset-config", _shown(args.dataset_config))
    if val_dl is not None:
        check_batch_fits(val_dl, args.batch_size, world_size, "--val-dataset-config",
                         _shown(args.val_dataset_config))
    resume = resolve_resume_path(args.ckpt_path, args.save_dir, model_config)

    model = create_model_from_config(model_config)
    if args.pretrained_ckpt_path:
        copy_state_dict(model, load_ckpt_state_dict(args.pretrained_ckpt_path))
    pretransform = getattr(model, "pretransform", None)
    if (args.remove_pretransform_weight_norm or args.pretransform_ckpt_path) and pretransform is None:
        raise SystemExit("--pretransform-ckpt-path / --remove-pretransform-weight-norm: this model has no pretransform")
    if args.remove_pretransform_weight_norm not in ("", "pre_load", "post_load"):
        raise SystemExit(f"--remove-pretransform-weight-norm {args.remove_pretransform_weight_norm!r}: use '', "
                         f"'pre_load' or 'post_load'")
    if args.remove_pretransform_weight_norm == "pre_load":
        remove_weight_norm_from_model(pretransform)
    if args.pretransform_ckpt_path:
        pretransform.load_state_dict(load_ckpt_state_dict(args.pretransform_ckpt_path))
    if args.remove_pretransform_weight_norm == "post_load":
        remove_weight_norm_from_model(pretransform)
    warn_if_pretransform_untrained(model, args.pretrained_ckpt_path, args.pretransform_ckpt_path, args.ckpt_path)
    adapter_run = _prepare_adapter_run(args, model, model_config, resume)

    wrapper = create_training_wrapper_from_config(
        adapter_run.wrapper_config(model_config) if adapter_run else model_config, model,
        **({"clip_grad_norm": args.gradient_clip_val} if not _automatic(model_config) else {}))
    if getattr(args, "compile", False):
        _compile_wrapper(wrapper, accelerator)

    logger, checkpoint_dir = create_logger(args.logger, args.name, args.save_dir)
    watch_model(logger, wrapper, getattr(args, "wandb_watch", "gradients"))
    if rank_zero_only.rank == 0:  # unfinished writes of killed runs of this experiment / of the resumed run
        for folder in {Path(checkpoint_dir).parent.parent, *([Path(resume).parent] if resume else [])}:
            remove_orphaned_temporaries(folder)
    validation_metrics = create_validation_metrics_callback(model_config, val_every=args.val_every)
    if args.monitor:
        try:
            check_monitor(args.monitor, validation_metrics, args.checkpoint_every)
            top_k = {"save_top_k": args.save_top_k, "monitor": args.monitor,
                     "mode": monitor_mode(args.monitor, args.monitor_mode), "save_last": True}
        except ValueError as e:
            raise SystemExit(f"train.py: {e}") from None
    else:
        top_k = {"save_top_k": -1} if args.save_top_k < 0 else {"save_top_k": args.save_top_k, "monitor": "step",
                                                                "mode": "max"}
    run_checkpoint = RunCheckpoint(every_n_train_steps=args.checkpoint_every, dirpath=checkpoint_dir, **top_k)
    callbacks = [
        NonFiniteGuard(skip_steps=args.nonfinite_skip_steps),
        *([validation_metrics] if validation_metrics is not None else []),
        run_checkpoint,
        create_demo_callback_from_config(model_config, demo_dl=val_dl if val_dl is not None else train_dl),
        ExceptionCallback(),
        ModelConfigEmbedderCallback(model_config),
        *(adapter_run.attach(wrapper) if adapter_run else []),
    ]
    if logger is not None:
        logger.log_hyperparams({**vars(args), "model_config": model_config, "dataset_config": dataset_config,
                                "val_dataset_config": val_dataset_config})

    strategy = args.strategy or "auto"
    if strategy == "deepspeed":
        try:
            from pytorch_lightning.strategies import DeepSpeedStrategy
        except ImportError as e:
            raise SystemExit(f"--strategy deepspeed needs DeepSpeed: pip install deepspeed ({e})") from None
        strategy = DeepSpeedStrategy(stage=2, contiguous_gradients=True, overlap_comm=True, reduce_scatter=True,
                                     reduce_bucket_size=5e8, allgather_bucket_size=5e8, load_full_weights=True)
    elif strategy == "auto" and (n_devices > 1 or args.num_nodes > 1):
        strategy = "ddp_find_unused_parameters_true"
    precision = args.precision
    if accelerator == "cpu" and str(precision) in ("16-mixed", "16", "16-true"):
        log.info("precision %s is not available on CPU; using 32-bit (use --precision bf16-mixed for speed)",
                 precision)
        precision = "32-true"

    # without a logger, demo media (and Lightning's own files) go to the run's folder too
    root_dir = str(Path(checkpoint_dir).parent) if logger is None else (args.save_dir or None)
    trainer_kwargs: Dict[str, Any] = {}
    if args.val_every > 0:
        trainer_kwargs.update(check_val_every_n_epoch=None, val_check_interval=args.val_every)
    if _automatic(model_config) and args.gradient_clip_val > 0:
        trainer_kwargs["gradient_clip_val"] = args.gradient_clip_val
    trainer = pl.Trainer(
        devices=devices, accelerator=accelerator, num_nodes=args.num_nodes, strategy=strategy, precision=precision,
        accumulate_grad_batches=args.accum_batches, callbacks=callbacks, logger=logger if logger else False,
        log_every_n_steps=1, max_epochs=10_000_000, max_steps=args.max_steps, default_root_dir=root_dir,
        reload_dataloaders_every_n_epochs=0, num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
        **trainer_kwargs)
    try:
        trainer.fit(wrapper, train_dl, val_dl, ckpt_path=resume)
    except SIGTERMException:
        name = run_checkpoint.stop_signal or "SIGTERM"
        saved = run_checkpoint.final_checkpoint
        if trainer.is_global_zero:
            log.warning("training stopped by %s at step %d; %s", name, trainer.global_step,
                        f"resume with --ckpt-path {saved}" if saved else "no step was completed, nothing was saved")
        raise SystemExit(128 + int(signal.Signals[name]))
    except NonFiniteError as e:
        raise SystemExit(f"train.py: {e}") from None


def _prepare_adapter_run(args: Any, model: torch.nn.Module, model_config: Dict[str, Any], resume: Optional[str]):
    """``--adapter-config``: apply the adapter, freeze the base (see stable_audio_tools.training.adapters); checks
    that ``--ckpt-path`` is (or is not) an adapter run with the same base. Returns the AdapterRun or None."""
    from stable_audio_tools.training.adapters import AdapterRun, check_resume_kind

    adapter_config = getattr(args, "adapter_config", "")
    base_precision = getattr(args, "base_precision", "fp32")
    if not adapter_config and base_precision != "fp32":
        raise SystemExit(f"--base-precision {base_precision}: only adapter runs (--adapter-config) keep a frozen base "
                         f"in lower precision; use --precision for full fine-tuning")
    try:
        run = None
        if adapter_config:
            run = AdapterRun.from_file(adapter_config, base_precision=base_precision,
                                       ema=bool(getattr(args, "adapter_ema", False)))
            run.prepare(model, model_config)
        check_resume_kind(resume, run)
    except ValueError as e:
        raise SystemExit(f"train.py: {e}") from None
    return run


def _compile_wrapper(wrapper: torch.nn.Module, accelerator: str) -> None:
    """``--compile``: compile the transformers of the trained model (stable_audio_tools.training.compile)."""
    from stable_audio_tools.training.compile import compile_for_training

    try:
        names = compile_for_training(wrapper, {"gpu": "cuda"}.get(accelerator, accelerator))
    except ValueError as e:
        raise SystemExit(f"train.py: {e}") from None
    log.info("--compile: compiled %s; the first training step (and the first of each new batch shape, and of "
             "validation) compiles, which takes tens of seconds on a CPU", ", ".join(names))


def _automatic(model_config: Dict[str, Any]) -> bool:
    """Whether the model type's wrapper uses Lightning's automatic optimization (it can then clip gradients)."""
    from stable_audio_tools.families import uses_automatic_optimization

    return uses_automatic_optimization(model_config)


if __name__ == "__main__":
    from stable_audio_tools.models.safe_load import CheckpointError

    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except CheckpointError as e:  # unsafe, wrong-kind or unreadable checkpoint: the message says what to do
        sys.exit(f"train.py: {e}")
