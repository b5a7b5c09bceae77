"""Synthetic domain pairs: OmegaConf configs and a torch ``Dataset`` over them.

A pair config is a plain mapping (returned as an OmegaConf ``DictConfig``)::

    name: synthetic_day2night
    image_size: [256, 512]          # (H, W)
    seed: 0
    counts: {train: 2000, val: 200, test: 200}
    scene: {}                       # SceneParams overrides (object counts, ranges ...)
    source: {style: day, effects: []}
    target: {style: night_city, effects: [{name: night, args: {}}]}
    classes: [person, rider, car, truck, bicycle, traffic light, traffic sign]

``style`` picks the background palette/textures (``synthetic.STYLES``; a mapping with ``base`` and
overrides works too), ``effects`` is a list of named effects (``effects.list_effects()``, or any
``albumentations.<Transform>`` / ``kornia.<path>`` with ``args``).

Scene identity: scene ``i`` of (pair seed, domain, split) is ``generate_scene(scene_seed, i)`` with
``scene_seed = pair_scene_seed(seed, domain, split)``: the source and target splits hold DIFFERENT
scenes (unpaired, as in real UDA). ``render_pair_sample`` renders one scene in both domains (same
geometry, for measuring and pictures).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from warpadapt._utils import as_size
from warpadapt.data.effects import apply_effects
from warpadapt.data.labels import CLASS_TO_TRAIN_ID, DETECTION_CLASSES
from warpadapt.data.synthetic import SceneParams, generate_scene, scene_rng

__all__ = ["PAIRS", "get_pair", "list_pairs", "pair_scene_seed", "render_pair_sample",
           "render_item", "SyntheticDrivingDataset", "collate", "DOMAINS", "SPLITS"]

DOMAINS = ("source", "target")
SPLITS = ("train", "val", "test")  # test: held out, nothing is tuned on it

_BASE = dict(image_size=[256, 512], seed=0, counts=dict(train=2000, val=200, test=200), scene={},
             classes=list(DETECTION_CLASSES))

PAIRS: dict[str, dict[str, Any]] = {
    "synthetic_day2night": dict(
        _BASE, name="synthetic_day2night",
        source=dict(style="day", effects=[]),
        target=dict(style="night_city", effects=[dict(name="night", args={})])),
    "synthetic_clear2fog": dict(
        _BASE, name="synthetic_clear2fog",
        source=dict(style="day", effects=[]),
        target=dict(style="fog_town", effects=[dict(name="fog", args=dict(beta=[0.01, 0.025], blur=0.5))])),
    "synthetic_clear2rain": dict(
        _BASE, name="synthetic_clear2rain",
        source=dict(style="day", effects=[]),
        target=dict(style="rain_city", effects=[dict(name="rain", args={})])),
}


def list_pairs() -> list:
    """Names of the shipped synthetic domain pairs.

    >>> list_pairs()
    ['synthetic_clear2fog', 'synthetic_clear2rain', 'synthetic_day2night']
    """
    return sorted(PAIRS)


def _check_cfg(cfg) -> None:
    size = cfg.image_size
    if len(size) != 2 or int(size[0]) < 16 or int(size[1]) < 16:
        raise ValueError(f"image_size: expected [H, W] with H, W >= 16, got {list(size)}")
    for d in DOMAINS:
        if d not in cfg or "style" not in cfg[d]:
            raise ValueError(f"{d}: the pair config needs '{d}: {{style: ..., effects: [...]}}'")
    for s in SPLITS:
        if int(cfg.counts.get(s, 0)) < 0:
            raise ValueError(f"counts.{s}: must be >= 0, got {cfg.counts[s]}")


def get_pair(name: str | Mapping = "synthetic_day2night", **overrides) -> DictConfig:
    """The config of pair ``name`` (a shipped name or a full mapping), with ``overrides`` applied.

    Override keys may be dotted paths (``**{"target.style": "fog_town"}``) or top-level keys
    (``seed=3``, ``image_size=[128, 256]``).

    >>> cfg = get_pair("synthetic_clear2fog", seed=3, **{"counts.val": 10})
    >>> cfg.seed, cfg.counts.val, cfg.target.effects[0].name
    (3, 10, 'fog')
    """
    if isinstance(name, (DictConfig, Mapping)):
        cfg = OmegaConf.create(OmegaConf.to_container(name) if isinstance(name, DictConfig) else copy.deepcopy(dict(name)))
        cfg = OmegaConf.merge(OmegaConf.create(copy.deepcopy(_BASE)), cfg)
    elif isinstance(name, str):
        if name not in PAIRS:
            raise ValueError(f"name: unknown pair {name!r}; expected one of {list_pairs()}")
        cfg = OmegaConf.create(copy.deepcopy(PAIRS[name]))
    else:
        raise ValueError(f"name: expected a pair name or a mapping, got {type(name).__name__}")
    for k, v in overrides.items():
        OmegaConf.update(cfg, k, v, merge=False)
    _check_cfg(cfg)
    return cfg


def pair_scene_seed(seed: int, domain: str, split: str) -> int:
    """Scene seed of a (pair seed, domain, split): different domains/splits hold different scenes.

    >>> pair_scene_seed(0, "source", "train") != pair_scene_seed(0, "target", "train")
    True
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    ss = np.random.SeedSequence([int(seed), DOMAINS.index(domain), SPLITS.index(split), 7919])
    return int(ss.generate_state(1)[0])


