"""generate.py end to end on tiny random-weight models written to tmp (a text-conditioned latent DiT with a tiny T5,
an inpainting model, an unconditional model and an LM): files and sidecars, reproduction from the sidecar, prompt
files, continuation / prepend / multi-region inpainting / audio-to-audio, and clear errors before any model work."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from stable_audio_tools.inference import cli
from stable_audio_tools.models.factory import create_model_from_config

from conftest import needs_cpu_bf16

SR = 8000
AE = {"encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                                 "latent_dim": 8}},
      "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4],
                                                 "latent_dim": 4, "final_tanh": False}},
      "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 1}
NUMBER = {"type": "number", "config": {"min_val": 0, "max_val": 512}}


def cond_config(t5_path, model_type="diffusion_cond", objective="v"):
    diffusion = {"type": "dit", "diffusion_objective": objective,
                 "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                 "global_cond_ids": ["seconds_start", "seconds_total"],
                 "config": {"io_channels": 4, "embed_dim": 32, "depth": 1, "num_heads": 1, "cond_token_dim": 16,
                            "global_cond_dim": 32, "patch_size": 2, "transformer_type": "continuous_transformer"}}
    if model_type == "diffusion_cond_inpaint":
        diffusion["input_concat_ids"] = ["inpaint_mask", "inpaint_masked_input"]
        diffusion["config"]["input_concat_dim"] = 5
    return {"model_type": model_type, "sample_size": 4096, "sample_rate": SR, "audio_channels": 1,
            "model": {"pretransform": {"type": "autoencoder", "config": AE}, "io_channels": 4,
                      "conditioning": {"cond_dim": 16, "configs": [
                          {"id": "prompt", "type": "t5", "config": {"t5_model_name": t5_path, "max_length": 8}},
                          {"id": "seconds_start", **NUMBER}, {"id": "seconds_total", **NUMBER}]},
                      "diffusion": diffusion}}


UNCOND = {"model_type": "diffusion_uncond", "sample_size": 2048, "sample_rate": SR, "audio_channels": 1,
          "model": {"type": "dit", "config": {"in_channels": 1, "embed_dim": 32, "depth": 1, "num_heads": 1,
                                              "patch_size": 8}}}
LM = {"model_type": "lm", "sample_size": 512, "sample_rate": SR, "audio_channels": 1,
      "model": {"pretransform": {"type": "autoencoder", "config": {
          **AE, "encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                           "strides": [2, 2], "latent_dim": 8}},
          "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1, 2],
                                                     "strides": [2, 2], "latent_dim": 8}},
          "bottleneck": {"type": "rvq", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 2,
                                                   "kmeans_init": False}},
          "latent_dim": 8, "downsampling_ratio": 4}},
          "conditioning": {"cond_dim": 16, "configs": [{"id": "seconds_total", **NUMBER}]},
          "lm": {"type": "continuous_transformer", "codebook_pattern": "delay",
                 "cross_attention_cond_ids": ["seconds_total"],
                 "config": {"embed_dim": 32, "depth": 1, "dim_heads": 32, "cross_attn_cond_dim": 16,
                            "project_cross_attn_cond": True}}}}


def save_model(directory, config, seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model_from_config(config)
    save_file(model.state_dict(), str(directory / "model.safetensors"))
    (directory / "model_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tiny_t5 import make_tiny_t5

    root = tmp_path_factory.mktemp("generate_cli")
    t5 = make_tiny_t5(root / "t5")
    paths = {"cond": save_model(root / "cond", cond_config(t5)),
             "rf": save_model(root / "rf", cond_config(t5, objective="rectified_flow")),
             "inpaint": save_model(root / "inpaint", cond_config(t5, "diffusion_cond_inpaint")),
             "uncond": save_model(root / "uncond", UNCOND), "lm": save_model(root / "lm", LM)}
    t = np.arange(int(0.25 * SR)) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 97 * t)).astype(np.float32)
    sf.write(root / "tone.wav", tone, SR, subtype="FLOAT")
    paths["tone"] = root / "tone.wav"
    return paths


def run(*argv):
    return cli.main([str(a) for a in argv])


def read(path):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert sr == SR
    return data.T


FAST = ("--steps", 3, "--seed", 7)


def test_generate_writes_file_and_sidecar_that_reproduces_it(models, tmp_path):
    out = tmp_path / "a"
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--seconds", 0.3, *FAST,
                 "--sampler", "dpmpp-2m-sde", "--negative-prompt", "drums", "--output-dir", out)
    assert path.name == "solo_piano_melody_seed7.wav"
    audio = read(path)
    assert audio.shape == (1, 2400) and np.isfinite(audio).all() and np.abs(audio).max() > 0
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["settings"]["seed"] == 7 and sidecar["settings"]["negative_prompt"] == "drums"
    assert sidecar["latent_length"] == 300 and sidecar["sample_size"] == 2400
    [again] = run("--from-sidecar", path.with_suffix(".json"), "--output-dir", tmp_path / "b")
    np.testing.assert_array_equal(read(again), audio)


def test_random_seed_is_recorded_and_batch_items_reproduce(models, tmp_path):
    paths = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--seconds", 0.2,
                "--steps", 2, "--batch-size", 2, "--output-dir", tmp_path / "a")
    assert len(paths) == 2 and paths[0] != paths[1]
    sidecar = json.loads(paths[1].with_suffix(".json").read_text())
    assert sidecar["settings"]["seed"] >= 0 and sidecar["batch_index"] == 1
    [again] = run("--from-sidecar", paths[1].with_suffix(".json"), "--output-dir", tmp_path / "b")
    np.testing.assert_array_equal(read(again), read(paths[1]))
    assert not np.array_equal(read(paths[0]), read(paths[1]))


def test_prompts_file_jsonl_and_candidates_with_a_checkpoint(models, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\nsolo piano melody\n"
                       '{"prompt": "ambient rain on a tin roof", "seconds": 0.1, "seed": 3, "negative_prompt": "bass"}\n')
    paths = run("--model-config", models["cond"] / "model_config.json", "--ckpt-path",
                models["cond"] / "model.safetensors", "--prompts", prompts, "--seconds", 0.2, "--steps", 2,
                "--seed", 11, "--num-candidates", 2, "--format", "flac", "--output-dir", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["ambient_rain_on_a_tin_roof_seed3.flac", "ambient_rain_on_a_tin_roof_seed4.flac",
                     "solo_piano_melody_seed11.flac", "solo_piano_melody_seed12.flac"]
    lengths = {p.name: read(p).shape[-1] for p in paths}
    assert lengths["solo_piano_melody_seed11.flac"] == 1600 and lengths["ambient_rain_on_a_tin_roof_seed3.flac"] == 800
    meta = json.loads((tmp_path / "ambient_rain_on_a_tin_roof_seed3.json").read_text())
    assert meta["settings"]["negative_prompt"] == "bass" and meta["model"]["ckpt_path"].endswith("model.safetensors")


def test_full_window_samples_the_whole_window_then_trims(models, tmp_path):
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--seconds", 0.1,
                 "--full-window", *FAST, "--output-dir", tmp_path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sample_size"] == 4096 and read(path).shape[-1] == 800


def test_rope_dit_goes_beyond_its_window_with_a_warning(models, tmp_path, caplog):
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--seconds", 0.75,
                 "--steps", 1, "--seed", 1, "--output-dir", tmp_path)
    assert read(path).shape[-1] == 6000
    assert "beyond the model's training window" in caplog.text


@pytest.mark.parametrize("name", ["cond", "rf", "inpaint"])
def test_continue_keeps_the_prompt_exactly_and_joins_smoothly(models, tmp_path, name):
    tone = read(models["tone"])
    sampler = ("--sampler", "euler") if name == "rf" else ()
    [path] = run("--pretrained-name", models[name], "--prompt", "solo piano melody", "--continue", models["tone"],
                 "--seconds", 0.2, *FAST, *sampler, "--output-dir", tmp_path)
    out = read(path)
    join = tone.shape[-1]
    assert out.shape[-1] == join + 1600
    np.testing.assert_array_equal(out[:, :join], tone)
    assert np.abs(out[0, join:]).max() > 0
    assert json.loads(path.with_suffix(".json").read_text())["settings"]["mode"] == "continue"
    [plain] = run("--pretrained-name", models[name], "--prompt", "solo piano melody", "--continue", models["tone"],
                  "--seconds", 0.2, *FAST, *sampler, "--crossfade-ms", 0, "--output-dir", tmp_path / "plain")
    plain = read(plain)
    fade = 160  # 20 ms at 8 kHz: beyond it both outputs are the decoded generation
    np.testing.assert_array_equal(out[:, join + fade:], plain[:, join + fade:])
    correction = out[0, join:join + fade] - plain[0, join:join + fade]  # the reconstruction error, faded out
    assert np.abs(correction).max() > 0
    assert np.abs(np.diff(correction)).max() <= 0.02 * np.abs(correction).max()


def test_prepend_keeps_the_prompt_at_the_end(models, tmp_path):
    tone = read(models["tone"])
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--prepend", models["tone"],
                 "--seconds", 0.1, *FAST, "--output-dir", tmp_path)
    out = read(path)
    assert out.shape[-1] == 800 + tone.shape[-1]
    np.testing.assert_array_equal(out[:, 800:], tone)
    assert np.abs(out[0, :800]).max() > 0


@pytest.mark.parametrize("name", ["cond", "inpaint"])
def test_multi_region_inpainting_keeps_unmasked_audio(models, tmp_path, name):
    tone = read(models["tone"])
    [path] = run("--pretrained-name", models[name], "--prompt", "solo piano melody", "--inpaint", models["tone"],
                 "--mask", "0.02:0.06,0.15:0.2", *FAST, "--crossfade-ms", 2, "--output-dir", tmp_path)
    out = read(path)
    assert out.shape == tone.shape
    fade = 16
    keep = np.ones(tone.shape[-1], bool)
    for start, end in ((160, 480), (1200, 1600)):
        keep[start - fade:end + fade] = False
        assert not np.allclose(out[0, start:end], tone[0, start:end])
    np.testing.assert_array_equal(out[:, keep], tone[:, keep])


def test_init_audio_modes(models, tmp_path):
    tone = read(models["tone"])
    common = ("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--init-audio", models["tone"],
              "--steps", 4, "--seed", 1, "--sampler", "dpmpp-2m")
    [inverted] = run(*common, "--init-strength", 0.3, "--output-dir", tmp_path / "inv")
    [noised] = run(*common, "--init-strength", 0.3, "--init-mode", "noise", "--output-dir", tmp_path / "noise")
    assert read(inverted).shape == tone.shape == read(noised).shape
    assert not np.array_equal(read(inverted), read(noised))
    sidecar = json.loads(inverted.with_suffix(".json").read_text())
    assert sidecar["settings"]["init_mode"] == "invert" and len(sidecar["source_sha256"]) == 64
    [again] = run("--from-sidecar", inverted.with_suffix(".json"), "--output-dir", tmp_path / "again")
    np.testing.assert_array_equal(read(again), read(inverted))


def test_sidecar_reproduces_a_continuation_and_refuses_a_changed_input(models, tmp_path):
    source = tmp_path / "prompt.wav"
    source.write_bytes(models["tone"].read_bytes())
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--continue", source,
                 "--seconds", 0.1, *FAST, "--output-dir", tmp_path / "a")
    [again] = run("--from-sidecar", path.with_suffix(".json"), "--output-dir", tmp_path / "b")
    np.testing.assert_array_equal(read(again), read(path))
    sf.write(source, np.zeros(100, np.float32), SR)
    with pytest.raises(SystemExit) as exc:
        run("--from-sidecar", path.with_suffix(".json"), "--output-dir", tmp_path / "c")
    assert "changed since the sidecar was written" in str(exc.value.code)


def test_unconditional_and_lm_models(models, tmp_path):
    [uncond] = run("--pretrained-name", models["uncond"], "--seconds", 0.1, *FAST, "--sampler", "dpmpp-2m",
                   "--output-dir", tmp_path)
    assert uncond.name == "untitled_seed7.wav" and read(uncond).shape == (1, 800)
    [lm] = run("--pretrained-name", models["lm"], "--seconds", 0.02, "--seed", 2, "--top-k", 4,
               "--output-dir", tmp_path / "lm")
    assert read(lm).shape == (1, 160)
    [again] = run("--from-sidecar", lm.with_suffix(".json"), "--output-dir", tmp_path / "lm2")
    np.testing.assert_array_equal(read(again), read(lm))


@pytest.mark.parametrize("args,message", [
    (("--prompt", "  "), "--prompt is empty"),
    (("--prompt", "x", "--seconds", -1), "--seconds must be a positive"),
    (("--prompt", "x", "--sampler", "euler"), "does not fit this 'v' model"),
    (("--prompt", "x", "--continue", "{bad}", "--seconds", 0.1), "--continue"),
    (("--prompt", "x", "--continue", "{tone}"), "needs --seconds"),
    (("--prompt", "x", "--continue", "{tone}", "--seconds", 0.6), "leaves no room"),
    (("--prompt", "x", "--inpaint", "{tone}"), "needs --mask"),
    (("--prompt", "x", "--inpaint", "{tone}", "--mask", "0.1:0.9"), "ends after the end"),
    (("--prompt", "x", "--inpaint", "{tone}", "--mask", "3-4"), "not START:END"),
    (("--prompt", "x", "--init-audio", "{tone}", "--init-strength", 0), "--init-strength must be in"),
    (("--prompt", "x", "--continue", "{tone}", "--prepend", "{tone}", "--seconds", 0.1), "at most one of"),
    (("--prompt", "x", "--dtype", "float16", "--device", "cpu"), "float16 needs a GPU"),
    (("--prompt", "x", "--batch-size", 0), "--batch-size must be at least 1"),
])
def test_bad_inputs_fail_clearly_before_model_work(models, tmp_path, monkeypatch, args, message):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "load_model", no_model)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    args = [str(a).format(bad=bad, tone=models["tone"]) for a in args]
    with pytest.raises(SystemExit) as exc:
        run("--pretrained-name", models["cond"], *args, "--output-dir", tmp_path)
    assert message in str(exc.value.code)
    assert not list(tmp_path.glob("*.wav"))[1:]


def test_model_flags_and_formats_are_checked(models, tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        run("--prompt", "x")
    assert "--pretrained-name" in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:  # an LM has no rotary-only positions: no lengths beyond its window
        run("--pretrained-name", models["lm"], "--seconds", 1)
    assert "longer than this model can generate (0.06 s" in str(exc.value.code)
    with pytest.raises(SystemExit) as exc:
        run("--model-config", models["cond"] / "model_config.json", "--prompt", "x")
    assert "--ckpt-path" in str(exc.value.code)
    from stable_audio_tools.inference import runner

    monkeypatch.setattr(runner.sf, "check_format", lambda *a: False)
    with pytest.raises(SystemExit) as exc:
        run("--pretrained-name", models["cond"], "--prompt", "x", "--format", "mp3")
    assert "cannot write MP3" in str(exc.value.code)


def test_long_prompt_uses_its_tail_as_context_and_keeps_all_of_it(models, tmp_path):
    tone = read(models["tone"])  # 0.25 s; the window is 0.512 s, so 0.4 s of new audio leaves 0.112 s of context
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--continue", models["tone"],
                 "--seconds", 0.4, *FAST, "--output-dir", tmp_path)
    out = read(path)
    assert out.shape[-1] == tone.shape[-1] + 3200
    np.testing.assert_array_equal(out[:, :tone.shape[-1]], tone)
    assert json.loads(path.with_suffix(".json").read_text())["sample_size"] == 4096  # 896 + 3200 samples


@pytest.mark.parametrize("fmt,container", [("ogg", "OGG"), ("mp3", "MP3")])
def test_lossy_formats_when_libsndfile_has_them(models, tmp_path, fmt, container):
    if not sf.check_format(container):
        pytest.skip(f"this libsndfile cannot write {container}")
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--seconds", 0.25, *FAST,
                 "--format", fmt, "--output-dir", tmp_path)
    assert path.suffix == f".{fmt}" and sf.info(str(path)).format == container


def test_lm_continuation_keeps_the_prompt(models, tmp_path):
    tone = read(models["tone"])[:, :200]
    source = tmp_path / "short.wav"
    sf.write(source, tone.T, SR, subtype="FLOAT")
    [path] = run("--pretrained-name", models["lm"], "--continue", source, "--seconds", 0.02, "--seed", 4,
                 "--top-k", 4, "--output-dir", tmp_path)
    out = read(path)
    assert out.shape[-1] == 200 + 160
    np.testing.assert_array_equal(out[:, :200], tone)


def test_every_flag_is_documented():
    from conftest import ROOT

    doc = (ROOT / "docs" / "inference.md").read_text()
    flags = [o for a in cli.build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert len(flags) > 30
    assert [f for f in flags if f"`{f}" not in doc] == []


@needs_cpu_bf16
def test_bfloat16_editing_keeps_the_prompt(models, tmp_path):
    tone = read(models["tone"])
    [path] = run("--pretrained-name", models["cond"], "--prompt", "solo piano melody", "--continue", models["tone"],
                 "--seconds", 0.1, "--steps", 2, "--seed", 1, "--dtype", "bfloat16", "--output-dir", tmp_path)
    out = read(path)
    np.testing.assert_array_equal(out[:, :tone.shape[-1]], tone)
    assert json.loads(path.with_suffix(".json").read_text())["dtype"] == "bfloat16"
