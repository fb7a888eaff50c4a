"""Worker side of ``bench/bench_compare.py``: builds one side's models (ours or upstream 0.0.19's) and times rows.

Each side runs in its own process because both packages are named ``stable_audio_tools``, and ours in two: one for
exact mode, one for the fast modes (see :class:`Worker`). The parent sends one
JSON request per line on stdin and reads one JSON answer per line; everything the packages print goes to stderr.
Rows are grouped in suites that are built on first use:

* ``dit``: the latent DiT of ``--config`` (default ``bench/configs/dit_44m_latent.json``) and its VAE;
* ``sao``: Stable Audio Open Small's shape (``bench/configs/sao_small.json``: 16-layer 1024-wide DiT, full
  Oobleck VAE), random weights, T5 replaced by a one-layer random T5 of t5-base's width (the text encoder is not
  what is timed; both sides load the same one);
* ``ae``: the autoencoder of ``--ae-config`` and its training wrapper (:class:`AeSuite`);
* ``data``: an ``audio_dir`` dataset of FLAC tones written by the parent.

Our side writes its (perturbed) weights to a file that the upstream side loads strictly, so both compute with the
same numbers and the exact-mode outputs can be compared.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LATENTS = 256  # 11.9 s of 44.1 kHz audio at a downsampling ratio of 2048
SHORT_LATENTS = 22  # about 1 s (45,056 samples) at the same ratio: the encode_short / decode_short rows


def import_side(side: str, upstream: Optional[str]) -> None:
    """Make ``import stable_audio_tools`` resolve to our checkout or to upstream's source directory."""
    if side == "ours":
        sys.path.insert(0, str(ROOT))
        return
    sys.path.insert(0, str(Path(upstream).resolve()))
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    # an editable install of ours is a meta-path finder that would win over sys.path
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]


def perturb(backbone) -> None:
    """Add seeded N(0, 0.02) noise to every backbone weight, in name order: the zero-initialised output
    projections would otherwise make the blocks contribute nothing, hiding any numerical error."""
    import torch

    gen = torch.Generator().manual_seed(1234)
    for _, param in sorted(backbone.named_parameters()):
        param.add_(torch.randn(param.shape, generator=gen) * 0.02)


def patch_t5(tiny_dir: str) -> None:
    """Make ``from_pretrained`` of any T5 name load the one-layer random T5 in ``tiny_dir`` (same on both sides)."""
    import transformers

    for cls in (transformers.T5EncoderModel, transformers.AutoTokenizer):
        original = cls.from_pretrained

        def load(klass, name, *args, _original=original, **kwargs):
            return _original(tiny_dir, *args, **kwargs)

        cls.from_pretrained = classmethod(load)


def share_weights(model, weights: str, make_weights: bool) -> None:
    """Our exact-mode worker (``make_weights``) saves ``model``'s weights to ``weights``; the other workers load them
    strictly, as plain arrays without pickle (the file is ours, but the bench loads nothing unsafely)."""
    import torch

    if make_weights:
        np.savez(weights, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
        return
    with np.load(weights, allow_pickle=False) as arrays:
        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files}, strict=True)


