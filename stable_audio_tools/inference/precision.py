"""Inference precision: exact mode (float32, the default) and fast mode (bf16 autocast, optional int8).

Fast mode keeps the weights in float32 and runs the diffusion backbone under ``torch.autocast`` with bfloat16, so
matrix multiplies and convolutions use the CPU's bf16 matrix units (AMX / AVX512-BF16) or the GPU's tensor cores.
The numerically fragile parts stay in float32:

* the sampler (sigma / timestep schedule, the update rule, the noise): only the backbone call is autocast, and
  its output is cast back to the latent's dtype, so the sampled (final) latent is float32;
* rotary position embeddings and their application (``models.attention``), layer norms (autocast runs
  ``layer_norm`` in float32), the DiT's timestep Fourier features (``models.blocks.FourierFeatures``);
* the pretransform's encoder runs in float32. Its decoder (Oobleck-style autoencoders) is the one part run with
  bf16 *weights* rather than autocast (:func:`enable_fast_decode`, :mod:`.fast_convnet`): the weight norm is folded
  in float32, the decoder is cast to bfloat16, its convolutions run in the channels-last layout the bf16 kernels
  want and its Snake activations are fused (autocast, which casts around every convolution, gains little there).
  The decoded audio is returned in float32.

``int8`` replaces the backbone's transformer-block ``nn.Linear`` layers by dynamically quantised ones
(``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised per call), with float32
activations elsewhere. CPU only; it pays on CPUs with VNNI / AMX; it does not combine with bf16 autocast (the
int8 kernels take float32 inputs). Docs: docs/inference.md#fast-mode.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import warnings
from typing import Any, Callable, Iterator, List, Optional, Union

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.ao.quantization import quantize_dynamic

from ..models.transformer import ContinuousTransformer
from .fast_convnet import build_fast_convnet

__all__ = ["FAST_DTYPES", "QUANTIZE_CHOICES", "AutocastBackbone", "CastWeightLinear", "apply_fast_mode",
           "autocast_backbone", "autocast_dtype_of", "backbone_is_compiled", "check_fast_mode", "compile_backbone",
           "check_cpp_compiler", "cpp_compiler", "cpu_bf16_problem", "enable_fast_decode",
           "enable_fast_encode", "enable_fast_mode", "fast_dtype", "fast_decode_dtype_of", "fast_encode_dtype_of",
           "maybe_autocast", "quantize_int8"]

#: spellings of the fast (autocast) mode accepted by the command lines
FAST_DTYPES = {"bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16}
#: values of ``--quantize``
QUANTIZE_CHOICES = ("none", "int8")

_ATTRIBUTE = "inference_autocast_dtype"


def fast_dtype(name: str, flag: str = "--dtype") -> torch.dtype:
    """The autocast dtype of a fast-mode name (``"bf16"`` / ``"bf16-mixed"``); ``flag`` names the option in the
    error."""
    if name not in FAST_DTYPES:
        raise ValueError(f"{flag} {name!r} is not a fast mode; use one of {', '.join(FAST_DTYPES)}")
    return FAST_DTYPES[name]


@functools.lru_cache(maxsize=None)
def cpu_bf16_problem() -> Optional[str]:
    """``None`` when this CPU and torch build run the bf16 kernels fast mode needs (a linear layer,
    scaled-dot-product attention and a 1-D convolution of a realistic size), else torch's error message. Some builds fail here, e.g.
    with ``ATEN_CPU_CAPABILITY=avx2`` forced on a CPU whose oneDNN path expects AVX-512 ("pack_vnni2 is only
    supported when avx512 is supported")."""
    try:
        with torch.no_grad():
            x = torch.randn(1, 2, 64, 64, dtype=torch.bfloat16)
            torch.nn.functional.scaled_dot_product_attention(x, x, x)
            torch.nn.functional.linear(x, torch.randn(64, 64, dtype=torch.bfloat16))
            torch.nn.functional.conv1d(x[0], torch.randn(64, 64, 7, dtype=torch.bfloat16), padding=3)  # decoder
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


def _check_autocast(device_type: str, dtype: torch.dtype) -> None:
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast dtype must be torch.bfloat16 or torch.float16, got {dtype}")
    if device_type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"bf16 autocast is not available on device type {device_type!r}; use float32")
    if dtype == torch.float16 and device_type == "cpu":
        raise ValueError("float16 autocast needs a GPU; use bfloat16 on the CPU")


