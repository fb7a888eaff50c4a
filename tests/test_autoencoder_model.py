"""AudioAutoencoder: every encoder/decoder/bottleneck type through the factory, chunking, batching, preprocessing."""
import copy

import pytest
import torch
from torch import nn

from stable_audio_tools.models.autoencoders import AudioAutoencoder
from stable_audio_tools.models.factory import create_model_from_config

SMALL = {
    "oobleck": ({"in_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4]},
                {"out_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [2, 4]}),
    "dac": ({"in_channels": 1, "d_model": 4, "strides": [2, 4]},
            {"out_channels": 1, "channels": 16, "rates": [4, 2]}),
    "seanet": ({"channels": 1, "n_filters": 4, "ratios": [2, 4], "lstm": 1},
               {"channels": 1, "n_filters": 4, "ratios": [4, 2], "lstm": 1}),
    "taae": ({"in_channels": 1, "channels": 8, "c_mults": [1, 2], "strides": [2, 4], "transformer_depths": [1, 1],
              "sliding_window": [7, 8]},
             {"out_channels": 1, "channels": 8, "c_mults": [1, 2], "strides": [2, 4], "transformer_depths": [1, 1],
              "sliding_window": [7, 8]}),
    "local_attn": ({"in_channels": 1, "embed_dims": [16, 32], "heads": [2, 2], "depths": [1, 1], "ratios": [2, 4],
                    "local_attn_window_size": 8},
                   {"out_channels": 1, "embed_dims": [32, 16], "heads": [2, 2], "depths": [1, 1], "ratios": [4, 2],
                    "local_attn_window_size": 8}),
}
LATENT_KEY = {"oobleck": "latent_dim", "dac": "latent_dim", "seanet": "dimension", "taae": "latent_dim",
              "local_attn": "out_channels"}
DECODER_LATENT_KEY = {"oobleck": "latent_dim", "dac": "latent_dim", "seanet": "dimension", "taae": "latent_dim",
                      "local_attn": "in_channels"}


def config(kind="oobleck", bottleneck=None, enc_latent=8, latent=8, extra_model=None):
    enc, dec = copy.deepcopy(SMALL[kind])
    enc[LATENT_KEY[kind]] = enc_latent
    dec[DECODER_LATENT_KEY[kind]] = latent
    model = {"encoder": {"type": kind, "config": enc}, "decoder": {"type": kind, "config": dec},
             "latent_dim": latent, "downsampling_ratio": 8, "io_channels": 1, **(extra_model or {})}
    if bottleneck:
        model["bottleneck"] = bottleneck
    return {"model_type": "autoencoder", "sample_rate": 16000, "sample_size": 512, "audio_channels": 1,
            "model": model}


@pytest.mark.parametrize("kind", list(SMALL))
def test_every_encoder_decoder_type_round_trips(kind):
    model = create_model_from_config(config(kind)).eval()
    audio = torch.randn(2, 1, 512) * 0.3
    with torch.no_grad():
        latents = model.encode(audio)
        assert latents.shape == (2, 8, 64)
        assert model.decode(latents).shape == (2, 1, 512)
    model.train()
    model.decode(model.encode(audio)).pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    copy.deepcopy(model)


BOTTLENECKS = [
    ({"type": "tanh", "config": {"scale": 2.0}}, 8, 8),
    ({"type": "vae"}, 16, 8),
    ({"type": "l2_norm"}, 8, 8),
    ({"type": "wasserstein", "config": {"noise_augment_dim": 2}}, 8, 10),
    ({"type": "rvq", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 2, "kmeans_init": False}}, 8, 8),
    ({"type": "rvq_vae", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 2, "kmeans_init": False}},
     16, 8),
    ({"type": "dac_rvq", "config": {"input_dim": 8, "n_codebooks": 2, "codebook_size": 16, "codebook_dim": 4}},
     8, 8),
    ({"type": "dac_rvq_vae", "config": {"input_dim": 8, "n_codebooks": 2, "codebook_size": 16,
                                        "codebook_dim": 4}}, 16, 8),
    ({"type": "fsq", "config": {"levels": [3, 3, 3, 3, 3, 3, 3, 3]}}, 8, 8),
    ({"type": "dithered_fsq", "config": {"dim": 8, "levels": 5}}, 8, 8),
]


@pytest.mark.parametrize("bottleneck,enc_latent,dec_latent", BOTTLENECKS, ids=[b["type"] for b, _, _ in BOTTLENECKS])
def test_every_bottleneck_in_an_autoencoder(bottleneck, enc_latent, dec_latent):
    cfg = config("oobleck", bottleneck, enc_latent=enc_latent, latent=dec_latent)
    cfg["model"]["latent_dim"] = 8
    model = create_model_from_config(cfg).eval()
    audio = torch.randn(2, 1, 512) * 0.3
    with torch.no_grad():
        latents, info = model.encode(audio, return_info=True)
        assert "pre_bottleneck_latents" in info
        decoded = model.decode(latents)
        assert decoded.shape == (2, 1, 512)
        if model.is_discrete:
            tokens = info[model.bottleneck.tokens_id]
            assert model.decode_tokens(tokens).shape == (2, 1, 512)
        else:
            with pytest.raises(ValueError, match="discrete bottleneck"):
                model.decode_tokens(latents)


def test_requires_grad_soft_clip_and_channel_overrides():
    cfg = config(extra_model={"in_channels": 1, "out_channels": 2})
    cfg["model"]["decoder"]["config"]["out_channels"] = 2
    cfg["model"]["encoder"]["requires_grad"] = False
    cfg["model"]["decoder"]["soft_clip"] = True
    model = create_model_from_config(cfg)
    assert (model.in_channels, model.out_channels, model.io_channels) == (1, 2, 1)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    with torch.no_grad():
        out = model.decode(torch.randn(1, 8, 4) * 100)
    assert out.shape == (1, 2, 32) and out.abs().max() <= 1.0


class _Strided(nn.Module):
    """Encoder/decoder without receptive-field overlap between frames, so chunking is exact."""

    def __init__(self, transpose):
        super().__init__()
        self.conv = (nn.ConvTranspose1d if transpose else nn.Conv1d)(2 if not transpose else 3,
                                                                     3 if not transpose else 2, 4, 4)

    def forward(self, x):
        return self.conv(x)


def test_chunked_encode_decode_equal_full_when_frames_are_independent():
    torch.manual_seed(0)
    model = AudioAutoencoder(_Strided(False), _Strided(True), latent_dim=3, downsampling_ratio=4, sample_rate=100,
                             io_channels=2).eval()
    audio = torch.randn(2, 2, 4 * 300)
    with torch.no_grad():
        full = model.encode_audio(audio)
        chunked = model.encode_audio(audio, chunked=True, chunk_size=64, overlap=16)
        torch.testing.assert_close(chunked, full)
        dec_full = model.decode_audio(full)
        dec_chunked = model.decode_audio(full, chunked=True, chunk_size=64, overlap=16)
        torch.testing.assert_close(dec_chunked, dec_full)
        # shorter than one chunk: encoded in one go
        torch.testing.assert_close(model.encode_audio(audio[..., :40], chunked=True), model.encode(audio[..., :40]))
    with pytest.raises(ValueError, match="larger than overlap"):
        model.encode_audio(audio, chunked=True, chunk_size=8, overlap=8)


def test_chunked_decode_close_to_full_for_oobleck():
    model = create_model_from_config(config()).eval()
    latents = torch.randn(1, 8, 200)
    with torch.no_grad():
        full = model.decode_audio(latents)
        chunked = model.decode_audio(latents, chunked=True, chunk_size=64, overlap=32)
    assert chunked.shape == full.shape
    assert (chunked - full).abs().max() < 1e-3 * max(1.0, full.abs().max().item())


def test_iterate_batch_matches_batched():
    model = create_model_from_config(config(bottleneck={"type": "tanh"})).eval()
    audio = torch.randn(3, 1, 512) * 0.3
    with torch.no_grad():
        torch.testing.assert_close(model.encode(audio, iterate_batch=True), model.encode(audio), atol=1e-5, rtol=1e-5)
        lat = model.encode(audio)
        torch.testing.assert_close(model.decode(lat, iterate_batch=True), model.decode(lat), atol=1e-5, rtol=1e-5)


def test_preprocess_audio_for_encoder():
    model = create_model_from_config(config())
    stereo_48k = torch.randn(2, 4800)
    out = model.preprocess_audio_for_encoder(stereo_48k, 48000)
    assert out.shape == (1, 1, 1600)  # resampled to 16 kHz, mono mean, multiple of 8
    batch = model.preprocess_audio_list_for_encoder([torch.randn(1001), torch.randn(1, 1, 803)], [16000, 16000])
    assert batch.shape == (2, 1, 1008) and torch.all(batch[0, :, 1001:] == 0) and torch.all(batch[1, :, 803:] == 0)
    with pytest.raises(ValueError, match="sample rates"):
        model.preprocess_audio_list_for_encoder([torch.randn(10)], [1, 2])


def test_local_transformer_with_adaptive_norm_conditioning():
    from stable_audio_tools.models.local_attn import ContinuousLocalTransformer

    block = ContinuousLocalTransformer(dim=16, depth=1, dim_in=4, dim_out=4, heads=2, local_attn_window_size=4,
                                       cond_dim=3)
    x, cond = torch.randn(2, 10, 4), torch.randn(2, 3)
    out = block(x, cond=cond)
    assert out.shape == (2, 10, 4)
    out.sum().backward()
    with pytest.raises(ValueError, match="needs `cond`"):
        block(x)
