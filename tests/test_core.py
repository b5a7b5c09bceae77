"""Saliency, maps, the Warp object and the two modules: values, invariants, errors, gradients, dtypes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import warpadapt
from warpadapt import (
    FeatureUnwarp,
    SaliencyWarp,
    Warp,
    boxes_from_instance_map,
    boxes_from_semantic,
    fit_static_prior,
    geometric_prior,
    instance_saliency,
    load_prior,
    save_prior,
)
from warpadapt.maps import interp_map, invert_map, marginal_to_map, pixel_centers, resample, saliency_to_maps


def random_boxes(gen, n, h, w, min_side=4.0, max_side=60.0):
    x1 = torch.rand(n, generator=gen) * (w - min_side)
    y1 = torch.rand(n, generator=gen) * (h - min_side)
    bw = min_side + torch.rand(n, generator=gen) * (max_side - min_side)
    bh = min_side + torch.rand(n, generator=gen) * (max_side - min_side)
    return torch.stack([x1, y1, (x1 + bw).clamp(max=w), (y1 + bh).clamp(max=h)], 1)


def hand_saliency(boxes, h, w, gh=31, gw=51, b=64.0, a=1.0):
    """The instance saliency formula (arXiv 2403.12712) written out with loops, in float64."""
    p = min(gh, gw) - 1
    xs = [j * w / (gw - 1) for j in range(gw)]
    ys = [i * h / (gh - 1) for i in range(gh)]
    total = np.zeros((gh, gw))
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        sx2, sy2 = max(b * bw, 1.0), max(b * bh, 1.0)
        g = np.zeros((gh, gw))
        for i in range(gh):
            for j in range(gw):
                g[i, j] = math.exp(-0.5 * ((xs[j] - cx) ** 2 / sx2 + (ys[i] - cy) ** 2 / sy2))
        total += a * g / (1e-5 + g.sum()) + 1.0 / (2 * p + 1) ** 2
    return total / total.sum()


# ---------------------------------------------------------------- saliency
@pytest.mark.parametrize(
    "boxes",
    [[(300.0, 200.0, 340.0, 260.0)], [(300.0, 200.0, 340.0, 260.0), (50.0, 20.0, 58.0, 30.0)]],
    ids=["one_box", "two_boxes"],
)
def test_instance_saliency_matches_hand_computation(boxes):
    h, w = 600, 1067
    got = instance_saliency([torch.tensor(boxes)], (h, w))[0].double().numpy()
    want = hand_saliency(boxes, h, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
    assert abs(got.sum() - 1) < 1e-5


def test_each_box_gets_equal_mass_whatever_its_size():
    h, w = 400, 800
    big, small = (100.0, 100.0, 300.0, 300.0), (600.0, 100.0, 604.0, 104.0)
    s = instance_saliency([torch.tensor([big, small])], (h, w), bandwidth_scale=1.0)[0]
    left, right = s[:, :25].sum(), s[:, 26:].sum()
    assert abs(float(left - right)) < 0.05


def test_no_boxes_gives_uniform_and_anisotropic_scaling():
    s = instance_saliency([torch.zeros(0, 4)], (100, 200))
    assert torch.allclose(s, torch.full_like(s, 1 / (31 * 51)))
    # the same box in normalised coordinates gives the same map whatever the image's aspect
    b = torch.tensor([[0.2, 0.3, 0.3, 0.5]])
    s1 = instance_saliency([b * torch.tensor([200.0, 100, 200, 100])], (100, 200), bandwidth_scale=0.1)
    s2 = instance_saliency([b * torch.tensor([400.0, 100, 400, 100])], (100, 400), bandwidth_scale=0.1)
    assert s1.argmax() == s2.argmax()


def test_boxes_partly_outside_are_clipped_and_outside_ones_dropped():
    h, w = 100, 200
    inside = instance_saliency([torch.tensor([[150.0, 50.0, 200.0, 100.0]])], (h, w))
    partly = instance_saliency([torch.tensor([[150.0, 50.0, 260.0, 180.0]])], (h, w))
    assert torch.allclose(inside, partly)
    outside = instance_saliency([torch.tensor([[300.0, 300.0, 320.0, 330.0]])], (h, w))
    assert torch.allclose(outside, torch.full_like(outside, 1 / (31 * 51)))


# ---------------------------------------------------------------- maps
def test_uniform_saliency_gives_identity_map():
    my, mx = saliency_to_maps(torch.rand(1, 1, 1).expand(3, 31, 51).contiguous())
    assert (mx - torch.linspace(0, 1, 51)).abs().max() < 1e-6
    assert (my - torch.linspace(0, 1, 31)).abs().max() < 1e-6
    warp = Warp(my, mx, (60, 100))
    img = torch.rand(3, 2, 60, 100)
    fy, fx = warp.axes((60, 100))
    assert (fx - pixel_centers(100)).abs().max() < 1e-6


def test_maps_are_monotone_span_the_image_and_zoom_on_boxes():
    gen = torch.Generator().manual_seed(0)
    h, w = 256, 512
    boxes = [random_boxes(gen, int(n), h, w) for n in torch.randint(1, 20, (16,), generator=gen)]
    warp = Warp.from_saliency(instance_saliency(boxes, (h, w)), fwhm=4.0)
    for m in (warp.map_x, warp.map_y):
        assert (m.diff(dim=1) >= 0).all()
        assert torch.all(m[:, 0] == 0) and torch.all(m[:, -1] == 1)


def test_zoom_range_matches_published_order_of_magnitude():
    # published figures (arXiv 2403.12712 code): 4 small boxes on 600 x 1067 -> zoom about 0.43x-3.5x at FWHM 13
    boxes = torch.tensor([[200.0, 280, 230, 300], [500, 270, 520, 290], [700, 300, 740, 330], [900, 260, 915, 275]])
    sal = instance_saliency([boxes], (600, 1067))
    zy, zx = Warp.from_saliency(sal, 13.0).zoom()
    lo, hi = float(torch.minimum(zx.min(), zy.min())), float(torch.maximum(zx.max(), zy.max()))
    assert 0.3 < lo < 0.6 and 2.5 < hi < 5.0, (lo, hi)
    zy, zx = Warp.from_saliency(sal, 4.0).zoom()  # about 0.6x-1.5x at FWHM 4
    lo, hi = float(torch.minimum(zx.min(), zy.min())), float(torch.maximum(zx.max(), zy.max()))
    assert 0.5 < lo < 0.8 and 1.3 < hi < 2.2, (lo, hi)


@pytest.mark.parametrize("n", [7, 32, 100, 513, 1024])
def test_map_composed_with_inverse_is_identity(n):
    gen = torch.Generator().manual_seed(n)
    boxes = [random_boxes(gen, 5, 300, 500) for _ in range(4)]
    warp = Warp.from_saliency(instance_saliency(boxes, (300, 500)), fwhm=4.0)
    v = pixel_centers(n)
    for m in (warp.map_x, warp.map_y):
        assert (interp_map(m, invert_map(m, v)) - v).abs().max() < 1e-4
        assert (invert_map(m, interp_map(m, v)) - v).abs().max() < 1e-4


def test_marginal_to_map_validates():
    with pytest.raises(ValueError, match="fwhm"):
        marginal_to_map(torch.ones(1, 5), fwhm=0.0)
    with pytest.raises(ValueError, match="padding"):
        marginal_to_map(torch.ones(1, 5), padding=7)
    with pytest.raises(ValueError, match="saliency"):
        saliency_to_maps(torch.full((1, 4, 4), float("nan")))


# ---------------------------------------------------------------- warping images and features
def smooth_image(b=2, c=3, h=128, w=256):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    chans = [torch.sin(2 * math.pi * (k + 1) * xx) * torch.cos(2 * math.pi * (k + 1) * yy) for k in range(c)]
    return (0.5 + 0.4 * torch.stack(chans)).expand(b, c, h, w).contiguous()


def psnr(a, b):
    return float(10 * torch.log10(1.0 / F.mse_loss(a, b)))


def test_smooth_image_round_trip_psnr():
    img = smooth_image()
    boxes = [torch.tensor([[100.0, 50.0, 120.0, 70.0], [30.0, 80.0, 50.0, 110.0]]), torch.tensor([[200.0, 60.0, 210.0, 66.0]])]
    warped, warp = SaliencyWarp()(img, boxes)
    back = FeatureUnwarp()(warped, warp)
    assert psnr(back, img) >= 40.0
    assert psnr(warped, img) < 30.0  # the warp really moved pixels


def test_separable_equals_grid_sample():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 24, 40, generator=gen)
    warp = Warp.from_saliency(instance_saliency([random_boxes(gen, 3, 24, 40, 2, 10) for _ in range(2)], (24, 40)), 4.0)
    # the two paths round the sample positions differently (a few float32 steps of the pixel index), which
    # a noise image with neighbour differences up to ~6 turns into ~1e-5: allow 10 steps of 2^-19 px
    tol = 10 * 2.0**-19 * float(x.diff(dim=-1).abs().max().maximum(x.diff(dim=-2).abs().max()))
    for inverse in (False, True):
        fy, fx = warp.axes((24, 40), inverse=inverse)
        a = resample(x, fy, fx, method="grid_sample")
        b = resample(x, fy, fx, method="separable")
        assert (a - b).abs().max() < tol
        ref = F.grid_sample(x, warp.grid((24, 40), inverse), align_corners=False, padding_mode="border")
        assert (a - ref).abs().max() < 1e-6


def test_box_mapping_round_trip_and_consistency_with_image():
    h, w = 120, 200
    boxes = [torch.tensor([[40.0, 30.0, 60.0, 50.0], [150.0, 10.0, 190.0, 100.0]])]
    _, warp = SaliencyWarp(fwhm=6.0)(torch.rand(1, 3, h, w), boxes)
    fwd = warp.forward_boxes(boxes)
    back = warp.inverse_boxes(fwd)
    assert torch.allclose(back[0], boxes[0], atol=1e-3)
    # a filled box rendered in the original lands inside its mapped box in the warped image
    mask = torch.zeros(1, 1, h, w)
    mask[..., 30:50, 40:60] = 1
    wm = warp.apply(mask, mode="nearest")[0, 0]
    ys, xs = torch.nonzero(wm > 0.5, as_tuple=True)
    x1, y1, x2, y2 = fwd[0][0].tolist()
    assert xs.min() >= math.floor(x1) - 1 and xs.max() <= math.ceil(x2) and ys.min() >= math.floor(y1) - 1 and ys.max() <= math.ceil(y2)
    pts = torch.tensor([[[10.0, 10.0], [100.0, 60.0]]])
    assert torch.allclose(warp.inverse_points(warp.forward_points(pts)), pts, atol=1e-3)


def test_objects_get_more_pixels():
    gen = torch.Generator().manual_seed(3)
    h, w = 256, 512
    boxes = [random_boxes(gen, 4, h, w, 8, 24) for _ in range(8)]
    _, warp = SaliencyWarp()(torch.zeros(8, 3, h, w), boxes)
    area = lambda b: ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()
    ratios = torch.stack([area(f) / area(b) for f, b in zip(warp.forward_boxes(boxes), boxes)])
    assert (ratios > 1.2).all(), ratios


def test_empty_boxes_mean_identity():
    img = torch.rand(2, 3, 40, 60)
    warped, warp = SaliencyWarp()(img, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert (warped - img).abs().max() < 1e-4
    assert (warp.map_x - torch.linspace(0, 1, 51)).abs().max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes_cpu(dtype):
    img = smooth_image(1, 3, 64, 96).to(dtype)
    warped, warp = SaliencyWarp()(img, [torch.tensor([[40.0, 20.0, 50.0, 30.0]])])
    assert warped.dtype == dtype and warp.map_x.dtype == torch.float32
    back = FeatureUnwarp()([warped], warp)[0]
    assert back.dtype == dtype
    assert psnr(back.float(), img.float()) > (40.0 if dtype == torch.float32 else 30.0)


def test_gradcheck_through_warp_and_unwarp():
    img = torch.rand(1, 2, 6, 8, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[[2.0, 1.0, 5.0, 4.0]]], dtype=torch.float64, requires_grad=True)

    def through(image, bx):
        sal = instance_saliency(bx, (6, 8), grid_size=(5, 7), bandwidth_scale=0.5)
        warp = Warp.from_saliency(sal, fwhm=2.0)
        fy, fx = warp.axes((6, 8))
        warped = resample(image, fy, fx, method="separable")
        by, bx_ = warp.axes((3, 4), inverse=True)
        return resample(warped[:, :, ::2, ::2], by, bx_, method="separable")

    assert torch.autograd.gradcheck(through, (img, boxes), eps=1e-6, atol=1e-5)
    # and grid_sample path wrt features
    warp = Warp.from_saliency(instance_saliency(boxes.detach(), (6, 8), (5, 7)).double(), 2.0)
    assert torch.autograd.gradcheck(lambda f: warp.unapply(f), (img,), eps=1e-6, atol=1e-5)


def test_feature_unwarp_structures_and_layout():
    _, warp = SaliencyWarp()(torch.zeros(2, 3, 32, 64), [torch.tensor([[5.0, 5.0, 10.0, 10.0]])] * 2)
    a, b = torch.randn(2, 4, 8, 16), torch.randn(2, 4, 4, 8)
    out = FeatureUnwarp()({"p2": a, "p3": b}, warp)
    assert list(out) == ["p2", "p3"] and out["p3"].shape == b.shape
    tup = FeatureUnwarp()((a, b), warp)
    assert isinstance(tup, tuple) and torch.equal(tup[0], out["p2"])
    nhwc = FeatureUnwarp("NHWC")(a.permute(0, 2, 3, 1), warp)
    assert torch.allclose(nhwc.permute(0, 3, 1, 2), out["p2"], atol=1e-6)
    with pytest.raises(ValueError, match="batch size"):
        FeatureUnwarp()(torch.randn(3, 4, 8, 16), warp)
    with pytest.raises(TypeError, match="warp"):
        FeatureUnwarp()(a, "not a warp")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "boxes, exc, match",
    [
        ([torch.tensor([[0.0, 0.0, float("nan"), 5.0]])], ValueError, "NaN or infinite"),
        ([torch.tensor([[0.0, 0.0, float("inf"), 5.0]])], ValueError, "NaN or infinite"),
        ([torch.tensor([[10.0, 0.0, 5.0, 5.0]])], ValueError, "x2 >= x1"),
        ([torch.tensor([[0.0, 10.0, 5.0, 5.0]])], ValueError, "y2 >= y1"),
        ([torch.zeros(1, 4), torch.zeros(1, 4)], ValueError, "batch has 1"),
        ([[0.0, 0.0, 5.0, 5.0]], TypeError, r"boxes\[0\]"),
        ("boxes", TypeError, "boxes must be"),
        ([torch.zeros(2, 3)], ValueError, r"boxes\[0\] must have shape"),
    ],
)
def test_bad_boxes_raise(boxes, exc, match):
    with pytest.raises(exc, match=match):
        SaliencyWarp()(torch.rand(1, 3, 20, 20), boxes)


def test_bad_images_and_options_raise():
    with pytest.raises(ValueError, match="images must have shape"):
        SaliencyWarp()(torch.rand(3, 20, 20), [torch.zeros(0, 4)])
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        SaliencyWarp()(np.zeros((1, 3, 20, 20)), [torch.zeros(0, 4)])
    with pytest.raises(TypeError, match="floating point"):
        SaliencyWarp()(torch.zeros(1, 3, 20, 20, dtype=torch.uint8), [torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="guidance"):
        SaliencyWarp("boxes")
    with pytest.raises(ValueError, match="fwhm"):
        SaliencyWarp(fwhm=-1)
    with pytest.raises(ValueError, match="grid_size"):
        SaliencyWarp(grid_size=(3.5, 5))
    with pytest.warns(UserWarning, match="fwhm=48"):
        SaliencyWarp(fwhm=48.0)
    with pytest.raises(ValueError, match="prior"):
        SaliencyWarp("static")
    with pytest.raises(ValueError, match="needs boxes"):
        SaliencyWarp()(torch.rand(1, 3, 20, 20))


# ---------------------------------------------------------------- priors and boxes from labels
def test_static_prior_fit_save_load(tmp_path):
    gen = torch.Generator().manual_seed(0)
    # objects concentrated on a horizon band at 40 % of the height
    boxes = []
    for _ in range(30):
        b = random_boxes(gen, 3, 10, 400, 4, 12)
        b[:, [1, 3]] += 75
        boxes.append(b)
    prior = fit_static_prior(boxes, (200, 400))
    assert abs(float(prior.sum()) - 1) < 1e-5
    peak_row = int(prior.sum(1).argmax())
    assert abs(peak_row / 30 - 0.4) < 0.1
    path = tmp_path / "prior.npz"
    save_prior(path, prior, n_images=30)
    assert torch.allclose(load_prior(path), prior)
    sw = SaliencyWarp("static", prior=path)
    warped, warp = sw(torch.rand(2, 3, 200, 400))
    assert torch.equal(warp.map_y[0], warp.map_y[1])
    zy, _ = warp.zoom()
    assert abs(int(zy[0].argmax()) / 29 - 0.4) < 0.12
    with pytest.raises(FileNotFoundError, match="save_prior"):
        load_prior(tmp_path / "missing.npz")


def test_geometric_prior_peaks_at_vanishing_point():
    g = geometric_prior((31, 51), (0.3, 0.4))
    i, j = divmod(int(g.argmax()), 51)
    assert (i, j) == (12, 15)
    batch = geometric_prior((31, 51), torch.tensor([[0.5, 0.5], [0.2, 0.6]]))
    assert batch.shape == (2, 31, 51)
    _, warp = SaliencyWarp("geometric", vanishing_point=(0.5, 0.45))(torch.rand(1, 3, 100, 200))
    zy, zx = warp.zoom()
    assert abs(int(zx[0].argmax()) / 49 - 0.5) < 0.05


def test_boxes_from_labels():
    sem = torch.full((20, 30), 0)
    sem[2:6, 3:9] = 13  # car
    sem[10:18, 20:22] = 11  # person
    sem[10:12, 25:28] = 13  # second car
    b, l = boxes_from_semantic(sem)
    got = sorted(zip(l.tolist(), b.tolist()))
    assert got == [(11, [20.0, 10.0, 22.0, 18.0]), (13, [3.0, 2.0, 9.0, 6.0]), (13, [25.0, 10.0, 28.0, 12.0])]
    inst = torch.zeros(20, 30, dtype=torch.long)
    inst[2:6, 3:9] = 13000
    inst[2:4, 10:12] = 13001
    inst[0:1, 0:1] = 7  # stuff id, skipped
    bi, li = boxes_from_instance_map(inst)
    assert li.tolist() == [13, 13] and bi.tolist() == [[3.0, 2.0, 9.0, 6.0], [10.0, 2.0, 12.0, 4.0]]
    with pytest.raises(ValueError, match="semantic"):
        boxes_from_semantic(torch.zeros(2, 3, 4))


def test_public_names():
    for name in warpadapt.__all__:
        assert hasattr(warpadapt, name), name
