"""Procedural driving scenes with boxes, semantic, instance and depth maps.

A scene is a pinhole view from a car-mounted camera (height ``cam_height`` metres) down a straight
road to a vanishing point: road with lane marks, sidewalks with curbs, terrain, building facades
(plaster / brick / glass with windows), tree lines, walls and fences, a distant skyline, sky with
clouds, poles, street lamps, trees; and the detection objects: cars, trucks, persons, riders on
bicycles, traffic signs and traffic lights standing on the ground plane, their size shrinking toward
the horizon, drawn far to near so nearer objects occlude farther ones.

The geometry (layout) of a scene depends only on ``(seed, index)``; the *style* (background palette
and texture statistics: colours of buildings, vegetation, road, sky; grain; window and brick
patterns) is a separate argument, so the very same scene can be rendered in two domains. Objects keep
their colours in every style: domains change the background much more than the objects. A style's
``jitter`` varies its background colours per scene (exposure, white balance, each palette colour by
up to ``+-jitter``, seeded by ``(seed, index)``), so a domain is a distribution of looks, not one
palette, and a model trained on it learns more than a colour lookup.

Label conventions
-----------------
* ``semantic``: uint8 (H, W) Cityscapes train ids (0 road ... 18 bicycle, see ``TRAIN_ID_NAMES``);
  255 = ignore (only objects too occluded/small to get a box, see below).
* ``instance``: int32 (H, W) in the Cityscapes style encoding ``train_id * 1000 + k`` for pixels of
  an object that has a box (k = 0, 1, ... counts instances of that class in the scene). All other
  pixels (stuff and ignore) are 0. Traffic signs (7) and traffic lights (6) are instances here.
* ``boxes``: float32 (N, 4) xyxy, continuous pixel coordinates (pascal_voc style, the whole image is
  ``(0, 0, W, H)``). Boxes are MODAL: each box is exactly the bounding box of the visible pixels of
  its instance (``x2 = last column + 1``). Objects with fewer than ``min_visible_pixels`` visible
  pixels (or under 2 px wide/high) get no box; their pixels become 255 in ``semantic`` and 0 in
  ``instance``.
* ``labels``: int64 (N,) detection indices 1..K, ``DETECTION_CLASSES[label - 1]`` is the name.
* ``depth``: float32 (H, W) metres along the optical axis; sky is ``SKY_DEPTH``.

Speed (measured on the 2-core CPU box, 256 x 512, default parameters, style "day"):
about 55 scenes/s single process (``python -m warpadapt.data bench``), measured while other jobs
shared the two cores; effects add about 20 ms (night), 3 ms (fog), 8 ms (rain) per scene.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import cv2
import numpy as np

from warpadapt.data.labels import (
    CITYSCAPES_CLASSES, CLASS_TO_TRAIN_ID, DETECTION_CLASSES, IGNORE_INDEX, SYNTHETIC_THING_TRAIN_IDS,
)

__all__ = [
    "TRAIN_ID_NAMES",
    "DETECTION_CLASSES",
    "CLASS_TO_TRAIN_ID",
    "THING_TRAIN_IDS",
    "IGNORE_INDEX",
    "SKY_DEPTH",
    "STYLES",
    "SceneParams",
    "generate_scene",
    "scene_rng",
]

#: The train-id names (the canonical class names; defined in :mod:`warpadapt.data.labels`).
TRAIN_ID_NAMES = CITYSCAPES_CLASSES
#: The generator's objects (instances with boxes; :data:`~warpadapt.data.labels.SYNTHETIC_THING_TRAIN_IDS`).
THING_TRAIN_IDS = SYNTHETIC_THING_TRAIN_IDS
SKY_DEPTH = 1000.0

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TLIGHT, TSIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BICYCLE = 11, 12, 13, 14, 18
_LABEL_OF_TID = {CLASS_TO_TRAIN_ID[n]: i + 1 for i, n in enumerate(DETECTION_CLASSES)}


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

_CAR_COLORS = np.array(_rgb(
    "#f2f2f2", "#1c1c1e", "#a9adb3", "#6d7278", "#b02a2a", "#1f4e9c", "#2d5a3d", "#d9d2c0",
    "#e3b81f", "#7a1f2b", "#3c3f63", "#c8c8c8"), np.float32)
_CLOTH_COLORS = np.array(_rgb(
    "#1d1d1f", "#2c3e6b", "#7b2d26", "#d9d9d9", "#3f6b3a", "#c87f2c", "#5b4a7a", "#8a8a8a",
    "#d8b25a", "#2a6f8a", "#e05a6d", "#4a3b2c"), np.float32)
_SKIN_COLORS = np.array(_rgb("#f1c7a5", "#d9a07b", "#a86f4c", "#6b4530", "#e8b995"), np.float32)


@dataclasses.dataclass
class SceneParams:
    """Layout parameters of the generator (ranges are ``(low, high)``, sampled per scene).

    Image size is ``(height, width)`` pixels; all other lengths are metres.

    >>> p = SceneParams(height=64, width=128)
    >>> (p.height, p.width)
    (64, 128)
    """

    height: int = 256
    width: int = 512
    horizon: tuple = (0.38, 0.47)  # horizon row as a fraction of the height
    vp_x: tuple = (0.42, 0.58)  # vanishing-point column as a fraction of the width
    focal: tuple = (0.9, 1.15)  # focal length as a fraction of the width (pixels)
    cam_height: float = 1.5
    lanes_left: tuple = (1, 2)  # lanes left of the ego lane (oncoming traffic)
    lanes_right: tuple = (0, 2)  # lanes right of the ego lane
    lane_width: tuple = (3.0, 3.6)
    sidewalk_width: tuple = (2.0, 4.5)
    terrain_width: tuple = (0.0, 4.0)
    n_cars: tuple = (3, 12)
    n_trucks: tuple = (0, 2)
    n_persons: tuple = (2, 9)
    n_riders: tuple = (0, 3)
    n_signs: tuple = (1, 4)
    n_traffic_lights: tuple = (0, 3)
    n_trees: tuple = (2, 10)
    n_street_lamps: tuple = (2, 8)
    n_poles: tuple = (1, 6)
    object_range: tuple = (6.0, 90.0)  # depth range (m) of objects on the ground
    min_visible_pixels: int = 12

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "SceneParams":
        """Build from a (possibly OmegaConf) mapping; unknown keys raise ``ValueError``.

        >>> SceneParams.from_dict({"height": 32, "width": 64}).width
        64
        """
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"scene params: unknown key(s) {bad}; expected some of {sorted(names)}")
        out = {}
        for k, v in d.items():
            out[k] = tuple(v) if isinstance(v, (list, tuple)) or hasattr(v, "__len__") and not isinstance(v, str) else v
        return cls(**out)


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The numpy Generator of scene ``index`` of ``seed`` (``stream`` separates independent uses).

    >>> int(scene_rng(0, 1).integers(1000)) == int(scene_rng(0, 1).integers(1000))
    True
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] of shape (h, w) with features of about ``cell`` pixels."""
    gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
    g = rng.random((gh, gw), dtype=np.float32) * 2 - 1
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _u(rng, r):
    return float(rng.uniform(r[0], r[1]))


