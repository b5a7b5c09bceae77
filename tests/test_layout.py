"""The package layout stays tidy: public API = its docstring, one class vocabulary, the core apart from data."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import warpadapt
from warpadapt.data import labels

PACKAGE = Path(warpadapt.__file__).parent


def test_top_level_docstring_lists_exactly_all():
    block = warpadapt.__doc__.split("::", 1)[1].split("\n\n", 2)[1]  # the indented list after "Public names::"
    listed = set()
    for line in block.splitlines():
        names = line.strip().split("  ")[0]  # the names, before the aligned description
        listed |= {n.strip() for n in names.split(",") if n.strip()}
    assert listed == set(warpadapt.__all__)
    for name in warpadapt.__all__:
        assert hasattr(warpadapt, name), name


def _literal_definitions():
    """(file, line, value) of every module-level list / tuple / dict literal of strings or ints in warpadapt/."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                out.append((path.relative_to(PACKAGE).as_posix(), node.lineno, value))
    return out


@pytest.mark.parametrize("name", ["CITYSCAPES_CLASSES", "DETECTION_CLASSES", "BDD_CLASSES", "LABEL_ID_TO_TRAIN_ID",
                                  "CLASS_ALIASES", "GTA_THING_TRAIN_IDS", "CITYSCAPES_THING_TRAIN_IDS"])
def test_each_class_table_is_defined_once(name):
    ref = getattr(labels, name)
    ref_items = set(ref.items()) if isinstance(ref, dict) else set(ref)
    hits = []
    for where, line, value in _literal_definitions():
        items = set(value.items()) if isinstance(value, dict) else set(value) if isinstance(value, (list, tuple)) else None
        if items and len(items) >= 3 and items == ref_items:
            hits.append(f"{where}:{line}")
    assert [h for h in hits if not h.startswith("data/labels.py")] == [], hits
    # and no module assigns the name except labels.py (aliases are imports or `NAME = labels.NAME`)
    for path in PACKAGE.rglob("*.py"):
        if path.name != "labels.py":
            assert not re.search(rf"^{name}\s*(:[^=]*)?=\s*[\[\(\{{]", path.read_text(), re.M), path


def test_vocabulary_is_consistent():
    assert len(labels.CITYSCAPES_CLASSES) == 19 and labels.CITYSCAPES_CLASSES[labels.IGNORE_INDEX % 19] is not None
    assert all(labels.CITYSCAPES_CLASSES[t] == n for n, t in labels.CLASS_TO_TRAIN_ID.items())
    assert set(labels.CLASS_TO_TRAIN_ID) == set(labels.DETECTION_CLASSES)
    # one canonical spelling: every class list uses Cityscapes names; aliases only map onto them
    for names in (labels.DETECTION_CLASSES, labels.BDD_CLASSES):
        assert set(names) <= set(labels.CITYSCAPES_CLASSES)
    assert set(labels.CLASS_ALIASES.values()) <= set(labels.CITYSCAPES_CLASSES)
    assert not set(labels.CLASS_ALIASES) & set(labels.CITYSCAPES_CLASSES)
    assert labels.train_id_of("pedestrian") == labels.train_id_of("person") == 11
    with pytest.raises(ValueError, match="'van' is not a Cityscapes class"):
        labels.train_id_of("van")
    assert labels.guidance_train_ids("cityscapes") == tuple(range(11, 19))
    assert labels.guidance_train_ids("gta") == (6, 7) + tuple(range(11, 19))
    assert set(labels.guidance_train_ids("synthetic")) == set(labels.CLASS_TO_TRAIN_ID.values())
    with pytest.raises(ValueError, match="kind"):
        labels.guidance_train_ids("kitti")


CORE = ("saliency.py", "maps.py", "warp.py", "modules.py", "wrap.py")


def _imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every module a source imports, anywhere in it (lazy imports too).

    ``package`` is the package the source lives in (``"warpadapt"`` for ``warpadapt/warp.py``); for
    ``from X import a`` both ``X`` and ``X.a`` are listed (``a`` may be a submodule).
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _imports_data(source: str, package: str = "warpadapt") -> list[str]:
    return [f"{line}: {mod}" for line, mod in _imported_modules(source, package)
            if mod == "warpadapt.data" or mod.startswith("warpadapt.data.")]


def test_import_rule_catches_every_spelling():
    for bad in ("from .data.labels import IGNORE_INDEX", "from .data import labels", "from . import data",
                "import warpadapt.data.labels", "from warpadapt.data import boxes_from_semantic",
                "from warpadapt import data", "def f():\n    from .data.boxes import boxes_from_semantic"):
        assert _imports_data(bad), bad
    for fine in ("from .maps import resample", "from ._utils import as_size", "import torch", "from . import maps"):
        assert not _imports_data(fine), fine
    assert _imports_data("from ..data import labels", "warpadapt.transforms")
    assert not _imports_data("from .labels import IGNORE_INDEX", "warpadapt.transforms")


@pytest.mark.parametrize("name", CORE)
def test_core_does_not_import_data(name):
    assert _imports_data((PACKAGE / name).read_text()) == [], name


def test_core_and_data_modules_import_in_a_fresh_interpreter():
    # the top level re-exports data.boxes: importing any core module must not hit an import cycle
    code = ("import warpadapt.maps, warpadapt.saliency, warpadapt.warp, warpadapt.modules, warpadapt.wrap, "
            "warpadapt.data.boxes, warpadapt.data.prepared, warpadapt.data.synthetic")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_old_import_paths_are_gone():
    import warpadapt.data
    import warpadapt.data.synthetic
    import warpadapt.saliency
    import warpadapt.viz
    import warpadapt.warp

    assert not (PACKAGE / "data" / "readers.py").exists()
    assert warpadapt.warp.__all__ == ["Warp"]
    for name in ("saliency_to_maps", "interp_map", "invert_map", "resample", "pixel_centers", "FWHM_RANGE"):
        assert not hasattr(warpadapt.warp, name), name
    for name in ("pixel_share", "box_union_area"):
        assert not hasattr(warpadapt.viz, name), name
    for name in ("CITYSCAPES_THING_CLASSES", "boxes_from_semantic", "boxes_from_instance_map"):
        assert not hasattr(warpadapt.saliency, name), name
    for name in ("TRAIN_ID_NAMES", "THING_TRAIN_IDS", "ROAD", "SIDEWALK", "SKY"):
        assert not hasattr(warpadapt.data.synthetic, name), name
    with pytest.raises(AttributeError):
        warpadapt.data.TRAIN_ID_NAMES  # noqa: B018
    assert warpadapt.boxes_from_semantic is warpadapt.data.boxes_from_semantic
    assert warpadapt.boxes_from_instance_map is warpadapt.data.boxes_from_instance_map
    assert warpadapt.data.DETECTION_CLASSES is labels.DETECTION_CLASSES


def test_transforms_take_a_saliency_warp():
    from warpadapt.transforms import AlbuSaliencyWarp, RandomSaliencyWarp

    sw = warpadapt.SaliencyWarp(guidance="geometric", fwhm=7.0)
    assert RandomSaliencyWarp(sw).warper is sw and AlbuSaliencyWarp(sw).warper is sw
    assert RandomSaliencyWarp("geometric", fwhm=7.0).warper.extra_repr() == sw.extra_repr()
    with pytest.raises(ValueError, match="not both"):
        RandomSaliencyWarp(sw, fwhm=3.0)
    with pytest.raises(TypeError, match="warp must be"):
        AlbuSaliencyWarp(3.0)
