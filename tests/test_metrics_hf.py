"""CLAP score and KL pipelines end to end with tiny random-config transformers models saved locally, and the
evaluation pipeline's input errors."""
import numpy as np
import pytest
import soundfile
import torch

from stable_audio_tools.data.utils import resample
from stable_audio_tools.metrics import (AudioCollection, EvaluationConfig, EvaluationError, Evaluator,
                                        MissingWeightsError, create_embedder, kl_divergence, load_prompts,
                                        rank_by_clap)
from tiny_audio_models import make_tiny_ast, make_tiny_clap

pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {"clap": make_tiny_clap(root / "clap"), "clap_fused": make_tiny_clap(root / "clap_fused", fusion=True),
            "ast": make_tiny_ast(root / "ast")}


def _tone(freq, seconds, sr, amplitude=0.5, channels=1, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    wave = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return np.stack([wave] * channels, axis=1).astype(np.float32)


def _write(folder, items, sr):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in items.items():
        soundfile.write(str(folder / f"{name}.wav"), data, sr)
    return folder


def test_clap_score_pipeline_matches_a_direct_transformers_computation(models, tmp_path):
    from transformers import ClapModel, ClapProcessor

    sr = 16000
    generated = _write(tmp_path / "gen", {"0000": _tone(440, 2.0, sr, channels=2), "0001": _tone(880, 3.0, sr),
                                          "extra": _tone(300, 1.0, sr)}, sr)
    prompts = {"0000": "soft piano music", "0001": "a dog barks in the rain"}
    config = EvaluationConfig(metrics=["clap"], options={"clap": {"model": models["clap"]}}, progress=False)
    report = Evaluator(config).evaluate(AudioCollection.from_folder(generated, "generated", "--generated"),
                                        prompts=prompts)
    result = report["results"]["clap"]
    assert result["pairs"] == 2 and result["higher_is_better"]
    assert report["settings"]["embedders"]["clap"]["preprocessing"] == {
        "sample_rate": 48000, "channels": "mono", "peak_db": -1.0, "int16_round_trip": True}

    # the same score straight from transformers: mono, 48 kHz, peak -1 dBFS, int16, cosine
    model, processor = ClapModel.from_pretrained(models["clap"]).eval(), ClapProcessor.from_pretrained(models["clap"])
    expected = []
    for name, prompt in prompts.items():
        audio, rate = soundfile.read(str(generated / f"{name}.wav"), dtype="float32", always_2d=True)
        mono = resample(torch.from_numpy(audio.T).mean(dim=0, keepdim=True), rate, 48000)[0]
        mono = mono * (10 ** (-1 / 20) / mono.abs().max())
        mono = (mono.clamp(-1, 1) * 32767).to(torch.int16).float() / 32767
        inputs = processor.feature_extractor(mono.numpy(), sampling_rate=48000, return_tensors="pt",
                                             truncation="rand_trunc", padding="repeatpad")
        tokens = processor.tokenizer([prompt], return_tensors="pt")
        with torch.no_grad():
            a = model.get_audio_features(input_features=inputs["input_features"])
            t = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        a, t = getattr(a, "pooler_output", a), getattr(t, "pooler_output", t)
        expected.append(float(torch.nn.functional.cosine_similarity(a, t)[0]))
    assert result["per_item"] == pytest.approx(dict(zip(prompts, expected)), abs=1e-5)
    assert result["value"] == pytest.approx(sum(expected) / 2, abs=1e-5)


def test_clap_embedder_long_inputs_are_reproducible_fused_and_unfused(models):
    long_clip = torch.from_numpy(_tone(500, 12.0, 48000, seed=1).T)
    for key in ("clap", "clap_fused"):
        embedder = create_embedder("clap", model=models[key])
        first = embedder.embed_clip(long_clip, 48000)
        assert first.shape == (1, 8)
        assert torch.equal(first, embedder.embed_clip(long_clip, 48000))
        assert embedder.settings()["fusion"] is (key == "clap_fused")
    ranking = rank_by_clap([long_clip[:, :48000], long_clip[:, :96000] * 0.1, torch.zeros(1, 48000)], 48000,
                           "soft piano music", embedder)
    assert sorted(i for i, _ in ranking) == [0, 1, 2]
    assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)


def _kl_report(models, generated, reference, convention):
    config = EvaluationConfig(metrics=["kl"], kl_classifier="ast", convention=convention,
                              options={"ast": {"model": models["ast"]}}, progress=False)
    return Evaluator(config).evaluate(AudioCollection.from_folder(generated, "generated", "--generated"),
                                      AudioCollection.from_folder(reference, "reference", "--reference"))


def test_kl_pipeline_both_conventions(models, tmp_path):
    sr = 16000
    reference = _write(tmp_path / "ref", {"a": _tone(440, 12.0, sr), "b": _tone(1000, 3.0, sr)}, sr)
    generated = _write(tmp_path / "gen", {"a": _tone(440, 12.0, sr, amplitude=0.2, seed=2),
                                          "b": np.random.default_rng(5).standard_normal((3 * sr, 1)).astype(
                                              np.float32) * 0.3}, sr)
    same = _kl_report(models, reference, reference, "sam")["results"]["kl"]
    assert same["value"] == pytest.approx(0.0, abs=1e-5) and same["pairs"] == 2
    sam = _kl_report(models, generated, reference, "sam")
    assert sam["results"]["kl"]["value"] > 1e-4 and sam["results"]["kl"]["pairs"] == 2
    assert sam["settings"]["embedders"]["ast"]["preprocessing"]["peak_db"] == -1.0
    audiocraft = _kl_report(models, generated, reference, "audiocraft")["results"]["kl"]
    assert audiocraft["pairs"] == 3  # "a": 10 s + 2 s segments, "b": one 3 s segment
    assert audiocraft["value"] == audiocraft["kl_pq"] > 0
    assert audiocraft["kl_both"] == pytest.approx(audiocraft["kl_pq"] + audiocraft["kl_qp"])