def enable_fast_mode(model: nn.Module, dtype: Optional[torch.dtype] = torch.bfloat16,
                     decoder: bool = True, compile: bool = False) -> nn.Module:
    """Mark ``model`` (a diffusion wrapper) for autocast inference in ``dtype`` and return it: the
    ``generate_diffusion_*`` functions then run its backbone calls under :class:`AutocastBackbone`.

    Args:
        model (nn.Module): the model; the backbone's weights and state dict are not changed (a plain attribute is
            set, and the backbone's ``nn.Linear`` layers keep a ``dtype`` copy of their weights outside the state
            dict, :class:`CastWeightLinear`, so autocast does not cast them on every call).
        dtype (torch.dtype or None, default torch.bfloat16): the autocast dtype; ``None`` returns to exact mode
            (the float32 decoder included).
        decoder (bool, default True): with ``dtype=torch.bfloat16``, also run the pretransform's decoder in
            bfloat16 (:func:`enable_fast_decode`; costs a bf16 copy of the decoder's weights).
        compile (bool, default False): also compile the backbone's transformer with ``torch.compile``
            (:func:`compile_backbone`); ``dtype=None`` undoes it.
    """
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"enable_fast_mode: dtype must be torch.bfloat16, torch.float16 or None, got {dtype}")
    if dtype is not None and any(isinstance(m, DynamicQuantizedLinear) for m in model.modules()):
        raise ValueError("bf16 autocast and int8 quantisation do not combine (the int8 kernels take float32 "
                         "activations): use --dtype bf16 or --quantize int8, not both")
    if compile and dtype is None:
        raise ValueError("enable_fast_mode: compile=True needs a fast dtype (torch.bfloat16), not None")
    setattr(model, _ATTRIBUTE, dtype)
    _set_cast_weights(getattr(model, "model", model), dtype)
    compile_backbone(model, compile)
    enable_fast_decode(model, torch.bfloat16 if decoder and dtype == torch.bfloat16 else None)
    return model


def cpp_compiler() -> Optional[str]:
    """The C++ compiler TorchInductor would use on the CPU (``$CXX``, else ``c++`` / ``g++`` / ``clang++`` on the
    path), or ``None``."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((found for found in map(shutil.which, candidates) if found), None)


def check_cpp_compiler(device: Union[str, torch.device]) -> None:
    """Raise ValueError naming ``--compile`` when ``device`` is the CPU and :func:`cpp_compiler` finds none."""
    if torch.device(device).type == "cpu" and cpp_compiler() is None:
        raise ValueError("--compile needs a C++ compiler on the CPU (TorchInductor builds its kernels with it): "
                         "install g++ (or set CXX), or drop --compile")


def _compile_targets(backbone: nn.Module) -> List[nn.Module]:
    """The transformers of ``backbone`` (where nearly all of its work is, without the CFG and conditioning
    branches that would specialise the graph), else ``[backbone]``."""
    found = [m for m in backbone.modules() if isinstance(m, ContinuousTransformer)]
    return found if found else [backbone]


def compile_backbone(model: nn.Module, enable: bool = True) -> nn.Module:
    """Compile the transformer(s) of ``model``'s backbone in place with ``torch.compile`` (``nn.Module.compile``:
    parameters and state dict keys unchanged), or with ``enable=False`` run them eagerly again; returns ``model``.

    The first call of each new input shape compiles (tens of seconds on a CPU; TorchInductor caches its kernels on
    disk, so later processes start faster); a shape seen before runs the compiled graph. Worth it for a server or
    a batch of generations of one length, not for a single short one. Under fast mode the compiled graph fuses the
    element-wise work around the bf16 matrix multiplies (1.2-1.3x on the benchmark DiT); its numbers differ from
    eager fast mode by bf16 rounding.
    """
    for module in _compile_targets(getattr(model, "model", model)):
        if enable and getattr(module, "_compiled_call_impl", None) is None:
            module.compile()
        elif not enable:
            module._compiled_call_impl = None
    return model


def backbone_is_compiled(model: nn.Module) -> bool:
    """Whether :func:`compile_backbone` compiled ``model``'s backbone."""
    return any(getattr(m, "_compiled_call_impl", None) is not None
               for m in _compile_targets(getattr(model, "model", model)))


