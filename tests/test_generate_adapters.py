"""generate.py --adapter PATH[:STRENGTH]: adapters change the output, strength 0 is the base, sidecars reproduce."""
import json

import numpy as np
import pytest
import torch

from stable_audio_tools.inference import cli
from stable_audio_tools.models.adapters import adapter_parameters, apply_adapters, save_adapter
from stable_audio_tools.models.factory import create_model_from_config

from test_generate_cli import cond_config, read, save_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("generate_adapters")
    config = cond_config(make_tiny_t5(root / "t5"))
    model_dir = save_model(root / "cond", config)
    adapted = create_model_from_config(config)
    apply_adapters(adapted, {"type": "lora", "rank": 2, "alpha": 2, "targets": ["diffusion"]})
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapter_parameters(adapted):
            p.normal_(0, 0.5)  # LoRA's up-projection starts at zero; make the adapter do something
    return {"model": model_dir, "adapter": save_adapter(adapted, root / "style.safetensors")}


def run(*argv):
    return cli.main([str(a) for a in argv])


ARGS = ("--prompt", "solo piano melody", "--seconds", 0.2, "--steps", 2, "--seed", 4)


def test_adapter_strengths_and_sidecar_reproduction(setup, tmp_path):
    [base] = run("--pretrained-name", setup["model"], *ARGS, "--output-dir", tmp_path / "base")
    [zero] = run("--pretrained-name", setup["model"], *ARGS, "--adapter", f"{setup['adapter']}:0",
                 "--output-dir", tmp_path / "zero")
    [full] = run("--pretrained-name", setup["model"], *ARGS, "--adapter", setup["adapter"],
                 "--output-dir", tmp_path / "full")
    np.testing.assert_array_equal(read(zero), read(base))
    assert np.abs(read(full) - read(base)).max() > 1e-4
    sidecar = json.loads(full.with_suffix(".json").read_text())
    assert sidecar["model"]["adapters"] == [[str(setup["adapter"]), 1.0]]
    [again] = run("--from-sidecar", full.with_suffix(".json"), "--output-dir", tmp_path / "again")
    np.testing.assert_array_equal(read(again), read(full))


def test_bad_adapter_paths_and_files_are_clear_errors(setup, tmp_path):
    with pytest.raises(SystemExit, match="--adapter .*no such file"):
        run("--pretrained-name", setup["model"], *ARGS, "--adapter", tmp_path / "none.safetensors",
            "--output-dir", tmp_path / "a")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(SystemExit, match="junk.safetensors"):
        run("--pretrained-name", setup["model"], *ARGS, "--adapter", junk, "--output-dir", tmp_path / "b")
