"""The tiny example configs and the tutorial (``docs/tutorial.md``), run as documented.

The slow tests run the tutorial's own ``bash`` and ``python`` blocks, section by section, in a scratch directory
that looks like the repository root (the root scripts, ``defaults.ini``, ``scripts/`` and ``stable_audio_tools/``
are linked into it), with fewer steps (``--max-steps 2``, sampler ``steps=2``...), then check what they wrote:
checkpoints, unwrapped models, latents with prompts, and finite, non-silent audio from every model type; the text
model is also served by ``run_gradio.py``. The fast tests check the configs build and fit together, the README's
quick start, the toy prompts and ``run_gradio.py`` without gradio.
"""
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stable_audio_tools.models.factory import create_model_from_config

from conftest import ROOT

TUTORIAL = ROOT / "docs" / "tutorial.md"
TINY = ROOT / "stable_audio_tools" / "configs" / "model_configs" / "tiny"
DATASETS = ROOT / "stable_audio_tools" / "configs" / "dataset_configs"
LINKED = ("train.py", "unwrap_model.py", "pre_encode.py", "run_gradio.py", "generate.py", "defaults.ini", "scripts",
          "stable_audio_tools")
FEWER_STEPS = ((r"--max-steps \d+", "--max-steps 2"), (r"--checkpoint-every \d+", "--checkpoint-every 2"),
               (r"--num-workers \d+", "--num-workers 0"), (r"\bsteps=\d+", "steps=2"), (r"--steps \d+", "--steps 2"),
               (r"max_gen_len=\d+", "max_gen_len=8"))


