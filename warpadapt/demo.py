"""One-command demo: warp a synthetic driving scene around its objects and save the overview picture.

Usage::

    python -m warpadapt.demo [--out demo.png] [--fwhm 13] [--seed 0] [--index 0]
                             [--guidance instance] [--pair synthetic_day2night] [--dpi 90]

It renders one source scene of a synthetic domain pair (:mod:`warpadapt.data`), builds the
:class:`~warpadapt.SaliencyWarp` of its boxes, writes :func:`warpadapt.viz.warp_overview` to a PNG,
prints the PNG's path and the share of pixels the objects cover before and after the warp (from the
boxes, and from the instance mask). Runs in a few seconds on a CPU; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m warpadapt.demo``.

    Example:
        >>> build_parser().parse_args(["--fwhm", "8"]).fwhm
        8.0
    """
    p = argparse.ArgumentParser(prog="python -m warpadapt.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="warpadapt_demo.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--fwhm", type=float, default=13.0, help="attraction kernel FWHM in grid cells (default 13)")
    p.add_argument("--seed", type=int, default=0, help="pair seed of the synthetic scenes (default 0)")
    p.add_argument("--index", type=int, default=0, help="scene index (default 0)")
    p.add_argument("--guidance", default="instance", choices=("instance", "geometric", "none"),
                   help="saliency guidance (default instance)")
    p.add_argument("--pair", default="synthetic_day2night", help="synthetic domain pair (default %(default)s)")
    p.add_argument("--dpi", type=int, default=90, help="PNG resolution (default 90)")
    return p


def run(out: str = "warpadapt_demo.png", fwhm: float = 13.0, seed: int = 0, index: int = 0,
        guidance: str = "instance", pair: str = "synthetic_day2night", dpi: int = 90) -> dict:
    """Render, warp and plot one scene; returns the numbers the command prints.

    Returns:
        dict with ``path`` (the PNG), ``boxes`` (their number), ``share_before`` / ``share_after``
        (box-union pixel share), ``mask_share_before`` / ``mask_share_after`` (instance-mask pixel
        share), ``zoom_max`` (largest local magnification) and ``seconds``.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     r = run(os.path.join(d, "demo.png"), dpi=40)
        ...     os.path.getsize(r["path"]) > 0, r["share_after"] > r["share_before"]
        (True, True)
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a script: draw off-screen (a notebook keeps its backend)
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .data import SyntheticDrivingDataset, get_pair
    from .measure import pixel_share
    from .modules import SaliencyWarp
    from .viz import warp_overview

    t0 = time.perf_counter()
    ds = SyntheticDrivingDataset(get_pair(pair, seed=seed), "source", "val", length=index + 1)
    item = ds[index]
    img, boxes = item["image"], item["boxes"]
    h, w = img.shape[-2:]
    module = SaliencyWarp(guidance, fwhm=fwhm)
    with torch.no_grad():
        warp = module.make_warp((h, w), [boxes], batch_size=1)
    zy, zx = warp.zoom()
    mask = item["instance"] > 0
    res = dict(
        boxes=int(boxes.shape[0]),
        share_before=pixel_share(boxes, (h, w)),
        share_after=pixel_share(boxes, (h, w), warp),
        mask_share_before=pixel_share(mask=mask),
        mask_share_after=pixel_share(mask=mask, warp=warp),
        zoom_max=float(max(zy.max(), zx.max())),
    )
    fig = warp_overview(img, boxes, module, labels=item["labels"], class_names=ds.classes)
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    res.update(path=out, seconds=time.perf_counter() - t0)
    return res


def main(argv=None) -> dict:
    """Entry point of ``python -m warpadapt.demo``: parse ``argv``, run, print the results.

    Example:
        >>> import tempfile, os, contextlib, io
        >>> with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()) as so:
        ...     r = main(["--out", os.path.join(d, "x.png"), "--dpi", "40"])
        >>> "pixel share" in so.getvalue()
        True
    """
    args = build_parser().parse_args(argv)
    r = run(args.out, args.fwhm, args.seed, args.index, args.guidance, args.pair, args.dpi)
    print(f"scene: {args.pair} source/val #{args.index} (seed {args.seed}), {r['boxes']} boxes; "
          f"{args.guidance} warp, FWHM {args.fwhm:g}, max zoom x{r['zoom_max']:.2f}")
    print(f"object pixel share (box union):     {100 * r['share_before']:5.2f}% -> {100 * r['share_after']:5.2f}% "
          f"(x{r['share_after'] / max(r['share_before'], 1e-12):.2f})")
    print(f"object pixel share (instance mask): {100 * r['mask_share_before']:5.2f}% -> "
          f"{100 * r['mask_share_after']:5.2f}% (x{r['mask_share_after'] / max(r['mask_share_before'], 1e-12):.2f})")
    print(f"wrote {r['path']} in {r['seconds']:.1f} s")
    return r


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
