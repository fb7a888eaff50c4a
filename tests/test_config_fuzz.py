"""Config fuzz: mutated shipped and upstream configs raise a ConfigError naming the mutated key, fast.

Mutations of every config in ``stable_audio_tools/configs/model_configs`` and of the upstream-made configs in
``tests/fixtures/golden``: deleted required keys, wrong types (string for a number, number for a string,
object for a list and the reverse, a number for a bool), zero / negative / huge sizes, NaN and infinity, null,
unknown ``type`` values and key typos. Each must raise :class:`ConfigError` whose message contains the JSON
path of the mutated key, within seconds.

Huge sizes are refused before anything is allocated: the tiny upstream configs are built on the CPU (a size
that got through would try to allocate petabytes and fail with a RuntimeError, not a ConfigError); the large
shipped configs are built on the ``meta`` device so that the test never allocates their real weights.

The default run takes a deterministic sample of ``FUZZ_SAMPLE`` mutations; set
``STABLE_AUDIO_TOOLS_FUZZ_ALL=1`` to run every generated mutation.
"""
import copy
import json
import os
import random
import re
import time
import warnings

import pytest
import torch

from stable_audio_tools.config import ConfigError, ConfigWarning, join_path
from stable_audio_tools.config_schema import NON_NEGATIVE_SIZES, POSITIVE_SIZES
from stable_audio_tools.models.factory import create_model_from_config

from conftest import FIXTURES, ROOT

SHIPPED = sorted((ROOT / "stable_audio_tools" / "configs" / "model_configs").glob("*/*.json"))
UPSTREAM_TINY = sorted((FIXTURES / "golden").glob("*/model_config.json"))
FUZZ_SAMPLE = 240
SEED = 20260
TIME_LIMIT_S = 10.0
HUGE = 10 ** 9

# Keys a builder needs in every context where they appear (deleting one must be an error).
REQUIRED_KEYS = {"model_type", "sample_rate", "model", "encoder", "decoder", "latent_dim", "downsampling_ratio",
                 "io_channels", "type", "diffusion", "cond_dim", "configs", "id", "lm", "levels"}
# Keys whose values are free-form (names, ids, paths): a wrong-typed value there is not generated.
FREE_FORM = {"id", "t5_model_name", "clap_ckpt_path", "tokenizer_name"}

# Legitimate edge values that must build: (config, {path: new value or DELETE}, reason).
DELETE = object()
EDGE_CASES = [
    ("oobleck_vae", {"sample_size": DELETE}, "sample_size is only needed for training"),
    ("dit_cond", {"audio_channels": DELETE}, "audio_channels defaults to 2"),
    ("oobleck_vae", {"model.encoder.config.channels": 1, "model.decoder.config.channels": 1},
     "the smallest positive width"),
    ("dit_cond", {"model.diffusion.config.depth": 1}, "a single transformer block"),
    ("dac_rvq", {"model.encoder.config.latent_dim": None, "model.bottleneck.config.input_dim": 32,
                 "model.latent_dim": 32, "model.decoder.config.latent_dim": 32},
     "a DAC encoder without projection outputs d_model x 2^len(strides) = 8 x 4 channels"),
    ("dit_cond", {"model.diffusion.config.global_cond_dim": 0, "model.diffusion.global_cond_ids": []},
     "no global conditioning at all"),
]


