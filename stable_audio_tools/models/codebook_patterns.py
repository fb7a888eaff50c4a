"""Codebook interleaving patterns for multi-codebook language models (see
docs/training.md#audio-language-models-model_type-lm).

Semantics are those of AudioCraft's codebook patterns (which upstream stable-audio-tools vendors).
A :class:`Pattern` is a *layout*: a list of sequence steps, each a list of ``(t, q)`` coordinates
(original timestep, codebook) whose tokens the LM predicts together at that step. The first step
is empty so that the model input starts with a special token. Codes ``[B, K, T]`` are mapped to an
interleaved sequence ``[B, K, S]`` (unused slots hold a special token) and back.

Providers (``get_pattern(timesteps)`` is cached per length):

* :class:`DelayedPatternProvider` — codebook ``q`` is delayed by ``delays[q]`` steps (default
  ``0 .. n_q-1``): step ``s`` holds codebook ``q`` at time ``s - 1 - delays[q]``;
* :class:`ParallelPatternProvider` — all delays 0 (every codebook of a timestep in one step);
* :class:`UnrolledPatternProvider` — each timestep expanded into inner steps (full flattening by default);
* :class:`MusicLMPattern` — all timesteps of codebooks ``0..g-1``, then of the next group of ``g``;
* :class:`CoarseFirstPattern` — all of codebook 0 first, then the others (optionally delayed).

Differences from AudioCraft (no change for valid inputs): invalid arguments raise ``ValueError``
instead of failing asserts; ``MusicLMPattern`` accepts ``n_q`` not divisible by ``group_by`` (the
last group is smaller; AudioCraft crashes); caches are plain dictionaries, so providers copy and
pickle cleanly (model EMA copies, checkpoints).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict, namedtuple
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "LayoutCoord",
    "PatternLayout",
    "Pattern",
    "CodebooksPatternProvider",
    "DelayedPatternProvider",
    "ParallelPatternProvider",
    "UnrolledPatternProvider",
    "MusicLMPattern",
    "CoarseFirstPattern",
    "PATTERN_PROVIDERS",
]

log = logging.getLogger(__name__)

LayoutCoord = namedtuple("LayoutCoord", ["t", "q"])  # (original timestep, codebook index)
PatternLayout = List[List[LayoutCoord]]
Device = Union[torch.device, str]

_CACHE_SIZE = 100


class _LRU(OrderedDict):
    """A small least-recently-used dictionary (``get`` refreshes, ``put`` evicts the oldest)."""

    def get_or_make(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return value


class Pattern:
    """A codebook layout over ``timesteps`` timesteps of ``n_q`` codebooks (see the module docs).

    ``layout[0]`` is the empty step of the leading special token. A layout is valid when every
    step holds at most one coordinate per codebook and each codebook's timesteps never decrease.
    """

    def __init__(self, layout: PatternLayout, timesteps: int, n_q: int) -> None:
        if len(layout) == 0:
            raise ValueError("a pattern layout needs at least one step")
        self.layout = layout
        self.timesteps = timesteps
        self.n_q = n_q
        self._validate_layout()
        self._index_cache = _LRU()
        log.debug("new pattern: %d timesteps, %d sequence steps", timesteps, len(layout))

    def __repr__(self) -> str:
        return f"Pattern(timesteps={self.timesteps}, n_q={self.n_q}, steps={len(self.layout)})"

    def _validate_layout(self) -> None:
        last_t = [0] * self.n_q
        for s, coords in enumerate(self.layout):
            seen = set()
            for coord in coords:
                if not 0 <= coord.q < self.n_q:
                    raise ValueError(f"step {s} refers to codebook {coord.q}, the pattern has {self.n_q}")
                if coord.t < last_t[coord.q]:
                    raise ValueError(f"past timesteps are found in the sequence for codebook {coord.q} at step {s}")
                last_t[coord.q] = coord.t
                seen.add(coord.q)
            if len(seen) != len(coords):
                raise ValueError(f"multiple entries for the same codebook at step {s}")

    # ------------------------------------------------------------------ layout queries
    @property
    def num_sequence_steps(self) -> int:
        """Steps after the leading special-token step."""
        return len(self.layout) - 1

    @property
    def max_delay(self) -> int:
        """How many timesteps the layout reaches past ``timesteps`` (trailing partly-defined steps)."""
        last = 0
        for coords in self.layout[1:]:
            for coord in coords:
                last = max(last, coord.t + 1)
        return last - self.timesteps

    @property
    def valid_layout(self) -> PatternLayout:
        """The layout without its ``max_delay`` trailing steps (every remaining step fully defined)."""
        return self.layout[:len(self.layout) - self.max_delay]

    def starts_with_special_token(self) -> bool:
        return self.layout[0] == []

    def get_sequence_coords_with_timestep(self, t: int, q: Optional[int] = None) -> List[Tuple[int, LayoutCoord]]:
        """``(step, coord)`` pairs of the layout at timestep ``t`` (and codebook ``q`` if given)."""
        if t > self.timesteps:
            raise ValueError(f"timestep {t} is beyond the pattern's {self.timesteps} timesteps")
        if q is not None and q > self.n_q:
            raise ValueError(f"codebook {q} is beyond the pattern's {self.n_q} codebooks")
        return [(s, coord) for s, coords in enumerate(self.layout) for coord in coords
                if coord.t == t and (q is None or coord.q == q)]

    def get_steps_with_timestep(self, t: int, q: Optional[int] = None) -> List[int]:
        return [s for s, _ in self.get_sequence_coords_with_timestep(t, q)]

    def get_first_step_with_timesteps(self, t: int, q: Optional[int] = None) -> Optional[int]:
        """The first sequence step holding timestep ``t`` (``None`` if there is none)."""
        steps = self.get_steps_with_timestep(t, q)
        return steps[0] if steps else None

    # ------------------------------------------------------------------ index construction
    def _cached(self, key: tuple, make, device: Device) -> Tuple[torch.Tensor, torch.Tensor]:
        indexes, mask = self._index_cache.get_or_make(key, make)
        dev_key = key + (str(device),)
        return self._index_cache.get_or_make(dev_key, lambda: (indexes.to(device), mask.to(device)))

    def _check_n_q(self, n_q: int) -> None:
        if n_q != self.n_q:
            raise ValueError(f"the sequence has {n_q} codebooks but the pattern was built for {self.n_q}")

    def _build_pattern_sequence_scatter_indexes(self, timesteps: int, n_q: int, keep_only_valid_steps: bool,
                                                device: Device = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
        """Gather indexes ``[K, S]`` into the flattened codes (``n_q * timesteps`` = special token), and mask."""
        self._check_n_q(n_q)
        if timesteps > self.timesteps:
            raise ValueError(f"cannot build a sequence of {timesteps} timesteps from a pattern of {self.timesteps}")

        def make() -> Tuple[torch.Tensor, torch.Tensor]:
            layout = self.valid_layout if keep_only_valid_steps else self.layout
            indexes = torch.full((n_q, len(layout)), n_q * timesteps, dtype=torch.long)
            mask = torch.zeros(n_q, len(layout), dtype=torch.bool)
            for s, coords in enumerate(layout):
                for coord in coords:
                    if coord.t < timesteps:
                        indexes[coord.q, s] = coord.t + coord.q * timesteps
                        mask[coord.q, s] = True
            return indexes, mask

        return self._cached(("build", timesteps, n_q, keep_only_valid_steps), make, device)

    def _build_reverted_sequence_scatter_indexes(self, sequence_steps: int, n_q: int,
                                                 keep_only_valid_steps: bool = False, is_model_output: bool = False,
                                                 device: Device = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
        """Gather indexes ``[K, T]`` into a flattened sequence (``n_q * sequence_steps`` = special) and mask.

        ``is_model_output``: the sequence is the model's output, which is one step ahead of its
        input, so the leading special-token step is dropped from the layout.
        """
        self._check_n_q(n_q)
        layout = self.valid_layout if keep_only_valid_steps else self.layout
        if sequence_steps > len(layout):
            raise ValueError(f"sequence to revert is longer than the pattern: {sequence_steps} > {len(layout)}")

        def make() -> Tuple[torch.Tensor, torch.Tensor]:
            ref = layout[1:] if is_model_output and self.starts_with_special_token() else layout
            timesteps = self.timesteps
            indexes = torch.full((n_q, timesteps), n_q * sequence_steps, dtype=torch.long)
            mask = torch.zeros(n_q, timesteps, dtype=torch.bool)
            for s, coords in enumerate(ref[:sequence_steps]):
                for coord in coords:
                    if coord.t < timesteps:
                        indexes[coord.q, coord.t] = s + coord.q * sequence_steps
                        mask[coord.q, coord.t] = True
            return indexes, mask

        return self._cached(("revert", sequence_steps, n_q, keep_only_valid_steps, is_model_output), make, device)

    # ------------------------------------------------------------------ public transforms
    def build_pattern_sequence(self, z: torch.Tensor, special_token: int,
                               keep_only_valid_steps: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``z`` ``[B, K, T]`` -> ``(sequence [B, K, S], indexes [K, S], mask [K, S])``.

        Slots without a coordinate (or whose timestep is ``>= T``) hold ``special_token``.
        ``keep_only_valid_steps`` stops at the last fully defined step.
        """
        batch, n_q, timesteps = z.shape
        indexes, mask = self._build_pattern_sequence_scatter_indexes(timesteps, n_q, keep_only_valid_steps,
                                                                     device=z.device)
        flat = torch.cat((z.reshape(batch, -1), z.new_full((batch, 1), special_token)), dim=1)
        values = flat[:, indexes.view(-1)].view(batch, n_q, indexes.shape[-1])
        return values, indexes, mask

    def revert_pattern_sequence(self, s: torch.Tensor, special_token: int,
                                keep_only_valid_steps: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Interleaved ``s`` ``[B, K, S]`` -> ``(codes [B, K, T], indexes [K, T], mask [K, T])``.

        Timesteps the first ``S`` steps do not cover hold ``special_token``.
        """
        batch, n_q, steps = s.shape
        indexes, mask = self._build_reverted_sequence_scatter_indexes(steps, n_q, keep_only_valid_steps,
                                                                      is_model_output=False, device=s.device)
        flat = torch.cat((s.reshape(batch, -1), s.new_full((batch, 1), special_token)), dim=1)
        values = flat[:, indexes.view(-1)].view(batch, n_q, indexes.shape[-1])
        return values, indexes, mask

    def revert_pattern_logits(self, logits: torch.Tensor, special_token: float,
                              keep_only_valid_steps: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model logits ``[B, card, K, S]`` -> ``(logits [B, card, K, T], indexes [K, T], mask [K, T])``.

        The output at step ``s`` predicts the tokens of step ``s + 1``, so timestep ``t`` of codebook
        ``q`` takes the logits of the step *before* the one holding ``(t, q)``; uncovered positions
        are filled with ``special_token`` (NaN in training).
        """
        batch, card, n_q, steps = logits.shape
        indexes, mask = self._build_reverted_sequence_scatter_indexes(steps, n_q, keep_only_valid_steps,
                                                                      is_model_output=True, device=logits.device)
        flat = logits.reshape(batch, card, -1)
        flat = torch.cat((flat, flat.new_full((batch, card, 1), special_token)), dim=-1)
        values = flat[:, :, indexes.view(-1)].view(batch, card, n_q, indexes.shape[-1])
        return values, indexes, mask


class CodebooksPatternProvider(ABC):
    """Builds the :class:`Pattern` of ``n_q`` codebooks for any number of timesteps (cached per length)."""

    def __init__(self, n_q: int) -> None:
        if n_q <= 0:
            raise ValueError(f"the number of codebooks must be positive, got {n_q}")
        self.n_q = n_q
        self._patterns = _LRU()

    def get_pattern(self, timesteps: int) -> Pattern:
        """The pattern for ``timesteps`` timesteps."""
        return self._patterns.get_or_make(int(timesteps), lambda: self.build_pattern(int(timesteps)))

    @abstractmethod
    def build_pattern(self, timesteps: int) -> Pattern:
        """Construct (uncached) the pattern for ``timesteps`` timesteps."""


def _check_sorted(values: Sequence[int], name: str, length: int) -> List[int]:
    values = [int(v) for v in values]
    if len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}")
    if sorted(values) != values:
        raise ValueError(f"{name} must be non-decreasing, got {values}")
    return values


