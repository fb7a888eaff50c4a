"""Metric maths: Frechet distance, KL conventions, windowing, CLAP score, reconstruction metrics,
preprocessing and the embedder registry."""
import math
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from stable_audio_tools.metrics import (AudioEmbedder, MissingPackageError, Preprocessing, audiocraft_segments,
                                        available_embedders, clap_score, clap_scores, create_embedder,
                                        embedding_statistics, frechet_distance, frechet_distance_from_embeddings,
                                        int16_round_trip, kl_audiocraft, kl_divergence, kl_sam, log_mel_distance,
                                        multi_resolution_stft_distance, peak_normalize, rank_by_clap,
                                        register_embedder, sam_windows, si_sdr, sqrtm_psd)
from stable_audio_tools.metrics.embedders import base as embedder_base


def _spd(dim, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_the_general_formula_for_non_commuting_covariances():
    s1, s2 = _spd(6, 0), _spd(6, 1)
    mu1, mu2 = np.arange(6.0), np.ones(6)
    cross = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_is_zero_for_identical_sets_and_symmetric():
    emb = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance_from_embeddings(emb, emb.clone()) == pytest.approx(0.0, abs=1e-9)
    other = emb * 2 + 1
    assert frechet_distance_from_embeddings(emb, other) == pytest.approx(frechet_distance_from_embeddings(other, emb),
                                                                         rel=1e-9)


def test_frechet_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(40000, 2))
    b = rng.normal([2.0, 0.0], [1.0, 3.0], size=(40000, 2))
    expected = 4.0 + (3.0 - 1.0) ** 2
    assert frechet_distance_from_embeddings(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_near_singular_covariances_stay_finite():
    rng = np.random.default_rng(4)
    low_rank = rng.standard_normal((5, 2)) @ rng.standard_normal((2, 16))  # 5 points in 16-D, rank 2
    constant = np.concatenate([rng.standard_normal((50, 3)), np.ones((50, 2))], axis=1)
    value = frechet_distance_from_embeddings(low_rank, low_rank + 1e-9 * rng.standard_normal(low_rank.shape))
    assert math.isfinite(value) and 0.0 <= value < 1e-6
    shifted = constant + np.array([0, 0, 0, 1.0, 0])
    assert frechet_distance_from_embeddings(constant, shifted) == pytest.approx(1.0, abs=1e-9)


def test_sqrtm_psd_and_statistics():
    s = _spd(5, 7)
    root = sqrtm_psd(s)
    np.testing.assert_allclose(root @ root, s, rtol=1e-10, atol=1e-10)
    mu, sigma = embedding_statistics(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]]))
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(np.array([[0, 2, 4], [1, 3, 8]])))
    with pytest.raises(ValueError, match="at least 2"):
        embedding_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        embedding_statistics(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance_from_embeddings(np.zeros((3, 2)), np.zeros((3, 4)))


def _logits(*probabilities):
    return torch.log(torch.tensor(probabilities, dtype=torch.float64))


KL_HALF_VS_QUARTER = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL([.5,.5] || [.25,.75])
KL_QUARTER_VS_HALF = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # KL([.25,.75] || [.5,.5])


def test_kl_divergence_by_hand():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    assert float(kl_divergence(p, q, eps=0.0)) == pytest.approx(KL_HALF_VS_QUARTER, rel=1e-12)
    assert float(kl_divergence(q, p, eps=0.0)) == pytest.approx(KL_QUARTER_VS_HALF, rel=1e-12)
    # zero-probability classes of p contribute nothing; eps keeps a zero in q finite
    assert float(kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), eps=0.0)) == pytest.approx(
        math.log(2.0))
    assert math.isfinite(float(kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))))