def _i(rng, r):
    return int(rng.integers(int(r[0]), int(r[1]) + 1))


class _Canvas:
    """Image + label maps drawn together with OpenCV (sub-pixel, 4 fractional bits)."""

    SHIFT = 4

    def __init__(self, img, sem, inst, depth):
        self.img, self.sem, self.inst, self.depth = img, sem, inst, depth

    def _pts(self, xs, ys):
        p = np.stack([np.asarray(xs, np.float64) - 0.5, np.asarray(ys, np.float64) - 0.5], -1)
        return np.round(p * 16).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, xs, ys, color, sem, inst, z):
        p = [self._pts(xs, ys)]
        cv2.fillPoly(self.img, p, tuple(float(c) for c in color), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.sem, p, int(sem), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.inst, p, int(inst), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.depth, p, float(z), cv2.LINE_8, self.SHIFT)

    def rect(self, x0, y0, x1, y1, color, sem, inst, z):
        self.poly([x0, x1, x1, x0], [y0, y0, y1, y1], color, sem, inst, z)

    def ellipse(self, cx, cy, rx, ry, color, sem, inst, z, thickness=-1):
        c = (int(round((cx - 0.5) * 16)), int(round((cy - 0.5) * 16)))
        ax = (max(1, int(round(rx * 16))), max(1, int(round(ry * 16))))
        t = thickness if thickness < 0 else max(1, int(round(thickness)))
        for a, v in ((self.img, tuple(float(c_) for c_ in color)), (self.sem, int(sem)),
                     (self.inst, int(inst)), (self.depth, float(z))):
            cv2.ellipse(a, c, ax, 0, 0, 360, v, t, cv2.LINE_8, self.SHIFT)

    def line(self, x0, y0, x1, y1, width, color, sem, inst, z):
        """A thick segment drawn as a quad (width in pixels, at least 1)."""
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) + 1e-9
        w = max(width, 0.8) / 2
        ox, oy = -dy / n * w, dx / n * w
        self.poly([x0 + ox, x1 + ox, x1 - ox, x0 - ox], [y0 + oy, y1 + oy, y1 - oy, y0 - oy],
                  color, sem, inst, z)


class _Camera:
    def __init__(self, f, vx, yh, hc):
        self.f, self.vx, self.yh, self.hc = f, vx, yh, hc

    def x(self, X, Z):
        return self.vx + self.f * np.asarray(X, np.float64) / Z

    def y(self, Y, Z):
        return self.yh + self.f * (self.hc - np.asarray(Y, np.float64)) / Z

    def s(self, Z):  # pixels per metre at depth Z
        return self.f / Z


def _layout(rng: np.random.Generator, p: SceneParams) -> dict:
    """Sample the style-independent geometry of a scene."""
    H, W = p.height, p.width
    L: dict[str, Any] = {}
    L["yh"] = _u(rng, p.horizon) * H
    L["vx"] = _u(rng, p.vp_x) * W
    L["f"] = _u(rng, p.focal) * W
    lw = _u(rng, p.lane_width)
    nl, nr = _i(rng, p.lanes_left), _i(rng, p.lanes_right)
    ego = rng.uniform(-0.4, 0.4)
    L["lane_w"] = lw
    L["road_l"] = -(nl * lw + lw / 2) + ego * lw
    L["road_r"] = (nr * lw + lw / 2) + ego * lw
    L["lanes"] = [L["road_l"] + lw * (i + 0.5) for i in range(nl + nr + 1)]
    L["n_left"] = nl
    L["side_l"] = _u(rng, p.sidewalk_width)
    L["side_r"] = _u(rng, p.sidewalk_width)
    L["fac_l"] = L["road_l"] - L["side_l"] - _u(rng, p.terrain_width)
    L["fac_r"] = L["road_r"] + L["side_r"] + _u(rng, p.terrain_width)
    L["dash"] = (rng.uniform(2.0, 4.0), rng.uniform(4.0, 9.0), rng.uniform(0, 10))
    # facade segments along each side
    for side in ("l", "r"):
        z, segs = rng.uniform(-20, 0), []
        while z < 420:
            t = rng.choice(5, p=[0.55, 0.2, 0.1, 0.1, 0.05])  # building, veg, wall, fence, gap
            ln = {0: (10, 35), 1: (8, 30), 2: (8, 25), 3: (8, 25), 4: (5, 20)}[int(t)]
            length = rng.uniform(*ln)
            segs.append(dict(
                z0=z, z1=z + length, type=int(t),
                h=rng.uniform(7, 28) if t == 0 else rng.uniform(0.8, 2.2),
                hveg=rng.uniform(3, 10) if t != 4 else 0.0,
                key=rng.random(), col=rng.random(), bright=rng.uniform(0.85, 1.12),
                su=rng.uniform(2.2, 4.0), sv=rng.uniform(3.0, 3.8), wf=rng.uniform(0.35, 0.6),
                hf=rng.uniform(0.35, 0.6), wseed=rng.uniform(0, 100),
            ))
            z += length
        L["segs_" + side] = segs
        L["vegwave_" + side] = rng.uniform(0.3, 1.5, 3), rng.uniform(0, 6.3, 3)
    L["skyline"] = (rng.integers(3, 10, 64), rng.random(64), rng.uniform(0.2, 0.9))
    L["noise_seed"] = int(rng.integers(2**31))
    L["objects"] = _sample_objects(rng, p, L)
    return L