def _params(cfg, size=None) -> SceneParams:
    h, w = _size(size) or tuple(int(v) for v in cfg.image_size)
    d = dict(OmegaConf.to_container(cfg.scene, resolve=True) if isinstance(cfg.scene, DictConfig) else cfg.scene)
    d.update(height=int(h), width=int(w))
    return SceneParams.from_dict(d)


def _domain_cfg(cfg, domain):
    dc = cfg[domain]
    style = dc.style
    if isinstance(style, DictConfig):
        style = OmegaConf.to_container(style, resolve=True)
    effects = dc.get("effects", None) or []
    if OmegaConf.is_config(effects):
        effects = OmegaConf.to_container(effects, resolve=True)
    return style, effects


def render_item(cfg, domain: str, scene_seed: int, index: int, size=None) -> dict:
    """Scene ``index`` of ``scene_seed`` rendered in ``domain`` of ``cfg`` (numpy scene dict).

    The effect generator is ``scene_rng(scene_seed, index, 1)``: deterministic.

    >>> cfg = get_pair("synthetic_day2night", image_size=[32, 64])
    >>> render_item(cfg, "target", 5, 0)["image"].shape
    (32, 64, 3)
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    style, effects = _domain_cfg(cfg, domain)
    s = generate_scene(scene_seed, index, _params(cfg, size), style)
    s["image"] = apply_effects(s["image"], s, effects, scene_rng(scene_seed, index, 1 + DOMAINS.index(domain)))
    return s


def render_pair_sample(pair, index: int, split: str = "train", size=None) -> tuple:
    """The SAME scene (source ``split`` scene ``index``) rendered in the source and the target domain.

    Returns ``(source_scene, target_scene)`` numpy dicts (see ``generate_scene``); geometry, labels
    and object colours are identical, background style and effects differ.

    >>> s, t = render_pair_sample("synthetic_clear2fog", 0, size=(32, 64))
    >>> bool((s["semantic"] == t["semantic"]).all()), bool((s["image"] != t["image"]).any())
    (True, True)
    """
    cfg = pair if isinstance(pair, DictConfig) else get_pair(pair)
    seed = pair_scene_seed(cfg.seed, "source", split)
    return render_item(cfg, "source", seed, index, size), render_item(cfg, "target", seed, index, size)


def _size(size):
    """Render size ``(H, W)`` (an int ``n`` means ``(n, n)``, see :func:`warpadapt._utils.as_size`), or None."""
    return None if size is None else as_size(size, "size", minimum=16)


class SyntheticDrivingDataset(torch.utils.data.Dataset):
    """Torch dataset over one domain/split of a synthetic pair, rendered on the fly.

    Args:
        pair: a pair name (``list_pairs()``), a mapping or a ``DictConfig`` (see ``get_pair``).
        domain: ``"source"`` or ``"target"``; split: ``"train"``, ``"val"`` or ``"test"`` (held out:
            scenes disjoint from train and val; report final numbers on it, tune on val).
        size: ``(H, W)`` render size overriding ``image_size`` (scenes are procedural: rendered
            directly at that size, boxes in its pixels); an int ``n`` means ``(n, n)``.
        length: number of items overriding ``counts[split]``.

    Items follow the sample contract: ``image`` float32 (3, H, W) in [0, 1]; ``boxes`` float32
    (N, 4) xyxy pixels; ``labels`` int64 (N,) in 1..K (``classes[label - 1]``); ``semantic``
    int64 (H, W) train ids, 255 ignore; ``instance`` int64 (H, W) (``train_id * 1000 + k``, 0 for
    stuff/ignore); ``depth`` float32 (H, W) metres; ``meta`` dict (``file_name``, ``index``,
    ``pair``, ``domain``, ``split``, ``scene_seed``).

    >>> ds = SyntheticDrivingDataset("synthetic_day2night", "target", "val", size=(32, 64), length=2)
    >>> item = ds[1]
    >>> len(ds), item["image"].shape, item["semantic"].dtype, ds.classes[0]
    (2, torch.Size([3, 32, 64]), torch.int64, 'person')
    """

    def __init__(self, pair="synthetic_day2night", domain: str = "source", split: str = "train",
                 size=None, length: int | None = None):
        self.cfg = pair if isinstance(pair, DictConfig) else get_pair(pair)
        if domain not in DOMAINS:
            raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if length is not None and (not isinstance(length, (int, np.integer)) or length < 0):
            raise ValueError(f"length: expected a non-negative int, got {length!r}")
        self.domain, self.split = domain, split
        self.size = _size(size) or tuple(int(v) for v in self.cfg.image_size)
        self.length = int(length) if length is not None else int(self.cfg.counts[split])
        self.scene_seed = pair_scene_seed(self.cfg.seed, domain, split)
        self.classes = tuple(self.cfg.get("classes", DETECTION_CLASSES))
        self.class_to_train_id = dict(CLASS_TO_TRAIN_ID)
        self.name = f"{self.cfg.name}_{domain}"

    def __len__(self) -> int:
        return self.length

    def stem(self, index: int) -> str:
        """File stem of item ``index`` (``<pair>_<domain>_<index:06d>``).

        >>> SyntheticDrivingDataset(length=1).stem(3)
        'synthetic_day2night_source_000003'
        """
        return f"{self.name}_{index:06d}"

    def render(self, index: int) -> dict:
        """Item ``index`` as the numpy scene dict (image float32 (H, W, 3)), effects applied.

        >>> SyntheticDrivingDataset(size=(32, 64), length=1).render(0)["depth"].shape
        (32, 64)
        """
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return render_item(self.cfg, self.domain, self.scene_seed, index, self.size)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += self.length
        s = self.render(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1))),
            "boxes": torch.from_numpy(s["boxes"]).float().reshape(-1, 4),
            "labels": torch.from_numpy(s["labels"]).long(),
            "semantic": torch.from_numpy(s["semantic"].astype(np.int64)),
            "instance": torch.from_numpy(s["instance"].astype(np.int64)),
            "depth": torch.from_numpy(s["depth"]),
            "meta": {"file_name": f"{self.name}/{self.stem(index)}_leftImg8bit.png", "index": index,
                     "pair": str(self.cfg.name), "domain": self.domain, "split": self.split,
                     "scene_seed": self.scene_seed, "height": self.size[0], "width": self.size[1]},
        }


def collate(batch: Sequence[Mapping]) -> dict:
    """Batch sample-contract items: ``images`` (B, 3, H, W); ``boxes`` / ``labels`` lists of B
    tensors; ``semantic`` / ``instance`` (B, H, W) and ``depth`` (B, H, W) when every item has
    them; ``meta`` list of dicts.

    >>> ds = SyntheticDrivingDataset(size=(32, 64), length=2)
    >>> b = collate([ds[0], ds[1]])
    >>> b["images"].shape, len(b["boxes"]), b["semantic"].shape
    (torch.Size([2, 3, 32, 64]), 2, torch.Size([2, 32, 64]))
    """
    if len(batch) == 0:
        raise ValueError("batch: expected at least one item")
    out: dict[str, Any] = {
        "images": torch.stack([b["image"] for b in batch]),
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "meta": [b.get("meta", {}) for b in batch],
    }
    for k in ("semantic", "instance", "depth"):
        if all(b.get(k) is not None for b in batch):
            out[k] = torch.stack([b[k] for b in batch])
    return out
