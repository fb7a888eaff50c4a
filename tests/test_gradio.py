"""Gradio demo, server side: model loading (config + checkpoint, local pretrained directory, pretransform override,
mismatched checkpoints, half precision), device selection, the UI for every model type, and the generate/process
handlers called directly with tiny test-made models (output length, progress, previews, errors shown as gr.Error).

The model builders and the server helpers (:func:`serve`, :func:`run_gradio_server`) here are shared with
``test_gradio_browser.py`` and ``test_gradio_limits.py``.
"""
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[gradio]')")

from safetensors.torch import save_file  # noqa: E402

from stable_audio_tools.interface import gradio as demo  # noqa: E402
from stable_audio_tools.interface.interfaces import common  # noqa: E402
from stable_audio_tools.interface.interfaces.autoencoder import AutoencoderInterface  # noqa: E402
from stable_audio_tools.interface.interfaces.diffusion_cond import DiffusionCondInterface  # noqa: E402
from stable_audio_tools.interface.interfaces.diffusion_uncond import DiffusionUncondInterface  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402

from conftest import FIXTURES, ROOT  # noqa: E402

SR = 8000
SAMPLE_SIZE = 8192  # 1.024 s
AE_MODEL = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                               "latent_dim": 8, "use_snake": True}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                               "latent_dim": 4, "use_snake": True, "final_tanh": False}},
    "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 1,
}
DIT = {"io_channels": 4, "embed_dim": 64, "depth": 1, "num_heads": 2, "cond_token_dim": 16, "global_cond_dim": 32,
       "transformer_type": "continuous_transformer"}
NUMBER = {"min_val": 0, "max_val": 512}


def autoencoder_config():
    return {"model_type": "autoencoder", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
            "model": AE_MODEL}


def cond_config(t5_path):
    """Text (tiny T5) and timing conditioned latent DiT, v objective."""
    return {
        "model_type": "diffusion_cond", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": AE_MODEL, "scale": 0.5},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": t5_path, "max_length": 8}},
                {"id": "seconds_start", "type": "number", "config": NUMBER},
                {"id": "seconds_total", "type": "number", "config": NUMBER}]},
            "diffusion": {"type": "dit", "diffusion_objective": "v",
                          "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"], "config": DIT},
            "io_channels": 4,
        },
    }


def inpaint_config():
    """Timing-conditioned rectified-flow inpainting DiT (number conditioners only)."""
    return {
        "model_type": "diffusion_cond_inpaint", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": AE_MODEL},
            "conditioning": {"cond_dim": 16, "configs": [
                {"id": "seconds_start", "type": "number", "config": NUMBER},
                {"id": "seconds_total", "type": "number", "config": NUMBER}]},
            "diffusion": {"type": "dit", "diffusion_objective": "rectified_flow",
                          "cross_attention_cond_ids": ["seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"],
                          "input_concat_ids": ["inpaint_mask", "inpaint_masked_input"],
                          "config": {**DIT, "input_concat_dim": 5}},
            "io_channels": 4,
        },
    }


def uncond_config():
    return {"model_type": "diffusion_uncond", "sample_size": SAMPLE_SIZE, "sample_rate": SR, "audio_channels": 1,
            "model": {"type": "dit", "config": {"in_channels": 1, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                                "patch_size": 8}}}


def lm_config():
    """Delay-pattern LM over a tiny DAC-RVQ autoencoder (8 kHz, 8 samples per code frame), timing-conditioned."""
    autoencoder = {**AE_MODEL, "bottleneck": {"type": "dac_rvq", "config": {
        "input_dim": 4, "n_codebooks": 2, "codebook_size": 16, "codebook_dim": 4}}}
    autoencoder["encoder"] = {**AE_MODEL["encoder"], "config": {**AE_MODEL["encoder"]["config"], "latent_dim": 4}}
    return {
        "model_type": "lm", "sample_size": 2048, "sample_rate": SR, "audio_channels": 1,
        "model": {
            "pretransform": {"type": "autoencoder", "config": autoencoder},
            "conditioning": {"cond_dim": 32, "configs": [{"id": "seconds_total", "type": "number",
                                                          "config": NUMBER}]},
            "lm": {"codebook_pattern": "delay", "type": "continuous_transformer",
                   "cross_attention_cond_ids": ["seconds_total"],
                   "config": {"embed_dim": 32, "depth": 1, "dim_heads": 32, "cross_attn_cond_dim": 32}},
        },
    }


