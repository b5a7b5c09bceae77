"""Shared recipe core (warpadapt.uda): configs, checkpoints, EMA, sampler, logger, evaluation."""
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from warpadapt.uda.bn import frozen_bn_stats, recompute_bn_stats
from warpadapt.uda.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from warpadapt.uda.config import check_choice, check_range, load_config, merge_overrides
from warpadapt.uda.data import InfiniteSampler, infinite_loader
from warpadapt.uda.dist import DistInfo
from warpadapt.uda.ema import EMATeacher, dacs_keep_rate
from warpadapt.uda.evaluate import evaluate_segmentation
from warpadapt.uda.logger import MetricsLogger, read_jsonl


# ---------------------------------------------------------------- config
@pytest.fixture
def cfg_dir(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "base.yaml").write_text(textwrap.dedent("""\
        train: {iters: 10, lr: 0.01, amp: false, image_size: [64, 128]}
        model: {backbone: resnet18, pretrained_file: null}
        effects: {}
        """))
    (tmp_path / "rec" / "pair.yaml").write_text("_base_: base.yaml\ntrain: {iters: 20}\n")
    return tmp_path


def test_config_base_and_overrides(cfg_dir):
    cfg = load_config(cfg_dir / "rec.py", ["--config", "pair", "train.lr=1", "model.pretrained_file=/w.pth",
                              "train.image_size=[32,64]", "effects.fog.beta=0.1"],
                      default="base", config_dir=cfg_dir)
    assert cfg.train.iters == 20 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.pretrained_file == "/w.pth" and list(cfg.train.image_size) == [32, 64]
    assert cfg.effects.fog.beta == 0.1
    with pytest.raises(Exception):  # read-only and struct
        cfg.train.iters = 3
    with pytest.raises(Exception):
        cfg.train.nope


def test_config_by_path_and_default(cfg_dir):
    assert load_config(cfg_dir / "rec.py", [], default="base", config_dir=cfg_dir).train.iters == 10
    path = str(cfg_dir / "rec" / "pair.yaml")
    assert load_config(cfg_dir / "rec.py", [f"--config={path}"], default="base", config_dir=cfg_dir).train.iters == 20


