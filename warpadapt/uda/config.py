"""Recipe configs: OmegaConf yaml files + ``key=value`` command-line overrides, checked strictly.

A recipe's configs live next to the recipe script: ``<recipe dir>/configs/<recipe stem>/<name>.yaml``
(``recipes/mic.py`` -> ``recipes/configs/mic/``), wherever the checkout is. A file may start from
another one with ``_base_: other.yaml`` (a path relative to the file; merged first, the file's own
keys win). The command line is ``[--config NAME_OR_PATH] [key=value ...] [--help] [--debug]``, the
overrides in OmegaConf's dotlist form (``train.iters=200 model.backbone=resnet18
data.image_size=[128,256]``). ``--help`` prints the recipe's purpose, its configs and every key of
the selected config with the yaml's comment; ``--debug`` is for :func:`warpadapt.uda.cli.run`
(full tracebacks) and ignored here.

Rules (every error names the key):
- unknown keys are rejected (struct mode), except under a mapping that is empty in the yaml (``{}``:
  an open mapping, for free-form options such as a transform's arguments);
- a value must have the type of the default it replaces (an int where an int is, a float or an int
  where a float is, a bool where a bool is, a list where a list is); ``null`` is always accepted, and
  a key whose default is ``null`` takes any type;
- ``check_choice`` / ``check_range`` check values against a recipe's own rules.
"""
from __future__ import annotations

import ast
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["load_config", "parse_overrides", "merge_overrides", "check_choice", "check_range",
           "save_config", "config_help"]

#: Command-line flags that ask for the help text (anywhere on the command line).
HELP_FLAGS = ("--help", "-h")
#: Command-line flag for full tracebacks; handled by ``warpadapt.uda.cli.run``, skipped here.
DEBUG_FLAG = "--debug"


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

    ``--debug`` (for :func:`warpadapt.uda.cli.run`) is skipped; ``--help`` is handled by
    :func:`load_config` before this is called.

    >>> parse_overrides(["--config", "fog", "train.iters=5", "resume=true"])
    ('fog', ['train.iters=5', 'resume=true'])
    >>> parse_overrides(["--config=a.yaml", "--debug"])
    ('a.yaml', [])
    """
    name, rest, argv = None, [], list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == DEBUG_FLAG:
            i += 1
            continue
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


def _recipe_paths(recipe_file: str | os.PathLike, config_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """``(recipe script path, folder of its configs)``; a bare recipe name is refused."""
    if not isinstance(recipe_file, (str, os.PathLike)):
        raise TypeError(f"load_config: recipe_file must be the recipe script's path (pass __file__), "
                        f"got {recipe_file!r}")
    recipe = Path(recipe_file)
    if not recipe.suffix:
        raise TypeError(f"load_config: recipe_file must be the recipe script's path (pass __file__), got "
                        f"{str(recipe_file)!r}: a bare recipe name is no longer accepted (the configs are "
                        f"found next to the script, in <its folder>/configs/<its stem>/)")
    recipe = recipe.resolve()
    root = Path(config_dir) if config_dir is not None else recipe.parent / "configs"
    return recipe, root / recipe.stem


def _resolve_config(folder: Path, name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = folder / f"{name}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ValueError(f"--config: no config {name!r} (a yaml path, or one of {known} in {folder})")
    return candidate


def load_config(recipe_file: str | os.PathLike, argv: Sequence[str] | None = None, *, default: str,
                config_dir: str | os.PathLike | None = None) -> DictConfig:
    """Load the recipe's ``<name>.yaml`` (found next to the recipe script) and apply the overrides.

    Args:
        recipe_file: the recipe script's path (the recipe passes ``__file__``). Its configs are in
            ``Path(recipe_file).resolve().parent / "configs" / Path(recipe_file).stem``
            (``recipes/mic.py`` -> ``recipes/configs/mic/``). A bare name (``"mic"``) is refused.
        argv: ``[--config NAME_OR_PATH] [key=value ...] [--help] [--debug]``; NAME is a file of the
            recipe's folder (without ``.yaml``), a path is any yaml file. None: no overrides, the
            default file. ``--help`` / ``-h`` anywhere: print :func:`config_help` to stdout and raise
            ``SystemExit(0)``. ``--debug`` is ignored (see ``warpadapt.uda.cli.run``).
        default: the config name used when ``--config`` is not given.
        config_dir: the folder holding ``<recipe stem>/`` instead of ``<recipe dir>/configs``.

    Returns:
        a read-only ``DictConfig`` in struct mode (reading an unknown key raises).

    Raises:
        ValueError: an unknown config name, unknown key, wrong type or malformed command line;
        FileNotFoundError: a missing ``_base_`` file; TypeError: ``recipe_file`` is not a path.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "r.py").write_text("'''A fake recipe.'''\\n")
    >>> (d / "configs" / "r").mkdir(parents=True)
    >>> _ = (d / "configs" / "r" / "base.yaml").write_text("train: {iters: 10, seed: 0}\\nname: base\\n")
    >>> _ = (d / "configs" / "r" / "fast.yaml").write_text("_base_: base.yaml\\ntrain: {iters: 2}\\n")
    >>> cfg = load_config(d / "r.py", ["--config", "fast", "train.seed=3"], default="base")
    >>> cfg.train.iters, cfg.train.seed, cfg.name
    (2, 3, 'base')
    >>> load_config(d / "r.py", ["--help"], default="base")
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    recipe, folder = _recipe_paths(recipe_file, config_dir)
    argv = list(argv or [])
    if any(a in HELP_FLAGS for a in argv):
        rest = [a for a in argv if a not in HELP_FLAGS]
        try:
            name, _ = parse_overrides(rest)
        except ValueError:  # e.g. "--config --help": show the default config
            name = None
        print(config_help(recipe, name or default, default=default, config_dir=config_dir))
        raise SystemExit(0)
    name, overrides = parse_overrides(argv)
    path = _resolve_config(folder, name or default)
    cfg = merge_overrides(_read_yaml(path), overrides)
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