def _sample_objects(rng, p: SceneParams, L) -> list:
    objs = []
    zlo, zhi = p.object_range
    lanes = L["lanes"]
    taken: list = []  # (lane, z0, z1)

    def free(lane, z0, z1):
        return all(not (l == lane and z0 < b + 1.5 and z1 > a - 1.5) for l, a, b in taken)

    for kind, n in (("truck", _i(rng, p.n_trucks)), ("car", _i(rng, p.n_cars))):
        for _ in range(n):
            for _try in range(6):
                parked = kind == "car" and rng.random() < 0.25
                if parked:
                    side = rng.choice([-1, 1])
                    lane = -1 if side < 0 else -2
                    X = (L["road_l"] + 1.1) if side < 0 else (L["road_r"] - 1.1)
                else:
                    lane = int(rng.integers(len(lanes)))
                    X = lanes[lane] + rng.uniform(-0.3, 0.3)
                Z = max(zlo, 7.0) + (zhi - max(zlo, 7.0)) * rng.random() ** 0.7
                if lane == L["n_left"] and not parked and Z < 12:  # keep the ego lane ahead clear
                    continue
                length = rng.uniform(3.8, 4.8) if kind == "car" else rng.uniform(6.5, 9.0)
                if free(lane, Z, Z + length):
                    taken.append((lane, Z, Z + length))
                    oncoming = (lane < L["n_left"]) and lane >= 0
                    objs.append(dict(
                        kind=kind, X=X, Z=Z, len=length, front=bool(oncoming and rng.random() < 0.9),
                        w=rng.uniform(1.65, 1.95) if kind == "car" else rng.uniform(2.3, 2.55),
                        h=rng.uniform(1.35, 1.65) if kind == "car" else rng.uniform(2.8, 3.6),
                        color=_CAR_COLORS[rng.integers(len(_CAR_COLORS))] * rng.uniform(0.85, 1.1),
                        color2=_CAR_COLORS[rng.integers(len(_CAR_COLORS))],
                        cab=rng.uniform(0.5, 0.62)))
                    break
    for _ in range(_i(rng, p.n_persons)):
        side = rng.choice([-1, 1])
        sw = L["side_l"] if side < 0 else L["side_r"]
        edge = L["road_l"] if side < 0 else L["road_r"]
        X = edge + side * rng.uniform(0.3, sw - 0.2)
        if rng.random() < 0.12:  # crossing the road
            X = rng.uniform(L["road_l"], L["road_r"])
        objs.append(dict(kind="person", X=X, Z=rng.uniform(max(zlo, 4.0), zhi * 0.75),
                         h=rng.uniform(1.55, 1.92), **_person_look(rng)))
    for _ in range(_i(rng, p.n_riders)):
        X = (L["road_r"] - rng.uniform(0.5, 1.2)) if rng.random() < 0.7 else (L["road_l"] + rng.uniform(0.5, 1.2))
        objs.append(dict(kind="rider", X=X, Z=rng.uniform(max(zlo, 5.0), zhi * 0.7),
                         h=rng.uniform(1.6, 1.85), yaw=rng.uniform(0.25, 1.0) * rng.choice([-1, 1]),
                         bike=_CAR_COLORS[rng.integers(len(_CAR_COLORS))], **_person_look(rng)))
    for kind, n in (("sign", _i(rng, p.n_signs)), ("tlight", _i(rng, p.n_traffic_lights)),
                    ("lamp", _i(rng, p.n_street_lamps)), ("tree", _i(rng, p.n_trees)),
                    ("pole", _i(rng, p.n_poles))):
        for _ in range(n):
            side = rng.choice([-1, 1]) if kind != "tlight" else (1 if rng.random() < 0.7 else -1)
            if kind == "tree":
                X = (L["fac_l"] + rng.uniform(0.5, 2.0)) if side < 0 else (L["fac_r"] - rng.uniform(0.5, 2.0))
                X = min(X, L["road_l"] - 0.6) if side < 0 else max(X, L["road_r"] + 0.6)
            else:
                X = (L["road_l"] - rng.uniform(0.3, 0.7)) if side < 0 else (L["road_r"] + rng.uniform(0.3, 0.7))
            Z = rng.uniform(max(zlo, 5.0), zhi * (1.4 if kind in ("lamp", "tree", "pole") else 0.9))
            objs.append(dict(kind=kind, X=X, Z=Z, side=int(side), shape=int(rng.integers(4)),
                             size=rng.uniform(0.6, 0.85), top=rng.uniform(2.2, 3.0),
                             lamp_h=rng.uniform(6.5, 9.0), crown=rng.uniform(1.5, 3.5),
                             trunk_h=rng.uniform(2.0, 4.0), state=int(rng.integers(3)),
                             overhead=bool(kind == "tlight" and rng.random() < 0.4)))
    objs.sort(key=lambda o: -o["Z"])
    return objs


def _person_look(rng):
    return dict(shirt=_CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))],
                pants=_CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))],
                skin=_SKIN_COLORS[rng.integers(len(_SKIN_COLORS))],
                stride=rng.uniform(-0.25, 0.25), wide=rng.uniform(0.9, 1.15))


def _style(style) -> dict:
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"style: unknown style {style!r}; expected one of {sorted(STYLES)}")
        return STYLES[style]
    if isinstance(style, Mapping):
        base = dict(STYLES[style.get("base", "day")])
        base.update({k: v for k, v in style.items() if k != "base"})
        return base
    raise ValueError(f"style: expected a style name or a mapping, got {type(style).__name__}")


def _jitter_style(S: dict, rng: np.random.Generator, j: float) -> dict:
    """Per-scene variation of a style's background colours (exposure, white balance, each colour).

    Every colour of the palette is multiplied by a global exposure ``1 +- j``, a per-channel white
    balance ``1 +- j / 4`` and its own factor: brightness ``1 +- j`` times a small per-channel tint
    ``1 +- j / 4`` (greys stay grey-ish: a road is not pink): streets, light and cameras vary from scene
    to scene (object colours are not styled and do not change).
    """
    gain = (1 + rng.uniform(-j, j)) * (1 + rng.uniform(-j / 4, j / 4, 3))

    def vary(c):
        return np.clip(np.asarray(c) * gain * (1 + rng.uniform(-j, j)) * (1 + rng.uniform(-j / 4, j / 4, 3)), 0, 1).tolist()

    out = dict(S)
    for k, v in S.items():
        if isinstance(v, list) and v and isinstance(v[0], list):
            out[k] = [vary(c) for c in v]
        elif isinstance(v, list) and len(v) == 3 and not isinstance(v[0], list):
            out[k] = vary(v)
    return out


