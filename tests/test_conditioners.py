"""Conditioners (SPEC 3.5, 4.14): golden numerics, checkpoint key names, lazy external encoders, factory errors."""
import copy
import importlib.machinery
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stable_audio_tools.models.conditioners import (
    IntConditioner,
    ListConditioner,
    MultiConditioner,
    NumberConditioner,
    PretransformConditioner,
    SourceMixConditioner,
    create_multi_conditioner_from_conditioning_config,
)
from stable_audio_tools.models.config import ConfigError, ConfigWarning
from stable_audio_tools.models.factory import create_pretransform_from_config

from conftest import FIXTURES, ROOT

GOLDEN = FIXTURES / "golden"
MANIFESTS = FIXTURES / "manifests"
CONFIGS = ROOT / "stable_audio_tools" / "configs" / "model_configs"


def _golden(name):
    config = json.loads((GOLDEN / name / "model_config.json").read_text())
    weights = load_file(str(GOLDEN / name / "weights.safetensors"))
    io = load_file(str(GOLDEN / name / "io.safetensors"))
    conditioner = create_multi_conditioner_from_conditioning_config(config["model"]["conditioning"])
    prefix = "conditioner."
    conditioner.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
    return conditioner, io


def _check_outputs(out, io):
    for cond_id, (embedding, mask) in out.items():
        expected = io[f"out.cond.{cond_id}.embedding"]
        assert embedding.shape == expected.shape
        torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mask, io[f"out.cond.{cond_id}.mask"])


def test_golden_dit_cond_number_and_int():
    conditioner, io = _golden("dit_cond")
    meta = [{"seconds_start": float(io["in.seconds_start"][i]), "seconds_total": float(io["in.seconds_total"][i]),
             "class_id": int(io["in.class_id"][i])} for i in range(2)]
    out = conditioner(meta, "cpu")
    assert set(out) == {"seconds_start", "seconds_total", "class_id"}
    _check_outputs(out, io)
    # seconds_total 600 is clamped to max_val 512; class_id 12 to max_val 9
    clamped = conditioner([{"seconds_start": 0, "seconds_total": 512, "class_id": 9}], "cpu")
    torch.testing.assert_close(out["seconds_total"][0][1], clamped["seconds_total"][0][0])
    torch.testing.assert_close(out["class_id"][0][1], clamped["class_id"][0][0])


def test_golden_ldm_number_and_list():
    conditioner, io = _golden("ldm_dit_pretransform")
    st = io["in.seconds_total"]
    meta = [{"seconds_total": float(st[0]), "label": "bass"}, {"seconds_total": float(st[1]), "label": "unknown-label"}]
    out = conditioner(meta, "cpu")
    _check_outputs(out, io)
    table = conditioner.conditioners["label"].embedder.weight
    assert torch.equal(out["label"][0][:, 0], table[[2, 0]])  # "bass" = options.index + 1, unknown -> 0


# ---------------------------------------------------------------------------------------------
# state-dict key names of the released / example configs


def _manifest_conditioner_keys(name):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    return {k[len("conditioner."):]: tuple(shape) for k, shape, _ in manifest["state_dict"]
            if k.startswith("conditioner.")}


def _conditioning(path):
    return json.loads(path.read_text())["model"]["conditioning"]


@pytest.mark.parametrize("name,config_path", [
    ("stable_audio_open_1_0", CONFIGS / "released" / "stable_audio_open_1_0.json"),
    ("stable_audio_open_small", CONFIGS / "released" / "stable_audio_open_small.json"),
])
def test_t5_release_keys_match_manifest_and_stay_lazy(name, config_path):
    with torch.device("meta"):
        conditioner = create_multi_conditioner_from_conditioning_config(_conditioning(config_path))
    keys = {k: tuple(v.shape) for k, v in conditioner.state_dict().items()}
    assert keys == _manifest_conditioner_keys(name)
    prompt = conditioner.conditioners["prompt"]
    assert not prompt.loaded and prompt.tokenizer is None
    assert isinstance(prompt.proj_out, nn.Identity) and prompt.dim == 768