class Suite:
    """One model (exact, and on our side its fast-mode copies) with its inputs."""

    def __init__(self, side: str, config: Dict[str, Any], weights: str, make_weights: bool,
                 fast: bool = False) -> None:
        import torch

        from stable_audio_tools.models.factory import create_model_from_config

        self.torch, self.side, self.config = torch, side, config
        torch.manual_seed(0)
        exact = create_model_from_config(config).eval().requires_grad_(False)
        if make_weights:
            perturb(exact.model)
        share_weights(exact, weights, make_weights)
        self.models = {"exact": exact}
        if fast:  # our fast-mode worker; the exact model stays the source of the copies and the quality reference
            from stable_audio_tools.inference.precision import enable_fast_mode, quantize_int8

            self.models["bf16"] = enable_fast_mode(copy.deepcopy(exact), decoder=False)
            self.models["bf16c"] = enable_fast_mode(copy.deepcopy(exact), decoder=False, compile=True)
            self.models["int8"] = quantize_int8(copy.deepcopy(exact))
        self.channels = config["model"]["io_channels"]
        self.sample_size = LATENTS * exact.pretransform.downsampling_ratio
        gen = torch.Generator().manual_seed(3)
        self.x = torch.randn(2, self.channels, LATENTS, generator=gen)
        self.t = torch.tensor([0.3, 0.7])
        self.latents = torch.randn(1, self.channels, LATENTS, generator=gen)
        self.short_latents = torch.randn(2, self.channels, SHORT_LATENTS, generator=gen)
        audio_channels = config.get("audio_channels", 2)
        self.short_audio = torch.randn(2, audio_channels, SHORT_LATENTS * exact.pretransform.downsampling_ratio,
                                       generator=gen) * 0.3
        self.quiet = {"disable_tqdm": True} if side == "ours" else {}  # upstream passes unknown kwargs to the model
        self._tensors: Dict[int, Any] = {}
        self._full_fast: Dict[str, Any] = {}

    def user_model(self, mode: str):
        """The model the decode and end-to-end rows use: for ``bf16`` full fast mode as ``--dtype bf16`` gives it
        (autocast backbone and bf16 decoder), a copy built on first use (during the warm-up). The backbone rows use
        ``models["bf16"]``, whose decoder stays float32: with the bf16 decoder on that same model, this process's
        float32 backbone rows once ran about 1.5x slower, which a standalone script did not show (cause not
        found)."""
        if mode not in ("bf16", "bf16c"):
            return self.models[mode]
        if mode not in self._full_fast:
            from stable_audio_tools.inference.precision import enable_fast_mode

            self._full_fast[mode] = enable_fast_mode(copy.deepcopy(self.models["exact"]), compile=mode == "bf16c")
        return self._full_fast[mode]

    def tensors(self, batch: int):
        """Conditioning tensors of ``self.cond`` repeated ``batch`` times, computed once (not timed)."""
        if batch not in self._tensors:
            tensors = self.models["exact"].conditioner(self.cond * batch, "cpu")
            if "prompt" in tensors:  # a seeded stand-in for the T5 output (upstream runs T5 in float16 on CPU)
                embedding, mask = tensors["prompt"]
                gen = self.torch.Generator().manual_seed(7)
                mask = self.torch.zeros_like(mask)
                mask[:, :12] = True
                embedding = self.torch.randn(embedding.shape, generator=gen)
                tensors["prompt"] = (embedding * mask.unsqueeze(-1).float(), mask)
            self._tensors[batch] = tensors
        return self._tensors[batch]

    def generate(self, mode: str, decode: bool = False, **kwargs):
        from stable_audio_tools.inference.generation import generate_diffusion_cond

        model = self.user_model(mode) if decode else self.models[mode]
        return generate_diffusion_cond(model, conditioning_tensors=self.tensors(1), batch_size=1,
                                       sample_size=self.sample_size, seed=1, device="cpu",
                                       return_latents=not decode, **self.quiet, **kwargs)

    def backbone(self, mode: str, cfg: bool):
        """One backbone call: batch 2 without CFG, or batch 1 with batch CFG (1 -> 2)."""
        torch, model = self.torch, self.models[mode]
        fast = getattr(model, "inference_autocast_dtype", None) is not None  # set by enable_fast_mode (ours)
        # the conditioning is computed (and cached) outside autocast, as generation does: computed first inside a
        # fast mode's autocast, its bf16-rounded values were cached and then fed this process's exact model
        tensors = self.tensors(1 if cfg else 2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            if not cfg:
                return model(self.x, self.t, tensors)
            inputs = model.get_conditioning_inputs(tensors)
            return model.model(self.x[:1], self.t[:1], **inputs, cfg_scale=7.0, batch_cfg=True, rescale_cfg=True)


class DitSuite(Suite):
    def __init__(self, side: str, config: Dict[str, Any], weights: str, make_weights: bool,
                 fast: bool = False) -> None:
        super().__init__(side, config, weights, make_weights, fast)
        self.cond = [{"seconds_start": 0.0, "seconds_total": 11.9}]
        self._train: Dict[bool, Any] = {}  # compiled? -> (wrapper, batch, optimizers per mode)

    def sampling(self, mode: str, row: str, decode: bool = False):
        model = self.user_model(mode) if decode else self.models[mode]  # the model generate() will run
        if row == "dpmpp":
            model.diffusion_objective = "v"
            return self.generate(mode, decode, steps=20, cfg_scale=7, sampler_type="dpmpp-3m-sde", sigma_min=0.3,
                                 sigma_max=500)
        model.diffusion_objective = "rectified_flow"  # same network, rectified-flow sampler
        return self.generate(mode, decode, steps=8, cfg_scale=7, sampler_type="euler")

    def optimizer(self, parameters, fast: bool):
        """AdamW as each side's training builds it: upstream's (torch's default implementation); ours through
        ``create_optimizer_from_config``, which under ``--precision bf16-mixed`` (``fast``) picks the fused
        kernels."""
        settings = {"lr": 5e-5, "betas": (0.9, 0.999), "weight_decay": 1e-3}
        if self.side == "upstream":
            return self.torch.optim.AdamW(parameters, **settings)
        from stable_audio_tools.training.utils import create_optimizer_from_config

        return create_optimizer_from_config({"type": "AdamW", "config": settings}, parameters, fused_default=fast)

    def train_step(self, mode: str) -> None:
        """One optimiser step of the training wrapper on a batch of 2 pre-encoded latents (bf16: bf16-mixed
        autocast, as Lightning's ``--precision bf16-mixed``; bf16c: the same with ``train.py --compile``, on a
        wrapper of its own)."""
        torch = self.torch
        compiled = mode == "bf16c"
        if compiled not in self._train:
            from stable_audio_tools.training import create_training_wrapper_from_config

            from stable_audio_tools.models.factory import create_model_from_config

            model = create_model_from_config(self.config)  # upstream's weight-normed VAE cannot be deep-copied
            model.load_state_dict(self.models["exact"].state_dict(), strict=True)
            model.train()
            model.pretransform.requires_grad_(False)
            wrapper = create_training_wrapper_from_config(self.config, model)
            # the step outside a Trainer (same on both sides): logging off, a stand-in exposing the optimiser
            wrapper.log = wrapper.log_dict = lambda *a, **k: None
            wrapper._trainer = SimpleNamespace(optimizers=[], global_step=0, current_epoch=0,
                                               training=True, sanity_checking=False, world_size=1, global_rank=0)
            meta = {"seconds_start": 0.0, "seconds_total": 11.9, "padding_mask": torch.ones(LATENTS)}
            batch = (torch.randn(2, self.channels, LATENTS), (dict(meta), dict(meta)))
            if compiled:  # as train.py --compile does
                from stable_audio_tools.training.compile import compile_for_training

                compile_for_training(wrapper)
            self._train[compiled] = wrapper, batch, {}
        wrapper, batch, optimizers = self._train[compiled]
        if mode not in optimizers:
            optimizers[mode] = self.optimizer(wrapper.diffusion.model.parameters(), fast=mode != "exact")
        optimizer = optimizers[mode]
        wrapper._trainer.optimizers = [optimizer]
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "exact"):
            loss = wrapper.training_step(batch, 0)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        loss.backward()
        optimizer.step()
        wrapper.on_before_zero_grad(optimizer)  # the EMA update
        optimizer.zero_grad(set_to_none=True)

    def rows(self) -> Dict[str, Callable[[str], Any]]:
        return {
            "forward": lambda mode: self.backbone(mode, cfg=False),
            "cfg": lambda mode: self.backbone(mode, cfg=True),
            "dpmpp": lambda mode: self.sampling(mode, "dpmpp"),
            "euler": lambda mode: self.sampling(mode, "euler"),
            "train": self.train_step,
            "decode": lambda mode: self.user_model(mode).pretransform.decode(self.latents),
            "encode_short": lambda mode: self.encode_short(),
            "decode_short": lambda mode: self.user_model(mode).pretransform.decode(self.short_latents),
        }

    def encode_short(self):
        """The VAE's encode of 2 x 1 s of stereo audio (the bottleneck draws its posterior sample from a seeded
        global generator on both sides)."""
        self.torch.manual_seed(11)
        return self.models["exact"].pretransform.encode(self.short_audio)

    def outputs(self) -> Dict[str, Any]:
        """Exact-mode outputs compared across sides, and decoded audio of every mode (quality bound)."""
        torch = self.torch
        out = {"forward": self.backbone("exact", cfg=False), "euler": self.sampling("exact", "euler"),
               "dpmpp": self.sampling("exact", "dpmpp"),
               "decode": self.models["exact"].pretransform.decode(self.latents),
               "encode_short": self.encode_short(),
               "decode_short": self.models["exact"].pretransform.decode(self.short_latents)}
        if len(self.models) > 1:  # our fast-mode worker
            for mode in self.models:
                out[f"{mode}_audio"] = self.sampling(mode, "dpmpp", decode=True)
            out["bf16_decoder_audio"] = self.user_model("bf16").pretransform.decode(self.latents)
            out["exact_decoder_audio"] = self.models["exact"].pretransform.decode(self.latents)
        return {k: v.float().numpy() if torch.is_tensor(v) else v for k, v in out.items()}


