"""Background styles of the synthetic scenes (palettes and texture statistics) and object colours.

A style is a dict of background colours (RGB in [0, 1]) and texture statistics; a domain renders the
same layout in another style. Object colours (cars, clothes, skin) are not styled: domains change
the background much more than the objects.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["STYLES", "CAR_COLORS", "CLOTH_COLORS", "SKIN_COLORS", "resolve_style", "jitter_style"]


def _rgb(*hexes: str) -> list:
    return [[int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5)] for h in hexes]


# Background styles: palettes and texture statistics. Colours are RGB in [0, 1]. The target styles
# differ from "day" by plausible, moderate palette changes; the effects (pairs.py) do the rest.
STYLES: dict[str, dict[str, Any]] = {
    # European town on a clear day: warm plaster and brick, lush green, blue sky, grey asphalt.
    "day": dict(
        sky_top=_rgb("#3d7fd0")[0], sky_horizon=_rgb("#b9d5f0")[0], cloud=0.55,
        cloud_color=_rgb("#f4f6f8")[0], skyline=_rgb("#8d99aa", "#9aa4b0", "#7d8c86"),
        road=_rgb("#6c6c70")[0], road_grain=0.10, road_patch=0.10, lane=_rgb("#e8e8e0")[0],
        sidewalk=_rgb("#b3aca4")[0], tile=0.8, tile_contrast=0.20, curb=_rgb("#d0ccc4")[0],
        terrain=_rgb("#8faa55", "#a7b069"), vegetation=_rgb("#3f7a2c", "#6b9a3a"), veg_grain=0.45,
        buildings=_rgb("#d9c7a3", "#c98a62", "#e2dccf", "#b9715a", "#d4b483", "#a9b4b8"),
        brick_prob=0.35, glass_prob=0.10, window=_rgb("#3c4a5a")[0], window_frame=_rgb("#f0ede5")[0],
        wall=_rgb("#a39e92")[0], fence=_rgb("#6e6a63")[0], pole=_rgb("#5c6066")[0],
        trunk=_rgb("#5a4632")[0], grain=0.04, wall_grain=0.12, noise_cell=3.0, jitter=0.12,
    ),
    # A different city for the night domain: cooler concrete and glass, darker greens, darker
    # asphalt with yellow lane marks, a violet night sky (the ``night`` effect does the darkness).
    "night_city": dict(
        sky_top=_rgb("#141c36")[0], sky_horizon=_rgb("#4a4560")[0], cloud=0.3,
        cloud_color=_rgb("#5a5468")[0], skyline=_rgb("#3a4050", "#454c5c", "#4c5566"),
        road=_rgb("#55555a")[0], road_grain=0.15, road_patch=0.2, lane=_rgb("#e9c46a")[0],
        sidewalk=_rgb("#9a9890")[0], tile=0.6, tile_contrast=0.3, curb=_rgb("#b8b4ac")[0],
        terrain=_rgb("#7f8a4a", "#8f8a58"), vegetation=_rgb("#2f6a3a", "#4a7a40"), veg_grain=0.5,
        buildings=_rgb("#a8aeb5", "#8c96a3", "#c4b9a6", "#9a8070", "#b0a48c"),
        brick_prob=0.15, glass_prob=0.35, window=_rgb("#6f8aa3")[0], window_frame=_rgb("#3a3f46")[0],
        wall=_rgb("#8a8a82")[0], fence=_rgb("#7a7f85")[0], pole=_rgb("#6a6e74")[0],
        trunk=_rgb("#3f3226")[0], grain=0.06, wall_grain=0.18, noise_cell=2.5, jitter=0.12,
    ),
    # Misty coast town: pastel walls, grey-green scrub, pale weathered asphalt, white sky.
    "fog_town": dict(
        sky_top=_rgb("#a8b4c0")[0], sky_horizon=_rgb("#d0d6da")[0], cloud=0.8,
        cloud_color=_rgb("#eceff1")[0], skyline=_rgb("#a8b0b5", "#b5babd"),
        road=_rgb("#9a9288")[0], road_grain=0.14, road_patch=0.2, lane=_rgb("#f0f0ea")[0],
        sidewalk=_rgb("#b8ae9e")[0], tile=0.6, tile_contrast=0.3, curb=_rgb("#c8c0b4")[0],
        terrain=_rgb("#9aa068", "#a8a478"), vegetation=_rgb("#4f6e3c", "#6a8048"), veg_grain=0.5,
        buildings=_rgb("#c9dbe3", "#e6c2c0", "#f0e6cf", "#bfd8c4", "#d9cde6"),
        brick_prob=0.05, glass_prob=0.1, window=_rgb("#55606a")[0], window_frame=_rgb("#8a6a5a")[0],
        wall=_rgb("#b8ae9c")[0], fence=_rgb("#d8d2c4")[0], pole=_rgb("#7a746c")[0],
        trunk=_rgb("#5a4a3a")[0], grain=0.06, wall_grain=0.18, noise_cell=2.5, jitter=0.12,
    ),
    # Wet industrial district: red brick, dark wet asphalt, dark-green hedges, grey overcast sky.
    "rain_city": dict(
        sky_top=_rgb("#606a74")[0], sky_horizon=_rgb("#8e979e")[0], cloud=0.9,
        cloud_color=_rgb("#7a838a")[0], skyline=_rgb("#5f6568", "#6a7074"),
        road=_rgb("#4a4c50")[0], road_grain=0.12, road_patch=0.25, lane=_rgb("#d8d8d0")[0],
        sidewalk=_rgb("#8d857c")[0], tile=0.4, tile_contrast=0.3, curb=_rgb("#a09890")[0],
        terrain=_rgb("#6f7a45", "#7a7040"), vegetation=_rgb("#2f5a2c", "#4a6a35"), veg_grain=0.5,
        buildings=_rgb("#9a4a38", "#7a4a3a", "#a8705a", "#6e6a66", "#8e8072"),
        brick_prob=0.6, glass_prob=0.05, window=_rgb("#a8b4bc")[0], window_frame=_rgb("#3b3430")[0],
        wall=_rgb("#6a645e")[0], fence=_rgb("#3a6a52")[0], pole=_rgb("#4a4f54")[0],
        trunk=_rgb("#3a2c20")[0], grain=0.06, wall_grain=0.2, noise_cell=2.0, jitter=0.12,
    ),
}

CAR_COLORS = np.array(_rgb(
    "#f2f2f2", "#1c1c1e", "#a9adb3", "#6d7278", "#b02a2a", "#1f4e9c", "#2d5a3d", "#d9d2c0",
    "#e3b81f", "#7a1f2b", "#3c3f63", "#c8c8c8"), np.float32)
CLOTH_COLORS = np.array(_rgb(
    "#1d1d1f", "#2c3e6b", "#7b2d26", "#d9d9d9", "#3f6b3a", "#c87f2c", "#5b4a7a", "#8a8a8a",
    "#d8b25a", "#2a6f8a", "#e05a6d", "#4a3b2c"), np.float32)
SKIN_COLORS = np.array(_rgb("#f1c7a5", "#d9a07b", "#a86f4c", "#6b4530", "#e8b995"), np.float32)


def resolve_style(style) -> dict:
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"style: unknown style {style!r}; expected one of {sorted(STYLES)}")
        return STYLES[style]
    if isinstance(style, Mapping):
        base = dict(STYLES[style.get("base", "day")])
        base.update({k: v for k, v in style.items() if k != "base"})
        return base
    raise ValueError(f"style: expected a style name or a mapping, got {type(style).__name__}")


def jitter_style(style: dict, rng: np.random.Generator, j: float) -> dict:
    """Per-scene variation of a style's background colours (exposure, white balance, each colour).

    Every colour of the palette is multiplied by a global exposure ``1 +- j``, a per-channel white
    balance ``1 +- j / 4`` and its own factor: brightness ``1 +- j`` times a small per-channel tint
    ``1 +- j / 4`` (greys stay grey-ish: a road is not pink): streets, light and cameras vary from scene
    to scene (object colours are not styled and do not change).
    """
    gain = (1 + rng.uniform(-j, j)) * (1 + rng.uniform(-j / 4, j / 4, 3))

    def vary(c):
        return np.clip(np.asarray(c) * gain * (1 + rng.uniform(-j, j)) * (1 + rng.uniform(-j / 4, j / 4, 3)), 0, 1).tolist()

    out = dict(style)
    for k, v in style.items():
        if isinstance(v, list) and v and isinstance(v[0], list):
            out[k] = [vary(c) for c in v]
        elif isinstance(v, list) and len(v) == 3 and not isinstance(v[0], list):
            out[k] = vary(v)
    return out
