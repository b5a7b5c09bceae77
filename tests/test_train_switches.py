"""The training-regime switches the recipes share: lr scaling per global batch, model.norm, the speed
switches (channels_last, torch.compile), TensorBoard logging, and the weights digest the DDP tests use."""
from __future__ import annotations

import pytest
import timm
import torch
from omegaconf import OmegaConf

from warpadapt import wrap
from warpadapt.uda.dist import DistInfo, weights_digest
from warpadapt.uda.ema import EMATeacher
from warpadapt.uda.logger import MetricsLogger
from warpadapt.uda.run import check_common, compile_backbone, scaled_lr, set_norm, throughput_switches


def test_scaled_lr_follows_the_global_batch():
    cfg = OmegaConf.create({"train": {"lr": 1e-3, "batch_size": 4, "lr_base_size": 8, "lr_base_scale": "sqrt"}})
    assert scaled_lr(cfg, DistInfo(world_size=2)) == pytest.approx(1e-3)  # 4 x 2 = the base batch
    assert scaled_lr(cfg, DistInfo(world_size=8)) == pytest.approx(2e-3)  # 32 / 8 = 4, sqrt 2
    cfg.train.lr_base_scale = "linear"
    assert scaled_lr(cfg, DistInfo(world_size=8)) == pytest.approx(4e-3)
    assert scaled_lr(cfg, DistInfo(), batch_size=2) == pytest.approx(2.5e-4)


def test_check_common_rejects_bad_switches():
    from warpadapt.uda.config import load_config
    from pathlib import Path
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mic.py"
    for bad, key in (("train.lr_base_size=0", "train.lr_base_size"), ("train.lr_base_scale=cubic", "train.lr_base_scale"),
                     ("train.matmul_precision=low", "train.matmul_precision")):
        cfg = load_config(recipe, [bad], default="synthetic_clear2fog")
        with pytest.raises(ValueError, match=key):
            check_common(cfg)


def test_sync_norm_is_refused_on_a_cpu_torchrun_and_converts_under_cuda_rule():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    cfg = OmegaConf.create({"model": {"norm": "sync"}})
    with pytest.raises(ValueError, match="model.norm: sync needs CUDA"):
        set_norm(net, cfg, DistInfo(rank=0, world_size=2, enabled=True))
    assert isinstance(set_norm(net, cfg, DistInfo())[1], torch.nn.BatchNorm2d)  # one process: plain BatchNorm
    frozen = set_norm(net, OmegaConf.create({"model": {"norm": "frozen"}}), DistInfo())
    assert type(frozen[1]).__name__ == "FrozenBatchNorm2d"


def test_channels_last_and_compile_keep_the_numbers():
    torch.manual_seed(0)
    net = wrap(timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3))).eval()
    x = torch.rand(1, 3, 64, 96)
    ref = [f.clone() for f in net(x)]
    fast = throughput_switches(OmegaConf.create({"train": {"channels_last": True}}), net)
    assert fast.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    teacher = EMATeacher(fast)  # before compiling: a copy of a compiled module would run the student's forward
    compile_backbone(fast, backend="eager")
    out = fast(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out, ref))
    assert list(fast.state_dict()) == list(teacher.module.state_dict())  # names unchanged by compiling
    with pytest.raises(ValueError, match="make the teacher before compiling"):
        EMATeacher(fast)
    with pytest.raises(TypeError, match="WarpedBackbone"):
        compile_backbone(torch.nn.Linear(2, 2))


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLogger(tmp_path, tensorboard=True)
    for step, loss in ((10, 0.5), (20, 0.25)):
        log.log(step, "train", loss=torch.tensor(loss), lr=1e-3, flag=True)
    log.log(20, "eval", target_miou=0.4)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 0.5), (20, 0.25)]
    assert acc.Scalars("eval/target_miou")[0].value == pytest.approx(0.4)
    assert "train/flag" not in acc.Tags()["scalars"]  # booleans are not curves
    assert [r["step"] for r in log.records()] == [10, 20, 20]  # metrics.jsonl beside it


def test_weights_digest_sees_one_bit():
    a = torch.nn.Linear(3, 3)
    b = torch.nn.Linear(3, 3)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bias.view(torch.int32)[0] ^= 1  # the lowest mantissa bit of one number
    assert weights_digest(a) != weights_digest(b)
