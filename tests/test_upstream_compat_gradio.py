"""Upstream's module-state Gradio functions (``interface.gradio.generate_uncond`` ...,
``interface.interfaces.diffusion_cond.generate_cond`` ...): deprecated wrappers that use the model ``load_model``
loaded last, or the one passed in."""
import os

import pytest
import torch

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[gradio]')")

from stable_audio_tools.interface import gradio as demo  # noqa: E402
from stable_audio_tools.interface import legacy  # noqa: E402
from stable_audio_tools.interface.interfaces import diffusion_cond  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402

from test_gradio import (SAMPLE_SIZE, SR, autoencoder_config, frames, inpaint_config, lm_available,  # noqa: E402
                         lm_config, save_model, uncond_config, write_tone)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def no_loaded_model(monkeypatch):
    monkeypatch.setattr(legacy, "_loaded", {})


def _model(config, seed=0):
    torch.manual_seed(seed)
    return create_model_from_config(config).eval()


def test_without_a_loaded_model_the_error_says_what_to_do():
    with pytest.raises(RuntimeError, match="load_model"):
        demo.generate_uncond(steps=2)


def test_load_model_is_remembered_and_autoencoder_process(tmp_path):
    config = autoencoder_config()
    _, ckpt = save_model(tmp_path, "ae", config)
    model, _ = demo.load_model(config, ckpt, device="cpu")
    assert legacy.current_model() == (model, config)
    tone = write_tone(tmp_path / "tone.wav", 0.5, SR)
    with pytest.warns(DeprecationWarning, match="AutoencoderInterface"):
        path, images = demo.autoencoder_process(tone, 0.0, 0)
    assert frames(path) == SR // 2 and len(images) == 1
    assert isinstance(demo.create_autoencoder_ui(config), gr.Blocks)


def test_generate_uncond_and_its_ui():
    config = uncond_config()
    model = _model(config)
    with pytest.warns(DeprecationWarning, match="DiffusionUncondInterface"):
        path, images = demo.generate_uncond(steps=2, seed=3, model=model, model_config=config)
    assert frames(path) == SAMPLE_SIZE and len(images) == 1
    with pytest.raises(ValueError, match="batch_size"):
        demo.generate_uncond(steps=2, batch_size=2, model=model, model_config=config)
    with pytest.warns(UserWarning, match="preview_every"):
        demo.generate_uncond(steps=1, preview_every=1, model=model, model_config=config)
    assert isinstance(demo.create_diffusion_uncond_ui(config, model=model), gr.Blocks)
    with gr.Blocks():
        controls = demo.create_uncond_sampling_ui(config, model=model)
    assert "generate" in controls


@pytest.mark.skipif(not lm_available(), reason="the lm model type is not available")
def test_generate_lm():
    config = lm_config()
    legacy.remember_model(_model(config), config)
    path, images = demo.generate_lm(temperature=1.0, top_p=0.9, top_k=4)
    assert frames(path) == config["sample_size"] and len(images) == 1
    assert isinstance(demo.create_lm_ui(config), gr.Blocks)


def test_generate_cond_and_sampling_ui(tmp_path):
    config = inpaint_config()
    model = _model(config)
    source = write_tone(tmp_path / "source.wav", 1.0, SR)
    with pytest.warns(DeprecationWarning, match="DiffusionCondInterface"):
        path, images = diffusion_cond.generate_cond("", seconds_total=0.75, steps=2, seed=1, sampler_type="euler",
                                                    cut_to_seconds_total=True, inpaint_audio=source,
                                                    mask_maskstart=0.25, mask_maskend=0.5, model=model,
                                                    model_config=config)
    assert frames(path) == 6000 and len(images) == 1
    with pytest.raises(ValueError, match="batch_size"):
        diffusion_cond.generate_cond("", batch_size=4, model=model, model_config=config)
    with gr.Blocks():
        controls = diffusion_cond.create_sampling_ui(config, model=model)
    assert "generate" in controls
    assert diffusion_cond.condense_prompt("a/b:c") == "a-b-c"


def test_delete_files_async(tmp_path):
    kept, gone = tmp_path / "kept.wav", tmp_path / "gone.wav"
    kept.write_bytes(b"x")
    gone.write_bytes(b"x")
    legacy.delete_files_async([str(gone), str(tmp_path / "never-existed.wav")], 0.01).join(timeout=10)
    assert not os.path.exists(gone) and os.path.exists(kept)
    assert diffusion_cond.delete_files_async is legacy.delete_files_async
