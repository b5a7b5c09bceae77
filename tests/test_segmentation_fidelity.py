"""recipes/mic.py against DAFormer / MIC's code: each formula on a hand-made case.

The code each test pins (lhoyer/DAFormer, lhoyer/MIC ``seg/``):
- EMA teacher: ``mmseg/models/uda/dacs.py`` (``_update_ema``, the pseudo-label forward in train mode
  with ``_DropoutNd`` / ``DropPath`` switched off).
- Masking: ``mmseg/models/utils/masking_transforms.py`` (``BlockMaskGenerator``) and
  ``mmseg/models/uda/masking_consistency_module.py`` (the mask modes).
- ClassMix and the strong augmentation: ``mmseg/models/utils/dacs_transforms.py``.
- Rare-class sampling: ``mmseg/datasets/uda_dataset.py``.
- Losses: ``mmseg/models/losses/cross_entropy_loss.py`` (mean over all pixels).
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from warpadapt.models import Segmenter
from warpadapt.uda.ema import EMATeacher, dacs_keep_rate
from warpadapt.uda.mix import _dacs_kernel, classmix_masks, mask_images, mic_batch, patch_mask, strong_augment
from warpadapt.uda.rcs import RareClassSampler, class_pixel_counts, rare_class_loader, rcs_class_probs

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mic_recipe_fidelity", ROOT / "recipes" / "mic.py")
mic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mic)

TINY = ["data.image_size=[48,96]", "data.train_images=4", "train.batch_size=2", "model.embed_dim=16",
        "eval.max_images=2", "eval.batch_size=2", "eval.pictures=0", "train.warmup=1", "threads=1",
        "train.log_every=1", "eval.every=100", "train.schedule_iters=6"]


# ------------------------------------------------------------------------------------------- EMA teacher
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Dropout(0.5), DropPath(0.5))


def test_train_mode_teacher_normalises_with_the_batch_statistics():
    student = _net()
    teacher = EMATeacher(student, buffers="none", mode="train")
    x = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(4, 1, 1, 1)
    with torch.no_grad():
        out = teacher(x)
        z = student[0](x)  # the conv's output, then BatchNorm with the batch's mean and biased variance
        mean, var = z.mean((0, 2, 3), keepdim=True), z.var((0, 2, 3), unbiased=False, keepdim=True)
        bn = student[1]
        expected = (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, 2, 1, 1) + bn.bias.view(1, 2, 1, 1)
    torch.testing.assert_close(out, expected)  # no dropout, no drop-path: exactly the batch-normalised value
    # the teacher's own running statistics follow its forwards (momentum 0.1), the student's do not move
    torch.testing.assert_close(teacher.module[1].running_mean, 0.1 * mean.flatten())
    assert torch.equal(teacher(x), teacher(x))  # deterministic: dropout and drop-path are off
    eval_out = EMATeacher(student)(x)  # eval mode (2PCNet's default, this recipe's uda.teacher_mode=eval)
    assert not torch.allclose(eval_out, out)
    torch.testing.assert_close(eval_out, z / math.sqrt(1 + bn.eps) * bn.weight.view(1, 2, 1, 1) + bn.bias.view(1, 2, 1, 1))
    assert int(teacher.module[1].num_batches_tracked) == 3 and torch.equal(bn.running_mean, torch.zeros(2))
    assert teacher.module.training and not teacher.module[2].training and not teacher.module[3].training


def test_train_mode_survives_an_evaluation_and_ema_leaves_buffers_alone():
    student = _net()
    teacher = EMATeacher(student, buffers="none", mode="train")
    teacher.module.eval()
    teacher.module.train()  # what evaluate_segmentation does to teacher.module (eval.model=teacher): dropout back on
    x = torch.rand(6, 1, 3, 3)
    assert torch.equal(teacher(x), teacher(x)) and not teacher.module[2].training  # every call switches it off again
    teacher.train(False)  # the wrapper's mode is fixed
    assert teacher.module.training
    own = {k: v.clone() for k, v in teacher.module.named_buffers()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.rand(8, 1, 2, 2) * 5)  # the student's running statistics move
    before = [p.clone() for p in teacher.module.parameters()]
    teacher.update(student, 0.75)
    for t_p, b_p, s_p in zip(teacher.module.parameters(), before, student.parameters()):
        torch.testing.assert_close(t_p, 0.75 * b_p + 0.25 * s_p)  # the parameters: EMA
    for k, v in teacher.module.named_buffers():
        assert torch.equal(v, own[k]), k  # the buffers: untouched (DAFormer's EMA covers parameters only)


def test_eval_mode_teacher_is_unchanged_for_2pcnet():
    student = _net()
    teacher = EMATeacher(student)  # recipes/twopcnet.py's call
    assert teacher.mode == "eval" and teacher.buffers_mode == "ema" and not teacher.module.training
    student.train()(torch.rand(8, 1, 2, 2) * 5)
    teacher.update(student, 0.5)
    torch.testing.assert_close(teacher.module[1].running_mean, 0.5 * student[1].running_mean)
    with pytest.raises(ValueError, match="mode"):
        EMATeacher(student, mode="training")
    with pytest.raises(ValueError, match="buffers"):
        EMATeacher(student, buffers="some")


def test_recipe_uses_daformers_keep_rate_and_teacher_mode(tmp_path, monkeypatch):
    """DAFormer updates the teacher at the start of iteration t >= 1 with alpha_t = min(1 - 1/(t+1), alpha):
    after step s (0-based) that is t = s + 1, so the first update keeps half of the initial weights."""
    seen, update = [], EMATeacher.update

    def spy(self, student, keep_rate):
        seen.append((keep_rate, self.mode, self.buffers_mode, self.module.training))
        return update(self, student, keep_rate)

    monkeypatch.setattr(EMATeacher, "update", spy)
    mic.main([f"out_dir={tmp_path / 'a'}", "train.iters=3", "uda.ema_keep_rate=0.6", *TINY])
    assert seen == [(0.5, "train", "none", True), (0.6, "train", "none", True), (0.6, "train", "none", True)]
    assert dacs_keep_rate(1, 0.999) == 0.5
    seen.clear()
    mic.main([f"out_dir={tmp_path / 'b'}", "train.iters=1", "uda.teacher_mode=eval", *TINY])
    assert seen == [(0.5, "eval", "ema", False)]


# ------------------------------------------------------------------------------------------------ MIC
def test_masked_pixels_are_zero_after_the_segmenters_normalisation():
    seg = Segmenter("resnet18", num_classes=3, embed_dim=8)
    x = torch.rand(2, 3, 16, 24)
    keep = patch_mask(2, (16, 24), 4, 0.7, torch.Generator().manual_seed(0))
    normalised = seg.normalize(mask_images(x, keep, seg.mean))
    masked = (keep == 0).expand_as(x)
    assert masked.any() and (~masked).any()
    assert torch.equal(normalised[masked], torch.zeros(int(masked.sum())))  # exactly the mean: 0
    assert torch.equal(normalised[~masked], seg.normalize(x)[~masked])
    # the old way (black pixels) would have been about -2 sigma
    assert seg.normalize(torch.zeros(1, 3, 1, 1)).flatten().tolist() == pytest.approx([-2.118, -2.036, -1.804], abs=1e-3)


def test_patch_mask_is_mics_block_grid():
    """BlockMaskGenerator: a round(H/p) x round(W/p) grid of draws kept where > ratio, nearest-upsampled."""
    keep = patch_mask(3, (10, 12), 4, 0.5, torch.Generator().manual_seed(0))  # round(2.5) = 2 rows, 3 columns
    assert keep.shape == (3, 1, 10, 12)
    for rows in (slice(0, 5), slice(5, 10)):  # nearest from 2 rows to 10: 5 pixels each
        for cols in (slice(0, 4), slice(4, 8), slice(8, 12)):
            block = keep[:, :, rows, cols]
            assert torch.equal(block, block[:, :, :1, :1].expand_as(block))
    assert torch.equal(patch_mask(2, (8, 8), 4, 0.0, torch.Generator()), torch.ones(2, 1, 8, 8))  # draws > 0
    assert torch.equal(patch_mask(2, (8, 8), 4, 1.0, torch.Generator()), torch.zeros(2, 1, 8, 8))
    g = torch.Generator().manual_seed(3)
    draws = torch.rand(1, 1, 2, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(patch_mask(1, (8, 12), 4, 0.3, g)[0, 0, ::4, ::4], (draws > 0.3).float()[0, 0])


def _batch(b):
    src = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 2, 2)  # source image i: value i
    tgt = 10 + src  # target image i: value 10 + i
    labels = torch.arange(b).view(b, 1, 1).expand(b, 2, 2)  # source labels i
    pseudo = 10 + labels
    weight = torch.full((b, 2, 2), 0.25)
    return src, labels, tgt, pseudo, weight


@pytest.mark.parametrize("mode, images, labels, weights", [
    ("separate", [0, 10], [0, 10], [1.0, 0.25]),  # MIC: image 0 of the source (weight 1) + image 0 of the target (q)
    ("separateaug", [0, 10], [0, 10], [1.0, 0.25]),
    ("separatesrc", [0, 1], [0, 1], [1.0, 1.0]),  # MIC: seg_weight None = weight 1
    ("separatesrcaug", [0, 1], [0, 1], [1.0, 1.0]),
    ("separatetrg", [10, 11], [10, 11], [0.25, 0.25]),
    ("separatetrgaug", [10, 11], [10, 11], [0.25, 0.25]),
])
def test_mask_modes_pick_mics_images_labels_and_weights(mode, images, labels, weights):
    x, y, w = mic_batch(mode, *_batch(2))
    assert x[:, 0, 0, 0].tolist() == images and y[:, 0, 0].tolist() == labels and w[:, 0, 0].tolist() == weights
    assert x.shape == (2, 3, 2, 2) and y.shape == w.shape == (2, 2, 2)


def test_separate_mode_for_other_batch_sizes():
    """MIC asserts a batch of 2; this takes the first ceil(B / 2) images of each domain."""
    x, y, w = mic_batch("separate", *_batch(4))
    assert x[:, 0, 0, 0].tolist() == [0, 1, 10, 11] and w[:, 0, 0].tolist() == [1.0, 1.0, 0.25, 0.25]
    x, y, w = mic_batch("separate", *_batch(1))  # the authors' fork (assert removed) at batch 1: one of each
    assert x[:, 0, 0, 0].tolist() == [0, 10] and y[:, 0, 0].tolist() == [0, 10]
    with pytest.raises(ValueError, match="mode"):
        mic_batch("mixed", *_batch(2))


# ------------------------------------------------------------------------------------------- ClassMix
def test_classmix_draws_half_of_the_labels_ignore_included():
    """DACS: classes = unique(labels) (255 included), ceil(n / 2) drawn, masks cover whole classes."""
    lab = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])  # n = 4 labels -> 2 drawn
    odd = torch.tensor([[[0, 0, 1, 1], [1, 1, 255, 255]]])  # n = 3 -> int((3 + 1) / 2) = 2 drawn
    drew_ignore = 0
    for seed in range(40):
        for labels in (lab, odd):
            m = classmix_masks(labels, torch.Generator().manual_seed(seed), num_classes=19)
            taken = torch.unique(labels[m])
            assert len(taken) == 2
            assert torch.equal(m, torch.isin(labels, taken))  # whole classes
        drew_ignore += int(255 in torch.unique(lab[classmix_masks(lab, torch.Generator().manual_seed(seed), 19)]).tolist())
    assert 5 < drew_ignore < 35  # the ignore label is drawn about half of the time (2 of 4)


def test_classmix_pool_is_the_whole_batch():
    """DACS's get_class_masks takes unique() over the batch: an image may draw classes it does not hold."""
    labels = torch.stack([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)])  # pool {0, 1}
    outcomes = set()
    for seed in range(30):
        m = classmix_masks(labels, torch.Generator().manual_seed(seed), num_classes=19)
        assert all(bool(mi.all()) or not bool(mi.any()) for mi in m)  # one class of the two, whole
        outcomes.add(tuple(bool(mi.any()) for mi in m))
    assert outcomes == {(True, True), (True, False), (False, True), (False, False)}
    per_image = classmix_masks(labels, torch.Generator().manual_seed(0), 19, pool="image")
    assert bool(per_image.all())  # the image's own pool: its only class, always


