"""The warp's geometry stays float32 under torch.autocast (CPU bfloat16 here; the same code path runs for
CUDA float16 / bfloat16): maps, inverse and grids equal the ones computed outside autocast, while the
features keep the autocast dtype."""
import timm
import torch
import torch.nn.functional as F

import warpadapt
from warpadapt import FeatureUnwarp, SaliencyWarp
from warpadapt.maps import autocast_off, marginal_to_map, resample

BOXES = [torch.tensor([[900.0, 480.0, 960.0, 530.0], [300.0, 600.0, 420.0, 700.0]]), torch.tensor([[1500.0, 450.0, 1530.0, 470.0]])]


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_autocast_would_lower_the_ops_the_warp_uses():
    """The premise: inside autocast, conv1d and bmm run in bfloat16 unless switched off."""
    x = torch.rand(1, 1, 16)
    with bf16():
        assert F.conv1d(x, torch.ones(1, 1, 3)).dtype == torch.bfloat16
        with autocast_off(x.device):
            assert F.conv1d(x, torch.ones(1, 1, 3)).dtype == torch.float32


def test_maps_and_inverse_are_identical_under_bf16_autocast_at_full_resolution():
    sw = SaliencyWarp()
    images = torch.rand(2, 3, 1024, 2048)
    ref_img, ref = sw(images, BOXES)
    with bf16():
        img, w = sw(images, BOXES)
        m = marginal_to_map(torch.rand(2, 51) + 0.1)
    assert w.map_x.dtype == w.map_y.dtype == torch.float32 and m.dtype == torch.float32
    assert torch.equal(w.map_x, ref.map_x) and torch.equal(w.map_y, ref.map_y)
    assert img.dtype == torch.float32 and torch.equal(img, ref_img)
    fy, fx = w.axes((1024, 2048), inverse=True)
    assert fx.dtype == torch.float32 and fx[0].unique().numel() == 2048  # every column distinct


def test_features_keep_the_autocast_dtype_and_match_the_float32_unwarp(device):
    sw, unwarp = SaliencyWarp(), FeatureUnwarp()
    _, w = sw(torch.rand(2, 3, 256, 512, device=device), [(b / 4).to(device) for b in BOXES])
    feats = torch.rand(2, 8, 64, 128, device=device).to(torch.bfloat16)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = unwarp(feats, w)
        direct = resample(feats, *w.axes((64, 128), inverse=True))
    ref = unwarp(feats.float(), w).to(torch.bfloat16)
    assert out.dtype == direct.dtype == torch.bfloat16
    assert torch.equal(out, ref) and torch.equal(direct, ref)


def test_wrapped_backbone_trains_under_autocast_with_a_float32_warp():
    torch.manual_seed(0)
    net = warpadapt.wrap(timm.create_model("resnet18", features_only=True, out_indices=(2, 3))).train()
    x = torch.rand(2, 3, 128, 256)
    boxes = [b / 8 for b in BOXES]
    _, ref = net(x, boxes, return_warp=True)
    with bf16():
        feats, w = net(x, boxes, return_warp=True)
    assert all(f.dtype == torch.bfloat16 for f in feats)
    assert w.map_x.dtype == torch.float32 and torch.equal(w.map_x, ref.map_x) and torch.equal(w.map_y, ref.map_y)
    sum(f.float().mean() for f in feats).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