# ---------------------------------------------------------------- --help
_KEY_RE = re.compile(r"""^(?P<indent>[ ]*)(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#'"\-{}\[\],:][^:#]*?)"""
                     r"""\s*:(?:[ \t]+|$)(?P<rest>.*)$""")


def _split_comment(text: str, depth: int = 0) -> tuple[str, str | None, int]:
    """``(value text, comment or None, bracket depth after the text)`` of one yaml line's tail.

    A ``#`` starts a comment outside quotes when it opens the text or follows white space.
    """
    quote, i = None, 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                if text[i + 1:i + 2] == "'":
                    i += 1
                else:
                    quote = None
        elif quote == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].strip(), depth
        i += 1
    return text.rstrip(), None, depth


def _unquote(key: str) -> str:
    if len(key) >= 2 and key[0] == key[-1] == '"':
        return bytes(key[1:-1], "utf-8").decode("unicode_escape")
    if len(key) >= 2 and key[0] == key[-1] == "'":
        return key[1:-1].replace("''", "'")
    return key.strip()


def _yaml_comments(text: str) -> dict[str, str]:
    """``{dotted key: comment}`` of one yaml file's block-mapping keys (a line-based reader).

    Handles block mappings, inline ``{...}`` / ``[...]`` values (also over several lines; the
    comment belongs to the key that opens them), block lists (skipped) and block scalars (skipped).
    A ``#`` line just below a commented key, indented deeper than the key, continues its comment.

    >>> _yaml_comments("a: 1  # one\\nb:\\n  c: {d: 2}   # the c\\n             # more c\\n  e: x # y\\n")
    {'a': 'one', 'b.c': 'the c more c', 'b.e': 'y'}
    """
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []   # (indent, key) of the open block mappings
    last: tuple[int, str] | None = None  # (indent, dotted key) whose comment a '#' line may continue
    depth = 0                            # open brackets of a flow value spanning lines
    skip_deeper: int | None = None       # inside a block list / block scalar: skip deeper lines
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if depth > 0:  # continuation of a multi-line inline value
            _, comment, depth = _split_comment(line, depth)
            if comment and last is not None:
                out[last[1]] = f"{out[last[1]]} {comment}".strip() if last[1] in out else comment
            continue
        if not stripped or stripped in ("---", "..."):
            last = None if not stripped else last
            continue
        if stripped.startswith("#"):
            if last is not None and indent > last[0] and last[1] in out:
                out[last[1]] = f"{out[last[1]]} {stripped.lstrip('#').strip()}".strip()
            else:
                last = None
            continue
        if skip_deeper is not None:
            if indent > skip_deeper or (stripped.startswith("-") and indent == skip_deeper):
                continue
            skip_deeper = None
        if stripped.startswith("- ") or stripped == "-":
            skip_deeper, last = indent, None
            continue
        m = _KEY_RE.match(line)
        if m is None:
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = _unquote(m.group("key"))
        dotted = ".".join([k for _, k in stack] + [key])
        value, comment, depth = _split_comment(m.group("rest"))
        if comment:
            out[dotted] = comment
        last = (indent, dotted)
        if not value:
            stack.append((indent, key))
        elif value[0] in "|>":
            skip_deeper = indent
    return out