def test_kl_sam_pools_logits_before_the_softmax_and_is_kl_gen_ref():
    reference = [_logits([0.25, 0.75])]
    generated = [torch.log(torch.tensor([[1.0, 9.0], [9.0, 1.0]], dtype=torch.float64))]  # mean logits: uniform
    result = kl_sam(generated, reference)
    assert result["pairs"] == 1
    assert result["kl"] == pytest.approx(KL_HALF_VS_QUARTER, abs=1e-5)  # KL(gen || ref), not KL(ref || gen)
    assert kl_sam(reference, reference)["kl"] == pytest.approx(0.0, abs=1e-5)


def test_kl_audiocraft_per_segment_pq_qp_both():
    generated = [torch.cat([_logits([0.5, 0.5]), _logits([0.3, 0.7])])]
    reference = [torch.cat([_logits([0.25, 0.75]), _logits([0.3, 0.7])])]
    result = kl_audiocraft(generated, reference)
    assert result["pairs"] == 2
    assert result["kl_pq"] == pytest.approx(KL_QUARTER_VS_HALF / 2, abs=1e-5)  # KL(ref || gen)
    assert result["kl_qp"] == pytest.approx(KL_HALF_VS_QUARTER / 2, abs=1e-5)  # KL(gen || ref)
    assert result["kl"] == result["kl_pq"]
    assert result["kl_both"] == pytest.approx(result["kl_pq"] + result["kl_qp"])


def test_kl_audiocraft_pairs_the_first_segments_when_counts_differ(caplog):
    generated = [torch.cat([_logits([0.5, 0.5]), _logits([0.9, 0.1])])]
    reference = [_logits([0.5, 0.5])]
    assert kl_audiocraft(generated, reference)["pairs"] == 1
    assert "pairing the first 1" in caplog.text
    with pytest.raises(ValueError, match="same non-zero number"):
        kl_sam([], [])


def test_sam_windows_follow_the_reference_loop():
    sr = 10
    lengths = [w.shape[-1] for w in sam_windows(torch.zeros(120), sr)]  # 12 s: starts 0 and 5 s
    assert lengths == [100, 100]
    assert [w.shape[-1] for w in sam_windows(torch.zeros(160), sr)] == [100, 100, 100]  # 16 s: starts 0, 5, 10
    assert [w.shape[-1] for w in sam_windows(torch.zeros(30), sr)] == [100]  # 3 s: padded
    assert [w.shape[-1] for w in sam_windows(torch.zeros(10), sr)] == [10]  # 1 s < 1.5 s: not padded
    windows = sam_windows(torch.arange(120.0), sr)
    assert torch.equal(windows[1][:70], torch.arange(50.0, 120.0)) and not windows[1][70:].any()


def test_audiocraft_segments_split_without_overlap_and_drop_short_tails():
    assert [s.shape[-1] for s in audiocraft_segments(torch.zeros(2500), 100)] == [1000, 1000, 500]
    assert [s.shape[-1] for s in audiocraft_segments(torch.zeros(2010), 100)] == [1000, 1000]  # 0.1 s tail dropped
    with pytest.raises(ValueError, match="mono"):
        audiocraft_segments(torch.zeros(2, 100), 100)


def test_clap_scores_are_cosines():
    audio = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(clap_scores(audio, text).numpy(), [1.0, 1 / math.sqrt(2), -1.0], rtol=1e-12)
    assert clap_score(audio, torch.tensor([[1.0, 0.0]])) == pytest.approx((1 + 1 / math.sqrt(2) + 0) / 3)
    with pytest.raises(ValueError, match="text embeddings"):
        clap_scores(audio, text[:2])


@register_embedder("test-loudness")
class LoudnessEmbedder(AudioEmbedder):
    """A few-line user embedder: its "CLAP" space is (rms, 1 - rms); the text "loud" is (1, 0)."""

    sample_rate = 8000
    capabilities = ("fd", "clap")

    def frames(self, audio):
        return audio.reshape(-1, 80).pow(2).mean(dim=-1, keepdim=True).sqrt()

    def clip_embedding(self, audio):
        rms = audio.pow(2).mean().sqrt()
        return torch.stack([rms, 1 - rms]).reshape(1, 2)

    def embed_text(self, texts):
        return torch.tensor([[1.0, 0.0] if t == "loud" else [0.0, 1.0] for t in texts])


