"""keep_freed_memory (stable_audio_tools.allocator): after it, a large block freed and allocated again is served
from the heap without fresh page faults (glibc's default maps and faults it again); the scripts call it at start
unless --release-memory is given. Runs in subprocesses (the setting is process-wide)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

PROBE = r"""
import json, resource, sys
import torch
from stable_audio_tools.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, above glibc's largest mmap threshold; freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_allocation()
print(json.dumps({"kept": kept, "faults": min(faults_of_one_allocation() for _ in range(3))}))
"""


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_large_blocks_are_reused_without_page_faults():
    kept, default = _probe("keep"), _probe("default")
    if not kept["kept"]:
        pytest.skip("the C library is not glibc")
    assert default["faults"] > 10_000  # 64 MiB in 4 KiB pages, mapped afresh every time
    assert kept["faults"] < 1_000


@pytest.mark.parametrize("flags, called", [([], True), (["--release-memory"], False)])
def test_generate_keeps_freed_memory_unless_release_memory(monkeypatch, flags, called):
    from stable_audio_tools.inference import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):  # stops at the missing model, after the allocator choice
        cli.main(["--model-config", "missing.json", "--ckpt-path", "missing.ckpt", *flags])
    assert bool(calls) == called
