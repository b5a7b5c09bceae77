"""warpadapt.data.prepared: resized, uint8-quantised segmentation items with their guidance boxes."""
import pytest
import torch

from warpadapt.data import (
    Prepared, SyntheticDrivingDataset, boxes_from_instance_map, boxes_from_semantic, collate_segmentation,
    get_pair, guidance_train_ids,
)
from warpadapt.data.labels import IGNORE_INDEX

H, W = 64, 128
THINGS = guidance_train_ids("synthetic")


@pytest.fixture(scope="module")
def raw():
    return SyntheticDrivingDataset(get_pair("synthetic_clear2fog"), "source", "train", size=(H, W), length=3)


class _Without(torch.utils.data.Dataset):
    """``dataset`` with some keys dropped from every item."""

    def __init__(self, dataset, drop):
        self.dataset, self.drop = dataset, set(drop)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return {k: v for k, v in self.dataset[i].items() if k not in self.drop}


def _check_item(item, size):
    image, sem, boxes = item["image"], item["semantic"], item["boxes"]
    assert image.shape == (3, *size) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    torch.testing.assert_close(image * 255, (image * 255).round(), rtol=0, atol=1e-4)  # uint8 levels
    assert sem.shape == size and sem.dtype == torch.int64
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4


def test_same_size_items_and_instance_boxes(raw):
    ds = Prepared(raw, (H, W), THINGS, cache=False)
    assert len(ds) == len(raw)
    for i in range(2):
        item, r = ds[i], raw[i]
        _check_item(item, (H, W))
        assert torch.equal(item["image"], (r["image"].clamp(0, 1) * 255).round().to(torch.uint8).float() / 255)
        assert torch.equal(item["semantic"], r["semantic"])
        want, _ = boxes_from_instance_map(r["instance"], 1000, THINGS)
        assert len(want) > 0 and torch.equal(item["boxes"], want)
    assert ds.cache is None


def test_resize_keeps_labels_nearest_and_boxes_of_the_resized_maps(raw):
    size = (H // 2, W // 2)
    ds = Prepared(raw, size, THINGS, cache=False)
    item, r = ds[0], raw[0]
    _check_item(item, size)
    # nearest neighbour at an exact factor 2 reads every second pixel: label values are never blended
    assert torch.equal(item["semantic"], r["semantic"][::2, ::2])
    assert set(item["semantic"].unique().tolist()) <= set(r["semantic"].unique().tolist())
    want, _ = boxes_from_instance_map(r["instance"][::2, ::2], 1000, THINGS)
    assert torch.equal(item["boxes"], want)
    # a size that is not a multiple: still only values of the label set
    odd = Prepared(raw, (37, 53), THINGS, cache=False)[0]
    _check_item(odd, (37, 53))
    assert set(odd["semantic"].unique().tolist()) <= set(r["semantic"].unique().tolist())
    assert odd["boxes"].numel() == 0 or (odd["boxes"][:, 2].max() <= 53 and odd["boxes"][:, 3].max() <= 37)


def test_semantic_boxes_without_instance_map(raw):
    ds = Prepared(_Without(raw, ["instance"]), (48, 96), THINGS, cache=False)
    item = ds[1]
    _check_item(item, (48, 96))
    want, _ = boxes_from_semantic(item["semantic"], THINGS)
    assert torch.equal(item["boxes"], want)
    # no label maps at all: every pixel ignored, no boxes
    bare = Prepared(_Without(raw, ["instance", "semantic"]), (H, W), THINGS, cache=False)[0]
    assert bool((bare["semantic"] == IGNORE_INDEX).all()) and bare["boxes"].shape == (0, 4)


def test_cache_returns_equal_items(raw):
    cached = Prepared(raw, (H, W), THINGS, cache=True)
    fresh = Prepared(raw, (H, W), THINGS, cache=False)
    a, b, c = cached[2], cached[2], fresh[2]
    assert list(cached.cache) == [2] and cached.cache[2]["image"].dtype == torch.uint8
    assert cached.cache[2]["semantic"].dtype == torch.uint8
    for k in ("image", "semantic", "boxes"):
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), k
    a["image"].zero_()  # callers get fresh tensors: the cache is not modified through an item
    assert torch.equal(cached[2]["image"], c["image"])


def test_collate_segmentation(raw):
    ds = Prepared(raw, (H, W), THINGS, cache=False)
    items = [ds[0], ds[1]]
    batch = collate_segmentation(items)
    assert set(batch) == {"images", "semantic", "boxes"}
    assert batch["images"].shape == (2, 3, H, W) and batch["images"].dtype == torch.float32
    assert batch["semantic"].shape == (2, H, W) and batch["semantic"].dtype == torch.int64
    assert len(batch["boxes"]) == 2 and all(torch.equal(b, it["boxes"]) for b, it in zip(batch["boxes"], items))