class SaoSuite(Suite):
    def __init__(self, side: str, config: Dict[str, Any], weights: str, make_weights: bool,
                 fast: bool = False) -> None:
        super().__init__(side, config, weights, make_weights, fast)
        self.cond = [{"prompt": "a warm analog synth pad with slow attack", "seconds_total": 11.9}]

    def steps(self, mode: str, decode: bool):
        """Stable Audio Open Small's sampling: 8 ping-pong steps, cfg 1 (its released setting)."""
        return self.generate(mode, decode, steps=8, cfg_scale=1.0, sampler_type="pingpong")

    def rows(self) -> Dict[str, Callable[[str], Any]]:
        return {
            "sao_cfg": lambda mode: self.backbone(mode, cfg=True),
            "sao_steps": lambda mode: self.steps(mode, decode=False),
            "sao_e2e": lambda mode: self.steps(mode, decode=True),
            "sao_decode": lambda mode: self.user_model(mode).pretransform.decode(self.latents),
        }

    def outputs(self) -> Dict[str, Any]:
        return {"sao_cfg": self.backbone("exact", cfg=True).numpy(),
                "sao_steps": self.steps("exact", decode=False).numpy(),
                "sao_decode": self.models["exact"].pretransform.decode(self.latents).numpy()}


def accept_verbose_scheduler_argument() -> None:
    """Upstream's ``InverseLR`` passes ``verbose`` to torch's ``LRScheduler.__init__`` positionally, which newer torch
    no longer takes (``TypeError`` in ``configure_optimizers``): drop that third argument (the schedule is the same)."""
    import torch

    original = torch.optim.lr_scheduler.LRScheduler.__init__
    if getattr(original, "_drops_verbose", False):
        return

    def init(self, optimizer, last_epoch=-1, *verbose: Any) -> None:
        original(self, optimizer, last_epoch)

    init._drops_verbose = True
    torch.optim.lr_scheduler.LRScheduler.__init__ = init


