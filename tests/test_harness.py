"""The one way in: the warp hand-over (wrap / Segmenter / Detector take the same thing), the wrapped
backbone's neck and its one rule for warping, any timm family from a name, and the shared run harness
(RunState's world-size policy, the static prior, start_run's run-folder decision)."""
import json
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

import warpadapt
from warpadapt.models import Detector, Segmenter, SimplePyramid, TimmFPN
from warpadapt.models.backbone import create_backbone, timm_kwargs_for
from warpadapt.modules import SaliencyWarp, as_saliency_warp
from warpadapt.uda.build import warp_from_config
from warpadapt.uda.dist import DistInfo
from warpadapt.uda.run import RunState, check_common, start_run, static_prior

BOX = [torch.tensor([[8.0, 8.0, 24.0, 20.0]])]


def test_one_warp_hand_over_for_wrap_segmenter_detector():
    sw = SaliencyWarp("geometric", fwhm=6.0)
    feats = timm.create_model("resnet18", features_only=True, out_indices=(2, 3))
    assert warpadapt.wrap(feats, sw).warper is sw
    assert Segmenter("resnet18", 3, embed_dim=8, warp=sw).backbone.warper is sw
    det = Detector("resnet18", 3, out_indices=(2, 3), warp=sw, fpn_channels=8, representation_size=16)
    assert det.backbone.body.warper is sw
    # a name, a mapping and keywords give equal modules; the ranges are checked in SaliencyWarp only
    by_map = Segmenter("resnet18", 3, embed_dim=8, warp={"guidance": "geometric", "fwhm": 6.0}).backbone.warper
    assert by_map.extra_repr() == sw.extra_repr() == warpadapt.wrap(feats, "geometric", fwhm=6.0).warper.extra_repr()
    with pytest.raises(ValueError, match="fwhm"):
        Detector("resnet18", 3, warp={"fwhm": -1.0})
    with pytest.raises(ValueError, match="given twice"):
        as_saliency_warp({"fwhm": 3.0}, fwhm=4.0)
    with pytest.raises(TypeError, match="mapping"):
        as_saliency_warp(3.0)


def test_warp_from_config_names_the_key_and_ignores_recipe_keys():
    cfg = OmegaConf.create({"warp": {"guidance": "instance", "fwhm": 8.0, "grid_size": [21, 31], "stage": "burn_in",
                                     "prior_images": 5, "classes": "synthetic"}})
    sw = warp_from_config(cfg)
    assert (sw.fwhm, sw.grid_size) == (8.0, (21, 31))
    for key, bad in (("fwhm", 0.0), ("bandwidth_scale", -2.0), ("guidance", "fancy")):
        with pytest.raises(ValueError, match=rf"^config: warp\.{key}: "):
            warp_from_config(OmegaConf.merge(cfg, {"warp": {key: bad}}))


def test_neck_runs_between_warp_and_unwarp_and_keeps_its_keys():
    torch.manual_seed(0)
    vit = create_backbone("vit_tiny_patch16_224", depth=3, embed_dim=48, num_heads=2)
    body = warpadapt.wrap(vit, neck=SimplePyramid(48))
    x = torch.rand(1, 3, 32, 64)
    plain = body.eval()(x)
    assert [tuple(f.shape[-2:]) for f in plain] == [(8, 16), (4, 8), (2, 4), (1, 2)]
    assert all(a.equal(b) for a, b in zip(plain, body.neck(vit(x))))  # eval: neck(model(x)), nothing else
    warped, w = body.train()(x, BOX, return_warp=True)
    assert w is not None and [f.shape for f in warped] == [f.shape for f in plain]
    # the same as warping by hand, running model + neck, then unwarping every level at its resolution
    xw, w2 = body.warper(x, BOX)
    by_hand = body.unwarp(body.neck(vit(xw)), w2)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(warped, by_hand))
    state = body.state_dict()
    assert set(state) == {f"neck.{k}" for k in body.neck.state_dict()} | set(vit.state_dict())  # the bare keys + neck
    other = warpadapt.wrap(create_backbone("vit_tiny_patch16_224", depth=3, embed_dim=48, num_heads=2), neck=SimplePyramid(48))
    assert other.load_state_dict(state).missing_keys == []
    assert all(torch.equal(a, b) for a, b in zip(other.eval()(x), body.eval()(x)))
    fpn = TimmFPN(body, 16)
    assert fpn.strides == [4, 8, 16, 32, 64]


def test_the_one_rule_for_warping():
    body = warpadapt.wrap(create_backbone("resnet18", out_indices=(2,)), "instance")
    x = torch.rand(1, 3, 32, 32)
    assert body.train().warps(BOX) and not body.warps(None) and not body.warps(BOX, warp=False)
    assert not body.eval().warps(BOX)  # evaluation never warps
    with pytest.raises(ValueError, match="evaluation never warps"):
        body(x, BOX, warp=True)
    geo = warpadapt.wrap(create_backbone("resnet18", out_indices=(2,)), "geometric").train()
    assert geo(x, warp=True, return_warp=True)[1] is not None and geo(x, return_warp=True)[1] is None
    none = warpadapt.wrap(create_backbone("resnet18", out_indices=(2,)), "none").train()
    assert not none.warps(BOX, warp=True)


