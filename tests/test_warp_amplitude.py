"""The warp's amplitude (issue 19 item 4): Warp.blend, SaliencyWarp(amplitude, amplitude_range),
warp.schedule in both recipes."""
import json
import math

import pytest
import torch

from warpadapt import SaliencyWarp
from warpadapt.uda.run import warp_amplitude
from warpadapt.warp import Warp

BOXES = [torch.tensor([[60.0, 30.0, 70.0, 40.0]]), torch.tensor([[10.0, 40.0, 30.0, 60.0]])]


def _full():
    return SaliencyWarp().make_warp((64, 128), BOXES, batch_size=2)


def test_blend_scales_every_displacement_and_keeps_the_exact_inverse():
    full = _full()
    ident = Warp.identity(2, (full.map_y.shape[1], full.map_x.shape[1]))
    assert full.blend(1.0) is full
    zero = full.blend(0.0)
    assert torch.allclose(zero.map_x, ident.map_x, atol=1e-7) and torch.allclose(zero.map_y, ident.map_y, atol=1e-7)
    a = torch.tensor([0.25, 0.75])
    part = full.blend(a)
    for i in range(2):
        for m, f, o in ((part.map_x, full.map_x, ident.map_x), (part.map_y, full.map_y, ident.map_y)):
            assert torch.allclose(m[i] - o[i], a[i] * (f[i] - o[i]), atol=1e-6)
    # still a warp: maps increasing from 0 to 1, and its inverse undoes it (positions, both axes)
    assert (part.map_x.diff(dim=1) > 0).all() and (part.map_y.diff(dim=1) > 0).all()
    pts = torch.tensor([[[65.0, 35.0], [3.0, 60.0], [120.0, 2.0]]]).expand(2, -1, -1)
    moved = part.forward_points(pts, (64, 128))
    assert not torch.allclose(moved, pts, atol=0.5)  # a real warp: points move
    assert torch.allclose(part.inverse_points(moved, (64, 128)), pts, atol=1e-3)  # and its inverse undoes it
    # the zoom at the object shrinks towards 1 with the amplitude
    zooms = [full.blend(v).zoom()[1][0].max().item() for v in (1.0, 0.5, 0.0)]
    assert zooms[0] > zooms[1] > zooms[2] and zooms[2] == pytest.approx(1.0, abs=1e-3)


def test_blend_rejects_a_bad_amplitude():
    full = _full()
    with pytest.raises(ValueError, match=r"amplitude: expected a number in \[0, 1\]"):
        full.blend(1.5)
    with pytest.raises(ValueError, match=r"amplitude: expected a number or a \(2,\) tensor"):
        full.blend(torch.ones(3))


def test_saliency_warp_amplitude_and_range():
    img = torch.rand(2, 3, 64, 128)
    zero, _ = SaliencyWarp(amplitude=0.0)(img, BOXES)
    assert torch.allclose(zero, img, atol=1e-4)  # amplitude 0: the identity
    sw = SaliencyWarp()
    full = sw.make_warp((64, 128), BOXES, batch_size=2)
    sw.amplitude = 0.5  # a plain attribute: a training loop schedules it
    half = sw.make_warp((64, 128), BOXES, batch_size=2)
    assert torch.allclose(half.map_x, full.blend(0.5).map_x)
    ranged = SaliencyWarp(amplitude_range=(0.2, 0.6))
    torch.manual_seed(0)
    w1 = ranged.make_warp((64, 128), BOXES, batch_size=2)
    torch.manual_seed(0)
    drawn = 0.2 + 0.4 * torch.rand(2)
    assert torch.allclose(w1.map_x, full.blend(drawn).map_x, atol=1e-6)  # one draw per image, global generator
    assert "amplitude_range=(0.2, 0.6)" in repr(ranged) and "amplitude=" not in repr(SaliencyWarp())
    ranged.amplitude = 0.0  # the schedule's factor multiplies the drawn amplitude
    assert torch.allclose(ranged.make_warp((64, 128), BOXES, batch_size=2).map_x, Warp.identity(2, (31, 51)).map_x, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"amplitude": -0.1}, r"amplitude must be a number in \[0, 1\]"),
    ({"amplitude": True}, r"amplitude must be a number in \[0, 1\]"),
    ({"amplitude_range": (0.5, 0.2)}, r"amplitude_range must be \(lo, hi\) with 0 <= lo <= hi <= 1"),
    ({"amplitude_range": (0.0, 1.5)}, r"amplitude_range must be \(lo, hi\)"),
    ({"amplitude_range": 0.5}, r"amplitude_range must be a pair of 2 numbers"),
])
def test_saliency_warp_rejects_bad_amplitudes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SaliencyWarp(**kwargs)


def test_a_scheduled_amplitude_out_of_range_is_caught_when_the_warp_is_built():
    sw = SaliencyWarp()
    sw.amplitude = 2.0
    with pytest.raises(ValueError, match=r"amplitude must be a number in \[0, 1\]"):
        sw.make_warp((64, 128), BOXES, batch_size=2)


def test_warp_amplitude_schedules():
    assert [warp_amplitude("constant", s, 10) for s in (0, 5, 10)] == [1.0, 1.0, 1.0]
    assert [warp_amplitude("linear_decay", s, 10) for s in (0, 5, 10, 20)] == [1.0, 0.5, 0.0, 0.0]
    cos = [warp_amplitude("cosine_decay", s, 10) for s in range(11)]
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5) and cos[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(cos, cos[1:]))  # strictly decreasing over the horizon
    assert cos[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    with pytest.raises(ValueError, match="config: warp.schedule: expected one of"):
        warp_amplitude("step", 0, 10)


def _amplitudes(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["warp_amplitude"] for r in rows if "warp_amplitude" in r}


def test_recipes_follow_warp_schedule(tmp_path):
    """Both recipes set the warp's amplitude from warp.schedule each step and log it (twopcnet over its
    warped burn-in, mic over train.schedule_iters); warp.amplitude_range reaches the module."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from test_mic import TINY as MIC_TINY
    from test_twopcnet import TINY as DET_TINY

    def recipe(name):
        spec = importlib.util.spec_from_file_location(f"{name}_amplitude", root / "recipes" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    det = tmp_path / "det"
    recipe("twopcnet").main(DET_TINY + [f"out_dir={det}", "train.iters=4", "train.burn_in=4", "warp.schedule=linear_decay",
                                        "warp.amplitude_range=[0.5,1.0]", "uda.enabled=false"])
    assert _amplitudes(det) == pytest.approx({1: 1.0, 2: 0.75, 3: 0.5, 4: 0.25})  # logged after step it: 1 - it / 4
    seg = tmp_path / "seg"
    recipe("mic").main(MIC_TINY + [f"out_dir={seg}", "train.iters=3", "train.schedule_iters=4", "warp.schedule=cosine_decay"])
    assert _amplitudes(seg) == pytest.approx({s + 1: warp_amplitude("cosine_decay", s, 4) for s in range(3)})
    with pytest.raises(ValueError, match="config: warp.schedule"):
        recipe("mic").main(MIC_TINY + [f"out_dir={tmp_path / 'bad'}", "warp.schedule=step"])
    with pytest.raises(ValueError, match="config: warp.amplitude_range"):
        recipe("twopcnet").main(DET_TINY + [f"out_dir={tmp_path / 'bad2'}", "warp.amplitude_range=[0.9,0.1]"])