def test_user_embedder_registers_and_ranks_candidates_by_clap():
    assert "test-loudness" in available_embedders("clap")
    embedder = create_embedder("test-loudness", convention="audiocraft")  # no peak normalisation
    quiet, loud = 0.05 * torch.ones(1, 8000), 0.8 * torch.ones(1, 8000)
    ranking = rank_by_clap([quiet, loud, 0.3 * torch.ones(1, 8000)], 8000, "loud", embedder)
    assert [index for index, _ in ranking] == [1, 2, 0]
    assert ranking[0][1] > ranking[1][1] > ranking[2][1]
    assert embedder.embed(torch.ones(2, 16000), 16000).shape == (100, 1)  # mono, resampled to 8 kHz
    with pytest.raises(ValueError, match="cannot compute 'kl'"):
        embedder.label_logits(torch.ones(1, 8000), 8000)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown embedder 'nope'; registered: .*logmel"):
        create_embedder("nope")
    with pytest.raises(TypeError, match="bad options for embedder 'logmel'.*accepts .*n_mels"):
        create_embedder("logmel", n_mel=3)
    with pytest.raises(ValueError, match="already registered"):
        register_embedder("logmel")(LoudnessEmbedder)
    with pytest.raises(ValueError, match="convention must be one of"):
        create_embedder("logmel", convention="other")


@pytest.mark.parametrize("name, module, pip_name", [("openl3", "openl3", "openl3"),
                                                    ("panns", "panns_inference", "panns-inference"),
                                                    ("vggish", "torchvggish", "torchvggish"),
                                                    ("passt", "hear21passt.base", "hear21passt")])
def test_optional_embedders_name_their_missing_package(monkeypatch, name, module, pip_name):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(MissingPackageError, match=f"'{name}' embedder needs the {pip_name} package.*pip install "
                                                  f"{pip_name}"):
        create_embedder(name)


def test_logmel_embedder_is_deterministic_and_sensitive():
    embedder = create_embedder("logmel")
    tone = torch.sin(2 * math.pi * 440 * torch.arange(32000) / 16000).reshape(1, -1)
    first = embedder.embed(tone, 16000)
    assert first.shape == (3, 128)  # 2 s: 1 s windows every 0.5 s
    assert torch.equal(first, embedder.embed(tone, 16000))
    assert torch.allclose(first, embedder.embed(0.1 * tone, 16000), atol=1e-3)  # peak normalisation ("sam")
    other = torch.sin(2 * math.pi * 2000 * torch.arange(32000) / 16000).reshape(1, -1)
    assert (first - embedder.embed(other, 16000)).abs().max() > 1.0
    assert embedder.embed(tone[:, :4000], 16000).shape == (1, 128)  # shorter than a window


def test_reconstruction_metrics():
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(2, 1, 16000, generator=gen)
    noise = torch.randn(2, 1, 16000, generator=gen)
    noise = noise - noise.mean(dim=-1, keepdim=True)
    noise = noise - (noise * signal).sum(-1, keepdim=True) / (signal * signal).sum(-1, keepdim=True) * signal
    noise = noise * 0.1 * signal.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    assert torch.allclose(si_sdr(signal + noise, signal), torch.full((2,), 20.0, dtype=torch.float64), atol=0.05)
    assert torch.allclose(si_sdr(3.0 * signal + noise * 3.0, signal), si_sdr(signal + noise, signal), atol=1e-6)
    assert float(multi_resolution_stft_distance(signal, signal).abs().max()) < 1e-6
    assert float(log_mel_distance(signal, signal, 16000).abs().max()) < 1e-6
    worse, better = signal + 10 * noise, signal + noise
    assert (multi_resolution_stft_distance(worse, signal) > multi_resolution_stft_distance(better, signal)).all()
    assert (log_mel_distance(worse, signal, 16000) > log_mel_distance(better, signal, 16000)).all()
    with pytest.raises(ValueError, match="one shape"):
        si_sdr(signal, signal[:, :, :100])