def _frac(a):
    return a - np.floor(a)


# palette codes of the background index map
_C_SKY, _C_SKYLINE, _C_ROAD, _C_LANE, _C_SIDEWALK, _C_TILE, _C_CURB = 0, 1, 4, 5, 6, 7, 8
_C_TERRAIN, _C_VEG, _C_WALL, _C_FENCE, _C_WINDOW, _C_FRAME, _C_BUILDING = 9, 11, 13, 14, 15, 16, 20
_CODE_SEM = np.full(256, SKY, np.uint8)
for _c, _s in ((1, BUILDING), (2, BUILDING), (3, BUILDING), (4, ROAD), (5, ROAD), (6, SIDEWALK),
               (7, SIDEWALK), (8, SIDEWALK), (9, TERRAIN), (10, TERRAIN), (11, VEG), (12, VEG),
               (13, WALL), (14, FENCE), (15, BUILDING), (16, BUILDING)):
    _CODE_SEM[_c] = _s
_CODE_SEM[_C_BUILDING:] = BUILDING


def _palette(S) -> np.ndarray:
    lut = np.zeros((256, 1, 3), np.float32)
    for i, c in enumerate(S["skyline"][:3]):
        lut[_C_SKYLINE + i] = c
    for i in range(len(S["skyline"]), 3):
        lut[_C_SKYLINE + i] = S["skyline"][0]
    lut[_C_ROAD], lut[_C_LANE], lut[_C_SIDEWALK] = S["road"], S["lane"], S["sidewalk"]
    lut[_C_TILE] = np.asarray(S["sidewalk"], np.float32) * (1 - S["tile_contrast"])
    lut[_C_CURB] = S["curb"]
    lut[_C_TERRAIN], lut[_C_TERRAIN + 1] = S["terrain"][0], S["terrain"][1]
    lut[_C_VEG], lut[_C_VEG + 1] = S["vegetation"][0], S["vegetation"][1]
    lut[_C_WALL], lut[_C_FENCE] = S["wall"], S["fence"]
    lut[_C_WINDOW], lut[_C_FRAME] = S["window"], S["window_frame"]
    for i, c in enumerate(S["buildings"]):
        lut[_C_BUILDING + i] = c
    return lut


