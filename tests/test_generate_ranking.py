"""generate.py --rank-by-clap: candidates ranked by CLAP score with a tiny CLAP model saved locally."""
import importlib.util
import json

import pytest

from conftest import ROOT
from test_generate_cli import cond_config, save_model


def load_script():
    spec = importlib.util.spec_from_file_location("generate_script", ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_audio_models import make_tiny_clap
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("ranking")
    return {"model": save_model(root / "cond", cond_config(make_tiny_t5(root / "t5"))),
            "clap": make_tiny_clap(root / "clap")}


def test_candidates_are_ranked_and_sidecars_record_scores(setup, tmp_path, capsys):
    out = tmp_path / "out"
    load_script().main(["--pretrained-name", str(setup["model"]), "--prompt", "solo piano melody", "--seconds",
                        "0.2", "--steps", "2", "--seed", "5", "--num-candidates", "3", "--output-dir", str(out),
                        "--rank-by-clap", setup["clap"]])
    report = json.loads((out / "clap_ranking.json").read_text())
    rows = report["ranking"]["solo piano melody"]
    assert [r["clap_rank"] for r in rows] == [1, 2, 3]
    scores = [r["clap_score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for r in rows:
        sidecar = json.loads((out / r["file"]).with_suffix(".json").read_text())
        assert sidecar["clap_rank"] == r["clap_rank"] and sidecar["clap_score"] == pytest.approx(r["clap_score"])
    assert "ranking written to" in capsys.readouterr().out


def test_a_missing_clap_model_fails_before_generating(setup, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        load_script().main(["--pretrained-name", str(setup["model"]), "--prompt", "x", "--seconds", "0.2",
                            "--output-dir", str(out), "--rank-by-clap", str(tmp_path / "no_such_clap")])
    assert "--rank-by-clap" in str(e.value) and not out.exists()