# --------------------------------------------------------------------------------- strong augmentation
def test_blur_kernel_follows_dacs():
    """DACS: k = floor(ceil(0.1 n) - 0.5 + ceil(0.1 n) % 2), from the height and the width separately."""
    def dacs(n):
        c = math.ceil(0.1 * n)
        return int(math.floor(c - 0.5 + c % 2))

    for n in (32, 48, 90, 96, 100, 128, 256, 512, 540, 1024):
        assert _dacs_kernel(n) == dacs(n), n
    assert (_dacs_kernel(128), _dacs_kernel(256), _dacs_kernel(512)) == (13, 25, 51)


def test_augmentation_switches_are_drawn_once_per_batch():
    x = torch.rand(4, 3, 16, 16)
    mixed = {False: 0, True: 0}
    for per_image in (False, True):
        for seed in range(20):
            y = strong_augment(x, torch.Generator().manual_seed(seed), jitter_p=0.5, blur_p=0.0, per_image=per_image)
            changed = [not torch.equal(a, b) for a, b in zip(y, x)]
            mixed[per_image] += len(set(changed)) > 1
    assert mixed[False] == 0 and mixed[True] > 0  # DACS: the whole batch is jittered, or none of it


# -------------------------------------------------------------------------------------------- losses
def test_cross_entropy_is_the_mean_over_all_pixels():
    """DAFormer's cross_entropy: reduction 'none', then the mean over every pixel (ignored pixels add 0)."""
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2 classes, 1, 2 pixels)
    labels = torch.tensor([[[0, 255]]])
    expected = -F.log_softmax(torch.tensor([2.0, 0.0]), 0)[0] / 2  # one valid pixel of two
    torch.testing.assert_close(mic.weighted_ce(logits, labels, 1.0), expected)
    torch.testing.assert_close(mic.weighted_ce(logits, labels, torch.full((1, 1, 2), 0.5)), expected / 2)


