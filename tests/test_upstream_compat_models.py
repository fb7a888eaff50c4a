"""The model components added for upstream's import surface: they work, and the re-exported names are the same
objects as our implementations (no copies)."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stable_audio_tools.models import adp, autoencoders, blocks, common, convnext, diffusion, discriminators, \
    encodec, fsq, local_attention, pqmf, transformer
from stable_audio_tools.models import utils as model_utils
from stable_audio_tools.models.activations import SnakeBeta


def test_reexports_are_the_implementations():
    from stable_audio_tools.models import dit, local_attn, oobleck, quantizers
    from stable_audio_tools.models.factory import create_model_from_config
    import stable_audio_tools.models as models

    assert models.create_model_from_config is create_model_from_config
    assert autoencoders.OobleckEncoder is oobleck.OobleckEncoder
    assert diffusion.DiTWrapper is dit.DiTWrapper
    assert encodec.MultiScaleSTFTDiscriminator is discriminators.MultiScaleSTFTDiscriminator
    assert fsq.DitheredFSQ is quantizers.DitheredFSQ
    assert local_attention.TransformerEncoder1D is local_attn.TransformerEncoder1D
    assert model_utils.compile is common.compile and model_utils.next_power_of_two is common.next_power_of_two


def test_common_helpers():
    x = torch.randn(2, 3, 5)
    folded = common.fold_channels_into_batch(x)
    assert folded.shape == (6, 5)
    assert torch.equal(common.unfold_channels_from_batch(folded, 3), x)
    assert common.unfold_channels_from_batch(torch.randn(2, 5), 1).shape == (2, 1, 5)
    assert [common.next_power_of_two(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]
    assert [common.next_multiple_of_64(n) for n in (1, 64, 65)] == [64, 64, 128]

    layer = torch.nn.Linear(4, 4)
    inp = torch.randn(3, 4, requires_grad=True)
    common.checkpoint(layer, inp).sum().backward()
    grad = inp.grad.clone()
    inp.grad = None
    layer(inp).sum().backward()
    assert torch.allclose(grad, inp.grad)

    profiler = common.Profiler()
    profiler.tick("first")
    profiler.tick("second")
    text = repr(profiler)
    assert "first: " in text and "second: " in text and text.count("ms") == 2


def test_compile_is_off_unless_enabled(monkeypatch):
    def fn(x):
        return x + 1

    monkeypatch.delenv("ENABLE_TORCH_COMPILE", raising=False)
    assert common.compile(fn) is fn
    assert common.compile(fn, mode="reduce-overhead") is fn


def test_blocks_norms_and_geglu():
    norm = blocks.RMSNorm(8)
    x = torch.randn(2, 5, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert isinstance(norm.scale, torch.nn.Parameter)
    assert "scale" in dict(blocks.RMSNorm(8, fix_scale=True).named_buffers())

    geglu = blocks.LinearGEGLU(8, 3)
    assert geglu.weight.shape == (6, 8)
    h, gate = (x @ geglu.weight.T + geglu.bias).chunk(2, dim=-1)
    assert torch.allclose(geglu(x), h * F.gelu(gate), atol=1e-6)


def test_forced_weight_norm_conv():
    torch.manual_seed(0)
    conv = blocks.ForcedWNConv1d(3, 4, kernel_size=3)
    w = blocks.normalize(conv.weight.detach())
    rms = w.pow(2).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(rms, torch.ones(4), atol=1e-3)
    x = torch.randn(2, 3, 10)
    out = conv(x)
    assert out.shape == (2, 4, 10)
    assert torch.allclose(conv.weight, w, atol=1e-6), "training mode renormalises the stored weight"
    assert torch.allclose(out, F.conv1d(x, w / math.sqrt(9), padding="same"), rtol=1e-3, atol=1e-4)


def test_snake_beta_function_matches_module():
    module = SnakeBeta(3, alpha_logscale=False)
    with torch.no_grad():
        module.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]))
        module.beta.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(2, 3, 7)
    alpha, beta = module.alpha.view(1, -1, 1), module.beta.view(1, -1, 1)
    assert torch.equal(blocks.snake_beta(x, alpha, beta), module(x))
    assert torch.allclose(module(x), x + torch.sin(alpha * x) ** 2 / (beta + 1e-9), atol=1e-6)
    assert blocks.SnakeBeta is SnakeBeta


UNET = dict(in_channels=2, channels=8, multipliers=[1, 2], factors=[2], num_blocks=[1], attentions=[0, 0],
            resnet_groups=4, context_channels=[2], use_context_time=True)


def test_unet_ncca_mixes_noise_and_embeds_the_scale():
    torch.manual_seed(0)
    net = adp.UNetNCCA1d(context_features=6, **UNET).eval()
    x, t, cond = torch.randn(2, 2, 16), torch.rand(2), torch.randn(2, 2, 16)
    with torch.no_grad():
        out = net(x, t, channels_list=[cond], channels_augmentation=False, channels_scale=0.3)
        features = net.embedder(torch.full((2, 1), 0.3)).sum(dim=1)
        plain = adp.UNet1d.forward(net, x, t, channels_list=[cond], features=features)
        noisy = net(x, t, channels_list=[cond], channels_augmentation=True, channels_scale=1.0)
    assert out.shape == (2, 2, 16)
    assert torch.allclose(out, plain, atol=1e-6), "without augmentation the channels are used unchanged"
    assert not torch.allclose(noisy, out)
    with pytest.raises(ValueError, match="features"):
        net(x, t, channels_list=[cond], features=features)


def test_unet_all_and_xunet_selector():
    torch.manual_seed(0)
    kwargs = dict(UNET, channels=32, multipliers=[1, 1], attentions=[1, 1], attention_heads=2, attention_multiplier=2,
                  context_features=6,
                  context_embedding_max_length=4, context_embedding_features=8)
    net = adp.XUNet1d(type="all", **kwargs).eval()
    assert isinstance(net, adp.UNetAll1d) and isinstance(net, adp.UNetCFG1d) and isinstance(net, adp.UNetNCCA1d)
    x, t, cond = torch.randn(2, 2, 16), torch.rand(2), torch.randn(2, 2, 16)
    with torch.no_grad():
        out = net(x, t, embedding=torch.randn(2, 3, 8), channels_list=[cond], embedding_scale=3.0)
    assert out.shape == (2, 2, 16) and torch.isfinite(out).all()
    assert type(adp.XUNet1d(**{k: v for k, v in UNET.items() if k != "context_channels"})) is adp.UNet1d
    with pytest.raises(ValueError, match="Unknown XUNet1d type"):
        adp.XUNet1d(type="wide")


def test_adp_helpers():
    emb = adp.SinusoidalEmbedding(8)(torch.tensor([0.0, 1.0]))
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = torch.exp(torch.arange(4) * -(math.log(10000) / 3))
    assert torch.allclose(emb[1, :4], torch.sin(freqs))

    seq = adp.ConditionedSequential([adp.MappingToScaleShift(4, 2)])
    assert seq.module_list[0].to_scale_shift[1].in_features == 4

    assert adp.exists(0) and not adp.exists(None)
    assert adp.default(None, lambda: 3) == 3 and adp.default(5, 3) == 5
    assert adp.groupby("a_", {"a_x": 1, "b": 2}) == ({"x": 1}, {"b": 2})
    assert adp.groupby("a_", {"a_x": 1}, keep_prefix=True) == ({"a_x": 1}, {})
    assert [adp.closest_power_2(v) for v in (3, 5, 7, 1000)] == [2, 4, 8, 1024]

    q, k = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    mask = adp.causal_mask(q, k)
    assert mask.shape == (2, 3, 5) and mask[0, 0].tolist() == [True, True, True, False, False]
    sim = adp.add_mask(torch.zeros(2, 1, 3, 5), mask)
    assert sim[0, 0, 0, 3] == -torch.finfo(sim.dtype).max and sim[0, 0, 0, 2] == 0

    x = torch.randn(1, 1, 10)
    padded = adp.pad_for_conv1d(x, kernel_size=4, stride=3)
    assert padded.shape[-1] == 10 and adp.pad_for_conv1d(torch.randn(1, 1, 11), 4, 3).shape[-1] == 13


def test_pqmf_helpers():
    assert pqmf.pad_signal(torch.ones(1, 1, 10), 4).shape[-1] == 12
    assert pqmf.pad_signal(torch.ones(1, 1, 12), 4).shape[-1] == 12
    assert pqmf.ensure_odd_length(torch.ones(4)).shape[-1] == 5 and pqmf.ensure_odd_length(torch.ones(5)).shape == (5,)
    assert pqmf.prepare_signal_dimensions(np.zeros(7, dtype=np.float32)).shape == (1, 1, 7)
    assert pqmf.prepare_signal_dimensions(torch.zeros(7, 2)).shape == (1, 2, 7)
    coarse = pqmf.evaluate_filter_objective(np.pi / 4, 100, 4, None)
    assert 0 <= coarse < 1


def test_transformer_helpers():
    assert transformer.create_causal_mask(2, 3, "cpu").tolist() == [[False, False, True], [False, False, False]]
    a, b = torch.tensor([True, False, False]), torch.tensor([False, False, True])
    assert transformer.or_reduce([a, b]).tolist() == [True, False, True]
    with pytest.raises(ValueError):
        transformer.or_reduce([])

    norm = transformer.RunningInstanceNorm(3, momentum=0.0, saturate=False)
    x = torch.randn(4, 6, 3) * 5 + 2
    out = norm(x)
    assert torch.allclose(norm.running_mean.flatten(), x.mean(dim=(0, 1)), atol=1e-5)
    assert torch.allclose(out.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    norm.eval()
    before = norm.running_mean.clone()
    norm(torch.randn(4, 6, 3))
    assert torch.equal(before, norm.running_mean), "eval mode keeps the statistics"
    assert torch.allclose(transformer.RunningInstanceNorm(3).eval()(x), torch.asinh(x))


def test_convnext_encoder_decoder():
    torch.manual_seed(0)
    enc = convnext.ConvNeXtEncoder(in_channels=2, channels=4, latent_dim=3, c_mults=[1, 2], strides=[2, 4],
                                   num_blocks=[1, 1])
    dec = convnext.ConvNeXtDecoder(out_channels=2, channels=4, latent_dim=3, c_mults=[1, 2], strides=[2, 4])
    x = torch.randn(1, 2, 64)
    z = enc(x)
    assert z.shape == (1, 3, 8)
    y = dec(z)
    assert y.shape == (1, 2, 64)
    y.pow(2).mean().backward()
    assert all(p.grad is not None for p in dec.parameters() if p.requires_grad)
    block = convnext.ConvNextDecoderBlock(4, 2, stride=2, num_blocks=2)
    assert [name for name, _ in block.named_children()] == ["upsample", "layers"] and len(block.layers) == 2
    keys = set(dec.state_dict())
    assert {"layers.0.weight_v", "layers.1.upsample.weight_v", "layers.1.layers.2.proj_down.weight_v",
            "layers.2.layers.0.dw_conv.weight_v", "layers.3.weight_v"} <= keys and "layers.3.bias" not in keys


def test_arc_heads_live_in_models():
    from stable_audio_tools.models.arc import ConvDiscriminator, ConvNeXtDiscriminator
    from stable_audio_tools.training.arc import ARC_HEADS

    assert ARC_HEADS == {"convnext": ConvNeXtDiscriminator, "conv": ConvDiscriminator}
    head = ConvNeXtDiscriminator(loss_type="relativistic", in_channels=4, channels=4, latent_dim=1, c_mults=[1],
                                 strides=[2])
    real, fake = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    losses = head.loss(real, fake)
    diff = head(real) - head(fake)
    assert torch.allclose(losses["loss_dis"], F.softplus(-diff).mean())
    assert torch.allclose(losses["loss_adv"], F.softplus(diff).mean())


def test_inpainting_and_diffusion_autoencoder_moved_without_change():
    from stable_audio_tools.models.inpainting import MaskType, random_inpaint_mask

    masked, mask = random_inpaint_mask(torch.ones(2, 3, 10), torch.ones(2, 10), mask_type_probabilities=[0, 1, 0])
    assert mask.shape == (2, 1, 10) and mask.sum() == 0 and len(MaskType) == 3
    assert autoencoders.DiffusionAutoencoder.__module__ == "stable_audio_tools.models.autoencoders"


def test_fsq_and_discriminator_helpers():
    x = torch.tensor([-3.0, -0.5, 0.5, 3.0])
    assert torch.allclose(fsq.leaky_hard_clip(x, alpha=0.1), torch.tensor([-1.2, -0.5, 0.5, 1.2]))
    assert encodec.get_2d_padding((3, 9), (1, 2)) == (1, 8)
    for cls, args in ((discriminators.BigVGANDiscriminator, (44100,)),
                      (discriminators.MultiScaleSubbandCQTDiscriminator, ({},))):
        with pytest.raises(NotImplementedError, match="DiscriminatorCQT"):
            cls(*args)


def test_bottleneck_mean_kernel():
    from stable_audio_tools.models.bottleneck import compute_mean_kernel

    same = compute_mean_kernel(torch.zeros(4, 3), torch.zeros(4, 3))
    assert same == 1.0
    far = compute_mean_kernel(torch.zeros(4, 3), torch.full((4, 3), 10.0))
    assert far < 1e-10


@pytest.mark.skipif(os.environ.get("ENABLE_TORCH_COMPILE") == "1", reason="checks the default (eager) path")
def test_attention_maybe_compile_is_the_shared_helper():
    from stable_audio_tools.models.attention import maybe_compile

    assert maybe_compile is common.compile
