"""Limits that keep one Gradio demo request from tying up the server.

:class:`DemoLimits` holds the settings (``run_gradio.py`` flags): the largest upload, the longest input audio, the
most sampling steps, the longest output a request may ask for, a per-request time limit, the queue size and the
number of requests run at once. :class:`RequestGate` enforces them while a handler runs:

- at most ``concurrency`` requests use the model at once (a request the client gave up on keeps its slot until it
  has actually stopped, so a cancelled generation never runs beside the next one);
- :meth:`RequestGuard.check`, called from the sampler callback, the LM step callback and a forward pre-hook on
  the model's top-level modules, stops the request with a ``gr.Error`` once it has run past the time limit, and
  stops it quietly when its client has gone away (closed the page, pressed Stop, cancelled an API job) or the
  server is shutting down. Gradio itself only abandons such a request; without these checks its loop would keep
  the GPU busy until the end.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import gradio as gr
from torch import nn

__all__ = ["DemoLimits", "RequestGate", "RequestGuard", "RequestCancelled", "current_guard", "parse_file_size"]

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}
_CLIENT_POLL_SECONDS = 0.2  # how often the (cheap, but not free) "is the client still there" lookup runs
_local = threading.local()  # the RequestGuard of the request running in this thread, if any
_HOOKED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # modules that already check the running request


def parse_file_size(value: Union[str, int, None]) -> Optional[int]:
    """``"50mb"``, ``"1.5 GB"``, ``"800kb"``, ``"123"`` (bytes) or an int -> bytes; ``None`` / ``"none"`` -> no limit.

    Raises ``ValueError`` for anything else or a size of 0.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "unlimited")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a file size: use a number of bytes or a number with a unit "
                             "(b, kb, mb, gb, tb), e.g. 50mb; 'none' for no limit")
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if size <= 0:
        raise ValueError(f"file size {value!r} must be above 0 ('none' for no limit)")
    return size