def _file_comments(path: Path, seen: tuple = ()) -> dict[str, str]:
    """The comments of ``path`` over those of its ``_base_`` chain (a key's comment comes from the
    file that sets it; when that line has none, from the base that also sets it)."""
    text = path.read_text()
    comments: dict[str, str] = {}
    if path.resolve() not in seen:
        try:
            base = (OmegaConf.load(path) or {}).get("_base_")
        except Exception:
            base = None
        if base is not None and (path.parent / str(base)).is_file():
            comments.update(_file_comments(path.parent / str(base), seen + (path.resolve(),)))
    comments.update(_yaml_comments(text))
    comments.pop("_base_", None)
    return comments


def _description(path: Path) -> str:
    """The first comment line of a yaml file's leading comment block ('' if it starts with a key)."""
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#"):
            return s.lstrip("#").strip()
        if s:
            return ""
    return ""


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and (value == "" or value != value.strip() or value in ("null", "true", "false")):
        return repr(value)
    return str(value)


def _walk(node: dict, prefix: str = ""):
    """``(dotted key, value, is_parent)`` in file order; non-empty mappings are parents."""
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield dotted, value, True
            yield from _walk(value, dotted + ".")
        else:
            yield dotted, value, False


def _purpose(recipe: Path) -> str:
    """The first paragraph of the recipe module's docstring, read without importing it."""
    try:
        doc = ast.get_docstring(ast.parse(recipe.read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""


def config_help(recipe_file: str | os.PathLike, name: str | None = None, *, default: str,
                config_dir: str | os.PathLike | None = None) -> str:
    """The ``--help`` text of a recipe: purpose, usage, config names, every key of config ``name``.

    Args:
        recipe_file: the recipe script's path (as for :func:`load_config`; read, never imported).
        name: the config shown (a name of the recipe's folder or a yaml path); None: ``default``.
        default: the recipe's default config name (marked in the list).
        config_dir: as for :func:`load_config`.

    Returns:
        the text: each key as ``dotted.key = value   # comment`` in file order (keys from the merged
        config, comments from the yaml lines that set them; a non-empty mapping whose line has a
        comment gets a ``dotted.key:   # comment`` line before its keys).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "r.py").write_text("'''Train a thing.\\n\\nDetails.'''\\n")
    >>> (d / "configs" / "r").mkdir(parents=True)
    >>> _ = (d / "configs" / "r" / "base.yaml").write_text("# The base.\\ntrain:\\n  iters: 10  # steps\\n")
    >>> print(config_help(d / "r.py", default="base"))  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    Train a thing.
    <BLANKLINE>
    usage: python .../r.py [--config NAME|PATH] [key=value ...] [--debug]
    <BLANKLINE>
    configs (--config NAME, in .../configs/r):
      base   The base. (default)
    <BLANKLINE>
    keys of base (override with key=value; unknown keys and wrong types fail):
      train.iters = 10   # steps
    """
    recipe, folder = _recipe_paths(recipe_file, config_dir)
    name = name or default
    path = _resolve_config(folder, name)
    cfg = OmegaConf.to_container(_read_yaml(path), resolve=False)
    comments = _file_comments(path)
    lines = []
    purpose = _purpose(recipe)
    if purpose:
        lines += [purpose, ""]
    try:
        shown_recipe = recipe.relative_to(Path.cwd().resolve())  # recipes/mic.py from the checkout
    except ValueError:
        shown_recipe = recipe
    lines += [f"usage: python {shown_recipe} [--config NAME|PATH] [key=value ...] [--debug]", ""]
    configs = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    where = f".../{folder.parent.name}/{folder.name}"
    lines.append(f"configs (--config NAME, in {where}):")
    width = max((len(p.stem) for p in configs), default=0)
    for p in configs:
        text = " ".join(t for t in (_description(p), "(default)" if p.stem == default else "") if t)
        lines.append(f"  {p.stem:<{width}}   {text}".rstrip())
    shown = path.stem if path.parent.resolve() == folder.resolve() else str(path)
    lines += ["", f"keys of {shown} (override with key=value; unknown keys and wrong types fail):"]
    entries = []
    for dotted, value, parent in _walk(cfg):
        comment = comments.get(dotted)
        if parent:
            if comment:
                entries.append((f"{dotted}:", comment))
            continue
        entries.append((f"{dotted} = {_fmt(value)}", comment))
    width = min(max((len(e) for e, c in entries if c), default=0), 48)
    for entry, comment in entries:
        lines.append(f"  {entry:<{width}}   # {comment}" if comment else f"  {entry}")
    return "\n".join(lines)


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