def test_preprocessing_steps():
    audio = torch.stack([torch.full((100,), 0.5), torch.full((100,), -0.1)])
    assert peak_normalize(audio).abs().max() == pytest.approx(10 ** (-1 / 20))
    assert torch.equal(peak_normalize(torch.zeros(1, 10)), torch.zeros(1, 10))
    out = Preprocessing(sample_rate=8000, channels="mono", peak_db=-1.0)(audio, 16000)
    assert out.shape == (1, 50) and out.abs().max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    assert Preprocessing(16000, "stereo")(audio[:1], 16000).shape == (2, 100)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        Preprocessing(16000, "stereo")(torch.zeros(3, 10), 16000)
    assert torch.equal(int16_round_trip(torch.tensor([2.0, 0.5])), torch.tensor([1.0, 16383 / 32767]))
    with pytest.raises(ValueError, match="channels must be one of"):
        Preprocessing(16000, "surround")


def test_hf_weights_messages_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def not_cached(name):
        raise OSError(f"{name} is not a local folder and offline")

    with pytest.raises(embedder_base.MissingWeightsError,
                       match="CLAP model 'org/model'.*offline mode.*huggingface-cli download org/model.*--option "
                             "clap.model=DIR"):
        embedder_base.load_hf_pretrained(not_cached, "org/model", "CLAP model", "--option clap.model=DIR")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embedder_base.load_hf_pretrained(not_cached, str(tmp_path / "missing"), "CLAP model", "--option x")


def _fake_module(monkeypatch, name, **attrs):
    module = type(sys)(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_optional_embedder_without_weights_says_how_to_get_them(monkeypatch):
    def offline(**kwargs):
        raise OSError("no network")

    _fake_module(monkeypatch, "torchvggish", vggish=offline)
    _fake_module(monkeypatch, "torchvggish.vggish_input")
    with pytest.raises(embedder_base.MissingWeightsError, match="'vggish' embedder could not get its weights "
                                                                r"\(OSError: no network\).*torch hub cache"):
        create_embedder("vggish")


class _LegacyStftClassifier(torch.nn.Module):
    """Calls torch.stft the pre-1.8 way (no return_complex, real [..., 2] output), as PaSST does."""

    def forward(self, wave):
        spec = torch.stft(wave, 64, window=torch.hann_window(64))
        assert spec.shape[-1] == 2 and not spec.is_complex()
        power = spec.pow(2).sum(-1).mean(dim=-1)  # [1, 33]
        return power[:, :5].log()


def test_passt_wrapper_gives_legacy_stft_its_real_output(monkeypatch):
    _fake_module(monkeypatch, "hear21passt")
    _fake_module(monkeypatch, "hear21passt.base", get_basic_model=lambda mode: _LegacyStftClassifier())
    classifier = create_embedder("passt")
    original = torch.stft
    logits = classifier.label_logits(torch.randn(2, 32000 * 12), 32000)
    assert logits.shape == (2, 5)  # 12 s: windows starting at 0 s and 5 s
    assert torch.stft is original
    with pytest.raises(RuntimeError):
        torch.stft(torch.randn(128), 64, window=torch.hann_window(64))  # the patch is gone again


def test_frechet_of_self_concatenated_embeddings_doubles():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) * 1.5 + 0.3
    single = frechet_distance_from_embeddings(a, b)
    doubled = frechet_distance_from_embeddings(np.concatenate([a, a], 1), np.concatenate([b, b], 1))
    assert doubled == pytest.approx(2 * single, rel=1e-6)  # zero eigenvalues come back as sqrt(round-off)
