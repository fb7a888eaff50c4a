"""The model-family registry: one entry per ``model_type`` naming everything the package builds for it.

An entry (:class:`ModelFamily`) names, by import path (``"package.module:function"``):

* ``model``: the model builder ``fn(model_config) -> nn.Module`` (used by ``create_model_from_config``);
* ``training_wrapper``: ``fn(model_config, model, training_config, **overrides) -> LightningModule`` (used by
  ``create_training_wrapper_from_config``);
* ``demo``: ``fn(model_config, **kwargs) -> Callback`` (used by ``create_demo_callback_from_config``);
* ``unwrapper``: ``fn(model_config, state_dict) -> nn.Module`` (used by ``unwrap_model.py``);
* ``ui``: ``fn(model, model_config, gradio_title=..., limits=...) -> gr.Blocks`` (used by ``run_gradio.py``);

plus whether its wrapper uses Lightning's automatic optimization (``automatic_optimization``, and the training
keys that switch it to manual optimization) and whether its Gradio UI has a length control.

The builders are named by path and imported on first use, so this module sits in the foundation layer while the
builders live in the layers they belong to (models, training, interface); ``tests/test_architecture.py`` resolves
every path and checks it against the layer of the module that calls it. Adding a model type is its own files plus
one :func:`register_model_family` call (``docs/architecture.md``).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from .config import ConfigError, check_choice

__all__ = ["ModelFamily", "MODEL_FAMILIES", "BUILDER_FIELDS", "register_model_family", "get_model_family",
           "resolve_builder", "uses_automatic_optimization", "BuilderTable"]

# builder field -> the module that calls it (its layer bounds the builder's layer; see tests/test_architecture.py)
BUILDER_FIELDS: Dict[str, str] = {
    "model": "stable_audio_tools.models.factory",
    "training_wrapper": "stable_audio_tools.training.factory",
    "demo": "stable_audio_tools.training.demo_callbacks",
    "unwrapper": "stable_audio_tools.training.unwrap",
    "ui": "stable_audio_tools.interface.gradio",
}


@dataclass(frozen=True)
class ModelFamily:
    """One model type.

    Args:
        model_type (str): the config's ``model_type``.
        model (str): import path of the model builder.
        training_wrapper (Optional[str]): import path of the training-wrapper builder; default None (not trainable).
        demo (Optional[str]): import path of the demo-callback builder; default None (no demos).
        unwrapper (Optional[str]): import path of the checkpoint unwrapper; default None.
        ui (Optional[str]): import path of the Gradio UI builder; default None (no UI).
        automatic_optimization (bool): whether the training wrapper uses Lightning's automatic optimization (so
            the Trainer can clip gradients); default True.
        manual_optimization_keys (Tuple[str, ...]): ``training`` keys whose presence selects a manual-optimization
            wrapper (e.g. ``arc`` for ``diffusion_cond``); default none.
        ui_length_control (bool): whether the UI lets users choose the output length (``--max-seconds`` applies);
            default False.
    """

    model_type: str
    model: str
    training_wrapper: Optional[str] = None
    demo: Optional[str] = None
    unwrapper: Optional[str] = None
    ui: Optional[str] = None
    automatic_optimization: bool = True
    manual_optimization_keys: Tuple[str, ...] = ()
    ui_length_control: bool = False


MODEL_FAMILIES: Dict[str, ModelFamily] = {}


def _check_path(value: Optional[str], field: str, model_type: str) -> None:
    if value is None:
        return
    module, _, name = value.partition(":")
    if not module or not name:
        raise ValueError(f"model family {model_type!r}: {field} must be 'package.module:function', got {value!r}")


def register_model_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry; raises ValueError for a ``model_type`` already registered or a malformed
    import path."""
    if family.model_type in MODEL_FAMILIES:
        raise ValueError(f"model type {family.model_type!r} is already registered; pick another name")
    for field in BUILDER_FIELDS:
        _check_path(getattr(family, field), field, family.model_type)
    MODEL_FAMILIES[family.model_type] = family
    return family


