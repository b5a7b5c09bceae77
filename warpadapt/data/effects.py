"""Named, composable domain effects applied to a rendered clear-weather scene.

An effect is a function ``effect(image, scene, rng, **args) -> image`` where ``image`` is float32
(H, W, 3) RGB in [0, 1], ``scene`` is the dict returned by ``generate_scene`` (its ``depth``,
``semantic``, ``lights`` and ``windows`` drive the physics) and ``rng`` is an explicit
``numpy.random.Generator`` (the only source of randomness: same generator state, same output).

Built-in names (``list_effects()``):

* ``night``: darkness and gamma on the day albedo, bluish tint, lit windows, street lamps, head and
  tail lights and traffic lights as light sources with local illumination and glare, sensor noise.
* ``fog``: Koschmieder haze ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` with the scene's own
  depth ``d`` (slightly inhomogeneous ``beta``), then a mild blur.
* ``rain``: darkening and desaturation, light haze, wet-road sheen, albumentations ``RandomRain``
  streaks, blur.
* any albumentations transform, ``"albumentations.RandomSnow"`` (applied with ``p=1`` unless given,
  seeded from ``rng``), or any kornia augmentation class or function, ``"kornia.augmentation.ColorJitter"``
  / ``"kornia.enhance.adjust_gamma"`` (run under a torch seed drawn from ``rng``).

Effects are given in configs as ``{"name": ..., "args": {...}}`` (or just a name).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from warpadapt.data.scene_layout import ROAD, SIDEWALK, SKY  # noqa: F401

__all__ = ["register_effect", "list_effects", "get_effect", "apply_effects", "night", "fog", "rain"]

_EFFECTS: dict[str, Callable] = {}


def register_effect(name: str) -> Callable:
    """Decorator registering ``fn(image, scene, rng, **args) -> image`` under ``name``.

    >>> @register_effect("invert_demo")
    ... def _inv(image, scene, rng):
    ...     return 1.0 - image
    >>> "invert_demo" in list_effects()
    True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def deco(fn):
        _EFFECTS[name] = fn
        return fn
    return deco


def list_effects() -> list:
    """Names of the registered effects (albumentations/kornia names are accepted on top).

    >>> {"night", "fog", "rain"} <= set(list_effects())
    True
    """
    return sorted(_EFFECTS)


def _range(v, rng) -> float:
    if isinstance(v, (list, tuple)) or (hasattr(v, "__len__") and not isinstance(v, str)):
        return float(rng.uniform(float(v[0]), float(v[1])))
    return float(v)


def _to_u8(img):
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _albumentations(cls_name: str, args: Mapping) -> Callable:
    import albumentations as A
    cls = getattr(A, cls_name, None)
    if cls is None:
        raise ValueError(f"effects: albumentations has no transform {cls_name!r}")

    def fn(image, scene, rng, **_):
        a = dict(args)
        a.setdefault("p", 1.0)
        t = cls(**a)
        t.set_random_seed(int(rng.integers(2**31)))
        out = t(image=_to_u8(image))["image"]
        return out.astype(np.float32) / 255.0
    return fn


