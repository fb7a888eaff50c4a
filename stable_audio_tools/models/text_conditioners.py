"""Conditioners built on external pretrained models or tokenizers: T5, CLAP, g2p phonemes, tokenizer LUT (see
docs/diffusion.md#conditioners-modelconditioning).

Optional dependencies, imported only when needed, each failing with an install hint:

* ``t5`` / ``lut``: ``pip install transformers sentencepiece``;
* ``clap_text`` / ``clap_audio``: ``pip install laion-clap``;
* ``phoneme``: ``pip install g2p_en``.

The frozen encoders (T5, CLAP) are loaded **lazily**, on the first ``forward``: building a model (e.g.
from the stable-audio-open-1.0 config) neither downloads nor reads any file, so a model can be built
and its checkpoint loaded offline; only encoding text needs the encoder weights. Frozen encoders are
kept out of the module tree (they are not in ``state_dict`` and ``.to()`` / ``.half()`` on the model do
not touch them; each call moves them to the requested device). With ``enable_grad`` (T5) / ``finetune``
(CLAP) the encoder is trainable, so it is loaded when the conditioner is built and registered as
child ``model`` (its weights are then part of the checkpoint), like upstream.

T5 runs in float16 on CUDA (as upstream) and in float32 elsewhere (upstream used float16 everywhere,
which is slow or unsupported on CPUs).
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import os
import string
import warnings
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .conditioners import Conditioner, Device
from .safe_load import torch_load
from .transformer import AbsolutePositionalEmbedding

__all__ = [
    "ExternalModelUnavailableError",
    "T5Conditioner",
    "CLAPTextConditioner",
    "CLAPAudioConditioner",
    "PhonemeConditioner",
    "TokenizerLUTConditioner",
    "clap_load_state_dict",
]

TRANSFORMERS_HINT = "pip install transformers sentencepiece"
CLAP_HINT = "pip install laion-clap"
G2P_HINT = "pip install g2p_en"


class ExternalModelUnavailableError(OSError):
    """The weights or tokenizer files of an external model could not be found or downloaded."""


def _require_module(module: str, what: str, hint: str) -> None:
    """Raise an ImportError with ``hint`` if ``module`` is not installed (without importing it)."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs the optional package '{module}', which is not installed: {hint}")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"the t5 and lut conditioners need Hugging Face transformers: {TRANSFORMERS_HINT}") from err
    return transformers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence logging, warnings and transformers' progress bars while loading an external model."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    progress = None
    with contextlib.suppress(ImportError, AttributeError):
        from transformers.utils import logging as hf_logging

        progress = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        if progress:
            hf_logging.enable_progress_bar()


def _unavailable(what: str, name: str, err: Exception, local_dir_hint: str) -> ExternalModelUnavailableError:
    reason = str(err).strip().rstrip(".")
    if os.path.isdir(name):
        return ExternalModelUnavailableError(
            f"could not load {what} from the local directory '{name}': {reason}. The directory must hold "
            f"save_pretrained() output: {local_dir_hint}")
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    note = " (HF_HUB_OFFLINE is set, so nothing is downloaded)" if offline else ""
    return ExternalModelUnavailableError(
        f"could not load {what} '{name}' from the Hugging Face Hub or its cache{note}: {reason}. To supply it, either "
        f"run once with network access (e.g. `hf download {name}`) so that it is cached, or point the config at a "
        f"local directory holding save_pretrained() output: {local_dir_hint}")


