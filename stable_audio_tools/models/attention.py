"""Multi-head attention used by :mod:`stable_audio_tools.models.transformer` (see
docs/diffusion.md#dit-the-diffusiontransformer).

Contents:

* :class:`RotaryEmbedding` / :func:`apply_rotary_pos_emb` — rotary position embeddings with a
  persistent ``inv_freq`` buffer (partial rotation of the first ``rot_dim`` features of each head).
* :class:`DynamicTanh` — the "DyT" normalisation replacement (``alpha``, ``gamma``, ``beta``).
* :func:`attend` — the attention kernel dispatch: FlexAttention when a block mask / score mod is
  given, flash-attn when it is importable and the tensors live on CUDA, otherwise
  ``F.scaled_dot_product_attention`` (or, in compiled bf16 CPU training of short sequences,
  :func:`composed_attention`: two matrix multiplies around a float32 softmax, faster there).
* :class:`Attention` — self / cross attention with grouped-query K/V (``repeat_interleave``; with
  more K/V heads than query heads none is shared and the output is zeros, as upstream),
  ``qk_norm`` (``none``/``l2``/``ln``/``dyt``), differential attention and feature scaling.

Sliding-window attention (improvement over upstream): upstream honours a sliding window only
through flash-attn's ``window_size=(left, right)`` and silently falls back to *full* attention
otherwise, so TAAE models behave differently on CPU. Here the SDPA fallback implements the same
band exactly: query ``i`` attends key ``j`` iff ``-left <= j - i <= right`` (``-1`` = unbounded,
keys aligned to the bottom-right like flash-attn when the lengths differ). Long self-attention
sequences are processed in query blocks that only see their band of keys
(memory ``O(n * (block + left + right))``), short ones with a dense boolean mask; both give the
same result as full attention with an explicit band mask.

Other choices:

* flash-attn is used only for CUDA tensors (upstream calls it whenever it is importable, which
  fails for CPU tensors). Its absence is logged once with ``logging.info``.
* FlexAttention is ``torch.compile``-d (``mode="max-autotune-no-cudagraphs"``) lazily, for CUDA
  tensors only; on CPU (or if compilation fails) the eager implementation is used.
* xPos (``use_xpos=True``) crashes upstream; here its scale is computed for the actual sequence
  length and applied as ``q * scale``, ``k / scale`` (the x-transformers convention).
* ``ENABLE_TORCH_COMPILE=1`` wraps the qk-norm kernel and ``TransformerBlock.forward`` in
  ``torch.compile`` (falling back to eager on errors), as upstream's ``utils.compile`` does.
* Incremental decoding (extension, used by the audio LM): self-attention accepts an optional
  ``kv_cache`` dict. The keys/values of the new tokens (after qk-norm and rotary, which then need
  frequencies for the absolute positions, i.e. for ``cached + new`` positions) are written after
  the cached ones (``kv_cache["k"]`` / ``["v"]`` are buffers that grow by doubling, ``["length"]``
  counts the valid positions) and the queries attend over all of them; causal masking is aligned
  to the last key. Inference only (the buffers are written in place). Without a cache nothing changes.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .common import compile as maybe_compile

try:
    from flash_attn import flash_attn_func
except ImportError:
    flash_attn_func = None
    logging.getLogger(__name__).info(
        "flash_attn is not installed; attention uses torch's scaled_dot_product_attention")

__all__ = [
    "RotaryEmbedding",
    "rotate_half",
    "apply_rotary_pos_emb",
    "DynamicTanh",
    "sliding_window_mask",
    "sliding_window_attention",
    "composed_attention",
    "COMPOSED_ATTENTION_MAX_SCORES",
    "attend",
    "Attention",
    "maybe_compile",
    "QK_NORMS",
]

log = logging.getLogger(__name__)

QK_NORMS = ("none", "l2", "ln", "dyt")

Window = Optional[Union[Sequence[int], Tuple[int, int]]]

_BAND_BLOCK_SIZE = 256
_logged_once: set = set()


def _log_once(message: str) -> None:
    if message not in _logged_once:
        _logged_once.add(message)
        log.info(message)


# --------------------------------------------------------------------------------------------
# rotary embeddings


class RotaryEmbedding(nn.Module):
    """Rotary position embedding frequencies.

    ``inv_freq = 1 / base'^(arange(0, dim, 2) / dim)`` (persistent buffer, ``[ceil(dim / 2)]``) with
    ``base' = base * base_rescale_factor ** (dim / (dim - 2))`` (NTK-aware rescaling). ``forward(t)``
    returns ``(freqs, scale)`` with ``freqs = cat(outer(t / interpolation_factor, inv_freq)) x 2``
    of shape ``[len(t), 2 * ceil(dim / 2)]`` (an odd ``dim`` rotates one feature more, as upstream)
    and ``scale`` = 1.0, or the xPos scale tensor when ``use_xpos``.

    Args:
        dim (int): number of rotary features requested (>= 0; 0 rotates nothing).
        use_xpos (bool, default False): also return the xPos scale.
        scale_base (float, default 512): xPos length scale.
        interpolation_factor (float, default 1.0): positions are divided by it (>= 1).
        base (float, default 10000): frequency base.
        base_rescale_factor (float, default 1.0): NTK-aware base rescaling (needs ``dim != 2``).
    """

    def __init__(self, dim: int, use_xpos: bool = False, scale_base: float = 512,
                 interpolation_factor: float = 1.0, base: float = 10000,
                 base_rescale_factor: float = 1.0) -> None:
        super().__init__()
        if dim < 0:
            raise ValueError(f"RotaryEmbedding dim must be >= 0, got {dim}")
        if interpolation_factor < 1.0:
            raise ValueError(f"interpolation_factor must be >= 1, got {interpolation_factor}")
        if base_rescale_factor != 1.0:
            if dim == 2:
                raise ValueError("base_rescale_factor needs a RotaryEmbedding dim other than 2 (the exponent "
                                 "dim / (dim - 2) is undefined)")
            base = base * base_rescale_factor ** (dim / (dim - 2))
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)
        self.interpolation_factor = interpolation_factor
        self.scale_base = scale_base
        if use_xpos:
            self.register_buffer("scale", (torch.arange(0, dim, 2) + 0.4 * dim) / (1.4 * dim))
        else:
            self.register_buffer("scale", None)

    def forward_from_seq_len(self, seq_len: int) -> Tuple[torch.Tensor, Union[float, torch.Tensor]]:
        """Frequencies for positions ``0 .. seq_len - 1``."""
        return self.forward(torch.arange(seq_len, device=self.inv_freq.device))

    def forward(self, t: torch.Tensor) -> Tuple[torch.Tensor, Union[float, torch.Tensor]]:
        with torch.autocast(t.device.type, enabled=False):
            t = t.to(torch.float32) / self.interpolation_factor
            freqs = torch.einsum("i,j->ij", t, self.inv_freq.float())
            freqs = torch.cat((freqs, freqs), dim=-1)
            if self.scale is None:
                return freqs, 1.0
            seq_len = t.shape[0]
            power = (torch.arange(seq_len, device=t.device) - (seq_len // 2)) / self.scale_base
            scale = self.scale.float() ** power[:, None]
            return freqs, torch.cat((scale, scale), dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Split the last dim into halves ``(x1, x2)`` and return ``cat(-x2, x1)``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(t: torch.Tensor, freqs: torch.Tensor,
                         scale: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """Rotate the first ``freqs.shape[-1]`` features of ``t`` (``[..., n, d]``) in float32.

    Uses the last ``n`` rows of ``freqs``; the remaining ``d - rot_dim`` features pass unchanged.
    """
    out_dtype = t.dtype
    dtype = torch.promote_types(torch.promote_types(t.dtype, freqs.dtype), torch.float32)
    rot_dim, seq_len = freqs.shape[-1], t.shape[-2]
    if rot_dim > t.shape[-1]:
        raise ValueError(f"rotary dimension {rot_dim} exceeds the attention head dimension {t.shape[-1]}; "
                         f"use larger heads or disable rotary embeddings")
    freqs = freqs[..., -seq_len:, :].to(dtype)
    t = t.to(dtype)
    if t.ndim == 4 and freqs.ndim == 3:
        freqs = freqs[:, None]
    t_rot, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    if isinstance(scale, torch.Tensor):
        scale = scale[..., -seq_len:, :].to(dtype)
        t_rot = t_rot * freqs.cos() * scale + rotate_half(t_rot) * freqs.sin() * scale
    else:
        t_rot = t_rot * freqs.cos() + rotate_half(t_rot) * freqs.sin()
        if scale != 1.0:
            t_rot = t_rot * scale
    return torch.cat((t_rot.to(out_dtype), t_pass.to(out_dtype)), dim=-1)


# --------------------------------------------------------------------------------------------
# normalisation


class DynamicTanh(nn.Module):
    """DyT: ``gamma * tanh(alpha * x) + beta`` (params ``alpha`` ``[1]`` = init_alpha, ``gamma``, ``beta``)."""

    def __init__(self, dim: int, init_alpha: float = 10.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1) * init_alpha)
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.tanh(self.alpha * x) + self.beta


# --------------------------------------------------------------------------------------------
# kernels


def _normalize_window(window: Window) -> Optional[Tuple[int, int]]:
    if window is None:
        return None
    if len(window) != 2:
        raise ValueError(f"a sliding window must be a pair (left, right), got {window!r}")
    left, right = (int(w) for w in window)
    if left < -1 or right < -1:
        raise ValueError(f"sliding window sizes must be >= 0 (or -1 for unbounded), got {window!r}")
    if left == -1 and right == -1:
        return None
    return left, right


def sliding_window_mask(q_len: int, k_len: int, window: Window, causal: bool = False,
                        device: Optional[torch.device] = None) -> torch.Tensor:
    """Boolean ``[q_len, k_len]`` mask (True = attend) of flash-attn's sliding window semantics.

    Query ``i`` attends key ``j`` iff ``-left <= j - (i + k_len - q_len) <= right`` (a side of
    ``-1`` is unbounded) and, when ``causal``, ``j <= i + k_len - q_len``.
    """
    win = _normalize_window(window)
    delta = (torch.arange(k_len, device=device)[None, :]
             - torch.arange(q_len, device=device)[:, None] - (k_len - q_len))
    keep = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if win is not None:
        left, right = win
        if left >= 0:
            keep &= delta >= -left
        if right >= 0:
            keep &= delta <= right
    if causal:
        keep &= delta <= 0
    return keep


def _blocked_band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, left: int, right: int,
                            block_size: int) -> torch.Tensor:
    """Exact band attention for ``q_len == k_len``: each query block sees only its band of keys."""
    n = q.shape[-2]
    num_blocks = math.ceil(n / block_size)
    pad = num_blocks * block_size - n
    span = block_size + left + right
    lead = q.shape[:-2]
    q_blocks = F.pad(q, (0, 0, 0, pad)).unflatten(-2, (num_blocks, block_size))

    def windows(t: torch.Tensor) -> torch.Tensor:
        padded = F.pad(t, (0, 0, left, right + pad))
        return padded.unfold(-2, span, block_size).transpose(-1, -2)

    k_blocks, v_blocks = windows(k), windows(v)
    device = q.device
    row = torch.arange(block_size, device=device)[:, None]
    col = torch.arange(span, device=device)[None, :]
    band = (col >= row) & (col <= row + left + right)
    starts = torch.arange(num_blocks, device=device)[:, None] * block_size
    key_pos = starts - left + torch.arange(span, device=device)[None, :]
    key_valid = (key_pos >= 0) & (key_pos < n)
    query_pad = (starts + torch.arange(block_size, device=device)[None, :]) >= n
    mask = key_valid[:, None, :] & (band[None] | query_pad[:, :, None])
    out = F.scaled_dot_product_attention(q_blocks, k_blocks, v_blocks, attn_mask=mask)
    return out.reshape(*lead, num_blocks * block_size, out.shape[-1])[..., :n, :]


def composed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full attention as two matrix multiplies around a softmax in float32 (or wider), ``softmax(q kᵀ / √d) v``.

    Under ``torch.compile`` the scaling, softmax and casts fuse into the matrix multiplies' neighbours, and in
    compiled bf16 training on the CPU this forward and backward is faster than SDPA's flash kernel for short
    sequences (see :data:`COMPOSED_ATTENTION_MAX_SCORES`). The scores are rounded to ``q``'s dtype by its matrix
    multiply and the probabilities to ``v``'s before the second one (bf16 rounding, as autocast's math kernel).
    """
    scores = q @ k.transpose(-1, -2)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1).to(v.dtype) @ v


