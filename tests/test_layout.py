"""The package layout stays tidy: public API = its docstring, one class vocabulary, old import paths."""
import ast
import re
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


def test_old_import_paths_still_work():
    from warpadapt.data import DETECTION_CLASSES, TRAIN_ID_NAMES
    from warpadapt.data.readers import BDD_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_THING_TRAIN_IDS  # noqa: F401
    from warpadapt.data.synthetic import CLASS_TO_TRAIN_ID, IGNORE_INDEX, THING_TRAIN_IDS  # noqa: F401
    from warpadapt.saliency import CITYSCAPES_THING_CLASSES
    from warpadapt.transforms import AlbuSaliencyWarp, RandomSaliencyWarp  # noqa: F401
    from warpadapt.viz import box_union_area, pixel_share  # noqa: F401

    assert TRAIN_ID_NAMES is labels.CITYSCAPES_CLASSES and DETECTION_CLASSES is labels.DETECTION_CLASSES
    assert CITYSCAPES_THING_CLASSES is labels.CITYSCAPES_THING_TRAIN_IDS
    assert THING_TRAIN_IDS is labels.SYNTHETIC_THING_TRAIN_IDS


def test_transforms_take_a_saliency_warp():
    from warpadapt.transforms import AlbuSaliencyWarp, RandomSaliencyWarp

    sw = warpadapt.SaliencyWarp(guidance="geometric", fwhm=7.0)
    assert RandomSaliencyWarp(sw).warper is sw and AlbuSaliencyWarp(sw).warper is sw
    assert RandomSaliencyWarp("geometric", fwhm=7.0).warper.extra_repr() == sw.extra_repr()
    with pytest.raises(ValueError, match="not both"):
        RandomSaliencyWarp(sw, fwhm=3.0)
    with pytest.raises(TypeError, match="warp must be"):
        AlbuSaliencyWarp(3.0)