class CastWeightLinear(nn.Linear):
    """``nn.Linear`` holding a copy of its weight and bias in the autocast dtype (a non-persistent buffer): under
    autocast in that dtype it multiplies with the copy, which gives autocast's own result (the same rounding of the
    same float32 weight) without casting the weight on every call; otherwise it is a plain ``nn.Linear``. The class
    of a loaded ``nn.Linear`` is switched in place by :func:`enable_fast_mode` (state dict keys unchanged); changing
    the float32 weight afterwards needs ``enable_fast_mode`` again."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._cast_weight
        device_type = x.device.type
        if (torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == weight.dtype
                and weight.device == x.device):
            return nn.functional.linear(x.to(weight.dtype), weight, self._cast_bias)
        return super().forward(x)


def _set_cast_weights(backbone: nn.Module, dtype: Optional[torch.dtype]) -> None:
    """Give every plain ``nn.Linear`` of ``backbone`` a ``dtype`` copy of its weights (:class:`CastWeightLinear`),
    or with ``None`` turn them back into ``nn.Linear``."""
    for module in backbone.modules():
        if isinstance(module, CastWeightLinear):
            del module._cast_weight, module._cast_bias
            module.__class__ = nn.Linear
        if dtype is not None and type(module) is nn.Linear:
            with torch.no_grad():
                module.register_buffer("_cast_weight", module.weight.detach().to(dtype), persistent=False)
                bias = None if module.bias is None else module.bias.detach().to(dtype)
                module.register_buffer("_cast_bias", bias, persistent=False)
            module.__class__ = CastWeightLinear


def _autoencoder_of(model: nn.Module) -> Optional[nn.Module]:
    """The autoencoder of ``model``: ``model`` itself when it is one (has ``encoder`` and ``decoder``), else its
    autoencoder pretransform's (``model.pretransform.model``)."""
    if hasattr(model, "encoder") and hasattr(model, "decoder"):
        return model
    return getattr(getattr(model, "pretransform", None), "model", None)


def _part(model: nn.Module, part: str) -> Optional[nn.Module]:
    module = getattr(_autoencoder_of(model), part, None)
    return module if isinstance(module, nn.Module) else None


def _set_fast_part(model: nn.Module, part: str, dtype: Optional[torch.dtype], caller: str) -> nn.Module:
    """Swap ``model``'s autoencoder ``part`` ("encoder" / "decoder") for its bf16 fast copy, or back."""
    if dtype not in (torch.bfloat16, None):
        raise ValueError(f"{caller}: dtype must be torch.bfloat16 or None, got {dtype}")
    module = _part(model, part)
    if module is None or getattr(module, "fast_convnet_dtype", None) == dtype:
        return model
    autoencoder = _autoencoder_of(model)
    if dtype is None:
        setattr(autoencoder, part, autoencoder.__dict__.pop(f"_float32_{part}"))
        return model
    fast = build_fast_convnet(module, dtype)
    autoencoder.__dict__[f"_float32_{part}"] = module  # kept outside the module tree and the state dict
    setattr(autoencoder, part, fast)
    return model


