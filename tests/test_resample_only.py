"""WarpedBackbone.resample_only (warp.resample_only): the interpolation control. Where the backbone would
warp, it runs on the true image and every feature map is warped by the same warp and unwarped."""
from pathlib import Path

import pytest
import timm
import torch

import warpadapt
from warpadapt.uda.build import detector_from_config, segmenter_from_config, warp_from_config
from warpadapt.uda.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BOXES = [torch.tensor([[40.0, 20.0, 60.0, 36.0]]), torch.tensor([[8.0, 30.0, 30.0, 50.0]])]


def _batch():
    return torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("features_only", [True, False])
def test_resample_only_is_the_features_resampled_by_the_warp_and_back(features_only):
    """U(W(f(x))) per level with the warp the call returns, for a features_only model (forward) and a plain
    one (forward_intermediates); not the full warp U(f(W(x))); eval mode stays the bare model."""
    torch.manual_seed(0)
    kw = dict(features_only=True, out_indices=(1, 2)) if features_only else {}
    body = warpadapt.wrap(timm.create_model("resnet18", pretrained=False, **kw), "instance").train()
    x = _batch()
    with torch.no_grad():  # BatchNorm in train mode uses the batch's statistics: a function of the batch only
        full, w_full = body(x, BOXES, return_warp=True)
        body.resample_only = True
        if features_only:
            got, w = body(x, BOXES, return_warp=True)
            bare = body.model(x)
        else:
            got = body.forward_intermediates(x, BOXES, intermediates_only=True, indices=(1, 2))
            w = body.warper.make_warp((64, 128), BOXES, batch_size=2)
            bare = body.model.forward_intermediates(x, intermediates_only=True, indices=(1, 2))
            full = None
        want = [w.unapply(w.apply(f)) for f in bare]
    assert len(got) == len(want) == 2
    for g, e, f in zip(got, want, bare):
        assert g.shape == f.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        assert (g - f).abs().max() > 1e-3  # the resampling does something
    if full is not None:
        torch.testing.assert_close(w.map_y, w_full.map_y)  # the same warp as the full one builds
        assert all((a - b).abs().max() > 1e-3 for a, b in zip(full, got))
    body.eval()
    with torch.no_grad():
        plain = body(x) if features_only else body.forward_intermediates(x, intermediates_only=True, indices=(1, 2))
        ref = body.model(x) if features_only else body.model.forward_intermediates(x, intermediates_only=True, indices=(1, 2))
    assert all(torch.equal(a, b) for a, b in zip(plain, ref))


def test_resample_only_reaches_both_recipes_models_from_the_config():
    for recipe, name in (("twopcnet", "synthetic_day2night"), ("mic", "synthetic_clear2fog")):
        for value in ("false", "true"):
            cfg = load_config(ROOT / "recipes" / f"{recipe}.py", ["data.image_size=[64,128]", "warp.guidance=instance",
                                                                 "model.backbone=resnet18", f"warp.resample_only={value}"],
                              default=name)
            warp = warp_from_config(cfg)
            if recipe == "twopcnet":
                body = detector_from_config(cfg, 8, warp).backbone.body
            else:
                body = segmenter_from_config(cfg, warp).backbone
            assert body.resample_only is (value == "true"), (recipe, value)
    with pytest.raises(ValueError, match="warp.resample_only"):
        load_config(ROOT / "recipes" / "mic.py", ["warp.resample_only=maybe"], default="synthetic_clear2fog")