class Measured(float):
    """A row function's own timing (seconds), used instead of the wall time of the whole call."""


class AeSuite:
    """Autoencoder training through a real Lightning ``Trainer`` (``--ae-config``: the Oobleck VAE shaped like Stable
    Audio Open's, 32 channels, encodec discriminator, perceptual MRSTFT + KL, EMA; batch 2 x 1 s stereo).

    Every timing is a fresh ``Trainer.fit`` of 4 batches on the same training wrapper (built once), so each side pays
    its own Lightning hooks and optimiser set-up alike; the row's seconds are the mean of the last two steps (one
    generator and one discriminator step: the wrapper alternates them), after two warm-up steps.
    """

    STEPS, WARMUP = 4, 2

    def __init__(self, side: str, config: Dict[str, Any], weights: str, make_weights: bool,
                 fast: bool = False) -> None:
        import torch

        from stable_audio_tools.models.factory import create_model_from_config
        from stable_audio_tools.training import create_training_wrapper_from_config

        self.torch, self.config = torch, config
        if side == "upstream":
            accept_verbose_scheduler_argument()
        torch.manual_seed(0)
        model = create_model_from_config(config)
        share_weights(model, weights, make_weights)
        self.wrapper = create_training_wrapper_from_config(config, model)
        self.models = {"bf16": None} if fast else {"exact": None}  # the modes this process times
        gen = torch.Generator().manual_seed(4)
        channels, size = config.get("audio_channels", 2), config["sample_size"]
        audio = (torch.randn(2 * self.STEPS, channels, size, generator=gen) * 0.3).clamp(-1, 1)
        self.loader = torch.utils.data.DataLoader([(clip, {}) for clip in audio], batch_size=2, collate_fn=lambda
                                                  items: (torch.stack([a for a, _ in items]), tuple(m for _, m in items)))

    def train(self, mode: str) -> Measured:
        import pytorch_lightning as pl

        times: List[float] = []

        class Timer(pl.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                times.append(time.perf_counter() - self.t0)

        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=self.STEPS, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[Timer()], precision="32-true" if mode == "exact" else "bf16-mixed",
                             num_sanity_val_steps=0)
        self.torch.manual_seed(5)
        trainer.fit(self.wrapper, self.loader)
        if len(times) != self.STEPS:
            raise RuntimeError(f"the autoencoder training ran {len(times)} of {self.STEPS} steps")
        return Measured(sum(times[self.WARMUP:]) / (self.STEPS - self.WARMUP))

    def rows(self) -> Dict[str, Callable[[str], Any]]:
        return {"ae_train": self.train}

    def outputs(self) -> Dict[str, Any]:
        return {}