def get_model_family(model_type: Any, field: Optional[str] = None, path: str = "model_type") -> ModelFamily:
    """The entry of ``model_type`` (a ConfigError at ``path`` naming the registered types when unknown); with
    ``field``, only types that define that builder are accepted."""
    choices = [t for t, f in MODEL_FAMILIES.items() if field is None or getattr(f, field) is not None]
    check_choice(model_type, choices, path)
    return MODEL_FAMILIES[model_type]


def resolve_builder(import_path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function."""
    module, _, name = import_path.partition(":")
    return getattr(importlib.import_module(module), name)


def uses_automatic_optimization(model_config: Mapping[str, Any]) -> bool:
    """Whether the training wrapper built for ``model_config`` uses Lightning's automatic optimization."""
    family = MODEL_FAMILIES.get(model_config.get("model_type"))
    if family is None or not family.automatic_optimization:
        return False
    training = model_config.get("training") or {}
    return not any(key in training for key in family.manual_optimization_keys)


class BuilderTable(MappingABC):
    """A read-only ``{model_type: builder}`` view of one builder field of the registry (the tables upstream and
    older code index, e.g. ``MODEL_TYPES``); builders are imported on access."""

    def __init__(self, field: str) -> None:
        if field not in BUILDER_FIELDS:
            raise ValueError(f"unknown builder field {field!r}; one of {', '.join(BUILDER_FIELDS)}")
        self.field = field

    def __getitem__(self, model_type: str) -> Callable[..., Any]:
        family = MODEL_FAMILIES.get(model_type)
        if family is None or getattr(family, self.field) is None:
            raise KeyError(model_type)
        return resolve_builder(getattr(family, self.field))

    def __iter__(self) -> Iterator[str]:
        return iter([t for t, f in MODEL_FAMILIES.items() if getattr(f, self.field) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, model_type: object) -> bool:
        family = MODEL_FAMILIES.get(model_type)  # type: ignore[arg-type]
        return family is not None and getattr(family, self.field) is not None


_M = "stable_audio_tools.models."
_T = "stable_audio_tools.training."
_I = "stable_audio_tools.interface.interfaces."

register_model_family(ModelFamily(
    "autoencoder", model=_M + "factory:create_autoencoder_model",
    training_wrapper=_T + "factory:create_autoencoder_training_wrapper",
    demo=_T + "autoencoder_demos:create_autoencoder_demo_callback", unwrapper=_T + "unwrap:unwrap_autoencoder",
    ui=_I + "autoencoder:create_autoencoder_ui", automatic_optimization=False))
register_model_family(ModelFamily(
    "diffusion_uncond", model=_M + "diffusion:create_diffusion_uncond_from_config",
    training_wrapper=_T + "diffusion_factory:create_diffusion_uncond_wrapper",
    demo=_T + "diffusion_demos:create_diffusion_demo_callback", unwrapper=_T + "unwrap:unwrap_diffusion",
    ui=_I + "diffusion_uncond:create_diffusion_uncond_ui"))
for _cond_type in ("diffusion_cond", "diffusion_cond_inpaint"):
    register_model_family(ModelFamily(
        _cond_type, model=_M + "diffusion:create_diffusion_cond_from_config",
        training_wrapper=_T + "diffusion_factory:create_diffusion_cond_wrapper",
        demo=_T + "diffusion_demos:create_diffusion_demo_callback", unwrapper=_T + "unwrap:unwrap_diffusion",
        ui=_I + "diffusion_cond:create_diffusion_cond_ui", manual_optimization_keys=("arc",),
        ui_length_control=True))
register_model_family(ModelFamily(
    "diffusion_autoencoder", model=_M + "autoencoders:create_diffAE_from_config",
    training_wrapper=_T + "diffusion_factory:create_diffusion_autoencoder_wrapper",
    demo=_T + "diffusion_demos:create_diffusion_demo_callback",
    unwrapper=_T + "unwrap:unwrap_diffusion_autoencoder", ui=_I + "autoencoder:create_autoencoder_ui"))
register_model_family(ModelFamily(
    "lm", model=_M + "lm:create_audio_lm_from_config", training_wrapper=_T + "lm:create_lm_training_wrapper",
    demo=_T + "lm_demos:create_lm_demo_callback", unwrapper=_T + "unwrap:unwrap_lm", ui=_I + "lm:create_lm_ui",
    ui_length_control=True))
