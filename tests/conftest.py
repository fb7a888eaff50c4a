"""Shared test setup: offline environment, fixture paths."""
import os
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def deny_reading(monkeypatch, path) -> None:
    """Make the audio loader's ``open(path)`` fail with EACCES, as for a chmod 000 file for a normal user (chmod
    does not stop root, which the tests may run as)."""
    from stable_audio_tools import audio as audio_module

    real_open = open

    def guarded_open(p, *args, **kwargs):
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(audio_module, "open", guarded_open, raising=False)


def _cpu_bf16_problem():
    from stable_audio_tools.inference.precision import cpu_bf16_problem

    return cpu_bf16_problem()


#: skips a test that runs bf16 kernels on the CPU where this CPU / torch build cannot (fast mode then refuses
#: with a clear error, which tests/test_fast_mode.py checks)
needs_cpu_bf16 = pytest.mark.skipif(_cpu_bf16_problem() is not None,
                                    reason=f"bf16 kernels do not run here: {_cpu_bf16_problem()}")
