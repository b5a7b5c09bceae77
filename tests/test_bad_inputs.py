"""Every kind of bad input gets a ValueError / TypeError whose message names the argument (issue 8)."""

import re
from contextlib import nullcontext

import pytest
import torch

from warpadapt import FeatureUnwarp, SaliencyWarp, Warp
from warpadapt.maps import attraction_kernel, marginal_to_map, resample
from warpadapt.saliency import geometric_prior, instance_saliency

NAN, INF = float("nan"), float("inf")
B1 = [torch.tensor([[10.0, 10.0, 20.0, 30.0]])]


def warp1(image_size=(40, 64)):
    return SaliencyWarp().make_warp(image_size, B1)


def warp2(image_size=(64, 96)):
    return SaliencyWarp().make_warp(image_size, [B1[0], torch.zeros(0, 4)])


def sw(**kw):
    return lambda: SaliencyWarp(**kw)


def maps(my, mx):
    return lambda: Warp(torch.tensor([my]), torch.tensor([mx]))


# (kind, call, exception, the argument name the message must contain)
CASES = [
    # SaliencyWarp options
    ("fwhm tiny", sw(fwhm=1e-30), ValueError, "fwhm"),
    ("fwhm huge", sw(fwhm=1e200), ValueError, "fwhm"),
    ("fwhm NaN", sw(fwhm=NAN), ValueError, "fwhm"),
    ("fwhm bool", sw(fwhm=True), ValueError, "fwhm"),
    ("bandwidth_scale inf", sw(bandwidth_scale=INF), ValueError, "bandwidth_scale"),
    ("amplitude_scale huge", sw(amplitude_scale=1e300), ValueError, "amplitude_scale"),
    ("amplitude_scale zero", sw(amplitude_scale=0.0), ValueError, "amplitude_scale"),
    ("geometric_sigma NaN", sw(guidance="geometric", geometric_sigma=(NAN, 0.1)), ValueError, "geometric_sigma"),
    ("geometric_sigma tiny", sw(guidance="geometric", geometric_sigma=(1e-30, 0.1)), ValueError, "geometric_sigma"),
    ("geometric_sigma one value", sw(guidance="geometric", geometric_sigma=(0.2,)), ValueError, "geometric_sigma"),
    ("vanishing_point 3 values", sw(guidance="geometric", vanishing_point=(0.5, 0.5, 0.5)), ValueError, "vanishing_point"),
    ("vanishing_point NaN", sw(guidance="geometric", vanishing_point=(NAN, 0.5)), ValueError, "vanishing_point"),
    ("static prior one row", sw(guidance="static", prior=torch.ones(1, 51)), ValueError, "prior"),
    ("static prior one column", sw(guidance="static", prior=torch.ones(31, 1)), ValueError, "prior"),
    ("static prior 1-D", sw(guidance="static", prior=torch.ones(51)), ValueError, "prior"),
    ("map dtype float16", sw(dtype=torch.float16), TypeError, "dtype"),
    # the pure functions under them
    ("geometric_prior vanishing_point 3 values", lambda: geometric_prior((5, 9), (0.1, 0.2, 0.3)), ValueError, "vanishing_point"),
    ("geometric_prior sigma NaN", lambda: geometric_prior((5, 9), sigma=(NAN, 0.1)), ValueError, "sigma"),
    ("attraction_kernel fwhm tiny", lambda: attraction_kernel(1e-30, 3), ValueError, "fwhm"),
    ("marginal_to_map fwhm huge", lambda: marginal_to_map(torch.ones(1, 5), fwhm=1e200), ValueError, "fwhm"),
    ("resample integer x", lambda: resample(torch.ones(1, 1, 4, 4, dtype=torch.long), torch.rand(1, 4), torch.rand(1, 4)), TypeError, "x"),
    # Warp: boxes and points
    ("forward_boxes (N, 3)", lambda: warp1().forward_boxes([torch.ones(4, 3)]), ValueError, "boxes[0]"),
    ("inverse_boxes (N, 5)", lambda: warp1().inverse_boxes([torch.ones(3, 5)]), ValueError, "boxes[0]"),
    ("forward_boxes tensor (B, N, 3)", lambda: warp1().forward_boxes(torch.ones(1, 4, 3)), ValueError, "boxes"),
    ("forward_boxes NaN", lambda: warp1().forward_boxes([torch.tensor([[1.0, 2.0, NAN, 4.0]])]), ValueError, "boxes"),
    ("inverse_boxes inf", lambda: warp1().inverse_boxes(torch.tensor([[[1.0, 2.0, INF, 4.0]]])), ValueError, "boxes"),
    ("forward_boxes bool", lambda: warp1().forward_boxes([torch.ones(2, 4, dtype=torch.bool)]), TypeError, "boxes[0]"),
    ("forward_boxes complex", lambda: warp1().forward_boxes(torch.ones(1, 2, 4, dtype=torch.complex64)), TypeError, "boxes"),
    ("forward_boxes empty (0, 5)", lambda: warp1().forward_boxes([torch.zeros(0, 5)]), ValueError, "boxes[0]"),
    ("forward_boxes empty (3, 0)", lambda: warp1().forward_boxes([torch.zeros(3, 0)]), ValueError, "boxes[0]"),
    ("forward_boxes not a tensor", lambda: warp1().forward_boxes([[1.0, 2.0, 3.0, 4.0]]), TypeError, "boxes[0]"),
    ("forward_points (N, 3)", lambda: warp1().forward_points([torch.ones(2, 3)]), ValueError, "points[0]"),
    ("inverse_points NaN", lambda: warp1().inverse_points(torch.tensor([[[NAN, 1.0]]])), ValueError, "points"),
    ("grid non-integer size", lambda: warp1().grid((2.5, 5)), TypeError, "size"),
    ("grid zero size", lambda: warp1().grid((0, 5)), ValueError, "size"),
    ("forward_boxes non-integer size", lambda: warp1().forward_boxes(B1, size=(40.5, 64)), TypeError, "size"),
    # Warp built from tensors
    ("Warp NaN map", maps([0.0, NAN, 1.0], [0.0, 1.0]), ValueError, "map_y"),
    ("Warp decreasing map", maps([0.0, 1.0], [0.0, 0.7, 0.6, 1.0]), ValueError, "map_x"),
    ("Warp map outside [0, 1]", maps([0.0, 1.5, 1.0], [0.0, 1.0]), ValueError, "map_y"),
    ("Warp map not spanning the image", maps([0.0, 0.9], [0.0, 1.0]), ValueError, "map_y"),
    ("Warp integer map", lambda: Warp(torch.tensor([[0, 1]]), torch.tensor([[0.0, 1.0]])), TypeError, "map_y"),
    ("Warp one-node map", maps([0.0, 1.0], [0.0]), ValueError, "map_x"),
    ("Warp non-integer image_size", lambda: Warp.identity(1, image_size=(2.5, 4)), TypeError, "image_size"),
    # FeatureUnwarp
    ("features int64", lambda: FeatureUnwarp()(torch.ones(1, 3, 10, 16, dtype=torch.long), warp1()), TypeError, "features"),
    ("features bool", lambda: FeatureUnwarp()([torch.ones(1, 3, 10, 16, dtype=torch.bool)], warp1()), TypeError, "features[0]"),
    ("features 2-D", lambda: FeatureUnwarp()(torch.ones(10, 16), warp1()), ValueError, "features"),
    ("features 5-D", lambda: FeatureUnwarp()({"p2": torch.ones(1, 3, 2, 10, 16)}, warp1()), ValueError, "features['p2']"),
    ("features NHWC given as NCHW", lambda: FeatureUnwarp()(torch.ones(2, 16, 24, 96), warp2()), ValueError, "features"),
    ("features NCHW given as NHWC", lambda: FeatureUnwarp("NHWC")(torch.ones(2, 96, 16, 24), warp2()), ValueError, "features"),
    ("features of another image size", lambda: FeatureUnwarp()([torch.ones(2, 8, 16, 24), torch.ones(2, 8, 24, 8)], warp2()), ValueError, "features[1]"),
    # boxes given to the saliency
    ("saliency boxes bool", lambda: SaliencyWarp()(torch.rand(1, 3, 20, 20), [torch.ones(1, 4, dtype=torch.bool)]), TypeError, "boxes[0]"),
    ("saliency boxes complex", lambda: instance_saliency([torch.ones(1, 4, dtype=torch.complex64)], (20, 20)), TypeError, "boxes[0]"),
    ("saliency boxes tensor complex", lambda: instance_saliency(torch.ones(1, 1, 4, dtype=torch.complex64), (20, 20)), TypeError, "boxes"),
    ("saliency boxes empty (0, 5)", lambda: SaliencyWarp()(torch.rand(1, 3, 20, 20), [torch.zeros(0, 5)]), ValueError, "boxes[0]"),
    ("saliency boxes empty (3, 0)", lambda: SaliencyWarp()(torch.rand(1, 3, 20, 20), [torch.zeros(3, 0)]), ValueError, "boxes[0]"),
]


