"""bench/bench_compare.py runs end to end (our side only, one round) on a tiny config: its ``ae_train`` row trains the
autoencoder through a real Lightning Trainer in both of our worker processes and reports the steps' own timing."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_autoencoder import tiny_autoencoder_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
def test_ae_train_row_runs_both_of_our_modes(tmp_path):
    config = tmp_path / "tiny_ae.json"
    config.write_text(json.dumps(tiny_autoencoder_config(use_ema=True)))
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_compare.py"), "--rows", "ae_train",
                             "--repeats", "1", "--ae-config", str(config)],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| VAE (32 ch) training step"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "n/a"  # no upstream given
    exact, bf16 = float(cells[2]), float(cells[4])
    assert 0 < exact < 60 and 0 < bf16 < 60
    assert "upstream not given" in result.stdout


def test_measured_timing_replaces_the_wall_time():
    from compare_worker import Measured, Worker

    worker = Worker("ours", None)

    class Suite:
        def rows(self):
            return {"ae_train": lambda mode: Measured(0.25)}

    worker.suites["ae"] = Suite()
    assert worker.time("ae_train", "exact") == 0.25


def test_unknown_row_is_refused():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_compare.py"), "--rows", "ae_trian"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert re.search(r"unknown --rows ae_trian; choose from .*ae_train", result.stderr)