# ------------------------------------------------------------------------------------- rare classes
def test_rcs_class_probabilities():
    """P(c) = softmax((1 - f_c) / T) over the classes with pixels; DAFormer's T = 0.01."""
    counts = torch.tensor([[60, 30, 0, 0], [20, 10, 0, 80]])  # totals 80, 40, 0, 80 of 200
    f = torch.tensor([0.4, 0.2, 0.4])
    for temperature in (1.0, 0.1, 0.01):
        e = torch.exp((1 - f) / temperature)
        expected = torch.stack([e[0], e[1], torch.tensor(0.0), e[2]]) / e.sum()
        torch.testing.assert_close(rcs_class_probs(counts, temperature), expected.double())
    assert rcs_class_probs(counts, 0.01)[1] > 0.99  # the rarest class nearly always at T = 0.01
    assert class_pixel_counts([torch.tensor([[0, 3, 255], [3, 3, 19]])], 4).tolist() == [[1, 0, 0, 3]]
    with pytest.raises(ValueError, match="temperature"):
        rcs_class_probs(counts, 0.0)


def test_rare_class_sampler_is_a_function_of_seed_step_rank():
    counts = torch.tensor([[50, 0, 5], [50, 0, 0], [40, 10, 0], [50, 0, 9]])

    def batches(seed=4, rank=0, start=0, n=5):
        it = iter(RareClassSampler(counts, 8, seed=seed, rank=rank, start_step=start, temperature=10.0))
        return [next(it) for _ in range(n)]

    first = batches()
    assert first == batches() and batches(start=3, n=2) == first[3:]  # resume: the same batches
    assert first == [RareClassSampler(counts, 8, seed=4, temperature=10.0).batch(s) for s in range(5)]
    assert batches(rank=1) != first and batches(seed=5) != first
    assert len({i for b in first for i in b}) == 4  # T = 10: nearly uniform over the classes, every image drawn