def lm_available():
    return importlib.util.find_spec("stable_audio_tools.models.lm") is not None


def dac_rvq_config():
    return json.loads((FIXTURES / "golden" / "dac_rvq" / "model_config.json").read_text())


def save_model(directory, name, config, seed=0):
    """Build ``config`` with seeded random weights, write ``<name>.json`` + ``<name>.safetensors``; return paths."""
    torch.manual_seed(seed)
    model = create_model_from_config(config)
    directory = Path(directory)
    config_path, ckpt_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    config_path.write_text(json.dumps(config))
    save_file(model.state_dict(), str(ckpt_path))
    return config_path, ckpt_path


def save_pretrained_dir(directory, config, seed=0):
    """A local "pretrained" directory: model_config.json + model.safetensors."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    save_file(create_model_from_config(config).state_dict(), str(directory / "model.safetensors"))
    (directory / "model_config.json").write_text(json.dumps(config))
    return directory


def write_tone(path, seconds, sample_rate, channels=1, freq=330.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([tone] * channels, axis=1), sample_rate)
    return str(path)


def frames(path):
    return sf.info(path).frames


def public_api_names(ui):
    """Names of the API endpoints a client can call (Gradio 6: api_visibility; Gradio 5: show_api)."""
    return [f.api_name for f in ui.fns.values()
            if getattr(f, "api_visibility", "public" if getattr(f, "show_api", True) else "private") == "public"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(ui):
    """Serve a Blocks app on 127.0.0.1 in a background thread; yields its URL."""
    port = free_port()
    demo.launch_ui(ui, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        ui.close()


@contextmanager
def run_gradio_server(args, log_path, env=None, stop_signal=signal.SIGINT):
    """Run ``run_gradio.py <args>`` on a free port of 127.0.0.1 (output to ``log_path``) until the server accepts
    connections; yields ``(process, url)``; stops it with ``stop_signal`` (Ctrl+C by default) at the end."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **(env or {}))
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run_gradio.py"), *map(str, args), "--server-name",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"run_gradio.py did not start:\n{Path(log_path).read_text()[-4000:]}")
                time.sleep(0.25)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Progress:
    """Stands in for gr.Progress: records every update."""

    def __init__(self):
        self.updates = []

    def __call__(self, value, desc=None, **_):
        self.updates.append((value, desc))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("gradio")
    return {"root": root, "t5": make_tiny_t5(root / "tiny_t5")}


@pytest.fixture(scope="module")
def cond(workspace):
    config = cond_config(workspace["t5"])
    torch.manual_seed(0)
    model = create_model_from_config(config).eval().requires_grad_(False)
    return DiffusionCondInterface(model, config, writer=common.OutputWriter(workspace["root"] / "out_cond"))


# ----------------------------------------------------------------------------------------------- loading
def test_load_model_config_and_checkpoint(tmp_path):
    config_path, ckpt_path = save_model(tmp_path, "ae", autoencoder_config())
    model, config = demo.load_model(json.loads(config_path.read_text()), ckpt_path, device="cpu")
    from safetensors.torch import load_file

    saved = load_file(str(ckpt_path))
    assert config["model_type"] == "autoencoder"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32