#: Largest ``query length x key length`` for which compiled bf16 training on the CPU attends with
#: :func:`composed_attention` instead of SDPA (``train.py --precision bf16-mixed --compile``). Forward and backward,
#: 8 heads of 64, 2 threads: 257 x 257 keys 3.0 ms vs SDPA's 5.3 ms, 257 x 2 keys 0.7 vs 2.8 ms, 513 x 513 9.3 vs
#: 13.6 ms; at 1025 x 1025 SDPA is twice as fast (its memory stays linear in the length, too). Inference keeps SDPA,
#: whose forward alone is faster at every length.
COMPOSED_ATTENTION_MAX_SCORES = 513 * 513


def _composed_attention_pays(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> bool:
    """Whether :func:`attend` uses :func:`composed_attention`: while ``torch.compile`` traces a CPU bf16 attention
    that needs gradients, without causal masking, with at most :data:`COMPOSED_ATTENTION_MAX_SCORES` scores."""
    return (torch.compiler.is_compiling() and not causal and q.device.type == "cpu" and q.dtype == torch.bfloat16
            and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
            and q.shape[-2] * k.shape[-2] <= COMPOSED_ATTENTION_MAX_SCORES)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Window,
                             causal: bool = False, block_size: int = _BAND_BLOCK_SIZE) -> torch.Tensor:
    """SDPA restricted to a sliding window (see :func:`sliding_window_mask`); ``[..., n, d]`` tensors."""
    win = _normalize_window(window)
    q_len, k_len = q.shape[-2], k.shape[-2]
    if win is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    left, right = win
    if causal:
        right = 0
    if q_len == k_len and left >= 0 and right >= 0 and 2 * (block_size + left + right) <= q_len:
        return _blocked_band_attention(q, k, v, left, right, block_size)
    mask = sliding_window_mask(q_len, k_len, (left, right), causal, device=q.device)
    empty_rows = ~mask.any(dim=-1)
    if bool(empty_rows.any()):
        mask = mask | empty_rows[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.masked_fill(empty_rows[:, None], 0.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_flex_compiled: Optional[Callable] = None
_flex_compile_failed = False


def _flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any,
                    score_mod: Optional[Callable]) -> torch.Tensor:
    global _flex_compiled, _flex_compile_failed
    from torch.nn.attention.flex_attention import flex_attention

    if q.is_cuda and not _flex_compile_failed:
        try:
            if _flex_compiled is None:
                _flex_compiled = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")
            return _flex_compiled(q, k, v, block_mask=block_mask, score_mod=score_mod)
        except Exception as err:  # compilation problems are environment-specific; eager is always correct
            _flex_compile_failed = True
            log.warning("compiled flex_attention failed (%s); using the eager implementation", err)
    return flex_attention(q, k, v, block_mask=block_mask, score_mod=score_mod)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
           block_mask: Any = None, score_mod: Optional[Callable] = None,
           sliding_window: Window = None) -> torch.Tensor:
    """Scaled dot-product attention on ``[b, h, n, d]`` tensors with equal head counts.

    Kernel order: FlexAttention (``block_mask``/``score_mod`` given and not ``causal``), flash-attn
    (importable and CUDA tensors; inputs cast to fp16 unless already fp16/bf16), :func:`composed_attention`
    (no window, compiled bf16 CPU training of short sequences, see :data:`COMPOSED_ATTENTION_MAX_SCORES`), else
    SDPA (sliding window honoured exactly, see the module docstring). Softmax scale ``1/sqrt(d)``.
    """
    use_flex = block_mask is not None or score_mod is not None
    if use_flex and causal:
        _log_once("causal attention disables FlexAttention; put causal masking into the block mask instead")
        use_flex = False
    if use_flex:
        return _flex_attention(q, k, v, block_mask, score_mod)
    if flash_attn_func is not None and q.is_cuda:
        dtype_in = q.dtype
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if dtype_in not in (torch.float16, torch.bfloat16):
            q, k, v = (t.to(torch.float16) for t in (q, k, v))
        win = _normalize_window(sliding_window) or (-1, -1)
        out = flash_attn_func(q, k, v, causal=causal, window_size=win)
        return out.to(dtype_in).transpose(1, 2)
    if _normalize_window(sliding_window) is None and _composed_attention_pays(q, k, v, causal):
        return composed_attention(q, k, v)
    return sliding_window_attention(q, k, v, sliding_window, causal=causal)