def _kornia(path: str, args: Mapping) -> Callable:
    import torch
    parts = path.split(".")
    obj = None
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p, None)
            if obj is None:
                break
        if obj is not None:
            break
    if obj is None:
        raise ValueError(f"effects: cannot resolve kornia name {path!r}")

    def fn(image, scene, rng, **_):
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            if isinstance(obj, type):
                y = obj(**args)(x)
            else:
                y = obj(x, **args)
        return y[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
    return fn


def get_effect(spec: str | Mapping) -> tuple:
    """Resolve ``spec`` (a name or ``{"name": ..., "args": {...}}``) to ``(fn, args)``.

    >>> fn, args = get_effect({"name": "fog", "args": {"beta": 0.03}})
    >>> fn is fog, dict(args)
    (True, {'beta': 0.03})
    """
    if isinstance(spec, str):
        name, args = spec, {}
    elif isinstance(spec, Mapping) or hasattr(spec, "keys"):
        if "name" not in spec:
            raise ValueError(f"effects: each effect needs a 'name', got {dict(spec)!r}")
        name, args = spec["name"], dict(spec.get("args", None) or {})
    else:
        raise ValueError(f"effects: expected a name or a mapping, got {type(spec).__name__}")
    if name in _EFFECTS:
        return _EFFECTS[name], args
    if name.startswith("albumentations."):
        return _albumentations(name.split(".", 1)[1], args), {}
    if name.startswith("kornia."):
        return _kornia(name, args), {}
    raise ValueError(f"effects: unknown effect {name!r}; expected one of {list_effects()} "
                     "or 'albumentations.<Transform>' / 'kornia.<path>'")


def apply_effects(image: np.ndarray, scene: Mapping, effects: Sequence, rng: np.random.Generator) -> np.ndarray:
    """Apply ``effects`` in order to ``image`` (float32 (H, W, 3) in [0, 1]); returns a new image.

    Args:
        image: float32 (H, W, 3) RGB in [0, 1] (usually ``scene["image"]``).
        scene: the scene dict (``depth`` (H, W), ``semantic`` (H, W), ``lights`` (M, 7), ``windows``).
        effects: list of names or ``{"name": ..., "args": {...}}`` mappings; empty = identity.
        rng: numpy Generator, the only randomness used.

    >>> from warpadapt.data.synthetic import generate_scene
    >>> s = generate_scene(0, 0, {"height": 32, "width": 64})
    >>> out = apply_effects(s["image"], s, ["fog"], np.random.default_rng(0))
    >>> out.shape, out.dtype
    ((32, 64, 3), dtype('float32'))
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected (H, W, 3), got {img.shape}")
    for spec in effects or []:
        fn, args = get_effect(spec)
        img = np.clip(fn(img, scene, rng, **args), 0, 1).astype(np.float32)
    return img


def _gray(img):
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


@register_effect("night")
def night(image, scene, rng, darkness=(0.65, 0.85), gamma=(2.0, 2.3), tint=(0.95, 0.97, 1.03),
          sky_darkness=0.25, window_prob=(0.15, 0.45), lamp_gain=(0.4, 0.8), glare=(0.2, 0.5),
          noise=(0.004, 0.01)):
    """Night: ``albedo ** gamma`` under a dim bluish ambient light plus lights (illumination + glare).

    Args:
        image: float32 (H, W, 3) in [0, 1]; scene: dict with ``semantic``, ``lights``, ``windows``.
        darkness, gamma, lamp_gain, glare, window_prob, noise: a value or a (low, high) range.

    >>> from warpadapt.data.synthetic import generate_scene
    >>> s = generate_scene(0, 1, {"height": 128, "width": 256})  # (tiny images: lights dominate)
    >>> bool(night(s["image"], s, np.random.default_rng(0)).mean() < 0.8 * s["image"].mean())
    True
    """
    H, W = image.shape[:2]
    g = _range(gamma, rng)
    amb = _range(darkness, rng)
    albedo = np.power(np.clip(image, 0, 1), g / 2.2 * 1.0)
    sem = scene["semantic"]
    ambient = np.where(sem == SKY, amb * sky_darkness, amb).astype(np.float32)
    # light sources: small discs of emitted light, their local illumination and glare
    src = np.zeros((H, W, 3), np.float32)  # emitted light (all sources)
    lit_src = np.zeros((H, W, 3), np.float32)  # sources that light up their surroundings
    lights = np.asarray(scene.get("lights", np.zeros((0, 7))), np.float32)
    for x, y, r, cr, cg, cb, st in lights:
        c, rad = (int(round(x - 0.5)), int(round(y - 0.5))), max(1, int(round(r)))
        col = (float(cr * st), float(cg * st), float(cb * st))
        cv2.circle(src, c, rad, col, -1, cv2.LINE_AA)
        if st >= 1.0:  # street lamps and headlights
            cv2.circle(lit_src, c, rad, col, -1, cv2.LINE_AA)
    s = max(H, W) / 512.0
    small = cv2.resize(lit_src, (max(1, W // 4), max(1, H // 4)), interpolation=cv2.INTER_AREA)
    raw = cv2.resize(cv2.GaussianBlur(small, (0, 0), 8 * s), (W, H), interpolation=cv2.INTER_LINEAR)
    illum = 1.3 * (1 - np.exp(-raw * 150.0 * _range(lamp_gain, rng)))  # pools of light, saturating
    halo = cv2.GaussianBlur(src, (0, 0), 2.0 * s)
    t = np.asarray(tint, np.float32)
    out = albedo * (ambient[..., None] * t + illum)
    # lit windows (warm) in buildings
    wr = scene.get("windows")
    if wr is not None:
        p = _range(window_prob, rng)
        lit = ((wr >= 0) & (wr < p)).astype(np.float32)[..., None]
        warm = np.array([1.0, 0.78, 0.45], np.float32) * (0.55 + 0.45 * (wr[..., None] / max(p, 1e-6)))
        out = out * (1 - lit) + warm * lit * 0.8
    out = out + src + halo * 1.5 * _range(glare, rng)
    # sensor: slight blur, shot + read noise
    out = cv2.GaussianBlur(out, (0, 0), 0.6)
    sd = _range(noise, rng)
    n = rng.standard_normal((H, W, 3), dtype=np.float32)
    out = out + n * (sd + 0.05 * np.sqrt(np.clip(out, 0, 1)))
    return np.clip(out, 0, 1)


@register_effect("fog")
def fog(image, scene, rng, beta=(0.03, 0.06), airlight=(0.72, 0.85), tint=(0.97, 1.0, 1.03),
        inhomogeneity=0.3, blur=0.8):
    """Depth-dependent haze ``I = J t + A (1 - t)``, ``t = exp(-beta * depth)`` (depth in metres).

    Args:
        image: float32 (H, W, 3); scene: dict with ``depth`` float32 (H, W) metres.
        beta: extinction (1/m), value or range (visibility about ``3 / beta`` metres).
        airlight: grey level of ``A``; inhomogeneity: relative spatial variation of ``beta``.

    >>> from warpadapt.data.synthetic import generate_scene
    >>> s = generate_scene(0, 1, {"height": 32, "width": 64})
    >>> f = fog(s["image"], s, np.random.default_rng(0), beta=0.05)
    >>> bool(abs(f[0, 0].mean() - 0.78) < 0.1)  # the sky turns into airlight
    True
    """
    H, W = image.shape[:2]
    b = _range(beta, rng)
    a = _range(airlight, rng)
    cell = max(8.0, W / 8)
    gh, gw = int(H / cell) + 2, int(W / cell) + 2
    var = cv2.resize(rng.random((gh, gw), dtype=np.float32) * 2 - 1, (W, H), interpolation=cv2.INTER_CUBIC)
    d = np.asarray(scene["depth"], np.float32)
    t = np.exp(-b * (1 + inhomogeneity * var) * np.minimum(d, 1000.0))[..., None]
    A = a * np.asarray(tint, np.float32)
    out = image * t + A * (1 - t)
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), float(blur))
    return out


@register_effect("rain")
def rain(image, scene, rng, darken=(0.8, 0.9), desaturate=0.25, beta=(0.004, 0.008),
         rain_type="default", drop_width=1, blur=0.5, wet=0.15, streaks=True, streak_opacity=0.4):
    """Rain: overcast darkening, desaturation, light haze, wet road sheen, streaks, blur.

    Args:
        image: float32 (H, W, 3); scene: dict with ``depth`` and ``semantic`` (H, W).
        darken, beta: value or range; rain_type: albumentations ``RandomRain`` type (streak density:
        drizzle < default < heavy < torrential); streak_opacity: blend weight of the streak layer;
        wet: strength of the wet-road sheen (a blurred reflection of the scene above).

    >>> from warpadapt.data.synthetic import generate_scene
    >>> s = generate_scene(0, 1, {"height": 32, "width": 64})
    >>> r1 = rain(s["image"], s, np.random.default_rng(0))
    >>> bool(np.allclose(r1, rain(s["image"], s, np.random.default_rng(0))))
    True
    """
    H, W = image.shape[:2]
    gray = _gray(image)[..., None]
    out = (image * (1 - desaturate) + gray * desaturate) * _range(darken, rng)
    # wet road: mirror the scene about the horizon, blurred, on road / sidewalk pixels
    sem = scene["semantic"]
    wetm = ((sem == ROAD) | (sem == SIDEWALK)).astype(np.float32)
    if wet > 0 and wetm.any():
        yh = float(scene.get("horizon", H / 2))
        rows = np.clip(np.round(2 * yh - np.arange(H) - 1).astype(int), 0, H - 1)
        refl = cv2.GaussianBlur(out[rows], (0, 0), sigmaX=1.0, sigmaY=4.0)
        out = out + wet * wetm[..., None] * (refl - out * 0.5)
    out = fog(out, scene, rng, beta=beta, airlight=(0.5, 0.6), blur=0)
    if streaks:
        h = max(8, H // 12)
        streaked = _albumentations("RandomRain", dict(
            rain_type=rain_type, drop_width=drop_width, drop_length=h, blur_value=3,
            brightness_coefficient=0.95, drop_color=(190, 190, 200)))(out, scene, rng)
        op = _range(streak_opacity, rng)
        out = out * (1 - op) + streaked * op
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), float(blur))
    return out