@pytest.mark.parametrize("override, key", [
    ("train.iterz=5", "train.iterz"), ("trian.iters=5", "trian.iters"),
    ("train.iters=fast", "train.iters"), ("train.iters=1.5", "train.iters"),
    ("train.amp=3", "train.amp"), ("train.image_size=64", "train.image_size"),
    ("train.lr=abc", "train.lr"), ("model.backbone=[1]", "model.backbone"),
])
def test_config_rejects_naming_key(cfg_dir, override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(cfg_dir / "rec.py", [override], default="base", config_dir=cfg_dir)


def test_config_command_line_errors(cfg_dir):
    with pytest.raises(ValueError, match="--config"):
        load_config(cfg_dir / "rec.py", ["--config", "nosuch"], default="base", config_dir=cfg_dir)
    with pytest.raises(ValueError, match="key=value"):
        load_config(cfg_dir / "rec.py", ["--lr", "3"], default="base", config_dir=cfg_dir)
    with pytest.raises(ValueError, match="--config"):
        load_config(cfg_dir / "rec.py", ["--config"], default="base", config_dir=cfg_dir)


def test_check_helpers():
    cfg = OmegaConf.create({"a": {"g": "none", "n": 3, "x": float("nan")}})
    assert check_choice(cfg, "a.g", ("none", "instance")) == "none"
    assert check_range(cfg, "a.n", 1, 5, integer=True) == 3
    with pytest.raises(ValueError, match="a.n"):
        check_range(cfg, "a.n", 4)
    with pytest.raises(ValueError, match="a.x"):
        check_range(cfg, "a.x", 0)
    with pytest.raises(ValueError, match="a.g"):
        check_choice(cfg, "a.g", ("static",))


def test_merge_keeps_input_untouched():
    base = OmegaConf.create({"a": 1})
    merge_overrides(base, ["a=2"])
    assert base.a == 1


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_and_rng(tmp_path):
    torch.manual_seed(0)
    state = {"model": nn.Linear(3, 2).state_dict(), "step": 7, "rng": rng_state()}
    p = save_checkpoint(tmp_path / "last.pt", state)
    a = torch.rand(4)
    back = load_checkpoint(p)
    assert back["step"] == 7 and torch.equal(back["model"]["weight"], state["model"]["weight"])
    set_rng_state(back["rng"])
    assert torch.equal(torch.rand(4), a)
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_checkpoint_failed_write_keeps_previous(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoint_sigkill_mid_write_keeps_previous(tmp_path):
    """A process SIGKILLed while writing big checkpoints never leaves an unreadable last.pt."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import torch
        from warpadapt.uda.checkpoint import save_checkpoint
        big = torch.zeros(6_000_000)
        step = 0
        while True:
            step += 1
            save_checkpoint({str(path)!r}, {{"step": step, "big": big}})
            print(step, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # wait for a few complete checkpoints
            line = proc.stdout.readline()
            assert line, "writer died"
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert load_checkpoint(path)["step"] >= 3


def test_load_checkpoint_corrupt(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(bad)


# ---------------------------------------------------------------- EMA
def test_ema_parameters_and_buffers():
    student = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    teacher = EMATeacher(student)
    assert not teacher.module.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.randn(8, 2))  # moves BN running stats and num_batches_tracked
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    teacher.update(student, 0.9)
    t, s = teacher.module.state_dict(), student.state_dict()
    for k in ("0.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(t[k], 0.9 * before[k] + 0.1 * s[k])
    assert t["1.num_batches_tracked"] == s["1.num_batches_tracked"] == 1
    teacher.train()
    assert not teacher.module.training
    copy_teacher = EMATeacher(student, buffers="copy")
    student(torch.randn(8, 2))
    copy_teacher.update(student, 0.5)
    torch.testing.assert_close(copy_teacher.module[1].running_mean, student[1].running_mean)
    with pytest.raises(ValueError, match="keep_rate"):
        teacher.update(student, 1.5)
    teacher.reset(student)
    torch.testing.assert_close(teacher.module[0].weight, student[0].weight)


def test_dacs_keep_rate():
    assert [dacs_keep_rate(t, 0.99) for t in (0, 1, 3, 1000)] == [0.0, 0.5, 0.75, 0.99]
    with pytest.raises(ValueError, match="alpha"):
        dacs_keep_rate(1, 2.0)


# ---------------------------------------------------------------- sampler
def test_sampler_ranks_disjoint_and_cover_epoch():
    n, bs, world = 12, 3, 2
    streams = [iter(InfiniteSampler(n, bs, seed=5, rank=r, world_size=world)) for r in range(world)]
    epoch = []
    for _ in range(n // (bs * world)):
        for s in streams:
            epoch += next(s)
    assert sorted(epoch) == list(range(n))


def test_sampler_resume_and_seed():
    full = iter(InfiniteSampler(7, 3, seed=2, rank=1, world_size=2))
    seq = [next(full) for _ in range(6)]
    resumed = iter(InfiniteSampler(7, 3, seed=2, rank=1, world_size=2, start_step=4))
    assert [next(resumed), next(resumed)] == seq[4:]
    other = iter(InfiniteSampler(7, 3, seed=3, rank=1, world_size=2))
    assert [next(other) for _ in range(6)] != seq
    with pytest.raises(ValueError, match="rank"):
        InfiniteSampler(7, 3, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        InfiniteSampler(7, 0)


def test_loader_does_not_touch_global_rng():
    ds = torch.utils.data.TensorDataset(torch.arange(10.0))
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    it = infinite_loader(ds, 2, seed=1, info=DistInfo(), start_step=3)
    next(it)
    assert torch.equal(torch.rand(1), a)


# ---------------------------------------------------------------- logger
def test_logger_resume_truncates_and_plots(tmp_path):
    log = MetricsLogger(tmp_path)
    for s in range(1, 6):
        log.log(s, "train", loss=1.0 / s, lr=0.1)
    log.log(5, "eval", mAP50=float("nan"))
    resumed = MetricsLogger(tmp_path, resume_step=3)
    assert [r["step"] for r in resumed.records()] == [1, 2, 3]
    resumed.log(4, "eval", mAP50=0.5)
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1] == {"step": 4, "kind": "eval", "mAP50": 0.5}
    png = resumed.plot()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fresh = MetricsLogger(tmp_path)  # a new run starts a new file
    assert fresh.records() == []
    off = MetricsLogger(tmp_path / "other", enabled=False)
    off.log(1, "train", loss=1.0)
    assert not (tmp_path / "other").exists()


def test_logger_nan_to_null(tmp_path):
    log = MetricsLogger(tmp_path)
    log.log(1, "eval", miou=float("nan"), per_class={"car": float("inf")})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {
        "step": 1, "kind": "eval", "miou": None, "per_class": {"car": None}}


# ---------------------------------------------------------------- evaluation
def test_evaluate_segmentation_upsamples_and_restores_mode():
    class Half(nn.Module):  # logits at half resolution: class 1 on the top half
        def forward(self, x):
            b, _, h, w = x.shape
            out = torch.zeros(b, 2, h // 2, w // 2)
            out[:, 1, : h // 4] = 1
            out[:, 0, h // 4:] = 1
            return out

    sem = torch.zeros(8, 8, dtype=torch.long)
    sem[:4] = 1
    sem[0, 0] = 255
    model = Half().train()
    r = evaluate_segmentation(model, [{"image": torch.zeros(3, 8, 8), "semantic": sem}] * 3, 2,
                              max_images=2)
    assert r["miou"] == 1.0 and model.training
    with pytest.raises(ValueError, match="max_images"):
        evaluate_segmentation(model, [], 2)


def test_pseudo_label_quality_counts_matches_once_per_ground_truth_box():
    from warpadapt.uda.pseudo import pseudo_label_quality
    gt = [{"boxes": torch.tensor([[0., 0., 10., 10.]]), "labels": torch.tensor([3])},
          {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    # image 0: three copies of the right box -> 1 TP, 2 duplicates; image 1: a box where nothing is
    ps = [{"boxes": torch.tensor([[0., 0., 10., 10.]] * 3), "labels": torch.tensor([3, 3, 3]),
           "scores": torch.tensor([0.9, 0.95, 0.85])},
          {"boxes": torch.tensor([[5., 5., 9., 9.]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.99])}]
    q = pseudo_label_quality(ps, gt)
    assert (q["pseudo"], q["gt"], q["tp"], q["images"]) == (4, 1, 1, 2)
    assert q["precision"] == 0.25 and q["recall"] == 1.0 and q["pseudo_per_image"] == 2.0
    shifted = [{**ps[0], "boxes": ps[0]["boxes"] + 4.0}, ps[1]]  # IoU 36 / 164 = 0.22: no match at 0.5
    assert pseudo_label_quality(shifted, gt)["tp"] == 0 and pseudo_label_quality(shifted, gt, iou=0.2)["tp"] == 1
    empty = pseudo_label_quality([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}], gt[:1])
    assert empty["tp"] == 0 and empty["recall"] == 0.0 and empty["precision"] != empty["precision"]  # NaN
    with pytest.raises(ValueError, match="pseudo, targets"):
        pseudo_label_quality(ps, gt[:1])
    with pytest.raises(ValueError, match="iou"):
        pseudo_label_quality(ps, gt, iou=0.0)


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2, momentum=None))


def test_frozen_bn_stats_keeps_running_stats_not_normalisation_or_gradients():
    net, x = _bn_net().train(), torch.randn(4, 3, 8, 8) * 3 + 1
    ref = copy.deepcopy(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with frozen_bn_stats(net):
        out = net(x)
        out.square().mean().backward()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats and counters untouched
    ref_out = ref(x)
    ref_out.square().mean().backward()
    assert torch.allclose(out, ref_out)  # still normalised with the batch's statistics
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad)
    assert [m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)] == [0.1, None]  # restored
    net(x)  # outside the block the statistics move again
    assert not torch.equal(net[1].running_mean, before["1.running_mean"])
    assert int(net[1].num_batches_tracked) == 1


def test_frozen_bn_stats_restores_after_an_error():
    net = _bn_net().train()
    with pytest.raises(RuntimeError):
        with frozen_bn_stats(net):
            net(torch.randn(2, 5, 8, 8))  # wrong channel count
    assert net[1].momentum == 0.1 and net[4].momentum is None


def test_recompute_bn_stats_is_the_equal_weight_average_and_restores_mode():
    net = _bn_net().eval()
    data = [torch.randn(3, 3, 8, 8) + i for i in range(3)]
    assert recompute_bn_stats(net, data) == 3
    assert not net.training and net[1].momentum == 0.1 and net[4].momentum is None
    feats = [net[0](x) for x in data]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(net[1].running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, expected_var, atol=1e-4)
    # a custom forward (dict batches) and the error for no batches
    assert recompute_bn_stats(net, [{"x": x} for x in data], forward=lambda m, b: m(b["x"])) == 3
    assert torch.allclose(net[1].running_mean, expected_mean, atol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        recompute_bn_stats(net, [])
