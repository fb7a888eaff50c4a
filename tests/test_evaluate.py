"""evaluate.py: scoring two folders (as a subprocess), generating from a tiny diffusion model then scoring,
and its error messages."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file

from conftest import ROOT
from tiny_audio_models import make_tiny_clap

SR = 16000


def _load_evaluate():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate = _load_evaluate()


def _folder(path, freqs, sr=SR, seconds=2.0, noise=0.01, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    for i, f in enumerate(freqs):
        wave = 0.5 * np.sin(2 * np.pi * f * t) + noise * rng.standard_normal(t.size)
        soundfile.write(str(path / f"{i:04d}.wav"), wave.astype(np.float32), sr)
    return path


@pytest.mark.slow
def test_evaluate_two_folders_subprocess(tmp_path):
    generated = _folder(tmp_path / "gen", [220, 330, 440], noise=0.05, seed=1)
    reference = _folder(tmp_path / "ref", [220, 330, 440])
    out = tmp_path / "report" / "eval.json"
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--generated", str(generated), "--reference",
                           str(reference), "--metrics", "fd,si_sdr,mrstft,mel", "--embedder", "logmel", "--option",
                           "logmel.n_mels=32", "--output-json", str(out), "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["metric", "value", "better"]
    assert [line.split()[0] for line in lines[2:6]] == ["fd", "si_sdr", "mrstft", "mel"]
    report = json.loads(out.read_text())
    results, settings = report["results"], report["settings"]
    assert results["fd"]["dim"] == 64 and results["fd"]["generated_embeddings"] == 9  # 3 files x 3 windows
    assert results["si_sdr"]["pairs"] == 3 and 5 < results["si_sdr"]["value"] < 30
    assert settings["config"]["options"] == {"logmel": {"n_mels": 32}}
    assert settings["config"]["convention"] == "sam"
    assert settings["embedders"]["logmel"]["preprocessing"]["peak_db"] == -1.0
    assert settings["generated"] == {"origin": str(generated), "items": 3, "sample_rates": [SR]}
    assert "--embedder" in settings["command"] and settings["versions"]["torch"] == torch.__version__


def _run(args, capsys):
    code = evaluate.run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    ref = _folder(tmp_path / "ref", [220, 440])
    code, _, err = _run(["--generated", empty, "--reference", ref, "--metrics", "fd", "--embedder", "logmel"], capsys)
    assert code == 2 and "--generated" in err and "no audio files" in err
    other_rate = _folder(tmp_path / "gen22", [220, 440], sr=22050)
    code, _, err = _run(["--generated", other_rate, "--reference", ref, "--metrics", "fd", "--embedder", "logmel",
                         "--no-progress"], capsys)
    assert code == 2 and "different sample rates" in err and "--allow-mixed-sample-rates" in err
    code, _, err = _run(["--generated", ref, "--metrics", "clap", "--prompts", tmp_path / "none.txt"], capsys)
    assert code == 2 and "--prompts" in err and "not found" in err
    (tmp_path / "p.txt").write_text("a dog\nsoft piano\n")
    code, _, err = _run(["--generated", ref, "--metrics", "clap", "--prompts", tmp_path / "p.txt", "--option",
                         "clap.model=stable-audio-tools-tests/not-cached", "--no-progress"], capsys)
    assert code == 2 and "huggingface-cli download stable-audio-tools-tests/not-cached" in err
    code, _, err = _run(["--metrics", "fd"], capsys)
    assert code == 2 and "--generated DIR is required" in err
    code, _, err = _run(["--generated", ref, "--metrics", "fd,bogus"], capsys)
    assert code == 2 and "unknown metric(s) bogus" in err
    code, _, err = _run(["--generated", ref, "--reference", ref, "--metrics", "fd", "--embedder", "nope"], capsys)
    assert code == 2 and "unknown embedder 'nope'" in err
    code, _, err = _run(["--generated", ref, "--model-config", tmp_path / "c.json"], capsys)
    assert code == 2 and "both --model-config and --ckpt-path" in err
    (tmp_path / "ae.json").write_text(json.dumps({"model_type": "autoencoder", "sample_rate": 8000}))
    (tmp_path / "prompts.txt").write_text("x\n")
    code, _, err = _run(["--generated", tmp_path / "new", "--model-config", tmp_path / "ae.json", "--ckpt-path",
                         tmp_path / "none.safetensors", "--prompts", tmp_path / "prompts.txt", "--metrics", "clap"],
                        capsys)
    assert code == 2 and "needs a diffusion_cond model" in err and "'autoencoder'" in err
    with pytest.raises(SystemExit):
        evaluate.run(["--generated", str(ref), "--option", "no-dot"])
    assert "EMBEDDER.KEY=VALUE" in capsys.readouterr().err


def test_list_embedders(capsys):
    code, out, _ = _run(["--list-embedders"], capsys)
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and {"clap", "ast", "logmel", "openl3", "panns", "vggish", "passt"} <= set(names)


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_evaluate_generates_from_a_model_then_scores(tmp_path, capsys):
    from stable_audio_tools.models.factory import create_model_from_config
    from test_diffusion_e2e import text_to_audio_config
    from tiny_t5 import make_tiny_t5

    config = text_to_audio_config(make_tiny_t5(tmp_path / "t5"))  # 8 kHz latent DiT, tiny T5 prompts
    torch.manual_seed(0)
    model = create_model_from_config(config)
    (tmp_path / "model.json").write_text(json.dumps(config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "prompts.txt").write_text("soft piano music\nloud drums and bass\n")
    reference = _folder(tmp_path / "ref", [220, 440], sr=8000)
    clap = make_tiny_clap(tmp_path / "clap")
    args = ["--model-config", tmp_path / "model.json", "--ckpt-path", tmp_path / "model.safetensors",
            "--prompts", tmp_path / "prompts.txt", "--generated", tmp_path / "gen", "--reference", reference,
            "--metrics", "fd,clap", "--embedder", "logmel", "--option", f"clap.model={clap}", "--steps", "2",
            "--seconds", "0.5", "--seed", "7", "--output-json", tmp_path / "report.json", "--no-progress",
            "--device", "cpu"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert written == ["0000.wav", "0001.wav"]
    assert soundfile.info(str(tmp_path / "gen" / "0000.wav")).frames == 4000
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["results"]["clap"]["pairs"] == 2
    assert report["settings"]["generation"]["steps"] == 2 and report["settings"]["generation"]["seed"] == 7
    assert "clap" in out and "fd" in out
    code, _, err = _run(args, capsys)  # the folder now holds the first run's files
    assert code == 2 and "not empty" in err