def test_levels_and_sizes_chosen_per_family_without_extra_random_numbers():
    assert create_backbone("resnet18").feature_info.reduction() == [4, 8, 16, 32]  # the stride-2 stem dropped
    assert create_backbone("convnext_atto").feature_info.reduction() == [4, 8, 16, 32]
    assert timm_kwargs_for("efficientformerv2_s0", (64, 128)) == {"img_size": (64, 128)}
    assert timm_kwargs_for("pvt_v2_b0", (64, 128)) == {}
    # the probe runs on the meta device: a seeded build equals timm's own, and draws nothing more
    torch.manual_seed(3)
    ref = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4))
    after_ref = torch.rand(1)
    torch.manual_seed(3)
    ours = create_backbone("resnet18")
    assert torch.equal(torch.rand(1), after_ref)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values()))
    with pytest.raises(ValueError, match="stride >= 64"):
        create_backbone("resnet18", min_reduction=64)


def _state(tmp_path, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed + 5)
    cfg = OmegaConf.create({"train": {"seed": seed}})
    return RunState(tmp_path / "last.pt", DistInfo(), cfg, generators={"mix": gen}, model=net, optimizer=opt), net, opt, gen


def test_run_state_round_trip_restores_everything(tmp_path):
    state, net, opt, gen = _state(tmp_path)
    net(torch.rand(4, 3)).sum().backward()
    opt.step()
    state.save(12)
    expect = (torch.rand(2), torch.rand(2, generator=gen), {k: v.clone() for k, v in net.state_dict().items()})
    fresh, net2, opt2, gen2 = _state(tmp_path, seed=1)
    assert fresh.load() == 12
    assert torch.equal(torch.rand(2), expect[0]) and torch.equal(torch.rand(2, generator=gen2), expect[1])
    assert all(torch.equal(net2.state_dict()[k], v) for k, v in expect[2].items())
    assert opt2.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["step"] == 12 and saved["world_size"] == 1 and len(saved["rng"]) == 1


def test_run_state_other_world_size_restores_weights_and_reseeds(tmp_path, capsys):
    state, net, _, gen = _state(tmp_path)
    state.save(7)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    ckpt["rng"] = ckpt["rng"] * 2  # as written by 2 processes
    torch.save(ckpt, tmp_path / "last.pt")
    draws = []
    for _ in range(2):
        fresh, net2, _, gen2 = _state(tmp_path, seed=1)
        assert fresh.load() == 7
        assert torch.equal(net2.weight, net.weight)
        draws.append((torch.rand(3), torch.rand(3, generator=gen2)))
    assert "written by 2 processes, this run has 1" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(*draws))  # re-seeded from (seed, step, rank): deterministic
    ckpt.pop("optimizer")
    torch.save(ckpt, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="optimizer"):
        _state(tmp_path)[0].load()


def test_static_prior_is_fitted_once_and_read_back(tmp_path):
    cfg = OmegaConf.create({"warp": {"guidance": "static", "prior_images": 3, "grid_size": [7, 11],
                                     "bandwidth_scale": 64.0, "amplitude_scale": 1.0}})
    items = [{"image": torch.zeros(3, 32, 64), "boxes": torch.tensor([[4.0 * i, 8.0, 4.0 * i + 8, 16.0]])} for i in range(5)]
    a = static_prior(cfg, items, tmp_path, DistInfo())
    assert a.shape == (7, 11) and abs(float(a.sum()) - 1) < 1e-5 and (tmp_path / "static_prior.npz").is_file()
    b = static_prior(cfg, [], tmp_path, DistInfo())  # cached: the data is not read again
    assert torch.allclose(a, b)
    assert static_prior(OmegaConf.merge(cfg, {"warp": {"guidance": "instance"}}), items, tmp_path, DistInfo()) is None


def test_check_common_and_start_run(tmp_path):
    base = {"device": "cpu", "threads": 0, "out_dir": str(tmp_path / "run"), "resume": False, "overwrite": False}
    cfg = OmegaConf.create({**base, "train": {"iters": 2, "batch_size": 1, "log_every": 1, "seed": 0, "lr": 0.1},
                            "eval": {"target_split": "val", "model": "teacher", "max_images": 1, "batch_size": 1},
                            "uda": {"enabled": False}, "warp": {"guidance": "instance"},
                            "data": {"image_size": [32, 64]}})
    with pytest.raises(ValueError, match="eval.model: teacher needs uda.enabled"):
        check_common(cfg)
    with pytest.raises(ValueError, match="data.image_size"):
        check_common(OmegaConf.merge(cfg, {"eval": {"model": "auto"}, "data": {"image_size": [16, 64]}}))
    info, out, resuming = start_run(cfg)
    assert (out / "config.yaml").is_file() and resuming is False and info.world_size == 1
    (out / "last.pt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a run"):
        start_run(cfg)
    assert start_run(OmegaConf.merge(cfg, {"resume": True}))[2] is True
    assert start_run(OmegaConf.merge(cfg, {"overwrite": True}))[2] is False and not (out / "last.pt").exists()
    assert json.loads(json.dumps(OmegaConf.to_container(cfg)))["out_dir"] == str(Path(out))


