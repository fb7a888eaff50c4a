"""Audio LM models: codebook patterns, backbone (KV cache), AudioLanguageModel(Wrapper), generation, factory.

The ``lm_delay`` golden comes from upstream (recipe_lm_delay): its weights load strictly and the
recorded pattern / conditioner / backbone outputs are reproduced; ``compute_logits`` (which crashes
upstream) must equal the reverted logits of upstream's own sub-modules.
"""
import copy
import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import load_file

from stable_audio_tools.models.codebook_patterns import (
    PATTERN_PROVIDERS, CoarseFirstPattern, DelayedPatternProvider, LayoutCoord, MusicLMPattern, Pattern,
    ParallelPatternProvider, UnrolledPatternProvider)
from stable_audio_tools.models.config import ConfigError
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.lm import AudioLanguageModelWrapper
from stable_audio_tools.models.lm_backbone import ContinuousTransformerAudioLMBackbone, KVCache
from stable_audio_tools.models.sampling_utils import multinomial, sample_top_k, sample_top_p
from stable_audio_tools.models.transformer import ContinuousTransformer

from conftest import FIXTURES

GOLDEN = FIXTURES / "golden" / "lm_delay"
META = [{"seconds_total": 2.0}, {"seconds_total": 9.0}]


@pytest.fixture(scope="module")
def golden():
    config = json.loads((GOLDEN / "model_config.json").read_text())
    model = create_model_from_config(config)
    model.load_state_dict(load_file(str(GOLDEN / "weights.safetensors")), strict=True)
    return model.eval(), load_file(str(GOLDEN / "io.safetensors")), config