def _device(device: Device, fallback: nn.Module) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(fallback.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# T5


def _local_t5_dim(path: str) -> int:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            return int(json.load(f)["d_model"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"T5Conditioner: '{path}' is a directory but has no readable T5 config.json with d_model "
                         f"({err}); save a T5 encoder into it with T5EncoderModel.save_pretrained(DIR) and its "
                         f"tokenizer with AutoTokenizer.save_pretrained(DIR)") from err


class _ExternalModelConditioner(Conditioner):
    """A conditioner around a pretrained external encoder (T5, CLAP) that is loaded on first use.

    A frozen encoder is kept outside the module tree, so it is not in the state dict (as upstream); a trainable
    one is registered as the child ``model`` and loaded at construction (its keys must exist from the start).
    """

    def _init_external(self, trainable: bool) -> None:
        self.__dict__["model"] = None
        if trainable:
            self.load()

    @property
    def loaded(self) -> bool:
        """Whether the external model has been loaded."""
        return self.model is not None

    def load(self) -> None:
        raise NotImplementedError

    def _store_model(self, model: nn.Module, trainable: bool) -> None:
        if trainable:
            self.model = model
        else:
            self.__dict__["model"] = model


class T5Conditioner(_ExternalModelConditioner):
    """Text -> frozen (or trainable) T5 encoder ``last_hidden_state`` ``[B, max_length, output_dim]``.

    ``t5_model_name`` is one of :attr:`T5_MODELS` (a Hugging Face Hub name) or a local directory with
    ``save_pretrained`` output of a T5 encoder and its tokenizer (its width is read from its
    ``config.json``). Texts are tokenised with truncation and padding to ``max_length``; padded positions
    are zeroed and the returned mask is bool ``[B, max_length]``. The model and tokenizer are loaded on the
    first call (at construction when ``enable_grad``, which registers the encoder as trainable child
    ``model``). Float16 on CUDA, float32 elsewhere.
    """

    T5_MODELS = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b",
                 "google/flan-t5-small", "google/flan-t5-base", "google/flan-t5-large",
                 "google/flan-t5-xl", "google/flan-t5-xxl", "google/t5-v1_1-xl", "google/t5-v1_1-xxl")

    T5_MODEL_DIMS = {
        "t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
        "google/t5-v1_1-xl": 2048, "google/t5-v1_1-xxl": 4096,
        "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
        "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096,
    }

    def __init__(self, output_dim: int, t5_model_name: str = "t5-base", max_length: int = 128,
                 enable_grad: bool = False, project_out: bool = False) -> None:
        if t5_model_name in self.T5_MODEL_DIMS:
            dim = self.T5_MODEL_DIMS[t5_model_name]
        elif os.path.isdir(t5_model_name):
            dim = _local_t5_dim(t5_model_name)
        else:
            raise ValueError(f"T5Conditioner: unknown t5_model_name {t5_model_name!r}; accepted: "
                             f"{', '.join(self.T5_MODELS)}, or a local directory holding a T5 encoder and tokenizer "
                             f"saved with save_pretrained()")
        super().__init__(dim, output_dim, project_out=project_out)
        self.t5_model_name = t5_model_name
        self.max_length = max_length
        self.enable_grad = enable_grad
        self.tokenizer: Any = None
        self._init_external(enable_grad)

    def load(self) -> None:
        """Load the tokenizer and encoder now (otherwise done by the first forward)."""
        if self.loaded:
            return
        transformers = _import_transformers()
        name = self.t5_model_name
        try:
            with _quiet():
                tokenizer = transformers.AutoTokenizer.from_pretrained(name)
                model = transformers.T5EncoderModel.from_pretrained(name)
        except OSError as err:
            raise _unavailable("the T5 encoder and tokenizer", name, err,
                               f"T5EncoderModel.from_pretrained('{name}').save_pretrained(DIR) and "
                               f"AutoTokenizer.from_pretrained('{name}').save_pretrained(DIR), then set "
                               f"t5_model_name to DIR") from err
        model.train(self.enable_grad).requires_grad_(self.enable_grad)
        self.tokenizer = tokenizer
        self._store_model(model, self.enable_grad)

    def forward(self, texts: Sequence[str], device: Device = None) -> List[torch.Tensor]:
        self.load()
        device = _device(device, self)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.model.to(device=device, dtype=dtype)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="max_length",
                                 return_tensors="pt")
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device)
        self.model.eval()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.enable_grad):
            embeddings = self.model(input_ids=input_ids, attention_mask=attention_mask)["last_hidden_state"]
        embeddings = self.proj_out(self._cast_to_proj_dtype(embeddings))
        mask = attention_mask.to(torch.bool)
        embeddings = embeddings * mask.unsqueeze(-1).float()
        return [embeddings, mask]


# --------------------------------------------------------------------------------------------
# CLAP (laion_clap)


def clap_load_state_dict(clap_ckpt_path: str, clap_model: nn.Module) -> None:
    """Load a LAION-CLAP training checkpoint (``{"state_dict": {"module.*": ...}}``) into ``clap_model`` (non-strict).

    The file is read safely (see :mod:`stable_audio_tools.models.safe_load`): one that needs arbitrary
    unpickling is refused unless ``STABLE_AUDIO_TOOLS_TRUST_PICKLE`` is set."""
    if not os.path.isfile(clap_ckpt_path):
        raise ExternalModelUnavailableError(
            f"CLAP checkpoint not found: {clap_ckpt_path!r}; set clap_ckpt_path to a LAION-CLAP checkpoint file "
            f"(e.g. 630k-audioset-fusion-best.pt from https://huggingface.co/lukewys/laion_clap)")
    checkpoint = torch_load(clap_ckpt_path)
    state_dict = checkpoint["state_dict"] if isinstance(checkpoint, dict) and "state_dict" in checkpoint else checkpoint
    state_dict = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    state_dict.pop("text_branch.embeddings.position_ids", None)
    clap_model.load_state_dict(state_dict, strict=False)