def _leaves(tree, path=""):
    """(path, parent, key, value) of every value in the config tree, depth first."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            child = join_path(path, key)
            yield child, tree, key, value
            yield from _leaves(value, child)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            child = join_path(path, index)
            yield child, tree, index, value
            yield from _leaves(value, child)


def _last_key(path):
    return path.rsplit(".", 1)[-1].split("[", 1)[0]


def _typo(key):
    return key + key[-1]


def mutations_of(config):
    """(kind, path, expected path in the message, mutate function) for every mutation of one config."""
    out = []
    for path, parent, key, value in _leaves(config):
        if path.startswith("training"):
            if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
                out.append(("nan", path, path, (parent, key, float("nan"))))
            continue
        name = _last_key(path)
        if name.startswith("_"):
            continue  # a comment
        if isinstance(key, str) and not key.startswith("_"):
            out.append(("typo", path, join_path(path.rsplit(".", 1)[0], _typo(key)) if "." in path else _typo(key),
                        ("rename", parent, key)))
            if key in REQUIRED_KEYS and (".config." not in path or key == "levels"):
                out.append(("delete", path, path, ("delete", parent, key)))
        if isinstance(value, bool):
            out.append(("wrong_type", path, path, (parent, key, "yes")))
        elif isinstance(value, int):
            out.append(("wrong_type", path, path, (parent, key, "seven")))
            out.append(("null", path, path, (parent, key, None)))
            out.append(("nan", path, path, (parent, key, float("nan"))))
            if name in POSITIVE_SIZES:
                out.append(("zero", path, path, (parent, key, 0)))
            if name in POSITIVE_SIZES or name in NON_NEGATIVE_SIZES:
                out.append(("negative", path, path, (parent, key, -3)))
                out.append(("huge", path, path, (parent, key, HUGE)))
        elif isinstance(value, float):
            out.append(("nan", path, path, (parent, key, float("nan"))))
            out.append(("inf", path, path, (parent, key, float("inf"))))
            out.append(("wrong_type", path, path, (parent, key, "1.5")))
        elif isinstance(value, str):
            if key == "type":
                out.append(("unknown_type", path, path, (parent, key, "no_such_type")))
            elif name not in FREE_FORM and not isinstance(key, int):
                out.append(("wrong_type", path, path, (parent, key, 123)))
        elif isinstance(value, list) and value and not isinstance(key, int):
            out.append(("object_for_list", path, path, (parent, key, {"0": value[0]})))
        elif isinstance(value, dict) and key in ("config", "model", "encoder", "decoder", "diffusion",
                                                   "conditioning", "pretransform", "bottleneck", "lm"):
            out.append(("list_for_object", path, path, (parent, key, [value])))
    return out


def _apply(config, path, action):
    """A mutated deep copy of ``config`` (the action addresses the original tree, so replay it by path)."""
    mutated = copy.deepcopy(config)
    target = mutated
    parts = []
    for part in path.replace("[", ".[").split("."):
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    for part in parts[:-1]:
        target = target[part]
    last = parts[-1]
    if action[0] == "rename":
        target[_typo(last)] = target.pop(last)
    elif action[0] == "delete":
        del target[last]
    else:
        target[last] = action[2]
    return mutated


def _all_cases():
    cases = []
    for source in SHIPPED + UPSTREAM_TINY:
        config = json.loads(source.read_text())
        label = str(source.relative_to(ROOT))
        for kind, path, expected, action in mutations_of(config):
            cases.append(pytest.param(source, kind, path, expected, action, id=f"{label}:{kind}:{path}"))
    return cases


def _selected():
    cases = _all_cases()
    if os.environ.get("STABLE_AUDIO_TOOLS_FUZZ_ALL", "") not in ("", "0"):
        return cases
    return random.Random(SEED).sample(cases, min(FUZZ_SAMPLE, len(cases)))


def _names_key(message, expected):
    """The message names the mutated key: its full path, or the block's path and the key's name (the error
    of a constructor rule that involves several of its arguments)."""
    if f"'{expected}" in message:
        return True
    blocks = re.findall(r"config key '([^']+)'", message)
    return any(expected.startswith(block + ".") for block in blocks) and _last_key(expected) in message


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("fuzz_cwd")
    make_tiny_t5(root / "tiny_t5")
    return root


@pytest.fixture(autouse=True)
def _in_a_directory_with_the_tiny_t5(tiny_t5_dir, monkeypatch):
    # the tiny example configs name their text encoder by the relative path "tiny_t5" (docs/tutorial.md)
    monkeypatch.chdir(tiny_t5_dir)


def test_enough_mutations():
    assert len(_selected()) >= 150
    kinds = {case.values[1] for case in _selected()}
    assert {"delete", "typo", "wrong_type", "zero", "negative", "huge", "nan", "null", "unknown_type"} <= kinds


@pytest.mark.parametrize("source,kind,path,expected,action", _selected())
def test_mutation_is_a_config_error(source, kind, path, expected, action):
    config = _apply(json.loads(source.read_text()), path, action)
    frozen = copy.deepcopy(config)
    device = "cpu" if source in UPSTREAM_TINY else "meta"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        try:
            with torch.device(device):
                create_model_from_config(config)
        except ConfigError as err:
            message = str(err)
        else:
            pytest.fail(f"{kind} of '{path}' built without a ConfigError")
    elapsed = time.perf_counter() - start
    assert _names_key(message, expected), message
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.1f}s"
    assert json.dumps(config, sort_keys=True) == json.dumps(frozen, sort_keys=True), "the factory mutated the config"


@pytest.mark.parametrize("source", SHIPPED + UPSTREAM_TINY, ids=lambda p: str(p.relative_to(ROOT)))
def test_unmutated_configs_build_without_unknown_keys(source):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.device("meta"):
            model = create_model_from_config(json.loads(source.read_text()))
    assert not [str(w.message) for w in caught if "unknown config key" in str(w.message)]
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name,changes,reason", EDGE_CASES, ids=[f"{c[0]}:{c[2]}" for c in EDGE_CASES])
def test_legitimate_edge_values_build(name, changes, reason):
    config = json.loads((FIXTURES / "golden" / name / "model_config.json").read_text())
    for path, value in changes.items():
        action = ("delete", None, None) if value is DELETE else ("set", None, value)
        config = _apply(config, path, action)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        model = create_model_from_config(config)
    assert sum(p.numel() for p in model.parameters()) > 0, reason