class DataSuite:
    """Two passes of an ``audio_dir`` loader over the parent's FLAC files (worker start-up included)."""

    def __init__(self, audio_dir: str, sample_rate: int) -> None:
        self.config = {"dataset_type": "audio_dir", "datasets": [{"id": "tones", "path": audio_dir}],
                       "random_crop": True, "drop_last": False}
        self.sample_rate = sample_rate

    def load(self, workers: int) -> None:
        import torch

        from stable_audio_tools.data.dataset import create_dataloader_from_config

        original = torch.utils.data.DataLoader

        def without_persistence(*args, **kwargs):
            # upstream always passes persistent_workers=True, which torch refuses with 0 workers: drop it there
            if kwargs.get("num_workers", 0) == 0:
                kwargs.pop("persistent_workers", None)
            return original(*args, **kwargs)

        torch.utils.data.DataLoader = without_persistence
        try:
            loader = create_dataloader_from_config(self.config, batch_size=4, sample_size=self.sample_rate,
                                                   sample_rate=self.sample_rate, audio_channels=2,
                                                   num_workers=workers)
        finally:
            torch.utils.data.DataLoader = original
        for _ in range(2):
            for _batch in loader:
                pass

    def rows(self) -> Dict[str, Callable[[str], Any]]:
        return {"loader0": lambda mode: self.load(0), "loader2": lambda mode: self.load(2)}

    def outputs(self) -> Dict[str, Any]:
        return {}


SUITE_OF = {"forward": "dit", "cfg": "dit", "dpmpp": "dit", "euler": "dit", "train": "dit", "decode": "dit",
            "encode_short": "dit", "decode_short": "dit",
            "sao_cfg": "sao", "sao_steps": "sao", "sao_e2e": "sao", "sao_decode": "sao",
            "ae_train": "ae", "loader0": "data", "loader2": "data"}
TRAINING_ROWS = ("train", "ae_train")  # timed with gradients enabled; modes from TRAIN_MODES
TRAIN_MODES = ("exact", "bf16", "bf16c")  # the training row has no int8 mode; bf16c: bf16-mixed + --compile