def _render_background(L, S, p: SceneParams, rng):
    """Background as a palette-code map + a shade map, turned into RGB with one LUT."""
    H, W = p.height, p.width
    f, vx, yh, hc = L["f"], L["vx"], L["yh"], p.cam_height
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    dy = ys - np.float32(yh)  # (H,1)
    ground_row = dy > 0
    Zg = np.where(ground_row, f * hc / np.maximum(dy, 1e-3), SKY_DEPTH).astype(np.float32)  # (H,1)
    X = (xs - np.float32(vx)) * (Zg / np.float32(f))  # (H,W) lateral metres on the ground plane
    Zgf = np.broadcast_to(Zg, (H, W))

    code = np.zeros((H, W), np.uint8)
    shade = np.ones((H, W), np.float32)
    depth = np.where(ground_row, Zgf, np.float32(SKY_DEPTH)).astype(np.float32)

    # distant skyline: a step profile in pixels above the horizon
    counts, heights, amp = L["skyline"]
    edges = np.cumsum(counts) / counts.sum() * W * 1.05
    col_idx = np.minimum(np.searchsorted(edges, xs[0]), len(heights) - 1)
    sk_h = (heights[col_idx] * amp * 0.12 * H + 1.0).astype(np.float32)[None, :]
    sk = (dy <= 0) & (-dy < sk_h)
    code = np.where(sk, (_C_SKYLINE + col_idx % 3).astype(np.uint8)[None, :], code).astype(np.uint8)
    depth[sk] = 600.0

    # ground: road / sidewalk (+ tiles, curb) / terrain by lateral position
    rl, rr = L["road_l"], L["road_r"]
    tex = _noise(rng, 96, 96, 6.0)
    mapx = X * 4.0
    mapx -= np.floor(mapx / 96) * 96
    mapy = np.ascontiguousarray(Zgf) * 2.0
    mapy -= np.floor(mapy / 96) * 96
    gtex = cv2.remap(tex, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    g = np.broadcast_to(ground_row, (H, W))
    road = g & (X >= rl) & (X <= rr)
    side = g & ~road & (X >= rl - L["side_l"]) & (X <= rr + L["side_r"])
    terr = g & ~road & ~side
    tile = S["tile"]
    tl = (_frac(X / tile) < 0.12) | (_frac(Zgf / tile) < 0.12)
    curb = (np.abs(X - rl) < 0.25) | (np.abs(X - rr) < 0.25)
    dl, gap, ph = L["dash"]
    lw = L["lane_w"]
    marks = (np.abs(X - (rl + 0.35)) < 0.07) | (np.abs(X - (rr - 0.35)) < 0.07)
    xm = (X - rl) / lw
    near_div = (np.abs(xm - np.round(xm)) * lw < 0.07) & (xm > 0.5) & (xm < len(L["lanes"]) - 0.5)
    marks |= near_div & (_frac((Zgf + ph) / (dl + gap)) < dl / (dl + gap))
    code[road] = _C_ROAD
    code[road & marks] = _C_LANE
    code[side] = _C_SIDEWALK
    code[side & tl] = _C_TILE
    code[side & curb] = _C_CURB
    code[terr] = _C_TERRAIN
    code[terr & (gtex > 0)] = _C_TERRAIN + 1
    shade = np.where(road & ~marks, 1 + S["road_patch"] * gtex, shade).astype(np.float32)

    # facades on both sides (buildings with windows/bricks, tree lines, walls, fences)
    window_rand = np.full((H, W), -1.0, np.float32)
    for side_name, xb, cols in (("l", L["fac_l"], xs[0] < vx - 0.5), ("r", L["fac_r"], xs[0] > vx + 0.5)):
        segs = L["segs_" + side_name]
        cidx = np.nonzero(cols)[0]
        if len(cidx) == 0:
            continue
        c0, c1 = int(cidx[0]), int(cidx[-1]) + 1
        Zf = np.clip(f * xb / (xs[0, c0:c1] - vx), 0.5, 2000.0).astype(np.float32)  # (w,)
        ends = np.array([s["z1"] for s in segs])
        si = np.searchsorted(ends, Zf)
        valid = (si < len(segs)) & (Zf > segs[0]["z0"])
        si = np.minimum(si, len(segs) - 1)

        def col(key, dflt=0.0):
            a = np.array([s[key] for s in segs], np.float32)[si]
            return np.where(valid, a, np.float32(dflt)).astype(np.float32)[None, :]
        typ = np.where(valid, np.array([s["type"] for s in segs])[si], 4)[None, :]
        h_main = col("h")
        freqs, phases = L["vegwave_" + side_name]
        wave = sum(np.sin(Zf * fr + ph_) for fr, ph_ in zip(freqs, phases)) / 3.0
        h_veg = col("hveg") * (1 + 0.3 * wave) + 0.6 * np.sin(Zf * 3.1 + phases[0])
        h_veg = np.where(typ == 4, 0.0, np.maximum(h_veg, 0.0)).astype(np.float32)
        # rows that can hold a facade pixel: above the lowest facade bottom
        ybot = min(H, int(math.ceil(yh + f * hc / max(float(Zf.min()), 1e-3))) + 1)
        ytop = max(0, int(math.floor(yh + f * (hc - 30.0) / max(float(Zf.min()), 1e-3))))
        if ybot <= ytop:
            continue
        Y = hc - dy[ytop:ybot] * (Zf[None, :] / np.float32(f))  # (h,w) facade-plane height
        above = Y >= 0
        is_b = (typ == 0) & above & (Y < h_main)
        low = ((typ == 2) | (typ == 3)) & above & (Y < h_main)
        vegm = (typ != 0) & (typ != 4) & above & (Y < h_veg) & ~low
        fencem = low & (typ == 3)
        u = Zf[None, :] - col("z0")
        if fencem.any():
            lattice = (_frac(u / 0.35) < 0.35) | (_frac(Y / 0.6) < 0.15) | (Y < 0.2)
            fenc_open = fencem & ~lattice
            fencem &= lattice
            vegm |= fenc_open & (Y < h_veg)
            low &= ~fenc_open
        wallm = low & ~fencem
        key = col("key")
        bcode = (_C_BUILDING + (col("col") * len(S["buildings"])).astype(np.int32) % len(S["buildings"]))
        kind = np.where(key < S["glass_prob"], 2, np.where(key < S["glass_prob"] + S["brick_prob"], 1, 0))
        su, sv = col("su", 3.0), col("sv", 3.4)
        wf = np.where(kind == 2, 0.88, col("wf", 0.5))
        hf = np.where(kind == 2, 0.85, col("hf", 0.5))
        fu = _frac(u / su)
        fv = _frac(Y / sv)
        inside = (Y > 3.2) & (Y < h_main - 0.8) & is_b
        du = np.abs(fu - 0.5)
        win = (du < wf / 2) & (fv > 0.3) & (fv < 0.3 + hf) & inside
        frame = (du < wf / 2 + 0.06) & (fv > 0.25) & (fv < 0.35 + hf) & inside & ~win
        brick = (kind == 1) & ((_frac(Y / 0.3) < 0.17) | (_frac((u + 0.55 * (np.floor(Y / 0.3) % 2)) / 1.1) < 0.07)) & is_b
        shop = is_b & (Y < 3.0) & (Y > 0.3) & (_frac(u / 6.0) < 0.66)
        sub = code[ytop:ybot, c0:c1]
        sub[is_b] = np.broadcast_to(bcode, sub.shape)[is_b]
        sub[frame] = _C_FRAME
        sub[win | shop] = _C_WINDOW
        sub[vegm] = _C_VEG
        sub[wallm] = _C_WALL
        sub[fencem] = _C_FENCE
        ssh = shade[ytop:ybot, c0:c1]
        np.copyto(ssh, np.broadcast_to(col("bright", 1.0) * (1 - 0.25 * brick), ssh.shape), where=is_b)
        wid = np.floor(u / su) * 7.13 + np.floor(Y / sv) * 3.71 + col("wseed")
        wr = _frac(np.sin(wid) * 43758.5453).astype(np.float32)
        np.copyto(window_rand[ytop:ybot, c0:c1], wr, where=win)
        fac = is_b | vegm | wallm | fencem
        np.copyto(depth[ytop:ybot, c0:c1], np.broadcast_to(Zf[None, :], fac.shape), where=fac)

    sem = cv2.LUT(code, _CODE_SEM)
    img = cv2.LUT(cv2.merge([code, code, code]), _palette(S))
    img *= cv2.merge([shade, shade, shade])
    # sky gradient + clouds where code == sky
    skym = code == _C_SKY
    rows = np.nonzero(skym.any(1))[0]
    if len(rows):
        r1 = int(rows[-1]) + 1
        t = np.clip(ys[:r1, 0] / max(yh, 1.0), 0, 1)[:, None, None] ** 1.5
        sky = np.asarray(S["sky_top"], np.float32) * (1 - t) + np.asarray(S["sky_horizon"], np.float32) * t
        cl = np.clip(_noise(rng, r1, W, 40.0) * 0.8 + _noise(rng, r1, W, 12.0) * 0.35 + S["cloud"] - 0.6, 0, 1)
        cl = cl * (1 - 0.6 * t[..., 0])
        sky = sky + (np.asarray(S["cloud_color"], np.float32) - sky) * cv2.merge([cl, cl, cl])
        np.copyto(img[:r1], sky, where=skym[:r1, :, None])
    return img, sem, depth, window_rand


def _draw_objects(L, S, p: SceneParams, cv: _Canvas, cam: _Camera, lights: list):
    counters: dict[int, int] = {}
    things = []  # (train_id, inst_id)
    H, W = p.height, p.width

    def new_inst(tid):
        k = counters.get(tid, 0)
        counters[tid] = k + 1
        iid = tid * 1000 + k
        things.append((tid, iid))
        return iid

    def cuboid(x0, x1, y0, y1, z0, z1, color, sem, inst, face_color=None):
        """Axis-aligned cuboid; draws the visible side face, top face (if below the camera), near face."""
        c = np.asarray(color, np.float32)
        if x0 > 0:  # visible left side
            cv.poly(cam.x([x0, x0, x0, x0], [z0, z1, z1, z0]), cam.y([y0, y0, y1, y1], [z0, z1, z1, z0]),
                    c * 0.72, sem, inst, z0)
        elif x1 < 0:
            cv.poly(cam.x([x1, x1, x1, x1], [z0, z1, z1, z0]), cam.y([y0, y0, y1, y1], [z0, z1, z1, z0]),
                    c * 0.72, sem, inst, z0)
        if y1 < cam.hc:
            cv.poly(cam.x([x0, x1, x1, x0], [z0, z0, z1, z1]), cam.y([y1, y1, y1, y1], [z0, z0, z1, z1]),
                    np.minimum(c * 1.12, 1), sem, inst, z0)
        fc = c if face_color is None else np.asarray(face_color, np.float32)
        cv.rect(cam.x(x0, z0), cam.y(y1, z0), cam.x(x1, z0), cam.y(y0, z0), fc * 0.9, sem, inst, z0)

    for o in L["objects"]:
        k, X, Z = o["kind"], o["X"], o["Z"]
        s = cam.s(Z)
        if k in ("car", "truck"):
            tid = CAR if k == "car" else TRUCK
            iid = new_inst(tid)
            w, h, ln, col = o["w"], o["h"], o["len"], o["color"]
            x0, x1 = X - w / 2, X + w / 2
            # wheels
            for wx in (x0 + 0.12, x1 - 0.42):
                cv.rect(cam.x(wx, Z + 0.2), cam.y(0.45, Z + 0.2), cam.x(wx + 0.3, Z + 0.2), cam.y(0.0, Z + 0.2),
                        (0.06, 0.06, 0.07), tid, iid, Z)
            if k == "car":
                hb = h * o["cab"]
                cuboid(x0, x1, 0.28, hb, Z, Z + ln, col, tid, iid)
                cz0, cz1 = Z + ln * (0.22 if not o["front"] else 0.3), Z + ln * (0.7 if not o["front"] else 0.78)
                cuboid(x0 + 0.12, x1 - 0.12, hb, h, cz0, cz1, col, tid, iid,
                       face_color=np.array([0.16, 0.19, 0.23], np.float32) / 0.9)
                # the rear/front glass is seen above the body at the near face
                ly = hb * 0.72
            else:
                cuboid(x0, x1, 0.45, h, Z, Z + ln, o["color2"] * 0.7 + 0.25, tid, iid)
                if o["front"]:
                    cv.rect(cam.x(x0 + 0.15, Z), cam.y(h * 0.9, Z), cam.x(x1 - 0.15, Z), cam.y(h * 0.6, Z),
                            (0.15, 0.18, 0.22), tid, iid, Z)
                ly = 0.8
            lc = (1.0, 0.97, 0.85) if o["front"] else (0.85, 0.08, 0.05)
            for lx in (x0 + 0.1, x1 - 0.35):
                cv.rect(cam.x(lx, Z), cam.y(ly + 0.12, Z), cam.x(lx + 0.25, Z), cam.y(ly, Z), lc, tid, iid, Z)
                lights.append((float(cam.x(lx + 0.125, Z)), float(cam.y(ly + 0.06, Z)), max(0.15 * s, 0.7),
                               *lc, 1.0 if o["front"] else 0.6))
            cv.rect(cam.x(X - 0.25, Z), cam.y(0.55, Z), cam.x(X + 0.25, Z), cam.y(0.42, Z),
                    (0.9, 0.9, 0.85), tid, iid, Z)
        elif k == "person":
            iid = new_inst(PERSON)
            _person(cv, cam, o, X, Z, PERSON, iid, sitting=False)
        elif k == "rider":
            bid = new_inst(BICYCLE)
            _bicycle(cv, cam, o, X, Z, BICYCLE, bid)
            rid = new_inst(RIDER)
            _person(cv, cam, o, X, Z, RIDER, rid, sitting=True)
        elif k == "sign":
            top = o["top"]
            cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(top, Z), 0.08 * s, S["pole"], POLE, 0, Z)
            iid = new_inst(TSIGN)
            r = o["size"] / 2
            cx, cy, rp = float(cam.x(X, Z)), float(cam.y(top + r * 0.6, Z)), r * s
            sh = o["shape"]
            if sh == 0:  # prohibition: red ring, white disc
                cv.ellipse(cx, cy, rp, rp, (0.8, 0.1, 0.1), TSIGN, iid, Z)
                cv.ellipse(cx, cy, rp * 0.72, rp * 0.72, (0.95, 0.95, 0.95), TSIGN, iid, Z)
            elif sh == 1:  # warning triangle
                cv.poly([cx - rp, cx + rp, cx], [cy + rp * 0.8, cy + rp * 0.8, cy - rp], (0.8, 0.1, 0.1), TSIGN, iid, Z)
                cv.poly([cx - rp * 0.6, cx + rp * 0.6, cx], [cy + rp * 0.55, cy + rp * 0.55, cy - rp * 0.45],
                        (0.97, 0.95, 0.9), TSIGN, iid, Z)
            elif sh == 2:  # blue mandatory disc
                cv.ellipse(cx, cy, rp, rp, (0.1, 0.3, 0.75), TSIGN, iid, Z)
                cv.line(cx, cy + rp * 0.5, cx, cy - rp * 0.5, rp * 0.25, (0.95, 0.95, 0.95), TSIGN, iid, Z)
            else:  # rectangular direction sign
                cv.rect(cx - rp * 1.3, cy - rp * 0.8, cx + rp * 1.3, cy + rp * 0.8, (0.05, 0.45, 0.25), TSIGN, iid, Z)
                cv.rect(cx - rp * 1.0, cy - rp * 0.2, cx + rp * 0.8, cy + rp * 0.2, (0.95, 0.95, 0.95), TSIGN, iid, Z)
        elif k == "tlight":
            top = o["top"] + 0.6
            if o["overhead"]:
                xa = X - o["side"] * 3.5
                cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(5.2, Z), 0.12 * s, S["pole"], POLE, 0, Z)
                cv.line(cam.x(X, Z), cam.y(5.2, Z), cam.x(xa, Z), cam.y(5.2, Z), 0.09 * s, S["pole"], POLE, 0, Z)
                bx, by = xa, 4.3
            else:
                cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(top, Z), 0.1 * s, S["pole"], POLE, 0, Z)
                bx, by = X, top - 0.1
            iid = new_inst(TLIGHT)
            cv.rect(cam.x(bx - 0.18, Z), cam.y(by + 0.95, Z), cam.x(bx + 0.18, Z), cam.y(by, Z),
                    (0.08, 0.08, 0.09), TLIGHT, iid, Z)
            for j, lc in enumerate(((0.95, 0.15, 0.1), (0.95, 0.75, 0.1), (0.2, 0.9, 0.35))):
                on = j == o["state"]
                ly_ = by + 0.78 - 0.3 * j
                c = lc if on else tuple(0.25 * v for v in lc)
                cv.ellipse(float(cam.x(bx, Z)), float(cam.y(ly_, Z)), 0.11 * s, 0.11 * s, c, TLIGHT, iid, Z)
                if on:
                    lights.append((float(cam.x(bx, Z)), float(cam.y(ly_, Z)), max(0.11 * s, 0.7), *lc, 0.8))
        elif k == "lamp":
            hl = o["lamp_h"]
            xa = X - o["side"] * 1.4
            cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(hl, Z), 0.14 * s, S["pole"], POLE, 0, Z)
            cv.line(cam.x(X, Z), cam.y(hl, Z), cam.x(xa, Z), cam.y(hl - 0.1, Z), 0.08 * s, S["pole"], POLE, 0, Z)
            cv.rect(cam.x(xa - 0.35, Z), cam.y(hl, Z), cam.x(xa + 0.35, Z), cam.y(hl - 0.22, Z),
                    (0.85, 0.85, 0.8), POLE, 0, Z)
            lights.append((float(cam.x(xa, Z)), float(cam.y(hl - 0.2, Z)), max(0.3 * s, 1.0), 1.0, 0.82, 0.55, 2.0))
        elif k == "pole":
            cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(o["lamp_h"] * 0.9, Z), 0.18 * s,
                    S["pole"], POLE, 0, Z)
        elif k == "tree":
            th = o["trunk_h"]
            cv.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(th + 0.5, Z), 0.25 * s, S["trunk"], VEG, 0, Z)
            cr = o["crown"]
            vc = np.asarray(S["vegetation"], np.float32)
            for j, (dx_, dy_, rr) in enumerate(((0, 0, 1.0), (-0.5, -0.3, 0.7), (0.5, -0.2, 0.75), (0.1, 0.5, 0.7))):
                cv.ellipse(float(cam.x(X + dx_ * cr, Z)), float(cam.y(th + cr + dy_ * cr, Z)), rr * cr * s,
                           rr * cr * s * 0.9, vc[j % 2] * (0.85 + 0.1 * j), VEG, 0, Z)
    return things


