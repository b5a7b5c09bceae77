"""Property-based tests (hypothesis): random sizes, batches, box sets, dtypes and options within the
documented ranges (warpadapt.modules.OPTION_RANGES). A few hundred examples by default; the
``slow``-marked run draws 10,000 (``python -m pytest tests/test_properties.py -m slow``)."""

import math
import warnings

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from warpadapt import FeatureUnwarp, SaliencyWarp  # noqa: E402
from warpadapt.maps import interp_map, invert_map, pixel_centers  # noqa: E402
from warpadapt.modules import OPTION_RANGES  # noqa: E402
from warpadapt.saliency import pad_boxes  # noqa: E402

COMPOSE_TOL_PX = 2e-3  # grid and inverse grid compose to the identity within this, in pixels of the axis
BOX_TOL_PX = 1e-2  # inverse_boxes(forward_boxes(b)) - b, in pixels
F32_STEP = 2.0**-24  # float32 spacing just below 1.0: positions are fractions of the image


def log_uniform(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: min(max(10.0**e, lo), hi))


@st.composite
def box_sets(draw, h, w):
    """Boxes of one image: empty, tiny, huge, outside, partly outside, duplicated."""
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["normal", "tiny", "huge", "outside", "partly", "duplicate", "degenerate"]))
        if kind == "duplicate" and boxes:
            boxes.append(boxes[-1])
            continue
        x1 = draw(st.floats(0, w))
        y1 = draw(st.floats(0, h))
        if kind == "tiny":
            bw, bh = draw(st.floats(1e-3, 1.0)), draw(st.floats(1e-3, 1.0))
        elif kind == "huge":
            x1, y1 = -draw(st.floats(0, 2 * w)), -draw(st.floats(0, 2 * h))
            bw, bh = draw(st.floats(w, 4 * w)), draw(st.floats(h, 4 * h))
        elif kind == "outside":
            x1, y1 = w + draw(st.floats(0, 100)), draw(st.floats(-100, h))
            bw, bh = draw(st.floats(0, 50)), draw(st.floats(0, 50))
        elif kind == "partly":
            x1, y1 = -draw(st.floats(0, 50)), y1
            bw, bh = draw(st.floats(1, w)), draw(st.floats(0, h))
        elif kind == "degenerate":
            bw, bh = 0.0, draw(st.floats(0, h))
        else:
            bw, bh = draw(st.floats(1, w)), draw(st.floats(1, h))
        boxes.append([x1, y1, x1 + bw, y1 + bh])
    return boxes


@st.composite
def examples(draw):
    h, w = draw(st.integers(8, 2048)), draw(st.integers(8, 2048))
    b = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    guidance = draw(st.sampled_from(["instance"] * 4 + ["geometric"]))
    grid = draw(st.sampled_from([(31, 51), (2, 2), (5, 9), (27, 48), (64, 16)]))
    opts = dict(
        grid_size=grid,
        fwhm=draw(log_uniform(*OPTION_RANGES["fwhm"])),
        bandwidth_scale=draw(log_uniform(*OPTION_RANGES["bandwidth_scale"])),
        amplitude_scale=draw(log_uniform(*OPTION_RANGES["amplitude_scale"])),
        vanishing_point=(draw(st.floats(-0.5, 1.5)), draw(st.floats(-0.5, 1.5))),
        geometric_sigma=(draw(log_uniform(*OPTION_RANGES["geometric_sigma"])), draw(log_uniform(*OPTION_RANGES["geometric_sigma"]))),
    )
    boxes = [draw(box_sets(h, w)) for _ in range(b)]
    return (h, w), guidance, opts, [torch.tensor(x, dtype=torch.float64).reshape(-1, 4).to(dtype) for x in boxes]