def _positive(value: Optional[float], name: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass
class DemoLimits:
    """What one request of the demo may ask for, and how the server queues requests.

    Args:
        max_file_size (str | int | None, default ``"50mb"``): largest file a client may upload (bytes, or a number
            with a unit b/kb/mb/gb/tb); Gradio refuses larger uploads. ``None``: no limit.
        max_input_seconds (float | None, default 300): longest init / inpaint / autoencoder input audio, in
            seconds; longer files are refused from their header, before they are decoded. ``None``: no limit.
        max_steps (int, default 500): most diffusion sampling steps (also the diffusion autoencoder's decoder
            steps); the maximum of the Steps sliders.
        max_seconds (float | None, default None): longest output a request may ask for ("Seconds total" of
            conditioned diffusion and language models); the maximum of those sliders. ``None``: the model's
            length (``sample_size / sample_rate``), which is also the cap when a larger value is given.
        time_limit (float | None, default 600): seconds one request may run (after it leaves the queue) before it
            is stopped with a message. ``None``: no limit.
        queue_size (int, default 16): most requests waiting in the queue; more are refused ("queue is full").
        concurrency (int, default 1): requests run at the same time.
        delete_files_after (float, default 3600): uploaded and result files (those Gradio tracks) older than this
            many seconds are deleted, checked every ``min(600, delete_files_after)`` seconds; Gradio deletes them
            all when the server stops (:func:`~stable_audio_tools.interface.gradio.private_gradio_temp_dir`
            removes everything).
    """

    max_file_size: Union[str, int, None] = "50mb"
    max_input_seconds: Optional[float] = 300.0
    max_steps: int = 500
    max_seconds: Optional[float] = None
    time_limit: Optional[float] = 600.0
    queue_size: int = 16
    concurrency: int = 1
    delete_files_after: float = 3600.0

    def __post_init__(self) -> None:
        try:
            parse_file_size(self.max_file_size)
        except ValueError as e:
            raise ValueError(f"max_file_size (--max-file-size): {e}") from None
        _positive(self.max_input_seconds, "max_input_seconds (--max-input-seconds)")
        _positive(self.max_seconds, "max_seconds (--max-seconds)")
        _positive(self.time_limit, "time_limit (--request-time-limit)")
        _positive(self.delete_files_after, "delete_files_after (--delete-files-after)", allow_none=False)
        for name, flag in (("max_steps", "--max-steps"), ("queue_size", "--queue-size"),
                           ("concurrency", "--concurrency")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({flag}) must be a positive integer, got {value!r}")

    @property
    def max_file_size_bytes(self) -> Optional[int]:
        """``max_file_size`` in bytes (``None``: no limit)."""
        return parse_file_size(self.max_file_size)

    def seconds_cap(self, model_seconds: float) -> float:
        """The longest output a request may ask for from a model of ``model_seconds``."""
        return model_seconds if self.max_seconds is None else min(float(self.max_seconds), model_seconds)

    def check_steps(self, steps: int, what: str = "Steps") -> None:
        """``gr.Error`` unless ``1 <= steps <= max_steps``."""
        if steps < 1:
            raise gr.Error(f"{what} must be at least 1, got {steps}")
        if steps > self.max_steps:
            raise gr.Error(f"{what} ({steps}) is above this server's limit of {self.max_steps} (--max-steps); "
                           f"choose at most {self.max_steps}.")

    def check_seconds(self, seconds: float, model_seconds: float, what: str = "Seconds total") -> None:
        """``gr.Error`` when ``seconds`` is above a ``max_seconds`` that is stricter than the model's length (a
        request longer than the model is refused by the interface with its own message)."""
        cap = self.seconds_cap(model_seconds)
        if cap < model_seconds and seconds > cap + 1e-9:
            raise gr.Error(f"{what} ({seconds:g} s) is above this server's limit of {cap:g} s (--max-seconds); "
                           f"choose at most {cap:g} s.")

    def queue_kwargs(self) -> dict:
        """Keywords for ``Blocks.queue``: bounded size, ``concurrency`` workers, no route that skips the queue."""
        return {"max_size": self.queue_size, "default_concurrency_limit": self.concurrency, "api_open": False}

    def delete_cache(self) -> tuple:
        """Gradio's ``delete_cache`` ``(frequency, age)`` in whole seconds."""
        age = max(1, int(math.ceil(self.delete_files_after)))
        return min(600, age), age


class RequestCancelled(gr.Error):
    """The client of a request went away (or the server is stopping); nobody waits for its result."""


def _gradio_event() -> tuple:
    """``(queue, event_id)`` of the Gradio event this thread is running, or ``(None, None)`` outside a queued
    event (a direct Python call)."""
    try:
        from gradio.context import LocalContext
    except ImportError:  # pragma: no cover - every supported Gradio has it
        return None, None
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None or not isinstance(getattr(queue, "active_jobs", None), list):
        return None, None
    return queue, event_id


def _event_alive(queue: Any, event_id: str) -> Optional[bool]:
    """``True``/``False``: the event is running and its client is (not) connected; ``None``: it is not running
    any more (Gradio dropped it after a cancel)."""
    for job in list(queue.active_jobs):
        for event in job or ():
            if getattr(event, "_id", None) == event_id:
                return bool(getattr(event, "alive", True))
    return None


class RequestGuard:
    """The running request's deadline and client; :meth:`check` stops the request when either has run out.

    Args:
        what (str): what the request does, for messages ("Generation", "Processing").
        time_limit (float | None): seconds the request may run from now; ``None``: no limit.
    """

    def __init__(self, what: str, time_limit: Optional[float]) -> None:
        self.what = what
        self.time_limit = time_limit
        self.start = time.monotonic()
        self.deadline = None if time_limit is None else self.start + float(time_limit)
        self.queue, self.event_id = _gradio_event()
        self.tracked = self.queue is not None and _event_alive(self.queue, self.event_id) is not None
        self.done: Optional[int] = None
        self.total: Optional[int] = None
        self._next_poll = self.start

    def gone_reason(self) -> Optional[str]:
        """Why nobody waits for this request any more ("its client went away": disconnected or cancelled; "the
        server is stopping"), or ``None`` while its client is there (and outside a queued Gradio event)."""
        if not self.tracked:
            return None
        if getattr(self.queue, "stopped", False):
            return "the server is stopping"
        return None if _event_alive(self.queue, self.event_id) is True else "its client went away"

    def check(self, done: Optional[int] = None, total: Optional[int] = None) -> None:
        """Raise :class:`RequestCancelled` when nobody waits for the request any more, ``gr.Error`` past the
        time limit. ``done`` / ``total`` (steps so far / in all) are remembered for the messages.
        """
        if done is not None:
            self.done, self.total = int(done), None if total is None else int(total)
        now = time.monotonic()
        if self.tracked and now >= self._next_poll:
            self._next_poll = now + _CLIENT_POLL_SECONDS
            reason = self.gone_reason()
            if reason is not None:
                log.warning("%s stopped at %.1f s%s: %s", self.what, now - self.start, self._progress_text(), reason)
                raise RequestCancelled(f"{self.what} was cancelled: {reason}")
        if self.deadline is not None and now > self.deadline:
            log.warning("%s stopped at the time limit of %g s%s", self.what, self.time_limit, self._progress_text())
            raise gr.Error(f"{self.what} was stopped: it ran past this server's time limit of {self.time_limit:g} s "
                           f"per request (--request-time-limit){self._progress_text()}. Try fewer steps or a shorter "
                           "length.")

    def _progress_text(self) -> str:
        if self.done is None:
            return ""
        return f" after {self.done} of {self.total} steps" if self.total else f" after {self.done} steps"


def current_guard() -> Optional[RequestGuard]:
    """The :class:`RequestGuard` of the request running in this thread (``None`` outside a request)."""
    return getattr(_local, "guard", None)


def _check_current(module: nn.Module, args: Any) -> None:
    guard = current_guard()
    if guard is not None:
        guard.check()


class RequestGate:
    """Runs requests of one model under :class:`DemoLimits`.

    Args:
        limits (DemoLimits | None, default None): the limits (``None``: ``DemoLimits()``).
        model (nn.Module | None, default None): gets a forward pre-hook on each top-level sub-module that checks
            the running request's guard, so that work without a step callback (the network of a diffusion
            autoencoder's decoder at every step, the conditioners, an autoencoder's encoder and decoder) stops
            too. The hooks do nothing outside a request.
    """

    def __init__(self, limits: Optional[DemoLimits] = None, model: Optional[nn.Module] = None) -> None:
        self.limits = limits or DemoLimits()
        self._slots = threading.BoundedSemaphore(self.limits.concurrency)
        if model is not None:
            for child in model.children():
                if child not in _HOOKED:
                    child.register_forward_pre_hook(_check_current)
                    _HOOKED.add(child)

    @contextmanager
    def request(self, what: str = "Generation") -> Iterator[RequestGuard]:
        """Wait for a free slot (giving up when the client leaves meanwhile), then run the body with a fresh
        :class:`RequestGuard` whose time limit starts now; it is also what the model's hooks check."""
        waiting = RequestGuard(what, None)
        while not self._slots.acquire(timeout=_CLIENT_POLL_SECONDS):
            waiting.check()
        try:
            guard = RequestGuard(what, self.limits.time_limit)
            previous, _local.guard = current_guard(), guard
            try:
                yield guard
            finally:
                _local.guard = previous
        finally:
            self._slots.release()
