"""stable_audio_tools.allocator.tune_malloc: fixed glibc thresholds serve blocks up to 32 MiB from the heap
(docs/benchmarks.md measures what that saves); generation calls it; the opt-outs leave glibc alone. Each case runs
in a fresh process (the thresholds are process-wide; glibc's own depend on the process's history)."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from stable_audio_tools import allocator

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc only")

ROOT = Path(__file__).resolve().parents[1]

# Whether a 20 MiB malloc is served from the heap: glibc maps it afresh (its mmap threshold starts at 128 KiB and
# rises only to blocks the process has freed) unless the threshold is fixed at 32 MiB.
PROBE = """
import ctypes, json
{setup}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(20 << 20)
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
low, high = (int(v, 16) for v in heap[0].split("-"))
print(json.dumps({{"tuned": tuned, "from_heap": low <= block < high}}))
"""

TUNE = "from stable_audio_tools.allocator import tune_malloc\ntuned = tune_malloc()"

GENERATE = """
import torch
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.inference.generation import generate_diffusion_uncond
config = {"model_type": "diffusion_uncond", "sample_size": 256, "sample_rate": 8000, "audio_channels": 1,
          "model": {"type": "dit", "config": {"in_channels": 1, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                              "patch_size": 8}}}
generate_diffusion_uncond(create_model_from_config(config).eval(), steps=2, sample_size=256, seed=0,
                          disable_tqdm=True)
tuned = None  # not asked here: the probe shows whether generation tuned malloc
"""


def _run(setup: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                            allocator.OPT_OUT_ENV)}
    environ.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], env=environ, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_glibc_alone_maps_the_block():
    assert _run("tuned = None")["from_heap"] is False  # the probe sees glibc's own threshold


def test_tune_malloc_serves_the_block_from_the_heap():
    assert _run(TUNE) == {"tuned": True, "from_heap": True}


def test_generation_tunes_malloc():
    assert _run(GENERATE)["from_heap"] is True


@pytest.mark.parametrize("env", [{allocator.OPT_OUT_ENV: "default"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"},
                                 {"MALLOC_MMAP_THRESHOLD_": "1000000"}])
def test_user_choices_are_left_in_charge(env):
    assert _run(TUNE, **env) == {"tuned": False, "from_heap": False}


def test_skip_reasons(monkeypatch):
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", allocator.OPT_OUT_ENV):
        monkeypatch.delenv(name, raising=False)
    assert allocator.malloc_tuning_skipped() is None
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")  # other tunables do not count
    assert allocator.malloc_tuning_skipped() is None
    monkeypatch.setenv(allocator.OPT_OUT_ENV, "Default")
    assert allocator.malloc_tuning_skipped() == "STABLE_AUDIO_MALLOC=default"
    monkeypatch.delenv(allocator.OPT_OUT_ENV)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.malloc_tuning_skipped() == "the C library is not glibc"