# --------------------------------------------------------------------------------------------
# attention module


def _append_to_cache(cache: Dict[str, Any], k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Write new keys/values ``[..., n, d]`` after the cached ones and return views of all of them.

    ``cache`` holds buffers ``k`` / ``v`` whose sequence capacity doubles when full (amortised
    linear copying) and the number of valid positions ``length``.
    """
    past = cache.get("length", 0)
    needed = past + k.shape[-2]
    if "k" not in cache or cache["k"].shape[-2] < needed:
        capacity = max(needed, 2 * cache["k"].shape[-2]) if "k" in cache else needed
        for name, new in (("k", k), ("v", v)):
            buffer = new.new_empty(*new.shape[:-2], capacity, new.shape[-1])
            if past:
                buffer[..., :past, :] = cache[name][..., :past, :]
            cache[name] = buffer
    cache["k"][..., past:needed, :] = k
    cache["v"][..., past:needed, :] = v
    cache["length"] = needed
    return cache["k"][..., :needed, :], cache["v"][..., :needed, :]



def _check_heads(dim: int, dim_kv: int, dim_heads: int, heads: int, kv_heads: int, qk_norm: str) -> None:
    """Reject head layouts that upstream accepts at construction but cannot run.

    Accepted: equal head widths and either ``heads % kv_heads == 0`` (grouped-query sharing) or
    ``kv_heads > heads`` (no key/value head is shared, see :class:`Attention`). Fewer key/value
    heads that do not divide the query heads fail upstream at the first forward pass.
    """
    where = f"(dim {dim}, context dim {dim_kv}, dim_heads {dim_heads})"
    if heads == 0 or kv_heads == 0 or dim % heads or dim_kv % kv_heads:
        raise ValueError(f"attention widths cannot be split into heads of about dim_heads features {where}; "
                         f"use widths that are multiples of dim_heads")
    if dim // heads != dim_kv // kv_heads:
        raise ValueError(f"query heads ({dim // heads} wide) and key/value heads ({dim_kv // kv_heads} wide) "
                         f"differ {where}")
    if kv_heads < heads and heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads {where}: the key/value "
                         f"head count must divide the query head count; change the context width")
    if qk_norm in ("ln", "dyt") and dim // heads != dim_heads:
        raise ValueError(f"qk_norm {qk_norm!r} normalises dim_heads={dim_heads} features but the heads are "
                         f"{dim // heads} wide {where}")


def _attend_without_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention output when no key/value head is shared with the query heads: zeros.

    Upstream repeats each of its ``kv_heads > heads`` key/value heads ``heads // kv_heads = 0``
    times, and scaled-dot-product attention over the resulting empty keys returns zeros. The zeros
    stay attached to the graph through empty slices of ``q``, ``k`` and ``v``, so the projections
    that made them receive zero gradients rather than none (weight decay and distributed gradient
    reduction treat them as used parameters, as upstream).
    """
    attached = q[..., :0].sum() + k[:, :0].sum() + v[:, :0].sum()
    return q.new_zeros(*q.shape[:-1], v.shape[-1]) + attached


class Attention(nn.Module):
    """Self- or cross-attention (see docs/diffusion.md#dit-the-diffusiontransformer).

    Self: ``to_qkv`` = Linear(dim, 3·dim) (differential: 5·dim → q, k, v, q₂, k₂). Cross
    (``dim_context`` given): ``to_q`` = Linear(dim, dim) (differential 2·dim) and ``to_kv`` =
    Linear(dim_context, 2·dim_context) (differential 3·dim_context → k, k₂, v); K/V then have
    ``dim_context // dim_heads`` heads and are repeat-interleaved to the query head count.
    With more key/value heads than query heads (a context wider than ``dim``), upstream repeats
    them zero times and its cross-attention outputs zeros whatever the context: so does this
    module, on every kernel (``ignores_context`` is then True).
    ``to_out`` = Linear(dim, dim), zero-initialised when ``zero_init_output``. All bias-free.
    As upstream, there are ``dim // dim_heads`` heads of width ``dim / heads`` (which is
    ``dim_heads`` whenever it divides ``dim``).
    """

    def __init__(self, dim: int, dim_heads: int = 64, dim_context: Optional[int] = None,
                 causal: bool = False, zero_init_output: bool = True, qk_norm: str = "none",
                 differential: bool = False, feat_scale: bool = False) -> None:
        super().__init__()
        if qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm must be one of {', '.join(map(repr, QK_NORMS))}, got {qk_norm!r}")
        dim_kv = dim_context if dim_context is not None else dim
        self.dim = dim
        self.dim_heads = dim_heads
        self.differential = differential
        self.num_heads = dim // dim_heads
        self.kv_heads = dim_kv // dim_heads
        _check_heads(dim, dim_kv, dim_heads, self.num_heads, self.kv_heads, qk_norm)
        self.is_cross = dim_context is not None
        self.ignores_context = self.is_cross and self.kv_heads > self.num_heads
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim * (2 if differential else 1), bias=False)
            self.to_kv = nn.Linear(dim_kv, dim_kv * (3 if differential else 2), bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * (5 if differential else 3), bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.to_out.weight)
        self.qk_norm = qk_norm
        if qk_norm == "ln":
            self.q_norm = nn.LayerNorm(dim_heads, elementwise_affine=True, eps=1.0e-6)
            self.k_norm = nn.LayerNorm(dim_heads, elementwise_affine=True, eps=1.0e-6)
        elif qk_norm == "dyt":
            self.q_norm = DynamicTanh(dim_heads)
            self.k_norm = DynamicTanh(dim_heads)
        self.feat_scale = feat_scale
        if feat_scale:
            self.lambda_dc = nn.Parameter(torch.zeros(dim))
            self.lambda_hf = nn.Parameter(torch.zeros(dim))
        self.causal = causal
        if causal:
            _log_once("causal attention disables FlexAttention; put causal masking into the block mask instead")

    @staticmethod
    def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
        return t.unflatten(-1, (heads, -1)).transpose(1, 2)

    @maybe_compile
    def apply_qk_layernorm(self, q: torch.Tensor, k: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Apply the learned per-head q/k norm (``ln`` or ``dyt``), keeping dtypes."""
        return self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)

    def apply_attn(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                   flex_attention_block_mask: Any = None, flex_attention_score_mod: Optional[Callable] = None,
                   flash_attn_sliding_window: Window = None) -> torch.Tensor:
        """Repeat K/V heads for grouped-query attention, then run :func:`attend`."""
        if self.kv_heads > self.num_heads:
            return _attend_without_keys(q, k, v)
        if self.num_heads != self.kv_heads:
            repeat = self.num_heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        return attend(q, k, v, causal=causal, block_mask=flex_attention_block_mask,
                      score_mod=flex_attention_score_mod, sliding_window=flash_attn_sliding_window)

    def _project(self, x: torch.Tensor, kv_input: torch.Tensor):
        h, kv_h = self.num_heads, self.kv_heads
        if self.is_cross:
            if self.differential:
                q, q_diff = self.to_q(x).chunk(2, dim=-1)
                k, k_diff, v = self.to_kv(kv_input).chunk(3, dim=-1)
                q = torch.stack([self._heads(q, h), self._heads(q_diff, h)], dim=1)
                k = torch.stack([self._heads(k, kv_h), self._heads(k_diff, kv_h)], dim=1)
                return q, k, self._heads(v, kv_h)
            k, v = self.to_kv(kv_input).chunk(2, dim=-1)
            return self._heads(self.to_q(x), h), self._heads(k, kv_h), self._heads(v, kv_h)
        if self.differential:
            q, k, v, q_diff, k_diff = self.to_qkv(x).chunk(5, dim=-1)
            q = torch.stack([self._heads(q, h), self._heads(q_diff, h)], dim=1)
            k = torch.stack([self._heads(k, h), self._heads(k_diff, h)], dim=1)
            return q, k, self._heads(v, h)
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        return self._heads(q, h), self._heads(k, h), self._heads(v, h)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                rotary_pos_emb: Optional[Tuple[torch.Tensor, Union[float, torch.Tensor]]] = None,
                causal: Optional[bool] = None, flex_attention_block_mask: Any = None,
                flex_attention_score_mod: Optional[Callable] = None,
                flash_attn_sliding_window: Window = None,
                kv_cache: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        """``x`` ``[b, n, dim]`` (and ``context`` ``[b, m, dim_context]`` for cross-attention) → ``[b, n, dim]``.

        ``kv_cache`` (self-attention only): a dict holding the keys/values of the previous tokens
        (empty at the start); the new ones are appended in place and attended to (see module docs).
        """
        if self.is_cross and context is None:
            raise ValueError("this Attention was built for cross-attention (dim_context set) and needs `context`")
        if kv_cache is not None and self.is_cross:
            raise ValueError("kv_cache is only supported for self-attention")
        kv_input = context if context is not None else x
        q, k, v = self._project(x, kv_input)

        if self.qk_norm == "l2":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        elif self.qk_norm != "none":
            q, k = self.apply_qk_layernorm(q, k)

        if rotary_pos_emb is not None:
            freqs, xpos_scale = rotary_pos_emb
            freqs = freqs.to(torch.float32)
            q_len, k_len = q.shape[-2], k.shape[-2]
            if q_len >= k_len:
                q_freqs, k_freqs = freqs, (q_len / k_len) * freqs
            else:
                q_freqs, k_freqs = (k_len / q_len) * freqs, freqs
            k_scale = xpos_scale ** -1 if isinstance(xpos_scale, torch.Tensor) else 1.0
            q = apply_rotary_pos_emb(q.to(torch.float32), q_freqs, xpos_scale).to(v.dtype)
            k = apply_rotary_pos_emb(k.to(torch.float32), k_freqs, k_scale).to(v.dtype)

        causal = self.causal if causal is None else causal
        if kv_cache is not None:
            past = kv_cache.get("length", 0)
            k, v = _append_to_cache(kv_cache, k, v)
            if past and causal and q.shape[-2] > 1 and _normalize_window(flash_attn_sliding_window) is None:
                # queries are the last positions: a (-1, 0) window is causal masking aligned to the last key
                flash_attn_sliding_window = (-1, 0)
        if q.shape[-2] == 1 and causal:
            causal = False
        kernel_kwargs = dict(causal=causal, flex_attention_block_mask=flex_attention_block_mask,
                             flex_attention_score_mod=flex_attention_score_mod,
                             flash_attn_sliding_window=flash_attn_sliding_window)
        if self.differential:
            out = (self.apply_attn(q[:, 0], k[:, 0], v, **kernel_kwargs)
                   - self.apply_attn(q[:, 1], k[:, 1], v, **kernel_kwargs))
        else:
            out = self.apply_attn(q, k, v, **kernel_kwargs)

        out = self.to_out(out.transpose(1, 2).flatten(2))
        if self.feat_scale:
            out_dc = out.mean(dim=-2, keepdim=True)
            out = out + self.lambda_dc * out_dc + self.lambda_hf * (out - out_dc)
        return out