def test_rare_class_images_are_drawn_more_often():
    counts = torch.zeros(10, 3, dtype=torch.long)
    counts[:, 0] = 1000  # class 0 everywhere
    counts[9, 1] = 5  # class 1: a few pixels of image 9
    counts[8, 2], counts[7, 2] = 40, 2  # class 2: image 8 above min_pixels, image 7 below
    sampler = RareClassSampler(counts, 50, seed=0, temperature=0.01, min_pixels=3)
    drawn = torch.tensor([i for s in range(20) for i in sampler.batch(s)])
    share = torch.bincount(drawn, minlength=10).float() / len(drawn)
    assert share[9] > 0.3 and share[8] > 0.3 and share[7] == 0  # rare classes' images; image 7 below min_pixels
    assert share[:7].sum() < 0.05  # uniform sampling would give each image 0.1
    fallback = RareClassSampler(counts, 20, seed=0, temperature=0.01, min_pixels=10)  # class 1: no image > 10 px
    assert 9 in fallback.batch(0)  # then every image holding it
    batch = next(rare_class_loader(torch.utils.data.TensorDataset(torch.arange(10)), 4, counts, seed=1))
    assert batch[0].shape == (4,)


# ------------------------------------------------------------------------------------ optimiser, schedule
def test_adamw_groups_follow_daformers_paramwise_cfg():
    """DAFormer: custom_keys head lr_mult 10, norm decay_mult 0 (MiT backbones)."""
    from omegaconf import OmegaConf

    model = nn.Module()
    model.backbone = nn.ModuleDict({"proj": nn.Linear(2, 2), "norm1": nn.LayerNorm(2)})
    model.head = nn.Linear(2, 3)
    t = OmegaConf.create(dict(lr=1e-3, head_lr_mult=10.0, weight_decay=0.01, norm_decay_mult=0.0))
    groups = [(len(g["params"]), g["lr"], g["weight_decay"]) for g in mic.param_groups(model, t, t.lr)]
    assert groups == [(2, 1e-3, 0.01), (2, 1e-3, 0.0), (2, pytest.approx(1e-2), 0.01)]


def test_warmup_is_mmcvs_linear_warmup():
    """mmcv: lr = poly(step) * (1 - (1 - step / warmup) * (1 - 1e-6)) for step < warmup."""
    from omegaconf import OmegaConf

    t = OmegaConf.create(dict(warmup=4, schedule_iters=100, poly_power=1.0))
    for step, warm in ((0, 1e-6), (1, 0.25 + 0.75e-6), (2, 0.5 + 0.5e-6), (4, 1.0), (50, 1.0)):
        assert mic.lr_factor(step, t) == pytest.approx(warm * (1 - step / 100), rel=1e-12), step
    assert mic.lr_factor(0, OmegaConf.create(dict(warmup=0, schedule_iters=10, poly_power=1.0))) == 1.0