def enable_fast_decode(model: nn.Module, dtype: Optional[torch.dtype] = torch.bfloat16) -> nn.Module:
    """Run the decoder of ``model``'s autoencoder with ``dtype`` weights and return ``model``.

    The decoder is replaced by :func:`~stable_audio_tools.inference.fast_convnet.build_fast_convnet`'s copy: weight
    norms folded in float32, weights cast to ``dtype``, channels-last convolutions, fused snakes, input cast to
    ``dtype`` and output returned in float32. The float32 decoder is kept aside (not in the state dict) and put
    back by ``dtype=None``. Models without an autoencoder are returned unchanged; enabling twice changes nothing
    more.

    Args:
        model (nn.Module): a diffusion wrapper with an autoencoder pretransform
            (``model.pretransform.model.decoder``), or an autoencoder (``model.decoder``).
        dtype (torch.dtype or None, default torch.bfloat16): ``torch.bfloat16`` (float16 can overflow in the
            decoder's activations), or ``None`` to restore the float32 decoder.
    """
    return _set_fast_part(model, "decoder", dtype, "enable_fast_decode")


def enable_fast_encode(model: nn.Module, dtype: Optional[torch.dtype] = torch.bfloat16) -> nn.Module:
    """Run the encoder of ``model``'s autoencoder with ``dtype`` weights (as :func:`enable_fast_decode` does for
    the decoder; ``pre_encode.py --dtype bf16``) and return ``model``. The bottleneck stays float32.

    Args:
        model (nn.Module): an autoencoder (``model.encoder``) or a model with an autoencoder pretransform.
        dtype (torch.dtype or None, default torch.bfloat16): ``torch.bfloat16``, or ``None`` to restore the float32
            encoder.
    """
    return _set_fast_part(model, "encoder", dtype, "enable_fast_encode")


