"""Fast tests of warpadapt.viz (Agg backend) and of the demo command."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import warpadapt  # noqa: E402
from warpadapt import measure, viz  # noqa: E402

H, W = 48, 96
BOXES = torch.tensor([[40.0, 18.0, 52.0, 30.0], [70.0, 20.0, 76.0, 32.0]])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, H, W, generator=g)


@pytest.fixture
def warp():
    return warpadapt.SaliencyWarp(fwhm=6.0).make_warp((H, W), [BOXES], batch_size=1)


# -- smoke: every function draws and returns axes / a figure ------------------------------------------
def test_show_boxes(image):
    ax = viz.show_boxes(image, BOXES, labels=[1, 3], class_names=["person", "rider", "car"], title="t")
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 2
    assert [t.get_text() for t in ax.texts] == ["person", "car"]


def test_show_boxes_numpy_hwc_and_uint8(image):
    arr = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    ax = viz.show_boxes(arr, BOXES.numpy())
    assert ax.images[0].get_array().shape == (H, W, 3)
    ax2 = viz.show_boxes(image.permute(1, 2, 0).numpy(), [[1, 2, 3, 4]])
    assert len(ax2.patches) == 1


def test_show_boxes_on_given_axes(image):
    fig, ax = plt.subplots()
    assert viz.show_boxes(image, BOXES, ax=ax) is ax


def test_show_saliency(image):
    sal = warpadapt.instance_saliency([BOXES], (H, W))
    ax = viz.show_saliency(image, sal, BOXES)
    assert isinstance(ax, Axes)
    up = ax.images[-1].get_array()
    assert up.shape == (H, W)
    # relative scale: the peak is above uniform (1) near the boxes
    assert float(up.max()) > 1.0
    assert len(ax.figure.axes) == 2  # the colorbar


def test_show_grid_identity_is_straight_evenly_spaced():
    w = warpadapt.Warp.identity(1, image_size=(H, W))
    ax = viz.show_grid(w, (H, W), step=12)
    lines = [ln.get_xydata() for ln in ax.lines]
    nx, ny = W // 12 + 1, H // 12 + 1
    assert len(lines) == nx + ny
    vert, horiz = lines[:nx], lines[nx:]
    for k, ln in enumerate(vert):
        np.testing.assert_allclose(ln[:, 0], 12 * k, atol=1e-4)  # constant x: a straight vertical line
        np.testing.assert_allclose(ln[[0, -1], 1], [0, H], atol=1e-4)
    for k, ln in enumerate(horiz):
        np.testing.assert_allclose(ln[:, 1], 12 * k, atol=1e-4)
        np.testing.assert_allclose(ln[[0, -1], 0], [0, W], atol=1e-4)


def test_show_grid_warp_crowds_lines_at_objects(warp, image):
    ax = viz.show_grid(warp, (H, W), step=4, image=image)
    nx = W // 4 + 1
    xs = np.array([ln.get_xydata()[0, 0] for ln in ax.lines[:nx]])
    assert np.all(np.diff(xs) > 0)  # monotone: no fold-over
    gaps = np.diff(xs)
    mid = (xs[:-1] + xs[1:]) / 2
    near = gaps[(mid > 40) & (mid < 52)].mean()
    far = gaps[mid < 20].mean()
    assert near < far  # warped-grid lines crowd on the object (it is oversampled)


def test_show_warped(image, warp):
    ax = viz.show_warped(image, warp, BOXES, labels=[1, 2])
    assert isinstance(ax, Axes)
    expected = warp.forward_boxes([BOXES], (H, W))[0]
    x1, y1, bw, bh = ax.patches[0].get_bbox().bounds
    np.testing.assert_allclose([x1, y1, x1 + bw, y1 + bh], expected[0].numpy(), atol=1e-3)


def test_show_features_pca_and_mean():
    before, after = torch.randn(1, 16, 6, 12), torch.randn(1, 16, 6, 12)
    fig = viz.show_features(before, after)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    rgb = fig.axes[0].images[0].get_array()
    assert rgb.shape == (6, 12, 3) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    fig2 = viz.show_features(before[0], after[0], method="mean", reference=torch.randn(16, 6, 12))
    assert len(fig2.axes) == 3


def test_compare_guidance(image):
    prior = warpadapt.fit_static_prior([BOXES, BOXES + 2], [(H, W)] * 2, (31, 51))
    fig = viz.compare_guidance(image, BOXES, prior=prior, fwhm=8.0)
    assert isinstance(fig, Figure)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert [t.split()[0] for t in titles[:3]] == ["instance", "static", "geometric"]
    assert sum("warped" in t for t in titles) == 3


def test_compare_guidance_accepts_modules(image):
    fig = viz.compare_guidance(image, BOXES, (warpadapt.SaliencyWarp("none"),))
    assert fig.axes[0].get_title() == "none saliency"


def test_warp_overview(image):
    fig = viz.warp_overview(image, BOXES, warpadapt.SaliencyWarp(fwhm=6.0), labels=[1, 1], class_names=["car"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # four panels and a colorbar
    assert "objects cover" in fig._suptitle.get_text()


def test_pixel_share(warp):
    s0 = measure.pixel_share(BOXES, (H, W))
    assert s0 == pytest.approx((12 * 12 + 6 * 12) / (H * W))
    assert measure.pixel_share(BOXES, (H, W), warp) > s0
    mask = torch.zeros(H, W)
    mask[18:30, 40:52] = 1
    assert measure.pixel_share(mask=mask) == pytest.approx(144 / (H * W))
    strong = warpadapt.SaliencyWarp(fwhm=4.0, bandwidth_scale=2.0).make_warp((H, W), [BOXES[:1]], batch_size=1)
    assert measure.pixel_share(mask=mask, warp=strong) > 1.5 * measure.pixel_share(mask=mask)
    assert measure.pixel_share(torch.zeros(0, 4), (H, W), warp) == 0.0


# -- invalid input: ValueError naming the argument ----------------------------------------------------
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda im, w: viz.show_boxes(torch.rand(4, H, W), BOXES), "image"),
        (lambda im, w: viz.show_boxes(np.zeros((2, 3, H, W)), BOXES), "image"),
        (lambda im, w: viz.show_boxes("x.png", BOXES), "image"),
        (lambda im, w: viz.show_boxes(im, torch.zeros(3, 5)), "boxes"),
        (lambda im, w: viz.show_boxes(im, torch.tensor([[5.0, 5.0, 1.0, 9.0]])), "boxes"),
        (lambda im, w: viz.show_boxes(im, torch.tensor([[float("nan"), 0, 1, 1]])), "boxes"),
        (lambda im, w: viz.show_boxes(im, BOXES, labels=[1]), "labels"),
        (lambda im, w: viz.show_saliency(im, torch.rand(5)), "saliency"),
        (lambda im, w: viz.show_saliency(im, -torch.rand(4, 5)), "saliency"),
        (lambda im, w: viz.show_grid("not a warp", (H, W)), "warp"),
        (lambda im, w: viz.show_grid(w, (H,)), "image_size"),
        (lambda im, w: viz.show_grid(w, (H, W), step=0), "step"),
        (lambda im, w: viz.show_grid(w, (H, W), index=3), "index"),
        (lambda im, w: viz.show_grid(w, (H, W), image=torch.rand(3, 10, 10)), "image"),
        (lambda im, w: viz.show_warped(im, None), "warp"),
        (lambda im, w: viz.show_features(torch.rand(5), torch.rand(2, 3, 3)), "before"),
        (lambda im, w: viz.show_features(torch.rand(2, 3, 3), torch.rand(4, 3, 3)), "after"),
        (lambda im, w: viz.show_features(torch.rand(2, 3, 3), torch.rand(2, 3, 3), method="tsne"), "method"),
        (lambda im, w: viz.compare_guidance(im, BOXES, ("instance", "static")), "prior"),
        (lambda im, w: viz.compare_guidance(im, BOXES, ("fancy",)), "guidances"),
        (lambda im, w: viz.warp_overview(im, BOXES, warp_module="instance"), "warp_module"),
        (lambda im, w: measure.pixel_share(mask=torch.zeros(3, H, W)), "mask"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_argument(call, name, image, warp):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call(image, warp)


# -- demo ---------------------------------------------------------------------------------------------
def test_demo_main_writes_png_and_share_grows(tmp_path, capsys):
    from warpadapt import demo

    out = tmp_path / "sub" / "demo.png"
    r = demo.main(["--out", str(out), "--dpi", "40", "--seed", "1"])
    assert out.exists()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["share_after"] > r["share_before"] > 0
    assert r["mask_share_after"] > r["mask_share_before"] > 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "pixel share" in printed