class Worker:
    """One process's rows: ``ours`` (our exact mode; builds the models and saves the weights), ``ours-fast`` (our
    fast modes, in a process of their own as a user runs one mode per process: interleaved in one process, the
    modes' different allocation patterns made the float32 steps page-fault again, up to 1.3x slower) or
    ``upstream``."""

    def __init__(self, name: str, args: Any) -> None:
        self.side = "upstream" if name == "upstream" else "ours"
        self.fast, self.args, self.suites = name == "ours-fast", args, {}

    def suite(self, name: str):
        if name not in self.suites:
            args, make = self.args, self.side == "ours" and not self.fast
            if name == "dit":
                config = json.loads(Path(args.config).read_text())
                self.suites[name] = DitSuite(self.side, config, os.path.join(args.scratch, "dit.npz"), make,
                                             self.fast)
            elif name == "sao":
                patch_t5(os.path.join(args.scratch, "tiny_t5"))
                config = json.loads(Path(args.sao_config).read_text())
                self.suites[name] = SaoSuite(self.side, config, os.path.join(args.scratch, "sao.npz"), make,
                                             self.fast)
            elif name == "ae":
                config = json.loads(Path(args.ae_config).read_text())
                self.suites[name] = AeSuite(self.side, config, os.path.join(args.scratch, "ae.npz"), make,
                                            self.fast)
            else:
                self.suites[name] = DataSuite(os.path.join(args.scratch, "audio"), 44100)
        return self.suites[name]

    def modes(self, row: str) -> List[str]:
        """The modes this process times for ``row``."""
        suite = self.suite(SUITE_OF[row])
        if not hasattr(suite, "models"):
            found = ["exact"]
        elif row in TRAINING_ROWS:
            found = [m for m in TRAIN_MODES if m in suite.models]
        elif row == "encode_short":  # fast mode leaves the generation pipeline's encoder in float32
            found = ["exact"]
        elif row in ("decode", "decode_short", "sao_decode"):  # fast mode runs the decoder in bf16 (compile is the backbone's);
            found = [m for m in ("exact", "bf16") if m in suite.models]  # int8 leaves it alone
        else:
            found = list(suite.models)
        return [m for m in found if m != "exact"] if self.fast else found

    def time(self, row: str, mode: str) -> float:
        import torch

        fn = self.suite(SUITE_OF[row]).rows()[row]
        t0 = time.perf_counter()
        with torch.set_grad_enabled(row in TRAINING_ROWS):
            result = fn(mode)
        return float(result) if isinstance(result, Measured) else time.perf_counter() - t0

    def outputs(self, suite: str, out_dir: str) -> Dict[str, str]:
        import torch

        with torch.no_grad():
            arrays = self.suite(suite).outputs()
        paths = {}
        for key, value in arrays.items():
            paths[key] = os.path.join(out_dir, f"{self.side}{'-fast' if self.fast else ''}_{key}.npy")
            np.save(paths[key], value)
        return paths


def worker_main(args: Any) -> None:
    """Answer the parent's requests: ``{"cmd": "modes"|"time"|"outputs", ...}`` -> one JSON line each."""
    protocol = os.fdopen(os.dup(1), "w")  # the protocol owns the real stdout; prints go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        import_side("upstream" if args.worker == "upstream" else "ours", args.upstream)
        import torch

        torch.set_num_threads(args.threads)
        import stable_audio_tools  # noqa: F401  (fails here, not mid-run, when the side cannot be imported)
        if args.worker != "upstream" and getattr(args, "allocator", "same") == "shipped":
            from stable_audio_tools.allocator import tune_malloc  # as our scripts do at start

            tune_malloc()
        worker = Worker(args.worker, args)
    except Exception as e:  # reported to the parent, which prints it in the table notes
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), file=protocol, flush=True)
        return
    print(json.dumps({"ready": True}), file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "modes":
                answer = {"modes": worker.modes(request["row"])}
            elif request["cmd"] == "time":
                answer = {"seconds": worker.time(request["row"], request["mode"])}
            else:
                answer = {"paths": worker.outputs(request["suite"], request["dir"])}
        except Exception as e:
            traceback.print_exc()
            answer = {"error": f"{args.worker}: {type(e).__name__}: {e}"}
        print(json.dumps(answer), file=protocol, flush=True)
