"""Scene layout of the synthetic generator: parameters, seeded generators, camera, sampled geometry.

The layout (road, sidewalks, facades, objects and their colours) depends only on ``(seed, index)``,
never on the style, so one scene renders identically in every domain.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from warpadapt.data.labels import train_id_of
from warpadapt.data.scene_styles import CAR_COLORS, CLOTH_COLORS, SKIN_COLORS

__all__ = ["SceneParams", "scene_rng", "sample_layout", "Camera", "SKY_DEPTH"]

#: Depth (metres) given to sky pixels.
SKY_DEPTH = 1000.0

# train ids drawn by the generator
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = (train_id_of(n) for n in ("road", "sidewalk", "building", "wall", "fence", "pole"))
TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = (
    train_id_of(n) for n in ("traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BICYCLE = (train_id_of(n) for n in ("person", "rider", "car", "truck", "bicycle"))


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


def _uniform(rng, r):
    return float(rng.uniform(r[0], r[1]))


def _randint(rng, r):
    return int(rng.integers(int(r[0]), int(r[1]) + 1))


class Camera:
    def __init__(self, f, vx, yh, hc):
        self.f, self.vx, self.yh, self.hc = f, vx, yh, hc

    def x(self, X, Z):
        return self.vx + self.f * np.asarray(X, np.float64) / Z

    def y(self, Y, Z):
        return self.yh + self.f * (self.hc - np.asarray(Y, np.float64)) / Z

    def scale(self, Z):  # pixels per metre at depth Z
        return self.f / Z


def sample_layout(rng: np.random.Generator, params: SceneParams) -> dict:
    """Sample the style-independent geometry of a scene."""
    H, W = params.height, params.width
    layout: dict[str, Any] = {}
    layout["yh"] = _uniform(rng, params.horizon) * H
    layout["vx"] = _uniform(rng, params.vp_x) * W
    layout["f"] = _uniform(rng, params.focal) * W
    lw = _uniform(rng, params.lane_width)
    nl, nr = _randint(rng, params.lanes_left), _randint(rng, params.lanes_right)
    ego = rng.uniform(-0.4, 0.4)
    layout["lane_w"] = lw
    layout["road_l"] = -(nl * lw + lw / 2) + ego * lw
    layout["road_r"] = (nr * lw + lw / 2) + ego * lw
    layout["lanes"] = [layout["road_l"] + lw * (i + 0.5) for i in range(nl + nr + 1)]
    layout["n_left"] = nl
    layout["side_l"] = _uniform(rng, params.sidewalk_width)
    layout["side_r"] = _uniform(rng, params.sidewalk_width)
    layout["fac_l"] = layout["road_l"] - layout["side_l"] - _uniform(rng, params.terrain_width)
    layout["fac_r"] = layout["road_r"] + layout["side_r"] + _uniform(rng, params.terrain_width)
    layout["dash"] = (rng.uniform(2.0, 4.0), rng.uniform(4.0, 9.0), rng.uniform(0, 10))
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
        layout["segs_" + side] = segs
        layout["vegwave_" + side] = rng.uniform(0.3, 1.5, 3), rng.uniform(0, 6.3, 3)
    layout["skyline"] = (rng.integers(3, 10, 64), rng.random(64), rng.uniform(0.2, 0.9))
    layout["noise_seed"] = int(rng.integers(2**31))
    layout["objects"] = _sample_objects(rng, params, layout)
    return layout


def _sample_objects(rng, params: SceneParams, layout) -> list:
    objs = []
    zlo, zhi = params.object_range
    lanes = layout["lanes"]
    taken: list = []  # (lane, z0, z1)

    def free(lane, z0, z1):
        return all(not (l == lane and z0 < b + 1.5 and z1 > a - 1.5) for l, a, b in taken)

    for kind, n in (("truck", _randint(rng, params.n_trucks)), ("car", _randint(rng, params.n_cars))):
        for _ in range(n):
            for _try in range(6):
                parked = kind == "car" and rng.random() < 0.25
                if parked:
                    side = rng.choice([-1, 1])
                    lane = -1 if side < 0 else -2
                    X = (layout["road_l"] + 1.1) if side < 0 else (layout["road_r"] - 1.1)
                else:
                    lane = int(rng.integers(len(lanes)))
                    X = lanes[lane] + rng.uniform(-0.3, 0.3)
                Z = max(zlo, 7.0) + (zhi - max(zlo, 7.0)) * rng.random() ** 0.7
                if lane == layout["n_left"] and not parked and Z < 12:  # keep the ego lane ahead clear
                    continue
                length = rng.uniform(3.8, 4.8) if kind == "car" else rng.uniform(6.5, 9.0)
                if free(lane, Z, Z + length):
                    taken.append((lane, Z, Z + length))
                    oncoming = (lane < layout["n_left"]) and lane >= 0
                    objs.append(dict(
                        kind=kind, X=X, Z=Z, len=length, front=bool(oncoming and rng.random() < 0.9),
                        w=rng.uniform(1.65, 1.95) if kind == "car" else rng.uniform(2.3, 2.55),
                        h=rng.uniform(1.35, 1.65) if kind == "car" else rng.uniform(2.8, 3.6),
                        color=CAR_COLORS[rng.integers(len(CAR_COLORS))] * rng.uniform(0.85, 1.1),
                        color2=CAR_COLORS[rng.integers(len(CAR_COLORS))],
                        cab=rng.uniform(0.5, 0.62)))
                    break
    for _ in range(_randint(rng, params.n_persons)):
        side = rng.choice([-1, 1])
        sw = layout["side_l"] if side < 0 else layout["side_r"]
        edge = layout["road_l"] if side < 0 else layout["road_r"]
        X = edge + side * rng.uniform(0.3, sw - 0.2)
        if rng.random() < 0.12:  # crossing the road
            X = rng.uniform(layout["road_l"], layout["road_r"])
        objs.append(dict(kind="person", X=X, Z=rng.uniform(max(zlo, 4.0), zhi * 0.75),
                         h=rng.uniform(1.55, 1.92), **_person_look(rng)))
    for _ in range(_randint(rng, params.n_riders)):
        X = (layout["road_r"] - rng.uniform(0.5, 1.2)) if rng.random() < 0.7 else (layout["road_l"] + rng.uniform(0.5, 1.2))
        objs.append(dict(kind="rider", X=X, Z=rng.uniform(max(zlo, 5.0), zhi * 0.7),
                         h=rng.uniform(1.6, 1.85), yaw=rng.uniform(0.25, 1.0) * rng.choice([-1, 1]),
                         bike=CAR_COLORS[rng.integers(len(CAR_COLORS))], **_person_look(rng)))
    for kind, n in (("sign", _randint(rng, params.n_signs)), ("tlight", _randint(rng, params.n_traffic_lights)),
                    ("lamp", _randint(rng, params.n_street_lamps)), ("tree", _randint(rng, params.n_trees)),
                    ("pole", _randint(rng, params.n_poles))):
        for _ in range(n):
            side = rng.choice([-1, 1]) if kind != "tlight" else (1 if rng.random() < 0.7 else -1)
            if kind == "tree":
                X = (layout["fac_l"] + rng.uniform(0.5, 2.0)) if side < 0 else (layout["fac_r"] - rng.uniform(0.5, 2.0))
                X = min(X, layout["road_l"] - 0.6) if side < 0 else max(X, layout["road_r"] + 0.6)
            else:
                X = (layout["road_l"] - rng.uniform(0.3, 0.7)) if side < 0 else (layout["road_r"] + rng.uniform(0.3, 0.7))
            Z = rng.uniform(max(zlo, 5.0), zhi * (1.4 if kind in ("lamp", "tree", "pole") else 0.9))
            objs.append(dict(kind=kind, X=X, Z=Z, side=int(side), shape=int(rng.integers(4)),
                             size=rng.uniform(0.6, 0.85), top=rng.uniform(2.2, 3.0),
                             lamp_h=rng.uniform(6.5, 9.0), crown=rng.uniform(1.5, 3.5),
                             trunk_h=rng.uniform(2.0, 4.0), state=int(rng.integers(3)),
                             overhead=bool(kind == "tlight" and rng.random() < 0.4)))
    objs.sort(key=lambda o: -o["Z"])
    return objs


def _person_look(rng):
    return dict(shirt=CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))],
                pants=CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))],
                skin=SKIN_COLORS[rng.integers(len(SKIN_COLORS))],
                stride=rng.uniform(-0.25, 0.25), wide=rng.uniform(0.9, 1.15))
