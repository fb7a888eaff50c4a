"""The Gradio page's generation additions: only the asked length is sampled (unless "Full window"), ODE inversion
as an init mode, and continuation that keeps the given audio exactly."""
import numpy as np
import pytest
import soundfile as sf
import torch

gr = pytest.importorskip("gradio")

from stable_audio_tools.interface.interfaces import common  # noqa: E402
from stable_audio_tools.interface.interfaces import diffusion_cond as page  # noqa: E402
from stable_audio_tools.interface.interfaces.diffusion_cond import DiffusionCondInterface  # noqa: E402
from stable_audio_tools.models.factory import create_model_from_config  # noqa: E402

from test_gradio import SAMPLE_SIZE, SR, cond_config, frames, write_tone  # noqa: E402


@pytest.fixture(scope="module")
def cond(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("generate_gradio")
    config = cond_config(make_tiny_t5(root / "t5"))
    torch.manual_seed(0)
    model = create_model_from_config(config).eval().requires_grad_(False)
    return DiffusionCondInterface(model, config, writer=common.OutputWriter(root / "out"))


def test_only_the_asked_length_is_sampled_unless_full_window(cond, monkeypatch):
    sizes = []
    real = page.generate_diffusion_cond

    def spy(model, **kwargs):
        sizes.append(kwargs["sample_size"])
        return real(model, **kwargs)

    monkeypatch.setattr(page, "generate_diffusion_cond", spy)
    short, _ = cond.generate("solo piano melody", seconds_total=0.25, steps=2, seed=3, progress=None)
    full, _ = cond.generate("solo piano melody", seconds_total=0.25, steps=2, seed=3, full_window=True,
                            progress=None)
    assert sizes == [2000, SAMPLE_SIZE]
    assert frames(short) == frames(full) == 2000
    uncut, _ = cond.generate("solo piano melody", seconds_total=0.25, steps=2, seed=3, full_window=True,
                             cut_to_seconds_total=False, progress=None)
    assert frames(uncut) == SAMPLE_SIZE
    with pytest.raises(gr.Error, match="above 0"):
        cond.generate("piano", seconds_total=0, cut_to_seconds_total=False, steps=2, progress=None)


def test_init_mode_invert(cond, tmp_path):
    init = write_tone(tmp_path / "init.wav", 0.5, SR)
    kwargs = dict(steps=3, seed=1, init_audio=init, init_noise_level=2.0, seconds_total=0.5,
                  sampler_type="dpmpp-2m", progress=None)
    inverted, _ = cond.generate("piano", init_mode="invert", **kwargs)
    noised, _ = cond.generate("piano", init_mode="noise", **kwargs)
    assert frames(inverted) == 4000 and not np.array_equal(sf.read(inverted)[0], sf.read(noised)[0])
    with pytest.raises(gr.Error, match="Init mode must be"):
        cond.generate("piano", init_mode="inverse", **kwargs)


def test_continuation_keeps_the_given_audio(cond, tmp_path):
    given = write_tone(tmp_path / "given.wav", 0.3, SR)
    path, _ = cond.generate("piano", steps=2, seed=5, continue_audio=given, continue_seconds=0.2, progress=None)
    out, given_audio = sf.read(path, dtype="float32")[0], sf.read(given, dtype="float32")[0]
    assert out.shape[0] == 2400 + 1600
    np.testing.assert_allclose(out[:2400], given_audio, atol=1 / 32768)  # the page writes 16-bit wav
    with pytest.raises(gr.Error, match="Seconds to add"):
        cond.generate("piano", steps=2, continue_audio=given, continue_seconds=0, progress=None)
