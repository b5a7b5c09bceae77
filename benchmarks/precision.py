"""How exactly the warp's grid and inverse grid compose, float32 vs float64 maps (issue 8).

Draws random box sets on a square image and random options within the documented ranges
(``warpadapt.modules.OPTION_RANGES``, log-uniform), plus the same number of box sets at
``amplitude_scale=10`` with the other options at their defaults, and prints the worst error in pixels
of both composition orders:

* ``g(h(v)) - v``: original -> warped -> original (an image warped then unwarped; boxes forward then back);
* ``h(g(u)) - u``: warped -> original -> warped.

    python benchmarks/precision.py              # 1000 box sets per row at 2048 px (about a minute)
    python benchmarks/precision.py --quick      # 50 box sets per row, a smoke run
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch

from warpadapt import SaliencyWarp
from warpadapt.maps import interp_map, invert_map, pixel_centers
from warpadapt.modules import OPTION_RANGES


def worst_errors(n_sets: int, size: int, random_options: bool, seed: int = 0) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)

    def log_uniform(lo: float, hi: float) -> float:
        return 10 ** (math.log10(lo) + float(torch.rand((), generator=gen)) * math.log10(hi / lo))

    out = {"gh32": 0.0, "hg32": 0.0, "gh64": 0.0, "hg64": 0.0, "zoom": 0.0}
    for _ in range(n_sets):
        if random_options:
            opts = {k: log_uniform(*OPTION_RANGES[k]) for k in ("fwhm", "bandwidth_scale", "amplitude_scale")}
        else:
            opts = {"amplitude_scale": 10.0}
        k = int(torch.randint(1, 9, (), generator=gen))
        wh = torch.rand(k, 2, generator=gen) ** 3 * size + 0.01  # mostly small boxes, some large
        xy = torch.rand(k, 2, generator=gen) * size
        boxes = [torch.cat([xy, xy + wh], 1)]
        for dtype, tag in ((torch.float32, "32"), (torch.float64, "64")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # fwhm beyond the map padding
                warp = SaliencyWarp(dtype=dtype, **opts).make_warp((size, size), boxes)
            for m in (warp.map_x, warp.map_y):
                v = pixel_centers(size, dtype=dtype)
                out["gh" + tag] = max(out["gh" + tag], float((interp_map(m, invert_map(m, v)) - v).abs().max()) * size)
                out["hg" + tag] = max(out["hg" + tag], float((invert_map(m, interp_map(m, v)) - v).abs().max()) * size)
                zoom = float((1.0 / (m.diff(dim=1) * (m.shape[1] - 1)).clamp(min=1e-12)).max())
                out["zoom"] = max(out["zoom"], zoom)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=1000, help="box sets per row")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--quick", action="store_true", help="50 box sets per row")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: thread wake-ups would dominate
    n = 50 if args.quick else args.sets
    print(f"worst composition error in px at {args.size} x {args.size}, {n} box sets per row")
    print("| options | g(h(v)) float32 | h(g(u)) float32 | g(h(v)) float64 | h(g(u)) float64 | max zoom |")
    print("|---|---|---|---|---|---|")
    for label, rand in (("amplitude_scale=10, others default", False), ("random within OPTION_RANGES", True)):
        e = worst_errors(n, args.size, rand)
        print(f"| {label} | {e['gh32']:.2e} | {e['hg32']:.2e} | {e['gh64']:.1e} | {e['hg64']:.1e} | {e['zoom']:.0f} |")


if __name__ == "__main__":
    main()