class _CLAPConditioner(_ExternalModelConditioner):
    """Shared loading logic: ``laion_clap.CLAP_Module`` with one branch kept (``keep``) and the other deleted."""

    _keep = ""
    _drop = ""

    def __init__(self, dim: int, output_dim: int, clap_ckpt_path: str, audio_model_type: str, enable_fusion: bool,
                 project_out: bool, finetune: bool) -> None:
        super().__init__(dim, output_dim, project_out=project_out)
        if finetune:  # a frozen CLAP is loaded (and laion_clap imported) on the first forward only
            _require_module("laion_clap", f"the {type(self).__name__}", CLAP_HINT)
        self.clap_ckpt_path = clap_ckpt_path
        self.audio_model_type = audio_model_type
        self.enable_fusion = enable_fusion
        self.finetune = finetune
        self._init_external(finetune)

    def load(self) -> None:
        """Load the CLAP model now (otherwise done by the first forward)."""
        if self.loaded:
            return
        with _quiet():
            try:
                import laion_clap
            except ImportError as err:
                raise ImportError(f"the {type(self).__name__} could not import laion_clap ({err}): {CLAP_HINT}") from err
            model = laion_clap.CLAP_Module(enable_fusion=self.enable_fusion, amodel=self.audio_model_type,
                                           device="cpu")
            clap_load_state_dict(self.clap_ckpt_path, model.model)
        branch = getattr(model.model, self._keep)
        branch.requires_grad_(self.finetune).train(self.finetune)
        delattr(model.model, self._drop)
        self._store_model(model, self.finetune)
        gc.collect()

    def _finish(self, embedding: torch.Tensor, device: torch.device) -> List[torch.Tensor]:
        embedding = embedding.unsqueeze(1).to(device)
        embedding = self.proj_out(self._cast_to_proj_dtype(embedding))
        return [embedding, torch.ones(embedding.shape[0], 1, device=device)]