@pytest.mark.parametrize("name", ["stable_audio_2_0", "stable_audio_1_0"])
def test_clap_configs_keys_and_install_hint(name):
    conditioning = _conditioning(CONFIGS / "txt2audio" / f"{name}.json")
    expected = _manifest_conditioner_keys(name)
    # the parts we own (timing conditioners); CLAP is kept out of the state dict like upstream
    without_clap = {**conditioning, "configs": [c for c in conditioning["configs"] if c["type"] != "clap_text"]}
    with torch.device("meta"):
        conditioner = create_multi_conditioner_from_conditioning_config(without_clap)
    assert {k: tuple(v.shape) for k, v in conditioner.state_dict().items()} == expected
    # a frozen CLAP conditioner builds without laion_clap (nothing of it is in the state dict) ...
    with torch.device("meta"):
        full = create_multi_conditioner_from_conditioning_config(conditioning)
    assert {k: tuple(v.shape) for k, v in full.state_dict().items()} == expected
    if importlib.util.find_spec("laion_clap") is None:
        # ... and says what to install on first use
        with pytest.raises(ImportError, match="pip install laion-clap"):
            full(_clap_metadata(conditioning), "cpu")
        finetuned = json.loads(json.dumps(conditioning))
        next(c for c in finetuned["configs"] if c["type"] == "clap_text")["config"]["finetune"] = True
        with pytest.raises(ImportError, match="pip install laion-clap"):
            create_multi_conditioner_from_conditioning_config(finetuned)


def _clap_metadata(conditioning):
    return [{c["id"]: ("rain" if c["type"] == "clap_text" else 1.0) for c in conditioning["configs"]}]