class DelayedPatternProvider(CodebooksPatternProvider):
    """Codebook ``q`` delayed by ``delays[q]`` steps (default ``range(n_q)``; MusicGen's "delay" pattern).

    ``flatten_first``: the first N timesteps are fully flattened (one codebook per step) before the
    delayed part; ``empty_initial``: N extra empty steps after the special-token step (a negative
    value omits the special-token step).
    """

    def __init__(self, n_q: int, delays: Optional[Sequence[int]] = None, flatten_first: int = 0,
                 empty_initial: int = 0) -> None:
        super().__init__(n_q)
        self.delays = _check_sorted(range(n_q) if delays is None else delays, "delays", n_q)
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def build_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [] if self.empty_initial < 0 else [[]]
        layout += [[] for _ in range(max(self.empty_initial, 0))]
        for t in range(min(timesteps, self.flatten_first)):
            layout += [[LayoutCoord(t, q)] for q in range(self.n_q)]
        for s in range(self.flatten_first, timesteps + max(self.delays)):
            layout.append([LayoutCoord(s - delay, q) for q, delay in enumerate(self.delays)
                           if s - delay >= self.flatten_first])
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class ParallelPatternProvider(DelayedPatternProvider):
    """All codebooks of a timestep predicted in the same step (a delayed pattern with zero delays)."""

    def __init__(self, n_q: int, empty_initial: int = 0) -> None:
        super().__init__(n_q, [0] * n_q, empty_initial=empty_initial)