def code_blocks(markdown):
    """``{section heading: [(language, code), ...]}`` of the fenced bash/python blocks under each ##/### heading."""
    sections, heading, language, lines = {}, None, None, []
    for line in markdown.splitlines():
        if language is None and re.match(r"#{2,3} ", line):
            heading = line.lstrip("#").strip()
            sections[heading] = []
        elif language is None and line in ("```bash", "```python"):
            language, lines = line[3:], []
        elif language is not None and line == "```":
            sections[heading].append((language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    return sections


def commands(code):
    """The shell commands of a bash block, continuation lines joined, whitespace normalised."""
    return [" ".join(command.split()) for command in code.replace("\\\n", " ").splitlines() if command.strip()]


def fewer_steps(code):
    for pattern, replacement in FEWER_STEPS:
        code = re.sub(pattern, replacement, code)
    return code


def written_audio(code):
    return re.findall(r'sf\.write\("([^"]+\.wav)"', code)


def check_audio(path, sample_rate=16000):
    audio, rate = sf.read(str(path))
    assert rate == sample_rate and audio.shape[0] > 0, path
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0, f"{path} is silent or not finite"
    return audio


class Tutorial:
    """Runs the tutorial's sections (each once) in ``root``."""

    def __init__(self, root):
        self.root = Path(root)
        self.sections = code_blocks(TUTORIAL.read_text(encoding="utf-8"))
        self.done = set()
        for name in LINKED:
            (self.root / name).symlink_to(ROOT / name)
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", HF_HUB_OFFLINE="1",
                        TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")

    def section(self, prefix):
        matches = [heading for heading in self.sections if heading.startswith(prefix)]
        assert len(matches) == 1, f"tutorial section {prefix!r}: found {matches}"
        return matches[0]

    def run(self, prefix):
        """Run the blocks of the section whose heading starts with ``prefix``; return the audio files written."""
        heading = self.section(prefix)
        if heading in self.done:
            return []
        outputs = []
        for language, code in self.sections[heading]:
            code = fewer_steps(code)
            if language == "bash":
                code = re.sub(r"^python ", f"'{sys.executable}' ", code, flags=re.M)
                argv = ["bash", "-euo", "pipefail", "-c", code]
            else:
                argv = [sys.executable, "-c", code]
                outputs += written_audio(code)
            proc = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{heading}:\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        self.done.add(heading)
        return [self.root / name for name in outputs]


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    return Tutorial(tmp_path_factory.mktemp("tutorial"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gradio_config(tutorial, *args):
    """Start ``run_gradio.py ARGS`` in the tutorial directory, return the page's ``/config`` JSON, stop it."""
    port = free_port()
    log_path = tutorial.root / "run_gradio.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "run_gradio.py", *args, "--server-name", "127.0.0.1", "--port",
                                 str(port)], cwd=tutorial.root, env=tutorial.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"run_gradio.py did not serve:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ slow: the tutorial
@pytest.mark.slow
def test_tutorial_autoencoder_pre_encode_text_dit_generate_and_gradio(tutorial):
    root = tutorial.root
    tutorial.run("2.")
    assert len(list((root / "toy_data").glob("*.wav"))) == 32
    (reconstruction,) = tutorial.run("3.")
    assert {p.name for p in (root / "tiny_models" / "vae").iterdir()} == {"model.safetensors", "model_config.json"}
    assert len(check_audio(reconstruction)) == 32000  # 2 s at 16 kHz

    tutorial.run("4.")
    latents = sorted((root / "toy_latents" / "0").glob("*.npy"))
    assert len(latents) == 32 and np.load(latents[0]).shape == (8, 512)
    prompts = {json.loads(p.with_suffix(".json").read_text())["prompt"] for p in latents}
    assert prompts <= {"a steady harmonic tone", "a sine chirp sweeping in pitch", "pulsing bursts of noise"}

    tutorial.run("5.")
    tutorial.run("6.")
    (generated,) = tutorial.run("7.")
    assert len(check_audio(generated)) == json.loads((TINY / "dit_text_cond.json").read_text())["sample_size"]
    from_script = root / "generated" / "a_sine_chirp_sweeping_in_pitch_seed0.wav"  # generate.py, 1 s
    assert len(check_audio(from_script)) == 16000 and from_script.with_suffix(".json").is_file()

    (gradio_command,) = commands(tutorial.sections[tutorial.section("8.")][0][1])
    assert gradio_command == "python run_gradio.py --pretrained-name tiny_models/dit_text_cond"
    config = gradio_config(tutorial, "--pretrained-name", "tiny_models/dit_text_cond")
    labels = {component.get("props", {}).get("label") for component in config["components"]}
    assert {"Prompt", "Negative prompt", "Seconds total", "Steps", "Output audio"} <= labels


@pytest.mark.slow
@pytest.mark.parametrize("section, needs, name", [
    ("Unconditional diffusion", [], "dit_uncond"),
    ("Inpainting", ["3."], "dit_inpaint"),
    ("Diffusion autoencoder", [], "diffusion_autoencoder"),
    ("Audio language model", [], "lm"),
])
def test_tutorial_other_model_types(tutorial, section, needs, name):
    for prerequisite in ["2.", *needs]:
        tutorial.run(prerequisite)
    outputs = tutorial.run(section)
    assert outputs
    for path in outputs:
        check_audio(path)
    unwrapped = tutorial.root / "tiny_models" / name
    assert json.loads((unwrapped / "model_config.json").read_text()) == json.loads((TINY / f"{name}.json").read_text())
    from stable_audio_tools.interface.gradio import create_ui  # "each also opens in run_gradio.py"

    ui = create_ui(pretrained_name=str(unwrapped), device="cpu")
    assert any(getattr(block, "elem_id", None) in ("generate-button", "process-button") for block in ui.blocks.values())
    ui.close()


@pytest.mark.slow
def test_root_scripts_import_with_only_the_declared_dependencies():
    """After ``pip install -e .`` the root scripts and what they import lazily load (gradio included)."""
    modules = ["train", "unwrap_model", "pre_encode", "run_gradio", "generate", "evaluate", "stable_audio_tools.metrics",
               "stable_audio_tools.models.adapters", "stable_audio_tools.interface.gradio",
               "stable_audio_tools.training", "stable_audio_tools.training.pre_encode",
               "stable_audio_tools.training.unwrap", "stable_audio_tools.data.dataset",
               "stable_audio_tools.models.factory", "stable_audio_tools.models.lm",
               "stable_audio_tools.inference.generation", "pytorch_lightning.loggers", "transformers.models.t5"]
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "declared_deps_only.py"), str(ROOT), *modules],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


# ------------------------------------------------------------------------------------------ fast checks
def tiny_configs():
    return {path.stem: json.loads(path.read_text()) for path in sorted(TINY.glob("*.json"))}


def test_every_model_type_has_a_tiny_config_in_the_tutorial():
    configs = tiny_configs()
    assert {config["model_type"] for config in configs.values()} == {
        "autoencoder", "diffusion_cond", "diffusion_cond_inpaint", "diffusion_uncond", "diffusion_autoencoder", "lm"}
    text_model = configs["dit_text_cond"]["model"]["conditioning"]["configs"]
    assert [c["type"] for c in text_model] == ["t5", "number", "number"]
    trained = " ".join(" ".join(commands(code)) for blocks in code_blocks(TUTORIAL.read_text()).values()
                       for language, code in blocks if language == "bash")
    for name in configs:
        assert f"--model-config stable_audio_tools/configs/model_configs/tiny/{name}.json" in trained, name


def test_tiny_configs_build_with_their_training_wrappers(tmp_path, monkeypatch):
    from stable_audio_tools.training import create_training_wrapper_from_config

    from tiny_t5 import make_tiny_t5

    monkeypatch.chdir(tmp_path)  # the text config names its T5 by the relative path "tiny_t5"
    make_tiny_t5(tmp_path / "tiny_t5")
    for name, config in tiny_configs().items():
        model = create_model_from_config(config)
        wrapper = create_training_wrapper_from_config(config, model)
        assert sum(p.numel() for p in wrapper.parameters()) < 2_000_000, name


def test_latent_configs_use_the_trained_autoencoders_and_fit_the_latents():
    configs = tiny_configs()
    for name in ("dit_text_cond", "dit_inpaint"):  # --pretransform-ckpt-path loads the VAE strictly
        assert configs[name]["model"]["pretransform"]["config"] == configs["vae"]["model"], name
        assert configs[name]["sample_rate"] == configs["vae"]["sample_rate"]
    assert configs["lm"]["model"]["pretransform"]["config"] == configs["rvq_autoencoder"]["model"]
    latents = json.loads((DATASETS / "toy_latents.json").read_text())
    ratio = configs["vae"]["model"]["downsampling_ratio"]
    assert latents["latent_crop_length"] * ratio == configs["dit_text_cond"]["sample_size"]
    assert configs["dit_text_cond"]["training"]["pre_encoded"] is True
    dataset = json.loads((DATASETS / "toy_dataset.json").read_text())
    module = Path(dataset["datasets"][0]["custom_metadata_module"])
    assert (ROOT / module).is_file() and dataset["datasets"][0]["path"] == "toy_data"


def test_toy_prompts_come_from_the_file_names():
    spec = importlib.util.spec_from_file_location(
        "toy_prompts", DATASETS / "custom_metadata" / "toy_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_custom_metadata({"relpath": "0003_tone.wav"}, None) == {"prompt": "a steady harmonic tone"}
    assert module.get_custom_metadata({"relpath": "sub/0001_chirp.wav"}, None)["prompt"].startswith("a sine chirp")
    assert module.get_custom_metadata({"relpath": "my_field_recording.flac"}, None) == {
        "prompt": "my field recording"}


def readme_quick_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return quick_start, [code for _, code in code_blocks("## q\n" + quick_start)["q"]]


def test_readme_quick_start_matches_the_tutorial_and_ci():
    quick_start, blocks = readme_quick_start()
    assert len(blocks) == 2, "the quick start has exactly two commands"
    (train_command,), (test_command,) = commands(blocks[0]), commands(blocks[1])
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert test_command == ci_command
    sections = code_blocks(TUTORIAL.read_text())
    tutorial_commands = commands(sections["2. A toy dataset"][0][1]) + commands(
        sections["3. Train the autoencoder"][0][1])
    for command in tutorial_commands:
        assert command in train_command, command
    assert "https://download.pytorch.org/whl/cpu" in quick_start
    assert re.search(r"about \d+ minutes on 2 idle (CPU )?cores", quick_start)


def test_run_gradio_without_gradio_names_the_install(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("run_gradio_script", ROOT / "run_gradio.py")
    run_gradio = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_gradio)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "gradio" else real_find_spec(name, *args))
    with pytest.raises(SystemExit) as exit_info:
        run_gradio.main(["--pretrained-name", "tiny_models/dit_text_cond"])
    assert exit_info.value.code != 0 and "pip install -e ." in str(exit_info.value.code)
    assert "gradio" in str(exit_info.value.code)