class CLAPTextConditioner(_CLAPConditioner):
    """Text -> LAION-CLAP text branch (needs ``laion_clap`` and a checkpoint file).

    ``use_text_features``: RoBERTa hidden states of layer ``feature_layer_ix`` ``[B, L, 768]`` with the
    tokenizer's attention mask; otherwise the 512-d joint text embedding as ``[B, 1, 512]`` with a ones
    mask. Then ``proj_out``. The model is loaded on the first call (at construction if ``finetune``, which
    registers it as trainable child ``model``).
    """

    _keep = "text_branch"
    _drop = "audio_branch"

    def __init__(self, output_dim: int, clap_ckpt_path: str, use_text_features: bool = False,
                 feature_layer_ix: int = -1, audio_model_type: str = "HTSAT-base", enable_fusion: bool = True,
                 project_out: bool = False, finetune: bool = False) -> None:
        super().__init__(768 if use_text_features else 512, output_dim, clap_ckpt_path, audio_model_type,
                         enable_fusion, project_out, finetune)
        self.use_text_features = use_text_features
        self.feature_layer_ix = feature_layer_ix

    def get_clap_features(self, prompts: Sequence[str], layer_ix: int = -2,
                          device: Device = "cuda") -> Tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of text-branch layer ``layer_ix`` and the attention mask for ``prompts``."""
        tokens = self.model.tokenizer(list(prompts))
        attention_mask = tokens["attention_mask"].to(device=device)
        features = self.model.model.text_branch(input_ids=tokens["input_ids"].to(device=device),
                                                attention_mask=attention_mask,
                                                output_hidden_states=True)["hidden_states"][layer_ix]
        return features, attention_mask

    def forward(self, texts: Sequence[str], device: Device = None) -> List[torch.Tensor]:
        self.load()
        device = _device(device, self)
        self.model.to(device)
        texts = list(texts)
        # laion_clap fails on a batch of one text: pad with an empty prompt and drop it again
        padded = texts + [""] if len(texts) == 1 else texts
        if self.use_text_features:
            features, mask = self.get_clap_features(padded, layer_ix=self.feature_layer_ix, device=device)
            features, mask = features[:len(texts)], mask[:len(texts)]
            return [self.proj_out(self._cast_to_proj_dtype(features)), mask]
        embedding = self.model.get_text_embedding(padded, use_tensor=True)[:len(texts)]
        return self._finish(embedding, device)


class CLAPAudioConditioner(_CLAPConditioner):
    """Audio -> LAION-CLAP 512-d audio embedding of the mono mix ``[B, 1, output_dim]`` (mask ones ``[B, 1]``).

    Input: a ``[B, C, T]`` tensor or a list of ``[C, T]`` / ``[1, C, T]`` tensors. ``finetune`` (missing
    upstream, where this conditioner crashed on an undefined attribute) makes the audio branch trainable.
    """

    _keep = "audio_branch"
    _drop = "text_branch"

    def __init__(self, output_dim: int, clap_ckpt_path: str, audio_model_type: str = "HTSAT-base",
                 enable_fusion: bool = True, project_out: bool = False, finetune: bool = False) -> None:
        super().__init__(512, output_dim, clap_ckpt_path, audio_model_type, enable_fusion, project_out, finetune)

    def forward(self, audios: Union[torch.Tensor, Sequence[torch.Tensor]], device: Device = None) -> List[torch.Tensor]:
        self.load()
        device = _device(device, self)
        self.model.to(device)
        if isinstance(audios, (list, tuple)):
            audios = torch.cat([a.unsqueeze(0) if a.dim() == 2 else a for a in audios], dim=0)
        mono = audios.to(device).mean(dim=1)
        with torch.autocast(device_type=device.type, enabled=False):
            embedding = self.model.get_audio_embedding_from_data(mono.float(), use_tensor=True)
        return self._finish(embedding, device)


# --------------------------------------------------------------------------------------------
# phonemes (g2p_en) and tokenizer lookup table


class PhonemeConditioner(Conditioner):
    """English text -> g2p_en phonemes -> ``phoneme_embedder`` ``[B, L, output_dim]`` (``L`` = longest item).

    Spaces and punctuation become ``"_"``; ids are ``p2idx + 2`` (1 = unknown phoneme, 0 = padding).
    Fixes over upstream (which ignored ``max_length`` and returned an all-ones mask): sequences are cut to
    ``max_length`` phonemes and the float mask ``[B, L]`` is 0 at padding.
    """

    def __init__(self, output_dim: int, max_length: int = 1024, project_out: bool = False) -> None:
        super().__init__(output_dim, output_dim, project_out=project_out)
        try:
            from g2p_en import G2p
        except ImportError as err:
            raise ImportError(f"the phoneme conditioner needs g2p_en: {G2P_HINT}") from err
        self.max_length = max_length
        self.g2p = G2p()
        self.phoneme_embedder = nn.Embedding(len(self.g2p.phonemes) + 2, output_dim)

    def forward(self, texts: Sequence[str], device: Device = None) -> List[torch.Tensor]:
        ignore = {" ", *string.punctuation}
        batch = [["_" if p in ignore else p for p in self.g2p(text)][:self.max_length] for text in texts]
        ids = [[self.g2p.p2idx[p] + 2 if p in self.g2p.p2idx else 1 for p in phonemes] for phonemes in batch]
        longest = max(len(x) for x in ids)
        mask = torch.tensor([[1.0] * len(x) + [0.0] * (longest - len(x)) for x in ids], device=device)
        ids = torch.tensor([x + [0] * (longest - len(x)) for x in ids], dtype=torch.long, device=device)
        return [self.proj_out(self.phoneme_embedder(ids)), mask]


class TokenizerLUTConditioner(Conditioner):
    """Text -> a Hugging Face tokenizer's ids -> learned ``token_embedder`` ``[B, max_length, output_dim]``.

    ``tokenizer_name``: a Hub name or local directory (loaded when the conditioner is built, since the
    table size depends on it); ``special_tokens`` are added to the tokenizer. Padding positions are zeroed
    (before ``abs_pos_emb``, added when ``use_abs_pos_emb``); the mask is bool ``[B, max_length]``.
    """

    def __init__(self, tokenizer_name: str, output_dim: int, max_length: int = 1024, use_abs_pos_emb: bool = False,
                 project_out: bool = False, special_tokens: Optional[Sequence[str]] = None) -> None:
        super().__init__(output_dim, output_dim, project_out=project_out)
        transformers = _import_transformers()
        try:
            with _quiet():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_name)
        except OSError as err:
            raise _unavailable("the lut conditioner's tokenizer", tokenizer_name, err,
                               f"AutoTokenizer.from_pretrained('{tokenizer_name}').save_pretrained(DIR), then set "
                               f"tokenizer_name to DIR") from err
        if special_tokens:
            self.tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
        self.max_length = max_length
        self.token_embedder = nn.Embedding(len(self.tokenizer), output_dim)
        self.abs_pos_emb = AbsolutePositionalEmbedding(output_dim, max_length) if use_abs_pos_emb else None

    def forward(self, texts: Sequence[str], device: Device = None) -> List[torch.Tensor]:
        device = _device(device, self.token_embedder)
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="max_length",
                                 return_tensors="pt")
        input_ids = encoded["input_ids"].to(device)
        mask = encoded["attention_mask"].to(device).to(torch.bool)
        embeddings = self.proj_out(self.token_embedder(input_ids))
        embeddings = embeddings * mask.unsqueeze(-1).float()
        if self.abs_pos_emb is not None:
            embeddings = embeddings + self.abs_pos_emb(embeddings)
        return [embeddings, mask]