def _two_ranks_log(rank, port, out):
    import os

    import torch.distributed as dist

    from warpadapt.uda.run import StopSignal, log_values
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    info = DistInfo(rank=rank, world_size=2, enabled=True)
    result = {"mean": log_values({"loss": torch.tensor(float(rank + 1))}, info, 1)["loss"]}
    try:
        log_values({"loss": torch.tensor(float("nan") if rank == 1 else 1.0)}, info, 7)
    except FloatingPointError as e:
        result["error"] = str(e)
    stop = StopSignal()
    if rank == 0:
        stop.received = 15  # as if SIGTERM reached rank 0 only
    result["stop"] = stop.requested(info)
    stop.close()
    dist.destroy_process_group()
    torch.save(result, out / f"rank{rank}.pt")


def test_log_values_and_stop_signal_agree_on_every_rank(tmp_path):
    """Two gloo processes: the mean over ranks; a NaN on rank 1 stops both with one message; a signal
    seen by rank 0 stops both."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks_log, args=(port, tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["mean"] == r1["mean"] == 1.5
    assert r0["error"] == r1["error"] and "loss is nan at step 7" in r0["error"]
    assert r0["stop"] is True and r1["stop"] is True


def _two_ranks_ddp(rank, port, out):
    import os

    import torch.distributed as dist

    from warpadapt.uda.dist import grad_sync, rank0_buffers, wrap_ddp
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    info = DistInfo(rank=rank, world_size=2, enabled=True)
    torch.manual_seed(rank)  # different initial weights: DDP must start every rank from rank 0's
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ddp = wrap_ddp(net, info)
    x1, x2 = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(10 + rank))
    with grad_sync(ddp, sync=False):  # first backward: accumulated on this rank only
        ddp(x1).pow(2).sum().backward()
    local = [p.grad.clone() for p in net.parameters()]
    with grad_sync(ddp, sync=True):  # last backward: one all-reduce of the sum
        ddp(x2).pow(2).sum().backward()
    result = {"local": local, "grads": [p.grad.clone() for p in net.parameters()],
              "weights": [p.detach().clone() for p in net.parameters()], "own_mean": net[1].running_mean.clone()}
    with rank0_buffers(net, info=info):
        result["inside_mean"] = net[1].running_mean.clone()
    result["after_mean"] = net[1].running_mean.clone()
    # RunState: every rank's own buffers come back on resume (the state dicts hold rank 0's)
    state = RunState(out / "last.pt", info, OmegaConf.create({"train": {"seed": 0}}), model=net)
    state.save(5)
    with torch.no_grad():
        net[1].running_mean.fill_(-9.0)
    state.load()
    result["resumed_mean"] = net[1].running_mean.clone()
    dist.destroy_process_group()
    torch.save(result, out / f"ddp{rank}.pt")


def test_ddp_grad_sync_rank0_buffers_and_per_rank_buffers(tmp_path):
    """Two gloo processes: under grad_sync(sync=False) gradients stay local, the last (synced) backward
    all-reduces the sum of both passes (mean over ranks); rank0_buffers shows rank 0's BatchNorm
    statistics inside and gives each rank its own back; RunState restores each rank's own buffers."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_ranks_ddp, args=(port, tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"ddp{r}.pt") for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(r0["weights"], r1["weights"]))  # rank 0's initial weights
    assert not torch.allclose(r0["local"][0], r1["local"][0])  # the first backward was not all-reduced
    # reference: one process, both ranks' losses of both passes, gradients averaged over the 2 ranks
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for p, w in zip(net.parameters(), r0["weights"]):
            p.copy_(w)
    for rank in (0, 1):
        x1, x2 = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(10 + rank))
        ((net(x1).pow(2).sum() + net(x2).pow(2).sum()) / 2).backward()
    for ref, g0, g1 in zip((p.grad for p in net.parameters()), r0["grads"], r1["grads"]):
        assert torch.allclose(g0, ref, atol=1e-5) and torch.equal(g0, g1)
    assert not torch.equal(r0["own_mean"], r1["own_mean"])  # broadcast_buffers=False: each rank's own statistics
    assert torch.equal(r1["inside_mean"], r0["own_mean"]) and torch.equal(r1["after_mean"], r1["own_mean"])
    assert torch.equal(r0["resumed_mean"], r0["own_mean"]) and torch.equal(r1["resumed_mean"], r1["own_mean"])
