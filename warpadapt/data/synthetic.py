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
* ``semantic``: uint8 (H, W) Cityscapes train ids (0 road ... 18 bicycle, see ``labels.CITYSCAPES_CLASSES``);
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

Code layout
-----------
This module assembles a scene; the parts live beside it: ``scene_styles`` (palettes, object
colours), ``scene_layout`` (parameters, seeded generators, camera, sampled geometry),
``scene_background`` (road, facades, sky, texture) and ``scene_objects`` (cars, people, signs ...).
Class names and ids come from :mod:`warpadapt.data.labels`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from warpadapt.data.boxes import boxes_from_instance_map
from warpadapt.data.labels import CLASS_TO_TRAIN_ID, DETECTION_CLASSES, IGNORE_INDEX
from warpadapt.data.scene_background import add_texture, render_background
from warpadapt.data.scene_layout import BUILDING, SKY_DEPTH, Camera, SceneParams, sample_layout, scene_rng
from warpadapt.data.scene_objects import Canvas, draw_objects
from warpadapt.data.scene_styles import STYLES, jitter_style, resolve_style

__all__ = [
    "SKY_DEPTH",
    "STYLES",
    "SceneParams",
    "generate_scene",
    "scene_rng",
]

#: Instance ids are ``train_id * INSTANCE_DIVISOR + k`` (the Cityscapes encoding).
INSTANCE_DIVISOR = 1000
_LABEL_OF_TRAIN_ID = {CLASS_TO_TRAIN_ID[name]: i + 1 for i, name in enumerate(DETECTION_CLASSES)}


def _modal_boxes(instance: np.ndarray) -> dict:
    """``{instance id: (x1, y1, x2, y2, visible pixel count)}`` of the visible pixels of each instance."""
    boxes, _ = boxes_from_instance_map(instance, INSTANCE_DIVISOR, thing_classes=None)
    ids, counts = np.unique(instance[instance >= INSTANCE_DIVISOR], return_counts=True)  # sorted, like the boxes
    return {int(i): (*(int(v) for v in box), int(n)) for i, box, n in zip(ids, boxes.tolist(), counts)}


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
    scene_style = resolve_style(style)
    if scene_style.get("jitter", 0) > 0:
        scene_style = jitter_style(scene_style, scene_rng(seed, index, 3), float(scene_style["jitter"]))
    layout = sample_layout(scene_rng(seed, index, 0), params)
    texture_rng = np.random.default_rng(layout["noise_seed"])  # texture noise: same fields in every style
    img, sem, depth, windows = render_background(layout, scene_style, params, texture_rng)
    inst = np.zeros(sem.shape, np.int32)
    cam = Camera(layout["f"], layout["vx"], layout["yh"], params.cam_height)
    lights: list = []
    things = draw_objects(layout, scene_style, Canvas(img, sem, inst, depth), cam, lights)
    windows[sem != BUILDING] = -1.0
    add_texture(img, sem, scene_style, texture_rng)

    boxes, labels, ids = [], [], []
    stats = _modal_boxes(inst)
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
        labels.append(_LABEL_OF_TRAIN_ID[tid])
        ids.append(iid)
    return dict(
        image=img, semantic=sem, instance=inst, depth=depth,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64), instance_ids=np.asarray(ids, np.int64),
        lights=np.asarray(lights, np.float32).reshape(-1, 7), windows=windows,
        horizon=float(layout["yh"]), vanishing_point=(float(layout["vx"]), float(layout["yh"])),
        focal=float(layout["f"]),
        seed=int(seed), index=int(index),
    )