def fast_decode_dtype_of(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype :func:`enable_fast_decode` gave ``model``'s decoder, or ``None`` (float32)."""
    return getattr(_part(model, "decoder"), "fast_convnet_dtype", None)


def fast_encode_dtype_of(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype :func:`enable_fast_encode` gave ``model``'s encoder, or ``None`` (float32)."""
    return getattr(_part(model, "encoder"), "fast_convnet_dtype", None)


def autocast_dtype_of(model: nn.Module) -> Optional[torch.dtype]:
    """The autocast dtype :func:`enable_fast_mode` set on ``model``, or ``None`` (exact mode)."""
    return getattr(model, _ATTRIBUTE, None)


@contextlib.contextmanager
def maybe_autocast(device: Union[str, torch.device], dtype: Optional[torch.dtype]) -> Iterator[None]:
    """``torch.autocast(device.type, dtype)`` when ``dtype`` is given, else nothing (exact mode)."""
    if dtype is None:
        yield
        return
    device_type = torch.device(device).type
    _check_autocast(device_type, dtype)
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


class AutocastBackbone:
    """``model_fn`` run under autocast; tensor outputs are cast back to the dtype of the input latent ``x``.

    Args:
        model_fn (callable): the backbone, ``model_fn(x, t, **kwargs)`` -> tensor or ``(tensor, info dict)``.
        dtype (torch.dtype): autocast dtype (torch.bfloat16 or torch.float16).
    """

    def __init__(self, model_fn: Callable[..., Any], dtype: torch.dtype) -> None:
        self.model_fn = model_fn
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any:
        with maybe_autocast(x.device, self.dtype):
            out = self.model_fn(x, t, **kwargs)
        if isinstance(out, tuple):
            out, info = out
            info = {k: v.to(x.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                    for k, v in info.items()}
            return out.to(x.dtype), info
        return out.to(x.dtype)


def autocast_backbone(model: nn.Module, model_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``model_fn`` wrapped in :class:`AutocastBackbone` when ``model`` is in fast mode, else ``model_fn``."""
    dtype = autocast_dtype_of(model)
    return model_fn if dtype is None else AutocastBackbone(model_fn, dtype)


def quantize_int8(model: nn.Module, module: Optional[nn.Module] = None) -> nn.Module:
    """Replace the ``nn.Linear`` layers of ``module`` (default: the diffusion backbone ``model.model``, else
    ``model``) by dynamically quantised int8 layers, in place, and return ``model``.

    Only the layers inside transformer blocks (the items of ``layers`` ModuleLists) are quantised when there are
    any: they hold nearly all of the compute, while the timestep / conditioning embeddings and the input and output
    projections stay in float32. Without such layers every ``nn.Linear`` is quantised.

    CPU only (``torch.ao.quantization.quantize_dynamic``; the quantised kernels have no GPU version). The state
    dict of a quantised model holds packed int8 weights: quantise after loading, do not save it as a checkpoint.
    """
    target = module if module is not None else getattr(model, "model", model)
    devices = {p.device.type for p in target.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"--quantize int8 runs on the CPU only; the model is on {', '.join(sorted(devices))}")
    if autocast_dtype_of(model) is not None:
        raise ValueError("bf16 autocast and int8 quantisation do not combine (the int8 kernels take float32 "
                         "activations): use --dtype bf16 or --quantize int8, not both")
    if any(p.dtype != torch.float32 for p in target.parameters()):
        raise ValueError("--quantize int8 needs float32 weights (do not combine it with --dtype float16/bfloat16)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        for part in _int8_targets(target):
            quantize_dynamic(part, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def _int8_targets(module: nn.Module) -> List[nn.Module]:
    """The transformer blocks of ``module`` (the items of its ``layers`` ModuleLists), else ``[module]``."""
    blocks = [block for name, child in module.named_modules()
              if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers" for block in child]
    return blocks if blocks else [module]


def check_fast_mode(model_type: Optional[str], dtype: str = "float32", quantize: str = "none",
                    device: Union[str, torch.device] = "cpu", compile: bool = False) -> None:
    """Check the command-line fast-mode choices before any model is loaded; ValueError names the flag.

    Args:
        model_type (str or None): the config's ``model_type``; fast mode needs a diffusion model.
        dtype (str, default "float32"): ``"float32"`` (exact mode) or a :data:`FAST_DTYPES` name.
        quantize (str, default "none"): ``"none"`` or ``"int8"`` (CPU only, with ``dtype="float32"``).
        device (str or torch.device, default "cpu"): where the model will run.
        compile (bool, default False): ``--compile``: compile the backbone's transformer (needs a fast ``dtype``
            and, on the CPU, a C++ compiler).
    """
    if compile:
        if dtype not in FAST_DTYPES or quantize != "none":
            raise ValueError(f"--compile compiles the bf16 fast mode; use it with --dtype bf16 (and --quantize "
                             f"none), not --dtype {dtype} --quantize {quantize}")
        check_cpp_compiler(device)
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if dtype != "float32" and dtype not in FAST_DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected float32 or one of {', '.join(FAST_DTYPES)}")
    if dtype == "float32" and quantize == "none":
        return
    if not str(model_type or "").startswith("diffusion"):
        raise ValueError(f"--dtype {dtype} / --quantize {quantize}: fast mode applies to diffusion models, not "
                         f"model_type {model_type!r}; use --dtype float32 --quantize none")
    device_type = torch.device(device).type
    if quantize == "int8":
        if dtype != "float32":
            raise ValueError(f"--quantize int8 runs with float32 weights and activations; use --dtype float32 "
                             f"(the default), not --dtype {dtype}")
        if device_type != "cpu":
            raise ValueError(f"--quantize int8 runs on the CPU only (got device {device_type}); drop --quantize "
                             f"or use the CPU")
    else:
        _check_autocast(device_type, fast_dtype(dtype))
        if device_type == "cpu" and cpu_bf16_problem() is not None:
            raise ValueError(f"bf16 fast mode cannot run on this CPU with this torch build ({cpu_bf16_problem()}); use "
                             f"--dtype float32")


def apply_fast_mode(model: nn.Module, model_type: Optional[str], dtype: str = "float32", quantize: str = "none",
                    device: Optional[Union[str, torch.device]] = None, compile: bool = False) -> nn.Module:
    """Apply the command-line fast-mode choices (``--dtype bf16`` / ``--quantize int8`` / ``--compile``, checked by
    :func:`check_fast_mode` with the same arguments) to a loaded float32 model and return it; ``device``
    defaults to the model's parameters' device."""
    if device is None:
        device = next(model.parameters()).device
    check_fast_mode(model_type, dtype, quantize, device, compile)
    if quantize == "int8":
        return quantize_int8(model)
    if dtype == "float32":
        return model
    return enable_fast_mode(model, fast_dtype(dtype), compile=compile)