def _person(cv, cam, o, X, Z, tid, iid, sitting):
    h = o["h"]
    s = cam.s(Z)
    wd = 0.46 * h * 0.5 * o["wide"]
    st = o["stride"] * h
    if sitting:
        hip = 1.0
        # legs bent down to the pedals
        for sx in (-0.1, 0.1):
            cv.line(cam.x(X + sx, Z), cam.y(hip, Z), cam.x(X + sx * 1.2, Z), cam.y(0.35, Z), 0.14 * s,
                    o["pants"], tid, iid, Z)
        lean = 0.12 * np.sign(o["yaw"])
        torso_top = hip + 0.55
        cv.poly(cam.x([X - wd / 2, X + wd / 2, X + wd / 2 + lean, X - wd / 2 + lean], Z),
                cam.y([hip, hip, torso_top, torso_top], Z), o["shirt"], tid, iid, Z)
        hy = torso_top + 0.13
        hx = X + lean
    else:
        hip = 0.48 * h
        for sx, sg in ((-0.07 * h, 1), (0.07 * h, -1)):
            cv.poly(cam.x([X + sx - 0.055 * h, X + sx + 0.055 * h, X + sx + 0.045 * h + sg * st * 0.3,
                           X + sx - 0.045 * h + sg * st * 0.3], Z),
                    cam.y([hip, hip, 0, 0], Z), o["pants"], tid, iid, Z)
        torso_top = 0.83 * h
        cv.poly(cam.x([X - wd / 2, X + wd / 2, X + wd / 2 * 1.05, X - wd / 2 * 1.05], Z),
                cam.y([hip - 0.02, hip - 0.02, torso_top, torso_top], Z), o["shirt"], tid, iid, Z)
        for sx in (-1, 1):  # arms
            cv.line(cam.x(X + sx * wd * 0.55, Z), cam.y(torso_top - 0.03, Z), cam.x(X + sx * wd * 0.6, Z),
                    cam.y(hip + 0.02, Z), 0.09 * s, o["shirt"] * 0.85, tid, iid, Z)
        hy = 0.9 * h
        hx = X
    r = 0.11 * h * 0.6 / 0.66
    cv.ellipse(float(cam.x(hx, Z)), float(cam.y(hy, Z)), r * 0.8 * s, r * s, o["skin"], tid, iid, Z)
    cv.ellipse(float(cam.x(hx, Z)), float(cam.y(hy + r * 0.35, Z)), r * 0.82 * s, r * 0.6 * s,
               o["pants"] * 0.5, tid, iid, Z)


