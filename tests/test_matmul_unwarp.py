"""method="matmul": the separable 2-tap interpolation as two matrix products. Same numbers as grid_sample
(forward and gradients), deterministic by construction (plain matmuls, no scatter-add in the backward)."""
import pytest
import torch

import warpadapt
from warpadapt import FeatureUnwarp, SaliencyWarp
from warpadapt.maps import interpolation_matrix, resample

BOXES = [torch.tensor([[30.0, 20.0, 50.0, 36.0]]), torch.tensor([[100.0, 10.0, 120.0, 30.0], [5.0, 40.0, 30.0, 60.0]])]


def _warp():
    return SaliencyWarp(fwhm=9.0).make_warp((64, 128), BOXES, batch_size=2)


@pytest.mark.parametrize("size", [(16, 32), (8, 16), (7, 13), (1, 3)])
def test_matmul_equals_grid_sample_forward_and_backward(size):
    w = _warp()
    fy, fx = w.axes(size, inverse=True)
    x = torch.randn(2, 5, *size, requires_grad=True)
    ref = resample(x, fy, fx, method="grid_sample")
    out = resample(x, fy, fx, method="matmul")
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(out, x, g)
    assert torch.allclose(gx, gx_ref, atol=1e-5)
    (again,) = torch.autograd.grad(resample(x, fy, fx, method="matmul"), x, g)
    assert torch.equal(gx, again)  # the same numbers every time


def test_interpolation_matrix_rows_and_gradcheck():
    f = torch.rand(3, 9, dtype=torch.float64)
    r = interpolation_matrix(f, 6)
    assert r.shape == (3, 9, 6) and torch.allclose(r.sum(-1), torch.ones(3, 9, dtype=torch.float64))
    assert ((r > 0).sum(-1) <= 2).all()  # two taps at most
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    fy = (torch.rand(1, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    fx = (torch.rand(1, 7, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: resample(a, b, c, method="matmul"), (x, fy, fx))


def test_unwarp_and_wrap_take_matmul():
    w = _warp()
    feats = [torch.randn(2, 4, 16, 32), torch.randn(2, 4, 8, 16)]
    a = FeatureUnwarp(method="matmul")(feats, w)
    b = FeatureUnwarp(method="grid_sample")(feats, w)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))
    import timm
    net = warpadapt.wrap(timm.create_model("resnet18", features_only=True, out_indices=(2, 3)), method="matmul")
    assert net.unwarp.method == "matmul" and len(net.train()(torch.rand(2, 3, 64, 128), BOXES)) == 2
    with pytest.raises(ValueError, match="method must be one of"):
        FeatureUnwarp(method="cubic")