def check_example(example):
    (h, w), guidance, opts, boxes = example
    b = len(boxes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fwhm beyond the map padding warns
        module = SaliencyWarp(guidance, **opts)
        module64 = SaliencyWarp(guidance, dtype=torch.float64, **opts)
    warp = module.make_warp((h, w), boxes, batch_size=b)
    warp64 = module64.make_warp((h, w), boxes, batch_size=b)

    # maps: finite, monotone, spanning [0, 1] exactly
    for m in (warp.map_y, warp.map_x, warp64.map_y, warp64.map_x):
        assert torch.isfinite(m).all()
        assert (m.diff(dim=1) >= 0).all()
        assert (m[:, 0] == 0).all() and (m[:, -1] == 1).all()
    warp.validate()

    # identity for images without any box inside
    _, mask = pad_boxes(boxes, (h, w))
    if guidance == "instance":
        for i in range(b):
            if not bool(mask[i].any()):
                assert torch.allclose(warp.map_x[i], torch.linspace(0, 1, warp.map_x.shape[1]), atol=1e-6)
                assert torch.allclose(warp.map_y[i], torch.linspace(0, 1, warp.map_y.shape[1]), atol=1e-6)

    # grid and inverse grid compose to the identity at the image's pixel centres, both orders:
    # g(h(v)) (warp then unwarp; boxes forward then back) and h(g(u)) (unwarp then warp).
    # float64 maps: within 1e-6 px always. float32 maps: within 2e-3 px unless float32 positions cannot
    # resolve it; then within the documented bounds 2 * 2^-24 * size * (max slope of g = 1 / min zoom)
    # for g(h(v)) and 3 * 2^-24 * size * max zoom for h(g(u)) (measured constants 1.2 and 2.0)
    for m, m64, n in ((warp.map_y, warp64.map_y, h), (warp.map_x, warp64.map_x, w)):
        v, v64 = pixel_centers(n), pixel_centers(n, dtype=torch.float64)
        slope = m.diff(dim=1) * (m.shape[1] - 1)
        max_zoom, max_slope = float((1.0 / slope.clamp(min=1e-12)).max()), float(slope.max())
        gh32 = float((interp_map(m, invert_map(m, v)) - v).abs().max()) * n
        assert gh32 <= max(COMPOSE_TOL_PX, 2 * F32_STEP * n * max_slope), (gh32, max_slope)
        hg32 = float((invert_map(m, interp_map(m, v)) - v).abs().max()) * n
        assert hg32 <= max(COMPOSE_TOL_PX, 3 * F32_STEP * n * max_zoom), (hg32, max_zoom)
        gh64 = float((interp_map(m64, invert_map(m64, v64)) - v64).abs().max()) * n
        hg64 = float((invert_map(m64, interp_map(m64, v64)) - v64).abs().max()) * n
        assert gh64 <= 1e-6 and hg64 <= 1e-6, (gh64, hg64)

    # boxes inside the image come back within 1e-2 px; output is finite and in the image
    clipped = [torch.minimum(x.float().clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32)) for x in boxes]
    fwd = warp.forward_boxes(clipped)
    for f, c, orig in zip(fwd, clipped, boxes):
        assert f.dtype == torch.float32 and torch.isfinite(f).all()
        assert (f >= -1e-3).all() and (f[:, 0::2] <= w + 1e-3).all() and (f[:, 1::2] <= h + 1e-3).all()
        assert warp.forward_boxes([orig] * b)[0].dtype == (orig.dtype if orig.dtype == torch.float64 else torch.float32)
    # round trip: within 1e-2 px, or the float32 bound of g(h(v)) where the warp squeezes harder than
    # float32 pixel positions resolve; float64 boxes through float64 maps within 1e-6 px always
    max_slope = max(float((m.diff(dim=1) * (m.shape[1] - 1)).max()) for m in (warp.map_x, warp.map_y))
    tol = max(BOX_TOL_PX, 2 * F32_STEP * max(h, w) * max_slope)
    back = warp.inverse_boxes(fwd)
    back64 = warp64.inverse_boxes(warp64.forward_boxes([c.double() for c in clipped]))
    for r, r64, c in zip(back, back64, clipped):
        if c.numel():
            assert float((r - c).abs().max()) <= tol
            assert float((r64 - c.double()).abs().max()) <= 1e-6

    # images and features: finite in, finite out, dtype kept
    img_dtype = boxes[0].dtype if boxes[0].dtype != torch.float64 else torch.float32
    s = max(1, math.ceil(max(h, w) / 48))  # a feature stride that keeps the test fast
    small = (math.ceil(h / s), math.ceil(w / s))
    x = torch.rand(b, 2, *small).to(img_dtype)
    warped = warp.apply(x)
    assert warped.dtype == img_dtype and torch.isfinite(warped).all()
    feats = FeatureUnwarp()([warped, warped[:, :, ::2, ::2]], warp)
    assert all(f.dtype == img_dtype and torch.isfinite(f).all() for f in feats)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids thread-pool wake-ups (15x faster on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


COMMON = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=300, derandomize=True, **COMMON)
@given(examples())
def test_warp_properties(example):
    check_example(example)


@pytest.mark.slow
@settings(max_examples=10_000, **COMMON)
@given(examples())
def test_warp_properties_10k(example):
    check_example(example)