def _bicycle(cv, cam, o, X, Z, tid, iid):
    s = cam.s(Z)
    yaw = o["yaw"]
    half = 0.55 * abs(yaw)
    r = 0.34
    c = o["bike"]
    xa, xb = X - half, X + half
    for xw in (xa, xb):
        cv.ellipse(float(cam.x(xw, Z)), float(cam.y(r, Z)), max(r * s * abs(yaw), 0.6), r * s,
                   (0.08, 0.08, 0.08), tid, iid, Z, thickness=max(1.0, 0.06 * s))
    cv.line(cam.x(xa, Z), cam.y(r, Z), cam.x(X, Z), cam.y(0.95, Z), 0.05 * s, c, tid, iid, Z)
    cv.line(cam.x(xb, Z), cam.y(r, Z), cam.x(X + half * 0.7, Z), cam.y(1.05, Z), 0.05 * s, c, tid, iid, Z)
    cv.line(cam.x(X, Z), cam.y(0.95, Z), cam.x(X + half * 0.7, Z), cam.y(0.95, Z), 0.05 * s, c, tid, iid, Z)
    cv.line(cam.x(xa, Z), cam.y(r, Z), cam.x(xb, Z), cam.y(r, Z), 0.05 * s, c, tid, iid, Z)


def _texture(img, sem, S, rng, p: SceneParams):
    """Class-dependent texture: multiplicative noise, strongest on vegetation and walls."""
    H, W = sem.shape
    amp = np.full((256, 1), S["grain"], np.float32)
    amp[VEG] = S["veg_grain"]
    amp[TERRAIN] = S["veg_grain"] * 0.5
    amp[BUILDING] = S["wall_grain"]
    amp[WALL] = S["wall_grain"] * 1.3
    amp[ROAD] = S["road_grain"]
    amp[SIDEWALK] = S["road_grain"] * 0.7
    amp[SKY] = 0.0
    for t in THING_TRAIN_IDS:
        amp[t] = 0.03
    cell = S["noise_cell"]
    n = _noise(rng, H, W, cell) * 0.6 + _noise(rng, H, W, cell * 4) * 0.4
    # leaf clusters: darker blobs on vegetation
    blobs = _noise(rng, H, W, cell * 2.0)
    veg = (sem == VEG).astype(np.float32)
    m = 1.0 + cv2.LUT(sem, amp.reshape(1, 256)) * n - veg * 0.4 * (blobs > 0.2)
    img *= cv2.merge([m, m, m])
    np.clip(img, 0, 1, out=img)


