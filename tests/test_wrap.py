"""wrap() on timm model families: same shapes and feature_info, eval bit for bit, finite gradients, state."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import warpadapt
from warpadapt import wrap

torch.set_num_threads(2)

BOXES2 = [torch.tensor([[8.0, 20.0, 20.0, 36.0], [40.0, 24.0, 48.0, 30.0]]), torch.tensor([[60.0, 10.0, 70.0, 40.0]])]

# (model name, create kwargs, input (H, W)); tiny configs keep the suite fast
FAMILIES = {
    "resnet18": ("resnet18", {}, (64, 96)),
    "resnet50": ("resnet50", {}, (64, 96)),
    "pvt_v2_b0": ("pvt_v2_b0", {}, (64, 96)),
    "vit_dynamic": ("vit_tiny_patch16_224", {"dynamic_img_size": True, "depth": 2, "embed_dim": 48, "num_heads": 2, "out_indices": (0, 1)}, (64, 96)),
    "convnext": ("test_convnext", {}, (64, 96)),
    "swin_nhwc": ("swin_tiny_patch4_window7_224", {"img_size": (64, 96), "window_size": 4, "embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}, (64, 96)),
    "efficientnet": ("test_efficientnet", {}, (64, 96)),
}


def make(name):
    arch, kwargs, size = FAMILIES[name]
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, features_only=True, **kwargs), size


def shapes(feats):
    return [tuple(f.shape) for f in feats]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_wrap_family(name):
    model, (h, w) = make(name)
    wrapped = wrap(model)
    x = torch.rand(2, 3, h, w)
    # no added parameters or buffers; same feature_info
    assert sum(p.numel() for p in wrapped.parameters()) == sum(p.numel() for p in model.parameters())
    assert len(list(wrapped.buffers())) == len(list(model.buffers()))
    assert wrapped.feature_info.channels() == model.feature_info.channels()
    # eval: exactly the bare model, boxes or not
    wrapped.eval()
    with torch.no_grad():
        bare = model(x)
        assert all(a.equal(b) for a, b in zip(wrapped(x), bare))
        assert all(a.equal(b) for a, b in zip(wrapped(x, boxes=BOXES2), bare))
    # train with boxes: warped forward, unwarped features of the same shapes and layout, finite grads
    wrapped.train()
    feats, warp = wrapped(x, boxes=BOXES2, return_warp=True)
    assert warp is not None and warp.batch_size == 2
    assert shapes(feats) == shapes(bare)
    loss = sum(f.float().square().mean() for f in feats)
    loss.backward()
    grads = [p.grad for p in wrapped.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # train without boxes: the model's own forward
    model.zero_grad()
    with torch.no_grad():
        torch.manual_seed(1)
        a = wrapped(x)
        torch.manual_seed(1)
        b = model(x)
    assert all(u.equal(v) for u, v in zip(a, b))


def test_state_dict_loads_both_ways_and_nested():
    model, _ = make("resnet18")
    wrapped = wrap(model)
    sd = wrapped.state_dict()
    assert list(sd) == list(model.state_dict())
    fresh = timm.create_model("resnet18", pretrained=False, features_only=True)
    assert not fresh.load_state_dict(sd).missing_keys
    other = wrap(timm.create_model("resnet18", pretrained=False, features_only=True))
    other.load_state_dict(fresh.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), sd.values()))
    outer = nn.ModuleDict({"backbone": wrapped})
    keys = list(outer.state_dict())
    assert keys[0] == "backbone.conv1.weight"
    outer.load_state_dict(outer.state_dict())


# ViT-family models that timm builds through FeatureGetterNet: their own keys already start with "model."
VIT_FAMILY = {
    "deit": ("deit_tiny_patch16_224", {"img_size": (64, 96), "depth": 2, "embed_dim": 48, "num_heads": 2, "out_indices": (0, 1)}),
    "levit": ("levit_128s", {"img_size": (64, 96), "depth": (1, 1, 1), "embed_dim": (32, 48, 64), "num_heads": (2, 2, 2)}),
    "twins": ("twins_svt_small", {"img_size": (64, 96), "embed_dims": (16, 32, 64, 128), "num_heads": (1, 2, 2, 4), "depths": (1, 1, 1, 1), "wss": (4, 4, 4, 4)}),
    "hiera": ("hiera_tiny_224", {"img_size": (64, 96), "embed_dim": 24, "num_heads": 1, "stages": (1, 1, 1, 1)}),
    "eva": ("eva02_tiny_patch14_224", {"img_size": (56, 84), "depth": 2, "out_indices": (0, 1)}),
}


def make_any(name, seed):
    torch.manual_seed(seed)
    if name in FAMILIES:
        arch, kwargs, _ = FAMILIES[name]
    else:
        arch, kwargs = VIT_FAMILY[name]
    return timm.create_model(arch, pretrained=False, features_only=True, **kwargs)


def assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", list(FAMILIES) + list(VIT_FAMILY))
def test_state_dict_round_trip_every_format(name):
    src = make_any(name, 0)
    ref = {k: v.clone() for k, v in src.state_dict().items()}
    wrapped = wrap(src)
    assert list(wrapped.state_dict()) == list(ref)
    # the freshly built targets differ from the source, so a load that silently loads nothing fails below
    assert any(not torch.equal(v, ref[k]) for k, v in make_any(name, 1).state_dict().items())
    for strict in (True, False):
        # wrapped <- own, wrapped <- bare, bare <- wrapped
        for source in (wrapped.state_dict(), src.state_dict()):
            target = wrap(make_any(name, 1))
            res = target.load_state_dict(source, strict=strict)
            assert not res.missing_keys and not res.unexpected_keys
            assert_same_state(target.state_dict(), ref)
        bare = make_any(name, 1)
        res = bare.load_state_dict(wrapped.state_dict(), strict=strict)
        assert not res.missing_keys and not res.unexpected_keys
        assert_same_state(bare.state_dict(), ref)
        # nested inside another module, from a nested wrapped model and from nested bare keys
        for source in (nn.ModuleDict({"backbone": wrapped}).state_dict(), {"backbone." + k: v for k, v in ref.items()}):
            outer = nn.ModuleDict({"backbone": wrap(make_any(name, 1)), "head": nn.Linear(2, 2)})
            res = outer.load_state_dict({**source, **{"head." + k: v for k, v in outer.head.state_dict().items()}}, strict=strict)
            assert not res.missing_keys and not res.unexpected_keys
            assert_same_state(outer.backbone.state_dict(), ref)


@pytest.mark.parametrize("name", ["resnet18", "deit"])
def test_state_dict_wrapped_form_keys_and_errors_name_bare_keys(name):
    src = make_any(name, 0)
    ref = src.state_dict()
    # keys in the wrapped module's own form ("model." + bare key) load too
    target = wrap(make_any(name, 1))
    target.load_state_dict({"model." + k: v for k, v in ref.items()})
    assert_same_state(target.state_dict(), ref)
    # missing / unexpected keys are reported under the names the user gave
    first = next(iter(ref))
    broken = {k: v for k, v in ref.items() if k != first}
    broken["not_a_key"] = torch.zeros(1)
    res = wrap(make_any(name, 1)).load_state_dict(broken, strict=False)
    assert res.missing_keys == [first] and res.unexpected_keys == ["not_a_key"]
    with pytest.raises(RuntimeError, match=f'Missing key\\(s\\) in state_dict: "{first}"'):
        wrap(make_any(name, 1)).load_state_dict(broken)


def test_empty_boxes_train_matches_bare_forward():
    model, (h, w) = make("resnet18")
    wrapped = wrap(model).train()
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        a = wrapped(x, boxes=[torch.zeros(0, 4), torch.zeros(0, 4)])
        b = model(x)
    for u, v in zip(a, b):
        assert (u - v).abs().max() < 1e-3 * max(1.0, float(v.abs().max()))


class PoolPyramid(nn.Module):
    """A stand-in backbone whose features are the image average-pooled at strides 1, 4, 8."""

    def __init__(self):
        super().__init__()
        self.feature_info = object()

    def forward(self, x):
        return [x, F.avg_pool2d(x, 4), F.avg_pool2d(x, 8)]


def test_unwarped_features_are_in_the_original_geometry():
    h, w = 128, 256
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = (0.5 + 0.4 * torch.sin(2 * math.pi * xx) * torch.cos(2 * math.pi * yy)).expand(1, 3, h, w).contiguous()
    wrapped = wrap(PoolPyramid(), mode="features").train()
    boxes = [torch.tensor([[100.0, 50.0, 116.0, 60.0]])]
    feats, warp = wrapped(img, boxes=boxes, return_warp=True)
    bare = PoolPyramid()(img)
    for f, b in zip(feats, bare):
        psnr = 10 * math.log10(1.0 / float(F.mse_loss(f, b)))
        assert psnr > 30.0, psnr
    # without unwarping, the features are clearly displaced
    warped_only = PoolPyramid()(wrapped.warper(img, boxes)[0])
    assert 10 * math.log10(1.0 / float(F.mse_loss(warped_only[1], bare[1]))) < 30.0


def test_plain_model_through_forward_intermediates():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    wrapped = wrap(model)
    assert wrapped.mode == "intermediates"
    x = torch.rand(2, 3, 64, 96)
    wrapped.eval()
    with torch.no_grad():
        ref = model.forward_intermediates(x, intermediates_only=True)
        assert all(a.equal(b) for a, b in zip(wrapped(x), ref))
    wrapped.train()
    feats = wrapped(x, boxes=BOXES2)
    assert shapes(feats) == shapes(ref)
    final, inter = wrapped.forward_intermediates(x, boxes=BOXES2)
    assert final.shape == model.forward_features(x).shape and shapes(inter) == shapes(ref)


def test_vit_forward_intermediates_keeps_tokens_and_checks_feature_sizes():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(64, 96), depth=2, embed_dim=48, num_heads=2)
    wrapped = wrap(model).train()
    x = torch.rand(2, 3, 64, 96)
    final, inter = wrapped.forward_intermediates(x, boxes=BOXES2, indices=2)
    assert final.dim() == 3  # (B, L, C) tokens come back as computed
    assert shapes(inter) == [(2, 48, 4, 6)] * 2
    # features handed over in the wrong layout are refused by name, not resampled along the wrong axes
    _, warp = wrapped.warper(x, BOXES2)
    with pytest.raises(ValueError, match=r"features\[0\] have spatial size \(6, 48\)"):
        wrapped.unwarp([inter[0].permute(0, 2, 3, 1)], warp)


def test_guidance_options_and_forcing():
    model, (h, w) = make("resnet18")
    x = torch.rand(1, 3, h, w)
    geo = wrap(model, guidance="geometric", fwhm=6.0).train()
    feats, warp = geo(x, warp=True, return_warp=True)
    assert warp is not None
    _, none = geo(x, return_warp=True)
    assert none is None  # no boxes, not forced: plain forward
    noop = wrap(timm.create_model("resnet18", pretrained=False, features_only=True), guidance="none").train()
    assert noop(x, boxes=[torch.zeros(1, 4)], return_warp=True)[1] is None
    with pytest.raises(TypeError, match="model must be"):
        wrap("resnet18")
    with pytest.raises(ValueError, match="already wrapped"):
        wrap(geo)
    with pytest.raises(TypeError, match="forward_intermediates"):
        wrap(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="batch has 2"):
        geo.train()(torch.rand(2, 3, h, w), boxes=[torch.zeros(0, 4)])
    assert "wrap" in warpadapt.__all__


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b2_li", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5"])
def test_wrap_pvt_v2_lineage(arch):
    """timm's pvt_v2 family (the MiT / SegFormer lineage): same shapes, eval identical, finite grads."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, features_only=True)
    wrapped = wrap(model)
    x = torch.rand(1, 3, 64, 96)
    wrapped.eval()
    with torch.no_grad():
        bare = model(x)
        assert all(a.equal(b) for a, b in zip(wrapped(x), bare))
    wrapped.train()
    feats = wrapped(x, boxes=BOXES2[:1])
    assert shapes(feats) == shapes(bare)
    sum(f.mean() for f in feats).backward()
    assert all(torch.isfinite(p.grad).all() for p in wrapped.parameters() if p.grad is not None)