def test_model_half_is_optional_and_cuda_only(tmp_path, caplog):
    run_gradio = _load_run_gradio()
    args = run_gradio.build_parser().parse_args(["--pretrained-name", "x"])
    assert args.model_half is False
    assert run_gradio.build_parser().parse_args(["--pretrained-name", "x", "--model-half"]).model_half is True
    config_path, ckpt_path = save_model(tmp_path, "ae", autoencoder_config())
    with caplog.at_level(logging.WARNING):
        model, _ = demo.load_model(json.loads(config_path.read_text()), ckpt_path, device="cpu", model_half=True)
    assert next(model.parameters()).dtype == torch.float32
    assert "only used on CUDA" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_half_on_cuda(tmp_path):
    config_path, ckpt_path = save_model(tmp_path, "uncond", uncond_config())
    model, config = demo.load_model(json.loads(config_path.read_text()), ckpt_path, device="cuda", model_half=True)
    assert next(model.parameters()).dtype == torch.float16
    path, _ = DiffusionUncondInterface(model, config).generate(steps=2, seed=1, progress=None)
    assert frames(path) == SAMPLE_SIZE


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    config = autoencoder_config()
    other = json.loads(json.dumps(config))
    other["model"]["encoder"]["config"]["channels"] = 8
    _, wrong_ckpt = save_model(tmp_path, "wide", other)
    with pytest.raises(demo.CheckpointMismatchError) as err:
        demo.load_model(config, wrong_ckpt, device="cpu")
    message = str(err.value)
    assert "another shape" in message and "encoder.layers.0.weight_v" in message and str(wrong_ckpt) in message

    _, ckpt = save_model(tmp_path, "ae", config)
    from safetensors.torch import load_file

    state = load_file(str(ckpt))
    dropped = sorted(state)[0]
    state.pop(dropped)
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "edited.safetensors"))
    with pytest.raises(demo.CheckpointMismatchError) as err:
        demo.load_model(config, tmp_path / "edited.safetensors", device="cpu")
    assert f"missing from the checkpoint: {dropped}" in str(err.value)
    assert "unknown to the model: extra.weight" in str(err.value)


def test_pretransform_checkpoint_replaces_pretransform_weights(tmp_path):
    config = inpaint_config()
    _, full_ckpt = save_model(tmp_path, "inpaint", config)
    from safetensors.torch import load_file

    without_pretransform = {k: v for k, v in load_file(str(full_ckpt)).items() if not k.startswith("pretransform.")}
    save_file(without_pretransform, str(tmp_path / "dit_only.safetensors"))
    _, ae_ckpt = save_model(tmp_path, "ae", autoencoder_config(), seed=5)
    with pytest.raises(demo.CheckpointMismatchError, match="missing from the checkpoint: pretransform"):
        demo.load_model(config, tmp_path / "dit_only.safetensors", device="cpu")
    model, _ = demo.load_model(config, tmp_path / "dit_only.safetensors", pretransform_ckpt_path=ae_ckpt,
                               device="cpu")
    ae_state = load_file(str(ae_ckpt))
    assert all(torch.equal(model.pretransform.model.state_dict()[k], v) for k, v in ae_state.items())
    with pytest.raises(ValueError, match="no pretransform"):
        demo.load_model(autoencoder_config(), save_model(tmp_path, "ae2", autoencoder_config())[1],
                        pretransform_ckpt_path=ae_ckpt, device="cpu")


def test_pretrained_name_accepts_a_local_directory(tmp_path):
    directory = save_pretrained_dir(tmp_path / "my-uncond", uncond_config(), seed=3)
    model, config = demo.load_model(pretrained_name=str(directory), device="cpu")
    assert config == uncond_config()
    ui = demo.create_ui(pretrained_name=str(directory), gradio_title="Local")
    assert public_api_names(ui) == ["generate"]


def test_create_ui_needs_exactly_one_model_source(tmp_path):
    with pytest.raises(ValueError, match="either"):
        demo.create_ui()
    with pytest.raises(ValueError, match="either"):
        demo.create_ui(model_config_path="a.json", ckpt_path="b.ckpt", pretrained_name="x")
    with pytest.raises(ValueError, match="needs --ckpt-path"):
        demo.create_ui(model_config_path="a.json")
    with pytest.raises(ValueError, match="needs --model-config"):
        demo.create_ui(ckpt_path="b.ckpt")


def test_select_device():
    assert demo.select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        demo.select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            demo.select_device("cuda")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert demo.select_device().type == expected
    assert demo.select_device("auto").type == expected  # generate.py's --device auto


