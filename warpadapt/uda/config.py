"""Recipe configs: OmegaConf yaml files + ``key=value`` command-line overrides, checked strictly.

A recipe's configs live in ``recipes/configs/<recipe>/<name>.yaml``. A file may start from another
one with ``_base_: other.yaml`` (a path relative to the file; merged first, the file's own keys win).
The command line is ``[--config NAME_OR_PATH] [key=value ...]`` in OmegaConf's dotlist form
(``train.iters=200 model.backbone=resnet18 data.image_size=[128,256]``).

Rules (every error names the key):
- unknown keys are rejected (struct mode), except under a mapping that is empty in the yaml (``{}``:
  an open mapping, for free-form options such as a transform's arguments);
- a value must have the type of the default it replaces (an int where an int is, a float or an int
  where a float is, a bool where a bool is, a list where a list is); ``null`` is always accepted, and
  a key whose default is ``null`` takes any type;
- ``check_choice`` / ``check_range`` check values against a recipe's own rules.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["load_config", "parse_overrides", "merge_overrides", "check_choice", "check_range",
           "save_config", "CONFIG_DIR"]

#: Where the recipes' configs live in a source checkout: ``<repo>/recipes/configs``.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "configs"


def _read_yaml(path: Path, seen: tuple = ()) -> DictConfig:
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {str(path)!r}")
    if path.resolve() in seen:
        raise ValueError(f"config: _base_ cycle through {str(path)!r}")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config: {str(path)!r} must hold a mapping at the top level")
    base = cfg.pop("_base_", None)
    if base is None:
        return cfg
    parent = _read_yaml((path.parent / str(base)), seen + (path.resolve(),))
    return OmegaConf.merge(parent, cfg)


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Split a command line into ``(config name or None, ["key=value", ...])``.

    >>> parse_overrides(["--config", "fog", "train.iters=5", "resume=true"])
    ('fog', ['train.iters=5', 'resume=true'])
    >>> parse_overrides(["--config=a.yaml"])
    ('a.yaml', [])
    """
    name, rest, argv = None, [], list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config: expected a config name or a yaml path after it")
            name, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            name = arg.split("=", 1)[1]
        elif arg.startswith("-") or "=" not in arg:
            raise ValueError(f"command line: expected key=value or --config NAME, got {arg!r}")
        else:
            rest.append(arg)
        i += 1
    return name, rest


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "mapping"
    return type(value).__name__


def _coerce(key: str, old: Any, new: Any) -> Any:
    want, got = _kind(old), _kind(new)
    if want is None or got is None or want == got:
        return new
    if want == "float" and got == "int":
        return float(new)
    if want == "str" and got in ("int", "float"):
        return str(new)  # e.g. out_dir=2024 or a name that looks like a number
    raise ValueError(f"config: {key}: expected a {want} (like the default {old!r}), got {new!r}")