def test_building_release_conditioner_offline_reads_nothing(tmp_path):
    """In a fresh interpreter with HF_HUB_OFFLINE=1: building opens no file and imports no transformers;
    the first call fails with an error that says how to supply the weights."""
    pytest.importorskip("transformers")
    script = textwrap.dedent(f"""
        import json, sys
        import stable_audio_tools.models.conditioners as C
        import stable_audio_tools.models.text_conditioners
        import stable_audio_tools.models.builders.conditioners  # package code, loaded before the watch
        conditioning = json.load(open({str(CONFIGS / "released" / "stable_audio_open_1_0.json")!r}))["model"]["conditioning"]
        opened = []
        watching = [True]
        sys.addaudithook(lambda event, args: opened.append(args[0]) if watching[0] and event == "open" else None)
        conditioner = C.create_multi_conditioner_from_conditioning_config(conditioning)
        watching[0] = False
        assert opened == [], opened
        assert "transformers" not in sys.modules
        try:
            conditioner([{{"prompt": "rain", "seconds_start": 0, "seconds_total": 10}}], "cpu")
        except OSError as err:
            print("ERROR:", type(err).__name__, err)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "ERROR: ExternalModelUnavailableError" in message
    assert "'t5-base'" in message and "HF_HUB_OFFLINE" in message
    assert "save_pretrained" in message and "t5_model_name" in message


# ---------------------------------------------------------------------------------------------
# T5 / tokenizer LUT with a tiny local T5


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tiny_t5 import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


def _reference_t5(path, texts, max_length):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.T5EncoderModel.from_pretrained(path).eval()
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
    return hidden, encoded["attention_mask"].bool()


def test_t5_lazy_forward_masks_and_padding(tiny_t5):
    from stable_audio_tools.models.text_conditioners import T5Conditioner

    conditioner = T5Conditioner(output_dim=16, t5_model_name=tiny_t5, max_length=8)
    assert not conditioner.loaded and conditioner.dim == 16 and isinstance(conditioner.proj_out, nn.Identity)
    assert list(conditioner.state_dict()) == []
    texts = ["warm synth pad", "punchy drums and a deep bass line at 120 bpm"]  # second is truncated
    embeddings, mask = conditioner(texts, "cpu")
    assert conditioner.loaded and conditioner.model.dtype == torch.float32  # fp32 off CUDA
    assert list(conditioner.state_dict()) == []  # the frozen encoder is not part of the checkpoint
    hidden, ref_mask = _reference_t5(tiny_t5, texts, 8)
    assert mask.dtype == torch.bool and torch.equal(mask, ref_mask)
    assert mask[0].tolist() == [True] * 4 + [False] * 4 and mask[1].all()
    assert embeddings.shape == (2, 8, 16) and not embeddings.requires_grad
    torch.testing.assert_close(embeddings, hidden * ref_mask[..., None], atol=1e-5, rtol=1e-5)
    assert embeddings[0, 4:].abs().max() == 0 and embeddings[0, :4].abs().min() > 0

    projected = T5Conditioner(output_dim=6, t5_model_name=tiny_t5, max_length=8)
    assert isinstance(projected.proj_out, nn.Linear) and projected.proj_out.weight.shape == (6, 16)
    out, _ = projected(texts, "cpu")
    torch.testing.assert_close(out, projected.proj_out(hidden) * ref_mask[..., None], atol=1e-5, rtol=1e-5)
    copied = copy.deepcopy(projected)  # EMA copies deepcopy the model
    torch.testing.assert_close(copied(texts, "cpu")[0], out)


def test_t5_enable_grad_registers_trainable_model(tiny_t5):
    from stable_audio_tools.models.text_conditioners import T5Conditioner

    conditioner = T5Conditioner(output_dim=16, t5_model_name=tiny_t5, max_length=6, enable_grad=True)
    assert conditioner.loaded and isinstance(conditioner.model, nn.Module)
    assert "model" in dict(conditioner.named_children())
    keys = list(conditioner.state_dict())
    assert "model.encoder.final_layer_norm.weight" in keys
    embeddings, _ = conditioner(["warm pad"], "cpu")
    embeddings.sum().backward()
    grad = conditioner.model.encoder.final_layer_norm.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with torch.no_grad():
        assert not conditioner(["warm pad"], "cpu")[0].requires_grad


def test_t5_name_checks_and_missing_weights(tiny_t5, tmp_path):
    from stable_audio_tools.models.text_conditioners import ExternalModelUnavailableError, T5Conditioner

    with pytest.raises(ValueError, match="unknown t5_model_name 't5-bas'.*t5-base.*local directory"):
        T5Conditioner(output_dim=768, t5_model_name="t5-bas")
    with pytest.raises(ValueError, match="config.json"):
        T5Conditioner(output_dim=16, t5_model_name=str(tmp_path))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in os.listdir(tiny_t5):
        if not name.endswith(".safetensors"):
            (no_weights / name).write_bytes(open(os.path.join(tiny_t5, name), "rb").read())
    conditioner = T5Conditioner(output_dim=16, t5_model_name=str(no_weights))  # dim read from config.json
    with pytest.raises(ExternalModelUnavailableError, match="save_pretrained.*t5_model_name"):
        conditioner(["rain"], "cpu")


def test_lut_with_tiny_tokenizer(tiny_t5):
    from stable_audio_tools.models.text_conditioners import TokenizerLUTConditioner

    plain = TokenizerLUTConditioner(tiny_t5, output_dim=8, max_length=6)
    vocab = plain.token_embedder.num_embeddings
    conditioner = TokenizerLUTConditioner(tiny_t5, output_dim=8, max_length=6, use_abs_pos_emb=True,
                                          special_tokens=["<speaker1>"])
    assert conditioner.token_embedder.num_embeddings == vocab + 1
    assert set(conditioner.state_dict()) == {"token_embedder.weight", "abs_pos_emb.emb.weight"}
    embeddings, mask = conditioner(["<speaker1> warm pad", "rain"], "cpu")
    ids = conditioner.tokenizer(["<speaker1> warm pad", "rain"], max_length=6, padding="max_length",
                                truncation=True, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == vocab  # the added special token is one id
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 2 + [False] * 4]
    expected = conditioner.token_embedder(ids) * mask[..., None] + conditioner.abs_pos_emb(embeddings)
    torch.testing.assert_close(embeddings, expected)
    # padding positions hold only the positional embedding
    torch.testing.assert_close(embeddings[1, 2:], conditioner.abs_pos_emb(embeddings)[2:])


# ---------------------------------------------------------------------------------------------
# optional CLAP / phoneme backends (faked modules exercise our glue code)


def _install_fake_module(monkeypatch, name, **attrs):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


class _FakeTextBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 768)

    def forward(self, input_ids, attention_mask, output_hidden_states):
        hidden = self.embed(input_ids)
        return {"hidden_states": [hidden * 0.5, hidden]}


class _FakeCLAPInner(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_branch = _FakeTextBranch()
        self.audio_branch = nn.Linear(4, 512)


class _FakeCLAPModule(nn.Module):
    def __init__(self, enable_fusion, amodel, device):
        super().__init__()
        self.model = _FakeCLAPInner()

    def tokenizer(self, prompts):
        ids = torch.tensor([[len(p) % 9 + 1, 1 if p else 0] for p in prompts])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}

    def get_text_embedding(self, texts, use_tensor):
        assert len(texts) > 1, "laion_clap fails on a single text"
        return torch.stack([torch.full((512,), float(len(t))) for t in texts])

    def get_audio_embedding_from_data(self, mono, use_tensor):
        return self.model.audio_branch(mono[:, :4])


@pytest.fixture
def fake_clap(monkeypatch, tmp_path):
    _install_fake_module(monkeypatch, "laion_clap", CLAP_Module=_FakeCLAPModule)
    reference = _FakeCLAPInner()
    path = tmp_path / "clap.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    return str(path), reference


def test_clap_text_conditioner_lazy_and_features(fake_clap):
    from stable_audio_tools.models.text_conditioners import CLAPTextConditioner

    path, reference = fake_clap
    conditioner = CLAPTextConditioner(output_dim=768, clap_ckpt_path=path)
    assert not conditioner.loaded and isinstance(conditioner.proj_out, nn.Linear)  # 512 -> 768
    embedding, mask = conditioner(["rain"], "cpu")  # single prompt: padded internally
    assert conditioner.loaded and not hasattr(conditioner.model.model, "audio_branch")
    torch.testing.assert_close(embedding, conditioner.proj_out(torch.full((1, 1, 512), 4.0)))
    assert mask.tolist() == [[1.0]] and list(conditioner.state_dict()) == ["proj_out.weight", "proj_out.bias"]

    features = CLAPTextConditioner(output_dim=768, clap_ckpt_path=path, use_text_features=True, feature_layer_ix=-2)
    assert isinstance(features.proj_out, nn.Identity)
    out, mask = features(["rain", ""], "cpu")
    assert torch.equal(features.model.model.text_branch.embed.weight, reference.text_branch.embed.weight)
    expected = reference.text_branch.embed(torch.tensor([[5, 1], [1, 0]])) * 0.5
    torch.testing.assert_close(out, expected)
    assert mask.tolist() == [[1, 1], [1, 0]]

    finetuned = CLAPTextConditioner(output_dim=512, clap_ckpt_path=path, finetune=True)
    assert finetuned.loaded and "model.model.text_branch.embed.weight" in finetuned.state_dict()
    assert finetuned.model.model.text_branch.embed.weight.requires_grad


def test_clap_audio_conditioner_finetune_flag_works(fake_clap):
    from stable_audio_tools.models.text_conditioners import CLAPAudioConditioner

    path, reference = fake_clap
    conditioner = CLAPAudioConditioner(output_dim=512, clap_ckpt_path=path)  # upstream crashed here
    audio = [torch.randn(2, 16), torch.randn(2, 16)]
    embedding, mask = conditioner(audio, "cpu")
    mono = torch.stack(audio).mean(1)
    torch.testing.assert_close(embedding, reference.audio_branch(mono[:, :4]).unsqueeze(1))
    assert embedding.shape == (2, 1, 512) and mask.shape == (2, 1)
    assert not hasattr(conditioner.model.model, "text_branch")
    finetuned = CLAPAudioConditioner(output_dim=512, clap_ckpt_path=path, finetune=True)
    assert finetuned.model.model.audio_branch.weight.requires_grad
    assert "model.model.audio_branch.weight" in finetuned.state_dict()


def test_clap_missing_checkpoint_message(fake_clap):
    from stable_audio_tools.models.text_conditioners import CLAPTextConditioner, ExternalModelUnavailableError

    conditioner = CLAPTextConditioner(output_dim=512, clap_ckpt_path="/path/to/clap.ckpt")  # builds: lazy
    with pytest.raises(ExternalModelUnavailableError, match="clap_ckpt_path"):
        conditioner(["rain", "wind"], "cpu")


def test_phoneme_conditioner_with_fake_g2p(monkeypatch):
    class FakeG2p:
        phonemes = ["<pad>", "<unk>", "AA1", "B", "K", "_"]
        p2idx = {p: i for i, p in enumerate(phonemes)}

        def __call__(self, text):
            return [{"a": "AA1", "b": "B", "k": "K"}.get(c, c) for c in text]

    _install_fake_module(monkeypatch, "g2p_en", G2p=FakeG2p)
    from stable_audio_tools.models.text_conditioners import PhonemeConditioner

    conditioner = PhonemeConditioner(output_dim=4, max_length=5)
    assert conditioner.phoneme_embedder.num_embeddings == len(FakeG2p.phonemes) + 2
    embeddings, mask = conditioner(["ab, k", "bz"], "cpu")
    # "ab, k" -> AA1 B _ _ K (punctuation and spaces -> "_"); "bz" -> B <unknown> then padding
    ids = torch.tensor([[4, 5, 7, 7, 6], [5, 1, 0, 0, 0]])
    torch.testing.assert_close(embeddings, conditioner.phoneme_embedder(ids))
    assert mask.tolist() == [[1.0] * 5, [1.0, 1.0, 0.0, 0.0, 0.0]]
    assert conditioner(["abababab"], "cpu")[0].shape == (1, 5, 4)  # cut to max_length


def test_missing_optional_packages_give_install_hints(monkeypatch):
    from stable_audio_tools.models.text_conditioners import (
        CLAPAudioConditioner,
        PhonemeConditioner,
        T5Conditioner,
        TokenizerLUTConditioner,
    )

    monkeypatch.setitem(sys.modules, "transformers", None)
    conditioner = T5Conditioner(output_dim=768)  # building needs no transformers
    with pytest.raises(ImportError, match="pip install transformers sentencepiece"):
        conditioner(["rain"], "cpu")
    with pytest.raises(ImportError, match="pip install transformers sentencepiece"):
        TokenizerLUTConditioner("t5-base", output_dim=4)
    monkeypatch.setitem(sys.modules, "g2p_en", None)
    with pytest.raises(ImportError, match="pip install g2p_en"):
        PhonemeConditioner(output_dim=4)
    if importlib.util.find_spec("laion_clap") is None:
        with pytest.raises(ImportError, match="pip install laion-clap"):
            CLAPAudioConditioner(output_dim=512, clap_ckpt_path="x.ckpt")(torch.zeros(1, 1, 16), "cpu")


# ---------------------------------------------------------------------------------------------
# small conditioners


def test_int_conditioner_keeps_upstream_indexing():
    conditioner = IntConditioner(output_dim=4, min_val=5, max_val=10)
    assert conditioner.int_embedder.weight.shape == (6, 4)
    embeds, mask = conditioner([3, 5.0], "cpu")  # 3 clamps to 5 and indexes row 5 (no min_val offset)
    assert torch.equal(embeds[:, 0], conditioner.int_embedder.weight[[5, 5]]) and mask.shape == (2, 1)
    with pytest.raises(ValueError, match="not offset by min_val"):
        conditioner([7], "cpu")


def test_number_and_list_conditioners():
    number = NumberConditioner(output_dim=8, min_val=10, max_val=20)
    embeds, mask = number([torch.tensor(15.0), 25, "10"], None)
    assert embeds.shape == (3, 1, 8) and mask.tolist() == [[1.0]] * 3
    torch.testing.assert_close(embeds[:, 0], number.embedder(torch.tensor([0.5, 1.0, 0.0])))
    assert [k for k in number.state_dict()] == ["embedder.embedding.0.weights", "embedder.embedding.1.weight",
                                                 "embedder.embedding.1.bias"]
    assert number.embedder.embedding[0].weights.shape == (128,)
    assert number.embedder.embedding[1].weight.shape == (8, 257)
    options = ListConditioner(output_dim=3, options=["a", "b"])
    embeds, _ = options(["b", "zzz", "a"], "cpu")
    assert torch.equal(embeds[:, 0], options.embedder.weight[[2, 0, 1]])


# ---------------------------------------------------------------------------------------------
# audio conditioners with a tiny autoencoder


def _tiny_pretransform(latent=3, io=2):
    spec = {"type": "autoencoder", "config": {
        "encoder": {"type": "oobleck", "config": {"in_channels": io, "channels": 4, "c_mults": [1, 2],
                                                  "strides": [2, 2], "latent_dim": latent, "use_snake": False}},
        "decoder": {"type": "oobleck", "config": {"out_channels": io, "channels": 4, "c_mults": [1, 2],
                                                  "strides": [2, 2], "latent_dim": latent, "use_snake": False}},
        "latent_dim": latent, "downsampling_ratio": 4, "io_channels": io}}
    return spec, create_pretransform_from_config(spec, 16000)


def test_pretransform_conditioner():
    torch.manual_seed(0)
    _, pretransform = _tiny_pretransform()
    conditioner = PretransformConditioner(pretransform, output_dim=3)
    assert list(conditioner.state_dict()) == []
    mono = [torch.randn(1, 64), torch.randn(1, 64)]
    latents, mask = conditioner(mono, "cpu")
    expected = pretransform.encode(torch.stack(mono).repeat(1, 2, 1))  # mono -> the pretransform's stereo
    torch.testing.assert_close(latents, expected)
    assert latents.shape == (2, 3, 16) and mask.shape == (2, 16) and not latents.requires_grad

    projected = PretransformConditioner(pretransform, output_dim=5, save_pretransform=True)
    assert "pretransform.model.encoder.layers.0.weight_v" in projected.state_dict()
    out, mask = projected(torch.randn(2, 64), "cpu")  # a single [C, T] item
    single = pretransform.encode(torch.randn(1, 2, 64))
    assert out.shape == (1, 5, 16) and mask.shape == (1, 16) and single.shape == (1, 3, 16)
    audio = torch.randn(1, 2, 64)
    torch.testing.assert_close(projected(audio, "cpu")[0],
                               torch.einsum("oc,bcl->bol", projected.proj_out.weight, pretransform.encode(audio))
                               + projected.proj_out.bias[None, :, None])


def test_source_mix_conditioner():
    torch.manual_seed(0)
    _, pretransform = _tiny_pretransform()
    mix = SourceMixConditioner(pretransform, output_dim=3, source_keys=["drums", "bass"], allow_null_source=True,
                               source_length=16)
    assert set(mix.state_dict()) == {"source_heads.0.weight", "source_heads.0.bias", "source_heads.1.weight",
                                     "source_heads.1.bias", "null_source"}  # proj_out is Identity (3 == 3)
    drums, bass = torch.randn(2, 64), torch.randn(2, 64)
    out, mask = mix([{"drums": drums, "bass": bass}, {"bass": bass}, {"other": drums}], "cpu")
    enc = lambda a: pretransform.encode(a.unsqueeze(0)).squeeze(0)  # noqa: E731
    both = mix.source_heads[0](enc(drums)) + mix.source_heads[1](enc(bass))
    torch.testing.assert_close(out[0], both)
    torch.testing.assert_close(out[1], mix.source_heads[1](enc(bass)))
    torch.testing.assert_close(out[2], mix.null_source.repeat(1, 16))
    assert out.shape == (3, 3, 16) and mask.shape == (3, 16)

    pre = SourceMixConditioner(pretransform, output_dim=4, source_keys=["drums"], pre_encoded=True)
    assert "proj_out.weight" in pre.state_dict()  # kept for checkpoint compatibility
    latents = torch.randn(3, 16)
    torch.testing.assert_close(pre([{"drums": latents}], "cpu")[0][0], pre.source_heads[0](latents))
    with pytest.raises(ValueError, match="none of the sources"):
        pre([{"bass": latents}], "cpu")
    with pytest.raises(ValueError, match="source_length"):
        SourceMixConditioner(pretransform, output_dim=4, allow_null_source=True)


def test_factory_pretransform_options(tmp_path):
    torch.manual_seed(0)
    spec, model_pretransform = _tiny_pretransform()
    ckpt = tmp_path / "ae.safetensors"
    _, other = _tiny_pretransform()
    save_file(other.model.state_dict(), str(ckpt))
    config = {"cond_dim": 3, "configs": [
        {"id": "audio", "type": "pretransform", "config": {"sample_rate": 16000, "use_model_pretransform": True}},
        {"id": "ref", "type": "pretransform", "config": {"sample_rate": 16000, "pretransform_config": spec,
                                                         "pretransform_ckpt_path": str(ckpt), "output_dim": 5}},
        {"id": "stems", "type": "source_mix", "config": {"sample_rate": 16000, "use_model_pretransform": True,
                                                         "source_keys": ["a"]}},
    ]}
    before = copy.deepcopy(config)
    conditioner = create_multi_conditioner_from_conditioning_config(config, pretransform=model_pretransform)
    assert config == before
    assert conditioner.conditioners["audio"].pretransform is model_pretransform
    ref = conditioner.conditioners["ref"]
    assert ref.output_dim == 5 and isinstance(ref.proj_out, nn.Linear)
    for key, value in other.model.state_dict().items():
        assert torch.equal(ref.pretransform.model.state_dict()[key], value)
    with pytest.raises(ConfigError, match="use_model_pretransform"):
        create_multi_conditioner_from_conditioning_config(config)
    with pytest.raises(ConfigError, match=r"configs\[0\].config.sample_rate"):
        create_multi_conditioner_from_conditioning_config(
            {"cond_dim": 3, "configs": [{"id": "a", "type": "pretransform", "config": {}}]})


# ---------------------------------------------------------------------------------------------
# MultiConditioner and factory validation


def test_multiconditioner_keys_unwrapping_and_pre_encoded():
    torch.manual_seed(0)
    conditioner = MultiConditioner({"seconds": NumberConditioner(4, 0, 10), "latent": ListConditioner(4, ["x"])},
                                   default_keys={"seconds": "seconds_total"}, pre_encoded_keys=["latent"])
    meta = [{"seconds_total": [3.0], "latent": torch.ones(2, 3)}, {"seconds": (7,), "latent": torch.zeros(2, 3)}]
    out = conditioner(meta, "cpu")
    torch.testing.assert_close(out["seconds"][0], NumberConditioner.forward(conditioner.conditioners["seconds"],
                                                                            [3.0, 7], "cpu")[0])
    assert out["latent"][1] is None and torch.equal(out["latent"][0], torch.stack([torch.ones(2, 3),
                                                                                   torch.zeros(2, 3)]))
    # only length-1 lists are unwrapped; the list conditioner then sees an unknown (list) value -> index 0
    labels = MultiConditioner({"label": ListConditioner(2, ["a", "b"])})
    out = labels([{"label": ["b"]}, {"label": ("a",)}, {"label": ["a", "b"]}], "cpu")["label"][0]
    assert torch.equal(out[:, 0], labels.conditioners["label"].embedder.weight[[2, 1, 0]])
    with pytest.raises(ValueError, match="'label'.*not found.*available keys: \\['prompt'\\]"):
        labels([{"prompt": "x"}], "cpu")
    with pytest.raises(ValueError, match="default key 'seconds_total'"):
        conditioner([{"latent": torch.ones(2, 3)}], "cpu")


def test_factory_validation_and_output_dim_override():
    config = {"cond_dim": 8, "default_keys": {"start": "seconds_start"}, "configs": [
        {"id": "start", "type": "number", "config": {"max_val": 100}},
        {"id": "label", "type": "list", "config": {"options": ["a"], "output_dim": 3}},
        {"id": "n", "type": "int"},
    ]}
    before = copy.deepcopy(config)
    conditioner = create_multi_conditioner_from_conditioning_config(config)
    assert config == before
    assert conditioner.default_keys == {"start": "seconds_start"}
    assert conditioner.conditioners["start"].embedder.embedding[1].weight.shape == (8, 257)
    assert conditioner.conditioners["label"].embedder.weight.shape == (2, 3)
    assert conditioner.conditioners["n"].int_embedder.weight.shape == (513, 8)

    def build(entries, **extra):
        return create_multi_conditioner_from_conditioning_config({"cond_dim": 4, "configs": entries, **extra})

    with pytest.raises(ConfigError, match=r"configs\[0\]\.type.*'numbr'.*accepted values: 't5'.*'source_mix'.*"
                                          r"did you mean 'number'"):
        build([{"id": "x", "type": "numbr", "config": {}}])
    with pytest.raises(ConfigError, match=r"configs\[0\]\.config\.max_vall.*accepted"):
        build([{"id": "x", "type": "number", "config": {"max_vall": 3}}])
    with pytest.raises(ConfigError, match=r"configs\[0\]\.config\.options.*required"):
        build([{"id": "x", "type": "list", "config": {}}])
    with pytest.raises(ConfigError, match="duplicate conditioner id 'x'"):
        build([{"id": "x", "type": "int"}, {"id": "x", "type": "number"}])
    with pytest.raises(ConfigError, match="cond_dim"):
        create_multi_conditioner_from_conditioning_config({"configs": []})
    with pytest.warns(ConfigWarning, match="pre_encoded_keys"):
        build([{"id": "x", "type": "int"}], pre_encoded_keys=["y"])