class UnrolledPatternProvider(CodebooksPatternProvider):
    """Codebooks unrolled over inner steps of each timestep.

    ``flattening[q]`` is the inner step of codebook ``q`` (default ``range(n_q)``: one codebook per
    inner step, full flattening; equal values share a step); ``delays[q]`` (default zeros) shifts a
    codebook by whole timesteps. Codebooks sharing an inner step must share their delay.
    """

    def __init__(self, n_q: int, flattening: Optional[Sequence[int]] = None,
                 delays: Optional[Sequence[int]] = None) -> None:
        super().__init__(n_q)
        flattening = _check_sorted(range(n_q) if flattening is None else flattening, "flattening", n_q)
        delays = _check_sorted([0] * n_q if delays is None else delays, "delays", n_q)
        self._inner: Dict[int, Tuple[List[int], int]] = {}
        for q, (step, delay) in enumerate(zip(flattening, delays)):
            if step in self._inner:
                codebooks, step_delay = self._inner[step]
                if step_delay != delay:
                    raise ValueError("codebooks flattened to the same inner step must have the same delay "
                                     f"(inner step {step}: {step_delay} vs {delay})")
                codebooks.append(q)
            else:
                self._inner[step] = ([q], delay)
        self.max_delay = max(delays)

    @property
    def num_inner_steps(self) -> int:
        return max(self._inner) + 1

    def num_virtual_steps(self, timesteps: int) -> int:
        return timesteps * self.num_inner_steps + 1

    def build_pattern(self, timesteps: int) -> Pattern:
        keyed: list = [(-1, [])]
        total = timesteps + self.max_delay
        for t in range(total):
            for step in range(self.num_inner_steps):
                if step not in self._inner:
                    keyed.append((t, []))
                    continue
                codebooks, delay = self._inner[step]
                if t + delay < total:
                    keyed.append((t + delay, [LayoutCoord(t, q) for q in codebooks]))
        layout = [coords for _, coords in sorted(keyed)]
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class CoarseFirstPattern(CodebooksPatternProvider):
    """All timesteps of codebook 0 first, then codebooks ``1..n_q-1`` with ``delays`` (default zeros).

    As in AudioCraft, the fine codebooks are not causal w.r.t. the coarse one: generate the full
    training length.
    """

    def __init__(self, n_q: int, delays: Optional[Sequence[int]] = None) -> None:
        super().__init__(n_q)
        self.delays = _check_sorted([0] * (n_q - 1) if delays is None else delays, "delays", n_q - 1)

    def build_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [[]]
        layout += [[LayoutCoord(t, 0)] for t in range(timesteps)]
        for s in range(timesteps + max(self.delays, default=0)):
            layout.append([LayoutCoord(s - delay, q + 1) for q, delay in enumerate(self.delays) if s - delay >= 0])
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class MusicLMPattern(CodebooksPatternProvider):
    """Full flattening by codebook groups: all timesteps of codebooks ``0..g-1`` (interleaved), then the next group."""

    def __init__(self, n_q: int, group_by: int = 2) -> None:
        super().__init__(n_q)
        if group_by <= 0:
            raise ValueError(f"group_by must be positive, got {group_by}")
        self.group_by = group_by

    def build_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [[]]
        for first in range(0, self.n_q, self.group_by):
            for t in range(timesteps):
                layout += [[LayoutCoord(t, q)] for q in range(first, min(first + self.group_by, self.n_q))]
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


# ``model.lm.codebook_pattern`` values (see docs/training.md#audio-language-models-model_type-lm; ``coarse_first`` is
# an addition, not in upstream's factory)
PATTERN_PROVIDERS = {
    "delay": DelayedPatternProvider,
    "parallel": ParallelPatternProvider,
    "unroll": UnrolledPatternProvider,
    "musiclm": MusicLMPattern,
    "coarse_first": CoarseFirstPattern,
}