def _perturb(model, seed=0):
    """Give zero-initialised output projections weights so every branch matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad and p.ndim >= 2 and bool((p == 0).all()):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    return model


# ----------------------------------------------------------------------------------------- golden
@torch.no_grad()
def test_golden_lm_delay(golden):
    model, io, _ = golden
    assert isinstance(model, AudioLanguageModelWrapper)
    codes = model.pretransform.tokenize(io["in.audio"])
    assert torch.equal(codes, io["out.tokens"])
    torch.testing.assert_close(model.pretransform.decode_tokens(codes), io["out.decode_tokens"], atol=1e-4, rtol=1e-4)
    pattern = model.lm.pattern_provider.get_pattern(codes.shape[-1])
    seq, idx, mask = pattern.build_pattern_sequence(codes, model.lm.masked_token_id, keep_only_valid_steps=True)
    for got, key in ((seq, "delay_seq_valid"), (idx, "delay_idx_valid"), (mask, "delay_mask_valid")):
        assert torch.equal(got, io[f"out.{key}"]), key
    seq_all, _, _ = pattern.build_pattern_sequence(codes, model.lm.masked_token_id)
    assert torch.equal(seq_all, io["out.delay_seq_all"])
    assert torch.equal(pattern.revert_pattern_sequence(seq_all, special_token=-1)[0], io["out.delay_reverted"])
    logits, _, lmask = pattern.revert_pattern_logits(io["in.logits_pattern"], float("nan"), keep_only_valid_steps=True)
    torch.testing.assert_close(logits, io["out.reverted_logits"], equal_nan=True)
    assert torch.equal(lmask, io["out.reverted_logits_mask"])

    cond = model.conditioner(META, "cpu")
    torch.testing.assert_close(cond["seconds_total"][0], io["out.cond.seconds_total.embedding"], atol=1e-4, rtol=1e-4)
    emb = sum(model.lm.embeds[i](seq[:, i]) for i in range(4))
    torch.testing.assert_close(emb, io["out.manual.embeds_sum"])
    ca = model.get_conditioning_inputs(cond)["cross_attn_cond"]
    ctx = model.lm.backbone.to_cross_attn_embed(ca)
    torch.testing.assert_close(ctx, io["out.manual.cross_attn_projected"], atol=1e-4, rtol=1e-4)
    hidden = model.lm.backbone.model(emb, context=ctx)
    torch.testing.assert_close(hidden, io["out.manual.backbone_out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.lm(seq, cross_attn_cond=ca), io["out.manual.logits"], atol=1e-4, rtol=1e-4)

    # compute_logits crashes upstream; here it equals upstream's sub-module logits reverted to code time
    out = model.compute_logits(codes, condition_tensors=cond)
    ref, _, ref_mask = pattern.revert_pattern_logits(io["out.manual.logits"].permute(0, 3, 1, 2), float("nan"), True)
    assert out.logits.shape == (2, 4, 10, 16) and out.mask.shape == (2, 4, 10)
    torch.testing.assert_close(out.logits, ref.permute(0, 2, 3, 1), atol=1e-4, rtol=1e-4, equal_nan=True)
    assert torch.equal(out.mask, ref_mask[None].expand(2, -1, -1))
    assert torch.isnan(out.logits[~out.mask]).all() and not torch.isnan(out.logits[out.mask]).any()


def test_state_dict_names(golden):
    model, _, _ = golden
    sd = model.state_dict()
    assert sd["lm.embeds.0.weight"].shape == (17, 64) and sd["lm.quantizer_heads.3.weight"].shape == (16, 64)
    assert "lm.backbone.model.layers.1.cross_attn.to_kv.weight" in sd
    assert "lm.backbone.to_cross_attn_embed.2.weight" in sd
    assert any(k.startswith("pretransform.model.encoder.") for k in sd)
    assert any(k.startswith("conditioner.conditioners.seconds_total.") for k in sd)
    assert not any(p.requires_grad for p in model.pretransform.parameters())
    clone = copy.deepcopy(model)  # EMA copies / checkpoints
    pickle.loads(pickle.dumps(clone.lm.pattern_provider))
    assert clone.lm.pattern_provider.get_pattern(5).timesteps == 5


# ----------------------------------------------------------------------------------------- patterns
PROVIDERS = {
    "delay": lambda q: DelayedPatternProvider(q),
    "delay_custom": lambda q: DelayedPatternProvider(q, delays=[0] + [2] * (q - 1)),
    "delay_flatten_first": lambda q: DelayedPatternProvider(q, flatten_first=2),
    "delay_empty_initial": lambda q: DelayedPatternProvider(q, empty_initial=2),
    "parallel": lambda q: ParallelPatternProvider(q),
    "unroll": lambda q: UnrolledPatternProvider(q),
    "unroll_partial": lambda q: UnrolledPatternProvider(q, flattening=[0] + [1] * (q - 1), delays=[0] + [3] * (q - 1)),
    "musiclm": lambda q: MusicLMPattern(q),
    "musiclm_3": lambda q: MusicLMPattern(q, group_by=3),
    "coarse_first": lambda q: CoarseFirstPattern(q),
    "coarse_first_delayed": lambda q: CoarseFirstPattern(q, delays=list(range(q - 1))),
}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
@pytest.mark.parametrize("n_q", [1, 4])
def test_pattern_round_trip_and_logits(name, n_q):
    provider = PROVIDERS[name](n_q)
    batch, timesteps, card = 2, 7, 11
    codes = torch.randint(0, card - 1, (batch, n_q, timesteps))
    pattern = provider.get_pattern(timesteps)
    assert provider.get_pattern(timesteps) is pattern  # cached
    seq, idx, mask = pattern.build_pattern_sequence(codes, special_token=card - 1)
    assert seq.shape == (batch, n_q, len(pattern.layout)) and idx.shape == mask.shape == seq.shape[1:]
    assert (seq[:, ~mask] == card - 1).all()
    back, _, back_mask = pattern.revert_pattern_sequence(seq, special_token=-1)
    assert back_mask.all() and torch.equal(back, codes)
    for coords_at_step, s in zip(pattern.layout, range(seq.shape[-1])):  # every coordinate lands in its step
        for t, q in coords_at_step:
            if t < timesteps:
                assert torch.equal(seq[:, q, s], codes[:, q, t])

    # logits from step s predict the tokens of step s + 1: one-hot "perfect" logits revert to the codes
    for keep_valid in (False, True):
        seq_k, _, mask_k = pattern.build_pattern_sequence(codes, card - 1, keep_only_valid_steps=keep_valid)
        shifted = torch.cat([seq_k[..., 1:], torch.full_like(seq_k[..., :1], card - 1)], dim=-1)
        logits = torch.nn.functional.one_hot(shifted, card).permute(0, 3, 1, 2).float()  # [B, card, K, S]
        rev, _, rev_mask = pattern.revert_pattern_logits(logits, float("nan"), keep_only_valid_steps=keep_valid)
        assert rev.shape == (batch, card, n_q, timesteps)
        assert torch.equal(rev.argmax(1)[:, rev_mask], codes[:, rev_mask])
        assert torch.isnan(rev[:, :, ~rev_mask]).all()
        if not keep_valid:
            assert rev_mask.all()


def test_pattern_layouts_match_audiocraft_semantics():
    codes = torch.arange(1, 5).repeat(3, 1)[None]  # [[1,2,3,4]] x 3 codebooks
    seq = DelayedPatternProvider(3).get_pattern(4).build_pattern_sequence(codes, 0, keep_only_valid_steps=True)[0]
    assert seq[0].tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3], [0, 0, 0, 1, 2]]
    assert ParallelPatternProvider(3).get_pattern(4).build_pattern_sequence(codes, 0)[0][0].tolist() == \
        [[0, 1, 2, 3, 4]] * 3
    unrolled = UnrolledPatternProvider(3).get_pattern(4)
    assert unrolled.layout[1:4] == [[LayoutCoord(0, 0)], [LayoutCoord(0, 1)], [LayoutCoord(0, 2)]]
    assert len(unrolled.layout) == 1 + 4 * 3
    musiclm = MusicLMPattern(4).get_pattern(2)
    assert [c for step in musiclm.layout for c in step][:4] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    coarse = CoarseFirstPattern(3).get_pattern(3)
    assert [c for step in coarse.layout[1:4] for c in step] == [(0, 0), (1, 0), (2, 0)]
    delay = DelayedPatternProvider(4).get_pattern(10)
    assert (delay.max_delay, len(delay.valid_layout), delay.get_first_step_with_timesteps(3)) == (3, 11, 4)
    assert sorted(PATTERN_PROVIDERS) == ["coarse_first", "delay", "musiclm", "parallel", "unroll"]


def test_pattern_errors():
    with pytest.raises(ValueError, match="past timesteps"):
        Pattern([[], [LayoutCoord(1, 0)], [LayoutCoord(0, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ValueError, match="same codebook"):
        Pattern([[], [LayoutCoord(0, 0), LayoutCoord(1, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ValueError, match="non-decreasing"):
        DelayedPatternProvider(2, delays=[1, 0])
    with pytest.raises(ValueError, match="same delay"):
        UnrolledPatternProvider(2, flattening=[0, 0], delays=[0, 1])
    with pytest.raises(ValueError, match="codebooks"):
        DelayedPatternProvider(3).get_pattern(4).build_pattern_sequence(torch.zeros(1, 2, 4, dtype=torch.long), 0)


# ----------------------------------------------------------------------------------------- sampling helpers
def test_sampling_helpers():
    probs = torch.softmax(torch.randn(3, 5, 16), dim=-1)
    before = probs.clone()
    g = torch.Generator().manual_seed(0)
    assert multinomial(probs, 1, generator=g).shape == (3, 5, 1)
    assert multinomial(probs, 4, generator=g).shape == (3, 5, 4)
    top1 = sample_top_k(probs, 1, generator=g)
    assert torch.equal(top1, probs.argmax(-1, keepdim=True))
    assert sample_top_k(probs, 250, generator=g).shape == (3, 5, 1)  # k > vocabulary keeps everything
    assert torch.equal(sample_top_p(probs, 1e-6, generator=g), probs.argmax(-1, keepdim=True))
    top3 = probs.topk(3, dim=-1).indices
    for _ in range(5):
        assert (sample_top_k(probs, 3, generator=g) == top3).any(-1).all()
    assert torch.equal(probs, before)  # inputs are not modified in place
    draws = multinomial(torch.tensor([0.1, 0.0, 0.9]).expand(4000, 3), 1, generator=g).flatten()
    assert (draws != 1).all() and abs((draws == 2).float().mean().item() - 0.9) < 0.03


# ----------------------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("options", [{}, {"num_memory_tokens": 2, "use_abs_pos_emb": True},
                                     {"use_sinusoidal_emb": True, "add_rope": True, "rotary_pos_emb": False},
                                     {"global_cond_dim": 6, "attn_kwargs": {"qk_norm": "ln"}},
                                     {"attn_kwargs": {"differential": True}}])
@torch.no_grad()
def test_transformer_kv_cache_matches_full_forward(options):
    torch.manual_seed(0)
    model = _perturb(ContinuousTransformer(dim=64, depth=2, dim_heads=32, causal=True, cross_attend=True,
                                           cond_token_dim=32, **options)).eval()
    x, ctx, prepend = torch.randn(2, 9, 64), torch.randn(2, 3, 32), torch.randn(2, 2, 64)
    glob = torch.randn(2, 6) if "global_cond_dim" in options else None
    kw = dict(context=ctx, global_cond=glob, cross_attn_causal=False)
    full = model(x, prepend_embeds=prepend, **kw)
    cache = KVCache(2)
    parts = [model(x[:, :4], prepend_embeds=prepend, kv_cache=cache.layers, **kw)]
    parts.append(model(x[:, 4:7], kv_cache=cache.layers, **kw))  # multi-token chunk
    for i in (7, 8):
        parts.append(model(x[:, i:i + 1], kv_cache=cache.layers, **kw))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 9 + 2 + options.get("num_memory_tokens", 0)
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="one dict per layer"):
        model(x, kv_cache=[{}])


# ----------------------------------------------------------------------------------------- generation
def _generate(model, **kwargs):
    kwargs.setdefault("disable_tqdm", True)
    return model.generate(**kwargs)


@torch.no_grad()
def test_generation_sampling_options(golden):
    model, io, _ = golden
    greedy = _generate(model, max_gen_len=12, conditioning=META, temp=0, seed=1)
    assert greedy.shape == (2, 4, 12) and greedy.dtype == torch.long
    assert ((greedy >= 0) & (greedy < 16)).all()
    assert torch.equal(greedy, _generate(model, max_gen_len=12, conditioning=META, temp=0, seed=2))
    assert torch.equal(greedy, _generate(model, max_gen_len=12, conditioning=META, temp=0, use_cache=False))
    assert torch.equal(greedy, _generate(model, max_gen_len=12, conditioning=META, top_k=1, seed=5))
    assert torch.equal(greedy, _generate(model, max_gen_len=12, conditioning=META, top_p=1e-6, top_k=0, seed=5))
    for options in ({"top_k": 4}, {"top_p": 0.8}, {"top_k": 0, "temp": 1.5}):
        a = _generate(model, max_gen_len=12, conditioning=META, seed=3, **options)
        b = _generate(model, max_gen_len=12, conditioning=META, seed=3, use_cache=False, **options)
        c = _generate(model, max_gen_len=12, conditioning=META, seed=4, **options)
        assert torch.equal(a, b) and not torch.equal(a, c), options
    torch.manual_seed(7)
    a = _generate(model, max_gen_len=8, conditioning=META)
    torch.manual_seed(7)
    assert torch.equal(a, _generate(model, max_gen_len=8, conditioning=META))  # seed=-1 follows torch's RNG
    steps = []
    _generate(model, max_gen_len=6, conditioning=META, temp=0, callback=lambda i, n: steps.append((i, n)))
    assert steps == [(i, 9) for i in range(1, 10)]  # 6 frames + 3 delay steps after the start token


@torch.no_grad()
def test_generation_cfg_matches_manual_guidance(golden):
    model, _, _ = golden
    scale = 4.0
    out = _generate(model, max_gen_len=1, conditioning=META, temp=0, cfg_scale=scale)
    cond = model.conditioner(META, "cpu")
    ca = model.get_conditioning_inputs(cond)["cross_attn_cond"]
    start = torch.full((2, 4, 1), 16)
    cond_logits = model.lm(start, cross_attn_cond=ca)[:, :, -1]
    uncond_logits = model.lm(start, cross_attn_cond=torch.zeros_like(ca))[:, :, -1]
    expected = (uncond_logits + (cond_logits - uncond_logits) * scale).argmax(-1)
    assert torch.equal(out[:, 0, 0], expected[:, 0])  # codebook 0 of frame 0 is predicted at the first step
    assert torch.equal(_generate(model, max_gen_len=10, conditioning=META, temp=0, cfg_scale=scale),
                       _generate(model, max_gen_len=10, conditioning=META, temp=0, cfg_scale=scale, use_cache=False))
    no_cfg = _generate(model, max_gen_len=10, conditioning=META, temp=0, cfg_scale=scale, cross_attn_use_cfg=False)
    assert torch.equal(no_cfg, _generate(model, max_gen_len=10, conditioning=META, temp=0))


@torch.no_grad()
def test_continuation_keeps_prompt(golden):
    model, io, _ = golden
    prompt = io["out.tokens"][..., :5]
    for use_cache in (True, False):
        out = _generate(model, max_gen_len=11, init_data=prompt, conditioning=META, top_k=3, seed=0,
                        use_cache=use_cache)
        assert out.shape == (2, 4, 11) and torch.equal(out[..., :5], prompt)
    audio_prompt = io["in.audio"][..., :20]
    out = _generate(model, max_gen_len=9, init_audio=audio_prompt, conditioning=META, temp=0)
    assert torch.equal(out[..., :5], model.pretransform.tokenize(audio_prompt))
    audio = model.generate_audio(max_gen_len=9, init_audio=audio_prompt, conditioning=META, temp=0, disable_tqdm=True)
    assert audio.shape == (2, 1, 36)
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        _generate(model, max_gen_len=8, batch_size=3, conditioning=META)
    with pytest.raises(ValueError, match="max_gen_len"):
        _generate(model, max_gen_len=5, init_data=prompt)
    with pytest.raises(ValueError, match="not both"):
        _generate(model, max_gen_len=8, init_data=prompt, init_audio=audio_prompt)


# ----------------------------------------------------------------------------------------- factory / pretransforms
def _lm_config(bottleneck, pattern="delay", lm_extra=None, routes=None, conditioning=True):
    ae = {"encoder": {"type": "oobleck", "config": {"in_channels": 1, "channels": 4, "c_mults": [1], "strides": [2],
                                                     "latent_dim": 8}},
          "decoder": {"type": "oobleck", "config": {"out_channels": 1, "channels": 4, "c_mults": [1], "strides": [2],
                                                     "latent_dim": 8}},
          "bottleneck": bottleneck, "latent_dim": 8, "downsampling_ratio": 2, "io_channels": 1}
    lm = {"type": "continuous_transformer", "codebook_pattern": pattern,
          "config": {"embed_dim": 32, "depth": 1, "dim_heads": 32, **(lm_extra or {})}, **(routes or {})}
    model = {"pretransform": {"type": "autoencoder", "config": ae}, "lm": lm}
    if conditioning:
        model["conditioning"] = {"cond_dim": 16, "configs": [
            {"id": "seconds_total", "type": "number", "config": {"max_val": 10}},
            {"id": "genre", "type": "list", "config": {"options": ["a", "b"]}}]}
    return {"model_type": "lm", "sample_rate": 16000, "sample_size": 64, "model": model}


RVQ = {"type": "rvq", "config": {"dim": 8, "codebook_size": 16, "num_quantizers": 3, "kmeans_init": False}}
DAC_RVQ = {"type": "dac_rvq", "config": {"input_dim": 8, "n_codebooks": 3, "codebook_size": 16, "codebook_dim": 4}}
ROUTES = {"cross_attention_cond_ids": ["seconds_total"], "prepend_cond_ids": ["genre"],
          "global_cond_ids": ["seconds_total"]}
ROUTED = {"cross_attn_cond_dim": 16, "project_cross_attn_cond": True, "prepend_cond_dim": 16, "global_cond_dim": 16}


@pytest.mark.parametrize("bottleneck", [RVQ, DAC_RVQ], ids=["rvq", "dac_rvq"])
def test_discrete_autoencoder_pretransforms(bottleneck):
    torch.manual_seed(0)
    config = _lm_config(bottleneck, lm_extra=ROUTED, routes=ROUTES)
    frozen = copy.deepcopy(config)
    model = _perturb(create_model_from_config(config))
    assert config == frozen
    assert (model.num_quantizers, model.codebook_size, model.min_input_length) == (3, 16, 2)
    audio = torch.randn(2, 1, 32) * 0.3
    codes = model.pretransform.tokenize(audio)
    assert codes.shape == (2, 3, 16) and codes.dtype == torch.long
    ae = model.pretransform.model
    quantized = ae.decode(ae.encode(audio))
    torch.testing.assert_close(model.pretransform.decode_tokens(codes), quantized, atol=1e-5, rtol=1e-4)
    tokens = ae.encode(audio, return_info=True)[1][ae.bottleneck.tokens_id]
    assert torch.equal(model.pretransform.tokens_to_codes(tokens), codes)
    assert torch.equal(model.tokens_to_codes(tokens), codes)

    meta = [{"seconds_total": 3.0, "genre": "a"}, {"seconds_total": 7.0, "genre": "b"}]
    model.train()
    assert model.lm.training and not model.pretransform.training and not ae.training  # frozen codec stays eval
    assert torch.equal(model.pretransform.tokenize(audio), codes)
    cond = model.conditioner(meta, "cpu")
    out = model.compute_logits(codes, condition_tensors=cond, cfg_dropout_prob=0.5)
    assert out.logits.shape == (2, 3, 16, 16) and out.mask.shape == (2, 3, 16)
    loss = torch.nn.functional.cross_entropy(out.logits[out.mask], codes[out.mask])
    loss.backward()
    assert torch.isfinite(loss) and model.lm.backbone.to_prepend_embed[0].weight.grad is not None
    assert model.lm.backbone.model.global_cond_embedder[0].weight.grad is not None
    assert all(p.grad is None for p in model.pretransform.parameters())

    model.eval()
    with torch.no_grad():
        a = _generate(model, max_gen_len=10, conditioning=meta, temp=0, cfg_scale=2.0)
        b = _generate(model, max_gen_len=10, conditioning=meta, temp=0, cfg_scale=2.0, use_cache=False)
        assert torch.equal(a, b)
        audio_out = model.generate_audio(max_gen_len=10, conditioning=meta, top_p=0.9, seed=0, disable_tqdm=True)
    assert audio_out.shape == (2, 1, 20)


@pytest.mark.parametrize("pattern", ["parallel", "unroll", "musiclm", "coarse_first"])
@torch.no_grad()
def test_other_patterns_generate_with_and_without_cache(pattern):
    torch.manual_seed(1)
    model = _perturb(create_model_from_config(_lm_config(DAC_RVQ, pattern=pattern, conditioning=False))).eval()
    codes = model.pretransform.tokenize(torch.randn(1, 1, 24) * 0.3)
    out = model.compute_logits(codes)
    assert out.logits.shape == (1, 3, 12, 16) and out.mask.any()
    a = _generate(model, max_gen_len=8, temp=0)
    assert a.shape == (1, 3, 8) and torch.equal(a, _generate(model, max_gen_len=8, temp=0, use_cache=False))
    prompt = _generate(model, max_gen_len=8, init_data=codes[..., :3], top_k=4, seed=0)
    assert torch.equal(prompt[..., :3], codes[..., :3])


def test_factory_errors():
    continuous = _lm_config({"type": "vae"})
    continuous["model"]["pretransform"]["config"]["encoder"]["config"]["latent_dim"] = 16
    with pytest.raises(ConfigError, match="model.pretransform.*discrete"):
        create_model_from_config(continuous)
    with pytest.raises(ConfigError, match="codebook_pattern"):
        create_model_from_config(_lm_config(DAC_RVQ, pattern="spiral"))
    with pytest.raises(ConfigError, match="prepend_cond_dim"):
        create_model_from_config(_lm_config(DAC_RVQ, routes={"prepend_cond_ids": ["genre"]}))
    with pytest.raises(ConfigError, match="not a conditioner id"):
        create_model_from_config(_lm_config(DAC_RVQ, routes={"cross_attention_cond_ids": ["prompt"]}))
    missing = _lm_config(DAC_RVQ)
    del missing["model"]["pretransform"]
    with pytest.raises(ConfigError, match="model.pretransform"):
        create_model_from_config(missing)
    with pytest.warns(UserWarning, match="global_cond_dim"):
        create_model_from_config(_lm_config(DAC_RVQ, routes={"global_cond_ids": ["seconds_total"]}))
    bad_type = _lm_config(DAC_RVQ)
    bad_type["model"]["lm"]["type"] = "mamba"
    with pytest.raises(ConfigError, match="model.lm.type"):
        create_model_from_config(bad_type)
    with pytest.raises(ValueError, match="set by the LM backbone"):
        ContinuousTransformerAudioLMBackbone(32, causal=False, depth=1)


def test_x_transformers_backbone():
    config = _lm_config(DAC_RVQ, conditioning=False)
    config["model"]["lm"]["type"] = "x_transformers"
    config["model"]["lm"]["config"] = {"embed_dim": 32, "depth": 1, "heads": 2}
    try:
        import x_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install x-transformers"):
            create_model_from_config(config)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model_from_config(config).eval()
        codes = model.pretransform.tokenize(torch.randn(1, 1, 16) * 0.3)
        assert model.compute_logits(codes).logits.shape == (1, 3, 8, 16)
        assert _generate(model, max_gen_len=4, temp=0).shape == (1, 3, 4)