def test_kl_sam_value_by_hand_for_one_pair(models, tmp_path):
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    sr = 16000
    ref_audio, gen_audio = _tone(440, 3.0, sr), _tone(2000, 3.0, sr, seed=3)
    reference = _write(tmp_path / "ref", {"x": ref_audio}, sr)
    generated = _write(tmp_path / "gen", {"x": gen_audio}, sr)
    value = _kl_report(models, generated, reference, "sam")["results"]["kl"]["value"]

    model = ASTForAudioClassification.from_pretrained(models["ast"]).eval()
    extractor = ASTFeatureExtractor.from_pretrained(models["ast"])

    def probabilities(audio):
        wave = torch.from_numpy(audio[:, 0])
        wave = wave * (10 ** (-1 / 20) / wave.abs().max())
        wave = torch.nn.functional.pad(wave, (0, 10 * sr - wave.shape[0]))  # one 10 s window, zero-padded
        with torch.no_grad():
            logits = model(**extractor([wave.numpy()], sampling_rate=sr, return_tensors="pt")).logits[0]
        return torch.softmax(logits.double(), dim=-1)

    p_gen, p_ref = probabilities(gen_audio), probabilities(ref_audio)
    expected = float((p_gen * (p_gen.log() - (p_ref + 1e-6).log())).sum())
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert float(kl_divergence(p_gen, p_ref)) == pytest.approx(expected, rel=1e-9)


def test_missing_weights_offline_name_the_model_and_the_download_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="CLAP model 'stable-audio-tools-tests/no-such-clap'.*"
                                                  "huggingface-cli download stable-audio-tools-tests/no-such-clap"):
        create_embedder("clap", model="stable-audio-tools-tests/no-such-clap")
    with pytest.raises(MissingWeightsError, match="AST classifier 'stable-audio-tools-tests/no-such-ast'"):
        create_embedder("ast", model="stable-audio-tools-tests/no-such-ast")


def test_evaluation_input_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not audio")
    with pytest.raises(EvaluationError, match="--generated .*no audio files"):
        AudioCollection.from_folder(empty, "generated", "--generated")
    with pytest.raises(EvaluationError, match="--reference .*not a directory"):
        AudioCollection.from_folder(tmp_path / "missing", "reference", "--reference")
    low = _write(tmp_path / "low", {"a": _tone(440, 2.0, 16000)}, 16000)
    high = _write(tmp_path / "high", {"a": _tone(440, 2.0, 22050)}, 22050)
    gen = AudioCollection.from_folder(low, "generated", "--generated")
    ref = AudioCollection.from_folder(high, "reference", "--reference")
    fd = EvaluationConfig(metrics=["fd"], embedder="logmel", progress=False)
    with pytest.raises(EvaluationError, match="different sample rates.*generated 'a' at 16000 Hz.*reference 'a' at "
                                              "22050 Hz.*--allow-mixed-sample-rates"):
        Evaluator(fd).evaluate(gen, ref)
    fd.allow_mixed_sample_rates = True
    assert Evaluator(fd).evaluate(gen, ref)["results"]["fd"]["value"] >= 0
    with pytest.raises(EvaluationError, match="si_sdr: generated 'a' is at 16000 Hz but its reference at 22050"):
        Evaluator(EvaluationConfig(metrics=["si_sdr"], progress=False)).evaluate(gen, ref)
    other = _write(tmp_path / "other", {"b": _tone(440, 1.0, 16000)}, 16000)
    with pytest.raises(EvaluationError, match="no name is in both sets"):
        Evaluator(EvaluationConfig(metrics=["mel"], progress=False)).evaluate(
            gen, AudioCollection.from_folder(other, "reference", "--reference"))
    with pytest.raises(EvaluationError, match="need a reference set"):
        Evaluator(EvaluationConfig(metrics=["fd"], embedder="logmel")).evaluate(gen)
    with pytest.raises(EvaluationError, match="--kl-classifier logmel: this embedder cannot compute 'kl'"):
        EvaluationConfig(metrics=["kl"], kl_classifier="logmel")


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    assert load_prompts(tmp_path / "p.txt") == {"0000": "first prompt", "0001": "second prompt"}
    (tmp_path / "p.json").write_text('{"abc": "drums"}')
    assert load_prompts(tmp_path / "p.json") == {"abc": "drums"}
    (tmp_path / "l.json").write_text('[{"id": "x", "prompt": "bass"}, "piano"]')
    with pytest.raises(EvaluationError, match="entry 1 must be"):
        load_prompts(tmp_path / "l.json")
    (tmp_path / "p.jsonl").write_text('{"id": "x", "prompt": "bass"}\n{"prompt": "piano"}\n')
    assert load_prompts(tmp_path / "p.jsonl") == {"x": "bass", "0001": "piano"}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EvaluationError, match="invalid JSON"):
        load_prompts(tmp_path / "bad.json")