def merge_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` overrides to ``cfg`` (a copy), rejecting unknown keys and wrong types.

    >>> base = OmegaConf.create({"train": {"iters": 10, "lr": 0.1}, "extra": {}})
    >>> merge_overrides(base, ["train.iters=5", "train.lr=1", "extra.anything=3"]).train
    {'iters': 5, 'lr': 1.0}
    >>> merge_overrides(base, ["train.iterz=5"])
    Traceback (most recent call last):
    ...
    ValueError: config: unknown key 'train.iterz' (known under 'train': iters, lr)
    >>> merge_overrides(base, ["train.iters=fast"])
    Traceback (most recent call last):
    ...
    ValueError: config: train.iters: expected a int (like the default 10), got 'fast'
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"config: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"config: empty key in {item!r}")
        value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]))["value"]
        parts = key.split(".")
        node = cfg
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if not isinstance(node, DictConfig):
                raise ValueError(f"config: {'.'.join(parts[:depth])} is not a mapping, cannot set {key!r}")
            open_node = len(node) == 0 or node._get_flag("open_mapping")
            if part not in node:
                if not open_node:
                    where = ".".join(parts[:depth])
                    known = ", ".join(sorted(str(k) for k in node.keys()))
                    scope = f" under {where!r}" if where else ""
                    raise ValueError(f"config: unknown key {key!r} (known{scope}: {known})")
                if last:
                    node[part] = value
                    break
                node[part] = {}
                node._get_node(part)._set_flag("open_mapping", True)
            if last:
                old = node[part]
                node[part] = _coerce(key, old, value)
            else:
                child = node._get_node(part)
                if isinstance(child, DictConfig) and (len(child) == 0 or open_node):
                    child._set_flag("open_mapping", True)
                node = node[part]
    return cfg


def load_config(recipe: str, argv: Sequence[str] | None = None, *, default: str = "default",
                config_dir: str | os.PathLike | None = None) -> DictConfig:
    """Load ``<config_dir>/<recipe>/<name>.yaml`` and apply the command line's overrides.

    Args:
        recipe: the recipe's config folder name (``"twopcnet"``, ``"mic"``).
        argv: ``[--config NAME_OR_PATH] [key=value ...]``; NAME is a file of the recipe's folder
            (without ``.yaml``), a path is any yaml file. None: no overrides, the default file.
        default: the config name used when ``--config`` is not given.
        config_dir: the configs root (default :data:`CONFIG_DIR`).

    Returns:
        a read-only ``DictConfig`` in struct mode (reading an unknown key raises).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "r").mkdir()
    >>> _ = (d / "r" / "base.yaml").write_text("train: {iters: 10, seed: 0}\\nname: base\\n")
    >>> _ = (d / "r" / "fast.yaml").write_text("_base_: base.yaml\\ntrain: {iters: 2}\\n")
    >>> cfg = load_config("r", ["--config", "fast", "train.seed=3"], config_dir=d)
    >>> cfg.train.iters, cfg.train.seed, cfg.name
    (2, 3, 'base')
    """
    root = Path(config_dir) if config_dir is not None else CONFIG_DIR
    name, overrides = parse_overrides(argv or [])
    name = name or default
    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        candidate = root / recipe / f"{name}.yaml"
        if not candidate.is_file():
            folder = root / recipe
            known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
            raise ValueError(f"--config: no config {name!r} (a yaml path, or one of {known} in {folder})")
        path = candidate
    cfg = merge_overrides(_read_yaml(path), overrides)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def check_choice(cfg: DictConfig, key: str, choices: Sequence[Any]) -> Any:
    """Return ``cfg[key]`` (dotted) if it is one of ``choices``, else raise ValueError naming the key.

    >>> cfg = OmegaConf.create({"warp": {"guidance": "instanse"}})
    >>> check_choice(cfg, "warp.guidance", ("instance", "none"))
    Traceback (most recent call last):
    ...
    ValueError: config: warp.guidance: expected one of ('instance', 'none'), got 'instanse'
    """
    value = OmegaConf.select(cfg, key)
    if value not in tuple(choices):
        raise ValueError(f"config: {key}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_range(cfg: DictConfig, key: str, lo: float | None = None, hi: float | None = None,
                *, integer: bool = False) -> Any:
    """Return ``cfg[key]`` if ``lo <= value <= hi`` (bounds optional), else raise ValueError.

    >>> check_range(OmegaConf.create({"train": {"iters": 0}}), "train.iters", 1, integer=True)
    Traceback (most recent call last):
    ...
    ValueError: config: train.iters: expected an int >= 1, got 0
    """
    value = OmegaConf.select(cfg, key)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok_type and not isinstance(value, bool) and value == value
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        what = "an int" if integer else "a number"
        bounds = " and ".join(b for b in ((f">= {lo}" if lo is not None else ""),
                                          (f"<= {hi}" if hi is not None else "")) if b)
        raise ValueError(f"config: {key}: expected {what}{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def save_config(cfg: DictConfig, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config to ``out_dir/name`` atomically; return the path.

    >>> import tempfile
    >>> p = save_config(OmegaConf.create({"a": 1}), tempfile.mkdtemp())
    >>> p.read_text()
    'a: 1\\n'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)
    return path