@pytest.mark.parametrize("call, exc, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc) as info:
        call()
    # the argument is named as a word (not just a substring of another word)
    assert re.search(rf"(^|\W){re.escape(name)}($|\W)", str(info.value)), str(info.value)


def test_every_case_is_a_distinct_kind():
    assert len({c[0] for c in CASES}) == len(CASES)


def test_edges_of_the_documented_ranges_are_accepted_and_finite():
    img = torch.rand(1, 3, 40, 64)
    for kw in (dict(fwhm=0.1), dict(fwhm=1000.0), dict(amplitude_scale=1e3, bandwidth_scale=1e-6), dict(amplitude_scale=1e-6, bandwidth_scale=1e6)):
        with pytest.warns(UserWarning) if kw.get("fwhm", 0) > 30 else nullcontext():
            module = SaliencyWarp(**kw)
        warped, warp = module(img, B1)
        assert torch.isfinite(warped).all() and torch.isfinite(warp.map_x).all() and torch.isfinite(warp.map_y).all()
        warp.validate()
    for sigma in ((1e-3, 1e-3), (1e3, 1e3)):
        for floor in (0.0, 0.05):
            g = geometric_prior((31, 51), (3.0, -2.0), sigma, floor=floor)  # point far outside the image
            assert torch.isfinite(g).all() and abs(float(g.sum()) - 1) < 1e-5
    # empty box lists in every accepted form give the identity
    for empty in (torch.zeros(0, 4), torch.zeros(0)):
        _, w = SaliencyWarp()(img, [empty])
        assert torch.allclose(w.map_x, torch.linspace(0, 1, 51)[None], atol=1e-6)
        assert warp1().forward_boxes([empty])[0].shape == (0, 4)


def test_low_precision_boxes_are_mapped_in_float32():
    warp = SaliencyWarp().make_warp((2048, 2048), [torch.tensor([[1000.0, 1000.0, 1040.0, 1030.0]])])
    boxes = torch.tensor([[[1001.0, 1003.0, 1037.0, 1029.0], [10.0, 2000.0, 2040.0, 2046.0]]])
    ref = warp.forward_boxes(boxes)
    for dtype in (torch.float16, torch.bfloat16):
        low = boxes.to(dtype)
        out = warp.forward_boxes(low)
        assert out.dtype == torch.float32  # documented: float32 comes back for float16 / bfloat16
        exact = warp.forward_boxes(low.float())
        assert torch.equal(out, exact)  # no rounding to the input dtype on the way out
        assert (out - ref).abs().max() <= (low.float() - boxes).abs().max() * 10 + 1e-3
    ints = warp.inverse_points([torch.tensor([[5, 7]])])[0]
    assert ints.dtype == torch.float32


def test_nan_pixels_propagate_but_the_warp_stays_finite():
    img = torch.rand(1, 3, 40, 64)
    img[0, :, 20, 30] = NAN
    warped, warp = SaliencyWarp()(img, B1)
    assert torch.isfinite(warp.map_x).all() and torch.isfinite(warp.map_y).all()
    nan_px = torch.isnan(warped[0, 0])
    assert 0 < int(nan_px.sum()) < 20  # only the pixels that read the NaN one