def _load_run_gradio():
    spec = importlib.util.spec_from_file_location("run_gradio", ROOT / "run_gradio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_gradio_reports_load_errors_without_a_traceback(tmp_path, capsys):
    run_gradio = _load_run_gradio()
    config = autoencoder_config()
    other = json.loads(json.dumps(config))
    other["model"]["latent_dim"] = 2
    other["model"]["encoder"]["config"]["latent_dim"] = 4
    other["model"]["decoder"]["config"]["latent_dim"] = 2
    config_path, _ = save_model(tmp_path, "ae", config)
    _, wrong = save_model(tmp_path, "narrow", other)
    with pytest.raises(SystemExit) as exit_info:
        run_gradio.main(["--model-config", str(config_path), "--ckpt-path", str(wrong)])
    assert "does not fit the model config" in str(exit_info.value.code)
    assert "decoder.layers.0.weight_v" in str(exit_info.value.code)
    for argv, message in ((["--model-config", str(config_path)], "needs --ckpt-path"),
                          ([], "give --pretrained-name"),
                          (["--pretrained-name", "x", "--username", "u"], "go together")):
        with pytest.raises(SystemExit):
            run_gradio.main(argv)
        assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- UIs
def test_every_model_type_gets_its_ui(tmp_path, workspace):
    cases = {"autoencoder": (autoencoder_config(), "process", "# quantizers"),
             "diffusion_cond": (cond_config(workspace["t5"]), "generate", "Seconds total"),
             "diffusion_cond_inpaint": (inpaint_config(), "generate", "Mask Start (sec)"),
             "diffusion_uncond": (uncond_config(), "generate", "Sampler type")}
    for model_type, (config, api_name, label) in cases.items():
        model = create_model_from_config(config).eval()
        ui = demo.create_ui_for_model(model, config, gradio_title="T")
        labels = {getattr(block, "label", None) for block in ui.blocks.values()}
        assert public_api_names(ui) == [api_name], model_type
        assert {"Output audio", label} <= labels, model_type
    with pytest.raises(ValueError, match="no Gradio interface"):
        demo.create_ui_for_model(model, {"model_type": "nope"})


def test_every_input_has_an_accessible_label(workspace):
    """Screen readers (and Playwright's get_by_label) name controls by their label: none may lack one, also where
    the label is not shown (the prompt boxes)."""
    configs = [autoencoder_config(), cond_config(workspace["t5"]), inpaint_config(), uncond_config()]
    if lm_available():
        configs.append(lm_config())
    unlabelled_types = (gr.Button, gr.Markdown, gr.HTML, gr.State)
    for config in configs:
        ui = demo.create_ui_for_model(create_model_from_config(config).eval(), config)
        controls = [block for block in ui.blocks.values()
                    if isinstance(block, gr.components.Component) and not isinstance(block, unlabelled_types)]
        assert len(controls) >= 4, config["model_type"]
        unlabelled = [f"{type(block).__name__}#{block.elem_id}" for block in controls
                      if not (isinstance(block.label, str) and block.label.strip())]
        assert not unlabelled, f"{config['model_type']}: controls without a label: {unlabelled}"
    prompts = [block for block in demo.create_ui_for_model(create_model_from_config(configs[1]).eval(),
                                                           configs[1]).blocks.values()
               if getattr(block, "elem_id", None) in ("prompt", "negative-prompt")]
    assert sorted(block.label for block in prompts) == ["Negative prompt", "Prompt"]


def test_cond_controls_follow_the_objective(cond):
    assert cond.default_steps == 100 and cond.default_sampler == "dpmpp-3m-sde" and cond.prompt_required
    rf = DiffusionCondInterface(create_model_from_config(inpaint_config()), inpaint_config())
    assert rf.sampler_types == ["euler", "rk4", "dpmpp"] and rf.default_steps == 50 and not rf.prompt_required
    assert rf.inpainting and not cond.inpainting


# ----------------------------------------------------------------------------------------------- handlers
def test_cond_generate_cuts_to_seconds_total_and_reports_progress(cond):
    progress = Progress()
    path, images = cond.generate("solo piano melody", seconds_total=0.5, steps=4, seed=7, preview_every=2,
                                 progress=progress)
    assert frames(path) == 4000 and sf.info(path).samplerate == SR
    assert [u for u in progress.updates if u[1] == "Sampling"] == [((i, 4), "Sampling") for i in range(1, 5)]
    assert progress.updates[-1] == ((4, 4), "Decoding")
    assert len(images) == 3 and images[1][1].startswith("Step ") and "logSNR=" in images[1][1]
    again, _ = cond.generate("solo piano melody", seconds_total=0.5, steps=4, seed=7, progress=None)
    assert np.array_equal(sf.read(path)[0], sf.read(again)[0])
    full, _ = cond.generate("solo piano melody", steps=2, seed=7, cut_to_seconds_total=False, progress=None)
    assert frames(full) == SAMPLE_SIZE


def test_cond_generate_file_naming_and_negative_prompt(cond):
    path, _ = cond.generate("piano: soft?", negative_prompt="drums", steps=2, seed=11, cfg_scale=3.0,
                            file_naming="verbose", progress=None)
    assert Path(path).name == "piano- soft-.neg-drums.cfg3.0.11.wav"
    path, _ = cond.generate("piano", steps=2, seed=11, file_naming="prompt", file_format="flac", progress=None)
    assert Path(path).name == "piano.flac" and sf.info(path).format == "FLAC"


def test_cond_generate_errors_are_shown_in_the_ui(cond, tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is not audio")
    cases = [
        (dict(prompt="  "), "Enter a prompt"),
        (dict(prompt="piano", seconds_total=5), "longer than this model generates"),
        (dict(prompt="piano", init_audio=str(bad)), "Init audio could not be read"),
        (dict(prompt="piano", seed="abc"), "Seed must be an integer"),
        (dict(prompt="piano", sampler_type="euler"), "does not fit this 'v' model"),
        (dict(prompt="piano", cfg_interval_min=0.8, cfg_interval_max=0.2), "CFG interval min"),
        (dict(prompt="piano", seconds_total=0), "above 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(gr.Error, match=message):
            cond.generate(steps=2, progress=None, **kwargs)


def test_report_errors_turns_failures_into_messages():
    @common.report_errors
    def broken():
        raise KeyError("boom")

    with pytest.raises(gr.Error, match="KeyError: 'boom'"):
        broken()


def test_cond_init_audio_variation(cond, tmp_path):
    init = write_tone(tmp_path / "init.wav", 0.5, 16000, channels=2)
    path, _ = cond.generate("piano", steps=3, seed=1, init_audio=init, init_noise_level=1.0, progress=None)
    assert frames(path) == SAMPLE_SIZE  # "Seconds total" defaults to the model length
    numpy_value = (SR, (np.ones((3000, 1)) * 1000).astype(np.int16))
    path, _ = cond.generate("piano", steps=2, seed=1, init_audio=numpy_value, seconds_total=0.25, progress=None)
    assert frames(path) == 2000


def test_inpaint_generate_with_mask(tmp_path):
    config = inpaint_config()
    torch.manual_seed(0)
    interface = DiffusionCondInterface(create_model_from_config(config).eval(), config,
                                       writer=common.OutputWriter(tmp_path / "out"))
    source = write_tone(tmp_path / "source.wav", 1.0, SR)
    path, _ = interface.generate("", steps=3, seed=2, seconds_total=0.75, inpaint_audio=source, mask_start=0.25,
                                 mask_end=0.5, progress=None)
    assert frames(path) == 6000
    path, _ = interface.generate("", steps=2, seed=2, progress=None)
    assert frames(path) == SAMPLE_SIZE
    with pytest.raises(gr.Error, match="Mask Start"):
        interface.generate("", steps=2, inpaint_audio=source, mask_start=0.9, mask_end=0.3, progress=None)


def test_uncond_generate(tmp_path):
    config = uncond_config()
    torch.manual_seed(0)
    interface = DiffusionUncondInterface(create_model_from_config(config).eval(), config,
                                         writer=common.OutputWriter(tmp_path / "out"))
    progress = Progress()
    path, images = interface.generate(steps=3, seed=4, progress=progress)
    assert frames(path) == SAMPLE_SIZE and len(images) == 1
    assert ((3, 3), "Sampling") in progress.updates
    init = write_tone(tmp_path / "init.wav", 2.0, SR)
    path, _ = interface.generate(steps=2, seed=4, use_init=True, init_audio=init, init_noise_level=0.5,
                                 progress=None)
    assert frames(path) == SAMPLE_SIZE
    with pytest.raises(gr.Error, match="no init audio"):
        interface.generate(steps=2, use_init=True, progress=None)


def test_autoencoder_round_trip_keeps_the_input_length(tmp_path):
    config = autoencoder_config()
    torch.manual_seed(0)
    interface = AutoencoderInterface(create_model_from_config(config).eval(), config,
                                     writer=common.OutputWriter(tmp_path / "out"))
    assert interface.n_quantizers == 0
    source = write_tone(tmp_path / "in.wav", 0.3, 16000, channels=2)
    path, images = interface.process(source)
    assert frames(path) == 2400 and sf.info(path).samplerate == SR and len(images) == 1
    with pytest.raises(gr.Error, match="Upload an input audio"):
        interface.process(None)


def test_autoencoder_quantizer_count_and_latent_noise(tmp_path):
    config = dac_rvq_config()
    torch.manual_seed(0)
    interface = AutoencoderInterface(create_model_from_config(config).eval(), config,
                                     writer=common.OutputWriter(tmp_path / "out"))
    assert interface.n_quantizers == 3
    source = write_tone(tmp_path / "in.wav", 0.1, config["sample_rate"])
    outputs = [sf.read(interface.process(source, n_quantizers=n)[0])[0] for n in (1, 3)]
    assert outputs[0].shape == (1600,) and not np.array_equal(outputs[0], outputs[1])
    noisy = sf.read(interface.process(source, n_quantizers=3, latent_noise=1.0)[0])[0]
    assert not np.array_equal(noisy, outputs[1])
    with pytest.raises(gr.Error, match="between 1 and 3"):
        interface.process(source, n_quantizers=4)


@pytest.mark.skipif(not lm_available(), reason="stable_audio_tools.models.lm is not available")
def test_lm_generate(tmp_path):
    from stable_audio_tools.interface.interfaces.lm import LMInterface

    config = lm_config()
    torch.manual_seed(0)
    interface = LMInterface(create_model_from_config(config).eval(), config,
                            writer=common.OutputWriter(tmp_path / "out"))
    assert interface.conditioned and not interface.has_prompt
    progress = Progress()
    path, images = interface.generate(temperature=1.0, top_k=5, seconds_total=0.05, seed=3, progress=progress)
    assert frames(path) == 400 and len(images) == 1
    assert progress.updates and progress.updates[-1][0][0] == progress.updates[-1][0][1]
    again, _ = interface.generate(temperature=1.0, top_k=5, seconds_total=0.05, seed=3, progress=None)
    assert np.array_equal(sf.read(path)[0], sf.read(again)[0])
    with pytest.raises(gr.Error, match="longer than this model"):
        interface.generate(seconds_total=1.0, progress=None)
    ui = demo.create_ui_for_model(interface.model, config)
    assert public_api_names(ui) == ["generate"]


# ----------------------------------------------------------------------------------------------- helpers
def test_output_formats_fall_back_to_wav_without_ffmpeg(tmp_path, monkeypatch):
    writer = common.OutputWriter(tmp_path, keep_seconds=0.2)
    audio = torch.linspace(-0.5, 0.5, 800).unsqueeze(0)
    monkeypatch.setattr(common.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="needs ffmpeg"):
        path = writer.write(audio, SR, "clip", "mp3 320k")
    assert path.endswith("clip.wav") and frames(path) == 800
    assert np.isclose(np.abs(sf.read(path)[0]).max(), 1.0, atol=1e-4)  # peak-normalised
    import time

    time.sleep(0.6)
    assert not os.path.exists(path)  # deleted once Gradio has its copy


def test_seed_and_names():
    assert 0 <= common.parse_seed("-1") < 2 ** 32 and common.parse_seed(" 42 ") == 42
    assert common.parse_seed(3.0) == 3
    for bad in ("1.5", "x", "-5", str(2 ** 32)):
        with pytest.raises(gr.Error):
            common.parse_seed(bad)
    assert common.condense_prompt('a/b:c*d?"e<f>g|h\\') == "a-b-c-d--e-f-g-h-"
    assert common.condense_prompt("") == "_" and len(common.condense_prompt("x" * 300)) == 150
    assert common.output_basename("output.wav", "p") == "output"
    assert common.seconds_slider_settings(2097152, 44100) == (1, 47.0)
    assert common.seconds_slider_settings(8192, 8000) == (0.01, 1.02)