def _modal_boxes(inst: np.ndarray, ids: list):
    """Bounding boxes (x1, y1, x2, y2) and pixel counts of the visible pixels of each id."""
    ys, xs = np.nonzero(inst)
    v = inst[ys, xs]
    out = {}
    if len(v) == 0:
        return out
    order = np.argsort(v, kind="stable")
    v, ys, xs = v[order], ys[order], xs[order]
    u, start, cnt = np.unique(v, return_index=True, return_counts=True)
    x1 = np.minimum.reduceat(xs, start)
    x2 = np.maximum.reduceat(xs, start) + 1
    y1 = np.minimum.reduceat(ys, start)
    y2 = np.maximum.reduceat(ys, start) + 1
    for i, iid in enumerate(u.tolist()):
        out[iid] = (int(x1[i]), int(y1[i]), int(x2[i]), int(y2[i]), int(cnt[i]))
    return out


def generate_scene(seed: int, index: int, params: SceneParams | Mapping | None = None,
                   style: str | Mapping = "day") -> dict:
    """Render scene ``index`` of ``seed`` (clear weather) in a background ``style``.

    Args:
        seed, index: the scene's identity; the layout (geometry, objects, their colours) depends only
            on them (a numpy Generator seeded from both), so different styles of the same
            ``(seed, index)`` show the same scene.
        params: ``SceneParams`` or a mapping of its fields (image size, object counts ...).
        style: a name in ``STYLES`` or a mapping overriding one (``{"base": "day", "road": [...]}``).

    Returns:
        dict with ``image`` float32 (H, W, 3) RGB in [0, 1]; ``semantic`` uint8 (H, W) train ids;
        ``instance`` int32 (H, W) (``train_id * 1000 + k``, 0 elsewhere); ``depth`` float32 (H, W)
        metres; ``boxes`` float32 (N, 4) xyxy pixels (modal); ``labels`` int64 (N,) in 1..K;
        ``instance_ids`` int64 (N,) the instance id of each box; ``lights`` float32 (M, 7) light
        sources ``(x, y, radius_px, r, g, b, strength)``; ``windows`` float32 (H, W) per-window
        random value in [0, 1) on window pixels, -1 elsewhere; ``horizon`` (row), ``vanishing_point``
        (x, y), ``focal`` (pixels), ``seed``, ``index``.

    >>> s = generate_scene(0, 3, SceneParams(height=64, width=128))
    >>> s["image"].shape, s["semantic"].dtype, s["boxes"].shape[1]
    ((64, 128, 3), dtype('uint8'), 4)
    """
    if not isinstance(params, SceneParams):
        params = SceneParams.from_dict(params)
    if params.height < 16 or params.width < 16:
        raise ValueError(f"params: height and width must be >= 16, got {(params.height, params.width)}")
    S = _style(style)
    if S.get("jitter", 0) > 0:
        S = _jitter_style(S, scene_rng(seed, index, 3), float(S["jitter"]))
    L = _layout(scene_rng(seed, index, 0), params)
    trng = np.random.default_rng(L["noise_seed"])  # texture noise: same fields in every style
    img, sem, depth, windows = _render_background(L, S, params, trng)
    inst = np.zeros(sem.shape, np.int32)
    cam = _Camera(L["f"], L["vx"], L["yh"], params.cam_height)
    lights: list = []
    cv = _Canvas(img, sem, inst, depth)
    things = _draw_objects(L, S, params, cv, cam, lights)
    windows[sem != BUILDING] = -1.0
    _texture(img, sem, S, trng, params)

    boxes, labels, ids = [], [], []
    H, W = sem.shape
    stats = _modal_boxes(inst, [i for _, i in things])
    for tid, iid in things:
        if iid not in stats:
            continue
        x1, y1, x2, y2, cnt = stats[iid]
        if cnt < params.min_visible_pixels or (x2 - x1) < 2 or (y2 - y1) < 2:
            sub_i = inst[y1:y2, x1:x2]
            m = sub_i == iid
            sem[y1:y2, x1:x2][m] = IGNORE_INDEX
            sub_i[m] = 0
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(_LABEL_OF_TID[tid])
        ids.append(iid)
    return dict(
        image=img, semantic=sem, instance=inst, depth=depth,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64), instance_ids=np.asarray(ids, np.int64),
        lights=np.asarray(lights, np.float32).reshape(-1, 7), windows=windows,
        horizon=float(L["yh"]), vanishing_point=(float(L["vx"]), float(L["yh"])), focal=float(L["f"]),
        seed=int(seed), index=int(index),
    )
