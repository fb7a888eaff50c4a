"""LM training wrapper (SPEC 5.6), LM demo callback (SPEC 5.8) and LM unwrapping (SPEC 1.3), with a real
Lightning Trainer on CPU: the loss falls on a learnable token pattern, pattern and padding masks, CFG dropout,
pre-encoded tokens, the frozen pretransform, EMA, optimizers, export/unwrap and the demo."""
import copy
import json
import logging

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from stable_audio_tools.data.dataset import collation_fn
from stable_audio_tools.models.config import ConfigError, ConfigWarning
from stable_audio_tools.models.factory import create_model_from_config
from stable_audio_tools.models.utils import load_ckpt_state_dict
from stable_audio_tools.training import create_demo_callback_from_config, create_training_wrapper_from_config
from stable_audio_tools.training import lm as lm_training
from stable_audio_tools.training.lm import AudioLanguageModelTrainingWrapper, codebook_cross_entropy, tokens_to_codes
from stable_audio_tools.training.lm_demos import AudioLanguageModelDemoCallback
from stable_audio_tools.training.unwrap import UNWRAPPERS

from conftest import FIXTURES

pytestmark = [pytest.mark.filterwarnings("ignore:.*eval mode at the start of training"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec"),
              pytest.mark.filterwarnings("ignore:.*val_dataloader")]

Q, K, RATIO = 4, 16, 4
GOLDEN = json.loads((FIXTURES / "golden" / "lm_delay" / "model_config.json").read_text())


def lm_config(training=None, conditioned=True, bottleneck=None, **lm_overrides):
    """A small LM on the lm_delay golden's dac_rvq autoencoder (4 codebooks of 16, 4 samples per frame)."""
    config = copy.deepcopy(GOLDEN)
    config["model"]["lm"]["config"].update(embed_dim=32, depth=1, dim_heads=32)
    config["model"]["lm"].update(lm_overrides)
    if not conditioned:
        del config["model"]["conditioning"]
        del config["model"]["lm"]["cross_attention_cond_ids"]
        config["model"]["lm"]["config"].pop("cross_attn_cond_dim")
        config["model"]["lm"]["config"].pop("project_cross_attn_cond")
    if bottleneck is not None:
        config["model"]["pretransform"]["config"]["bottleneck"] = bottleneck
    config["training"] = {"learning_rate": 3e-3} if training is None else training
    return config


def build(config, **overrides):
    torch.manual_seed(0)
    model = create_model_from_config(config)
    return create_training_wrapper_from_config(config, model, **overrides)


class TokenDataset(Dataset):
    """Pre-encoded tokens ``[Q, T]``: a period-4 pattern (shifted by one per codebook) at a random phase, the
    last ``pad`` frames padding (random garbage tokens, padding mask 0, stored as a 1-element list)."""

    def __init__(self, length=32, pad=0, count=64):
        self.length, self.pad, self.count = length, pad, count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        t = torch.arange(self.length) + i % 4
        codes = torch.stack([(torch.tensor([1, 5, 9, 13])[t % 4] + q) % K for q in range(Q)])
        mask = torch.ones(self.length)
        if self.pad:
            codes[:, -self.pad:] = torch.randint(0, K, (Q, self.pad))
            mask[-self.pad:] = 0
        return codes, {"padding_mask": [mask], "seconds_total": i % 10}


class AudioDataset(Dataset):
    """Mono tones ``[1, 128]`` (32 frames) with an audio-rate padding mask and timing metadata."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        t = torch.arange(128) / 16000
        return 0.5 * torch.sin(2 * torch.pi * (500 + 250 * i) * t)[None], \
            {"padding_mask": torch.ones(128), "seconds_total": i}


def fit(wrapper, dataset, steps=2, batch_size=4, val=None, **kwargs):
    kwargs.setdefault("logger", False)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **kwargs)
    val_dl = DataLoader(val, batch_size=batch_size, collate_fn=collation_fn) if val is not None else None
    trainer.fit(wrapper, DataLoader(dataset, batch_size=batch_size, collate_fn=collation_fn), val_dl)
    return trainer


class Spy:
    """Records the keyword arguments (and ``record(*args)``) of every call to ``obj.<name>``."""

    def __init__(self, obj, name, record=None):
        self.calls = []
        original = getattr(obj, name)

        def wrapped(*args, **kwargs):
            self.calls.append(record(*args, **kwargs) if record is not None else kwargs)
            return original(*args, **kwargs)

        setattr(obj, name, wrapped)


# ---------------------------------------------------------------- loss pieces
def test_codebook_cross_entropy_matches_per_codebook_masked_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    targets = torch.randint(0, 7, (2, 3, 5))
    mask = torch.rand(2, 3, 5) > 0.3
    mask[:, 2] = False  # a codebook without valid targets
    logits[~mask] = float("nan")  # the pattern's invalid positions hold NaN logits
    loss, per_codebook = codebook_cross_entropy(logits, targets, mask)
    expected = [torch.nn.functional.cross_entropy(logits[:, q][mask[:, q]], targets[:, q][mask[:, q]])
                for q in range(2)]
    for got, want in zip(per_codebook, expected):
        torch.testing.assert_close(got, want)
    assert torch.isnan(per_codebook[2])
    torch.testing.assert_close(loss, (expected[0] + expected[1]) / 2)
    with pytest.raises(ValueError, match="no valid target"):
        codebook_cross_entropy(logits, targets, torch.zeros_like(mask))
    with pytest.raises(ValueError, match=r"\[B, Q, T, K\]"):
        codebook_cross_entropy(logits[:, :2], targets, mask)


def test_tokens_to_codes_layouts():
    dac = build(lm_config(conditioned=False)).model
    codes = torch.randint(0, K, (2, Q, 6))
    assert torch.equal(tokens_to_codes(codes.int(), dac), codes)
    with pytest.raises(ValueError, match="pre_encode.py --is-discrete"):
        tokens_to_codes(codes.float(), dac)
    with pytest.raises(ValueError, match="4 codebooks"):
        tokens_to_codes(codes[:, :3], dac)
    rvq = build(lm_config(conditioned=False, bottleneck={"type": "rvq", "config": {
        "dim": 8, "codebook_size": K, "num_quantizers": Q, "kmeans_init": False}})).model
    # pre-encoded rvq tokens are stored [T, Q] (the bottleneck's layout); tokenize already gives [B, Q, T]
    assert torch.equal(tokens_to_codes(codes.transpose(1, 2).contiguous(), rvq, pre_encoded=True), codes)
    assert torch.equal(tokens_to_codes(codes, rvq, pre_encoded=True), codes)  # already codebook-major
    audio = torch.randn(2, 1, 24) * 0.3
    assert tokens_to_codes(rvq.pretransform.tokenize(audio), rvq).shape == (2, Q, 6)


# ---------------------------------------------------------------- training
def test_loss_falls_on_a_repeating_token_pattern():
    wrapper = build(lm_config(conditioned=False, training={"learning_rate": 3e-3, "pre_encoded": True}))
    assert wrapper.pre_encoded and wrapper.model_ema is None

    def no_tokenize(*args, **kwargs):
        raise AssertionError("pre-encoded tokens must not be tokenized again")

    wrapper.model.pretransform.tokenize = no_tokenize
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = fit(wrapper, TokenDataset(), steps=15, callbacks=[Record()])
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:3]) / 3, losses
    metrics = trainer.callback_metrics
    expected = {"train/loss", "train/cross_entropy", "train/perplexity", "train/lr"}
    expected |= {f"{kind}_q{k}" for kind in ("cross_entropy", "perplexity") for k in range(1, Q + 1)}
    assert expected <= set(metrics)
    torch.testing.assert_close(metrics["train/perplexity"], metrics["train/cross_entropy"].exp())
    assert metrics["train/lr"] == pytest.approx(3e-3)


def test_loss_mask_is_the_pattern_mask_and_the_padding_mask(monkeypatch):
    captured = []

    def spy(logits, targets, mask):
        captured.append((logits.detach(), targets, mask))
        return codebook_cross_entropy(logits, targets, mask)

    monkeypatch.setattr(lm_training, "codebook_cross_entropy", spy)
    wrapper = build(lm_config(training={"learning_rate": 1e-3, "pre_encoded": True, "cfg_dropout_prob": 0.0}))
    fit(wrapper, TokenDataset(length=16, pad=4), steps=1)
    logits, targets, mask = captured[0]
    assert mask.shape == targets.shape == (4, Q, 16)
    assert not mask[..., 12:].any()  # padding frames never count
    pattern_mask = ~torch.isnan(logits[..., 0])  # positions the delay pattern predicts
    assert (~pattern_mask).any() and pattern_mask.any()
    assert torch.equal(mask, pattern_mask & (torch.arange(16) < 12))


def test_cfg_dropout_zeroes_the_conditioning_per_item():
    def cross_attn(*args, **kwargs):
        return kwargs["cross_attn_cond"].detach().clone()

    for prob, all_zero in ((1.0, True), (0.0, False)):
        wrapper = build(lm_config(training={"learning_rate": 1e-3, "pre_encoded": True, "cfg_dropout_prob": prob}))
        spy = Spy(wrapper.model.lm, "forward", cross_attn)
        fit(wrapper, TokenDataset(length=8, count=8), steps=1)
        cond = spy.calls[0]
        assert cond.shape[0] == 4
        assert bool((cond == 0).all()) == all_zero
        assert all_zero or all(bool((c != 0).any()) for c in cond)
    assert build(lm_config()).cfg_dropout_prob == 0.1  # upstream's hard-coded value is the default
    compute = Spy(wrapper.model, "compute_logits")
    fit(wrapper, TokenDataset(length=8, count=4), steps=1)
    assert compute.calls[0]["cfg_dropout_prob"] == 0.0 and "seconds_total" in compute.calls[0]["condition_tensors"]


def test_audio_is_tokenized_by_the_frozen_pretransform_in_eval_mode():
    config = lm_config(conditioned=False, bottleneck={"type": "rvq", "config": {
        "dim": 8, "codebook_size": K, "num_quantizers": Q, "kmeans_init": False}})  # EMA codebook updates in train mode
    wrapper = build(config)
    before = {k: v.clone() for k, v in wrapper.model.pretransform.state_dict().items()}
    modes = Spy(wrapper.model.pretransform, "tokenize",
                lambda *a, **k: (wrapper.model.pretransform.training, torch.is_grad_enabled()))
    fit(wrapper, AudioDataset(), steps=2)
    assert modes.calls == [(False, False), (False, False)]
    after = wrapper.model.pretransform.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in wrapper.model.pretransform.parameters())


def test_validation_logs_cross_entropy_without_dropout():
    wrapper = build(lm_config(training={"learning_rate": 1e-3, "pre_encoded": True}))
    trainer = fit(wrapper, TokenDataset(length=8, count=4), steps=1, val=TokenDataset(length=8, count=4))
    assert {"val/cross_entropy", "val/perplexity"} <= set(trainer.callback_metrics)


# ---------------------------------------------------------------- EMA, optimizers, export
def test_ema_keys_updates_export_and_unwrap(tmp_path):
    config = lm_config(training={"learning_rate": 1e-2, "use_ema": True, "pre_encoded": True})
    wrapper = build(config)
    ema = wrapper.model_ema
    assert (ema.beta, ema.update_every, ema.update_after_step) == (0.99, 10, 100)
    initial = {k: v.clone() for k, v in wrapper.model.state_dict().items()}
    fit(wrapper, TokenDataset(length=8, count=8), steps=2)
    assert int(ema.step) == 2
    keys = set(wrapper.state_dict())
    assert {"model_ema.initted", "model_ema.step"} <= keys
    for key in wrapper.model.state_dict():
        assert {f"model.{key}", f"model_ema.online_model.{key}", f"model_ema.ema_model.{key}"} <= keys
    # update 0 copied the weights (before the first optimizer step); updates 1..9 are skipped (update_every 10)
    ema_sd, online_sd = ema.ema_model.state_dict(), wrapper.model.state_dict()
    assert all(torch.equal(ema_sd[k], initial[k]) for k in initial)
    assert not torch.equal(online_sd["lm.embeds.0.weight"], initial["lm.embeds.0.weight"])

    for suffix, safetensors in ((".ckpt", False), (".safetensors", True)):
        wrapper.export_model(str(tmp_path / f"lm{suffix}"), use_safetensors=safetensors)
        exported = load_ckpt_state_dict(str(tmp_path / f"lm{suffix}"))
        assert set(exported) == set(initial) and all(torch.equal(exported[k], initial[k]) for k in initial)
    unwrapped = UNWRAPPERS["lm"](config, wrapper.state_dict()).state_dict()
    assert all(torch.equal(unwrapped[k], initial[k]) for k in initial)
    online = UNWRAPPERS["lm"](config, {k: v for k, v in wrapper.state_dict().items() if not k.startswith("model_ema")})
    assert torch.equal(online.state_dict()["lm.embeds.0.weight"], online_sd["lm.embeds.0.weight"])


def test_optimizer_defaults_configs_and_validation():
    wrapper = build(lm_config(training={"learning_rate": 2e-4}))
    opt = wrapper.configure_optimizers()[0]
    assert type(opt) is torch.optim.AdamW
    assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["weight_decay"] == 0.1
    groups = {"lm": {"optimizer": {"type": "Adam", "config": {"lr": 1e-3}},
                     "scheduler": {"type": "InverseLR", "config": {"inv_gamma": 10, "warmup": 0.5}}}}
    with pytest.warns(ConfigWarning, match="optimizer_configs wins"):
        wrapper = build(lm_config(training={"learning_rate": 2e-4, "optimizer_configs": groups}))
    opts, scheds = wrapper.configure_optimizers()
    assert type(opts[0]) is torch.optim.Adam and scheds[0]["interval"] == "step"
    with pytest.raises(ConfigError, match="training.learning_rate"):
        build(lm_config(training={}))
    with pytest.raises(ConfigError, match="optimizer_configs.lm"):
        build(lm_config(training={"optimizer_configs": {"diffusion": groups["lm"]}}))
    with pytest.raises(ConfigError, match="cfg_dropout_prob"):
        build(lm_config(training={"learning_rate": 1e-4, "cfg_dropout_prob": 2}))
    with pytest.warns(ConfigWarning, match="training.typo"):
        build(lm_config(training={"learning_rate": 1e-4, "typo": 1}))
    with pytest.raises(ValueError, match="lr or optimizer_configs"):
        AudioLanguageModelTrainingWrapper(wrapper.model, lr=None)


# ---------------------------------------------------------------- demo callback
def test_demo_generates_every_cfg_scale(tmp_path, caplog):
    config = lm_config(training={"learning_rate": 1e-3, "pre_encoded": True, "demo": {
        "demo_every": 1, "num_demos": 2, "demo_cfg_scales": [1, 3],
        "demo_cond": [{"seconds_total": 1}, {"seconds_total": 5}, {"seconds_total": 9}]}})
    config["sample_size"] = 48  # 12 frames
    wrapper = build(config)
    callback = create_demo_callback_from_config(config, demo_dl=[])
    assert isinstance(callback, AudioLanguageModelDemoCallback) and len(callback.demo_conditioning) == 2
    spy = Spy(wrapper.model, "generate_audio")
    logger = CSVLogger(str(tmp_path), name="demo")
    with caplog.at_level(logging.ERROR):
        fit(wrapper, TokenDataset(length=8, count=4), steps=1, logger=logger, callbacks=[callback])
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    assert [c["cfg_scale"] for c in spy.calls] == [1, 3]
    assert all(c["batch_size"] == 2 and c["max_gen_len"] == 12 and c["temp"] == 1.0 and c["top_p"] == 0.95
               and c["conditioning"] == [{"seconds_total": 1}, {"seconds_total": 5}] for c in spy.calls)
    files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"demo_cfg_1_00000001.wav", "demo_cfg_3_00000001.wav", "demo_melspec_left_cfg_3_00000001.png"} <= files


def test_demo_factory_defaults_and_errors():
    callback = create_demo_callback_from_config(lm_config(conditioned=False))
    assert (callback.demo_every, callback.num_demos, callback.demo_cfg_scales) == (2000, 8, [1])
    assert callback.demo_conditioning is None
    with pytest.raises(ConfigError, match="demo_cond.*required"):
        create_demo_callback_from_config(lm_config())
    with pytest.raises(ConfigError, match="demo_cond.*num_demos"):
        create_demo_callback_from_config(lm_config(training={"demo": {"num_demos": 2, "demo_cond": [{}]}}))
    with pytest.raises(ConfigError, match="demo_cfg_scales"):
        create_demo_callback_from_config(lm_config(conditioned=False, training={"demo": {"demo_cfg_scales": []}}))
    with pytest.raises(ConfigError, match="demo_every"):
        create_demo_callback_from_config(lm_config(conditioned=False, training={"demo": {"demo_every": 0}}))
