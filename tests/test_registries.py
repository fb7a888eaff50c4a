"""The registries: a new model type is its own files plus one model-family entry, a new sampler one function plus
one sampler entry, a new dataset type one dataset-type entry; each is then reachable through the normal entry
points (create_model_from_config, create_training_wrapper_from_config, create_demo_callback_from_config,
unwrap_checkpoint, create_ui_for_model; sample_rf and the Gradio sampler lists; create_dataloader_from_config)."""
import json

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from stable_audio_tools.data.dataset import DATASET_TYPES, create_dataloader_from_config, register_dataset_type
from stable_audio_tools.families import (MODEL_FAMILIES, ModelFamily, register_model_family,
                                         uses_automatic_optimization)
from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.factory import MODEL_TYPES, create_model_from_config
from stable_audio_tools.models.utils import load_ckpt_state_dict
from stable_audio_tools.samplers import SAMPLERS, register_sampler, sample_rf
from stable_audio_tools.samplers.flow_samplers import sample_rf_euler
from stable_audio_tools.training import create_demo_callback_from_config, create_training_wrapper_from_config
from stable_audio_tools.training.unwrap import UNWRAPPERS, unwrap_checkpoint
import toy_family

CONFIG = {"model_type": toy_family.TOY_TYPE, "sample_rate": 8000, "sample_size": 16, "model": {"channels": 2},
          "training": {"learning_rate": 0.1, "demo": {"demo_every": 2}}}


@pytest.fixture
def toy_registered():
    register_model_family(toy_family.TOY_FAMILY)
    yield toy_family.TOY_FAMILY
    del MODEL_FAMILIES[toy_family.TOY_TYPE]


def _batches():
    torch.manual_seed(0)
    audio = torch.randn(8, 2, 16)
    return DataLoader(TensorDataset(audio), batch_size=4, collate_fn=lambda items: (torch.stack([i[0] for i in items]),
                                                                                    [{} for _ in items]))


def test_a_new_model_type_is_one_entry(toy_registered, tmp_path):
    model = create_model_from_config(CONFIG)
    assert isinstance(model, toy_family.ToyGain)
    assert toy_family.TOY_TYPE in MODEL_TYPES and toy_family.TOY_TYPE in UNWRAPPERS
    assert uses_automatic_optimization(CONFIG)

    wrapper = create_training_wrapper_from_config(CONFIG, model)
    demo = create_demo_callback_from_config(CONFIG)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[demo],
                         default_root_dir=tmp_path)
    trainer.fit(wrapper, _batches())
    assert sorted(demo.outputs) == [1, 3]  # demos at steps 1, 1 + demo_every
    assert float(model.gain.detach().mean()) < 1.0  # trained towards a gain of 0.5

    ckpt = tmp_path / "wrapped.ckpt"
    trainer.save_checkpoint(ckpt)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    out = unwrap_checkpoint(str(ckpt), str(tmp_path / "config.json"), str(tmp_path / "toy"))
    reloaded = create_model_from_config(CONFIG)
    reloaded.load_state_dict(load_ckpt_state_dict(out))
    assert torch.equal(reloaded.gain, model.gain)

    gradio = pytest.importorskip("gradio")
    from stable_audio_tools.interface.gradio import create_ui_for_model

    ui = create_ui_for_model(model, CONFIG, gradio_title="Toy")
    assert isinstance(ui, gradio.Blocks)
    assert "Toy gain" in {getattr(block, "label", None) for block in ui.blocks.values()}


def test_unregistered_and_duplicate_model_types_are_refused(toy_registered):
    with pytest.raises(ValueError, match="already registered"):
        register_model_family(toy_family.TOY_FAMILY)
    with pytest.raises(ValueError, match="package.module:function"):
        register_model_family(ModelFamily("toy_bad", model="no_colon"))
    with pytest.raises(ConfigError, match=toy_family.TOY_TYPE):  # the error lists the registered types
        create_model_from_config({**CONFIG, "model_type": "toy_missing"})
    assert "toy_bad" not in MODEL_FAMILIES


def test_manual_optimization_follows_the_entry():
    assert not uses_automatic_optimization({"model_type": "autoencoder", "training": {}})
    assert uses_automatic_optimization({"model_type": "diffusion_cond", "training": {}})
    assert not uses_automatic_optimization({"model_type": "diffusion_cond", "training": {"arc": {}}})


@pytest.fixture
def toy_sampler():
    def sample_toy_euler(model_fn, x, sigmas, extra_args=None, callback=None, disable=None):
        """Plain Euler steps of the rectified-flow ODE, counting model calls."""
        calls.append(len(sigmas) - 1)
        ones = x.new_ones([x.shape[0]])
        for t_curr, t_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (t_next - t_curr) * model_fn(x, t_curr * ones, **(extra_args or {}))
        return x

    calls = []
    register_sampler("toy-euler", "rf", sample_toy_euler, ui=("rectified_flow",))
    yield calls
    del SAMPLERS["toy-euler"]


def test_a_new_sampler_is_one_function_and_one_entry(toy_sampler):
    def velocity(x, t):
        return x - 0.25

    noise = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(1))
    ours = sample_rf(velocity, noise, steps=5, sampler_type="toy-euler", disable_tqdm=True)
    reference = sample_rf(velocity, noise, steps=5, sampler_type="euler", disable_tqdm=True)
    assert toy_sampler == [5]
    torch.testing.assert_close(ours, reference)  # same schedule, same integration rule as the built-in Euler
    assert sample_rf_euler is SAMPLERS["euler"].run
    with pytest.raises(ValueError, match="toy-euler"):  # the accepted list comes from the registry
        sample_rf(velocity, noise, steps=2, sampler_type="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("toy-euler", "rf", sample_rf_euler)


def test_the_gradio_sampler_lists_come_from_the_registry(toy_sampler):
    pytest.importorskip("gradio")
    from stable_audio_tools.interface.interfaces.diffusion_cond import DiffusionCondInterface

    interface = DiffusionCondInterface.__new__(DiffusionCondInterface)
    interface.objective = "rectified_flow"
    assert interface.sampler_types == ["euler", "rk4", "dpmpp", "toy-euler"]
    interface.objective = "v"
    assert "toy-euler" not in interface.sampler_types and "dpmpp-3m-sde" in interface.sampler_types


def test_a_new_dataset_type_is_one_entry():
    seen = {}

    def build(dataset_config, batch_size, sample_size, sample_rate, force_channels, num_workers, shuffle):
        seen.update(batch_size=batch_size, sample_size=sample_size, force_channels=force_channels)
        return DataLoader(TensorDataset(torch.zeros(4, 1, sample_size)), batch_size=batch_size)

    register_dataset_type("toy_zeros", build)
    try:
        loader = create_dataloader_from_config({"dataset_type": "toy_zeros"}, batch_size=2, sample_size=32,
                                               sample_rate=8000, audio_channels=1, num_workers=0)
        assert next(iter(loader))[0].shape == (2, 1, 32)
        assert seen == {"batch_size": 2, "sample_size": 32, "force_channels": "mono"}
        with pytest.raises(ConfigError, match="toy_zeros"):
            create_dataloader_from_config({"dataset_type": "toy_missing"}, 2, 32, 8000)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset_type("toy_zeros", build)
    finally:
        del DATASET_TYPES["toy_zeros"]
