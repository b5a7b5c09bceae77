"""Preemption as clusters do it: SIGTERM (or SIGUSR1) makes a recipe write a checkpoint and exit 0; the run
resumed from it ends with exactly the weights of a straight run. train.checkpoint_every saves without
evaluating."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from warpadapt.uda.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=2", "eval.every=0",
        "eval.pictures=0", "train.batch_size=2", "train.iters=40", "train.schedule_iters=40", "threads=1",
        "model.embed_dim=16", "train.log_every=1"]


def _cmd(out, *extra):
    return [sys.executable, str(ROOT / "recipes" / "mic.py"), f"out_dir={out}", *TINY, *extra]


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])
def test_a_signal_checkpoints_stops_and_the_resumed_run_equals_a_straight_one(tmp_path, sig):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    subprocess.run(_cmd(straight), check=True, capture_output=True, cwd=ROOT, timeout=600)
    proc = subprocess.Popen(_cmd(cut), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # signal once the run is training (its second logged step)
        lines = (cut / "metrics.jsonl").read_text().splitlines() if (cut / "metrics.jsonl").exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    stopped = load_checkpoint(cut / "last.pt")["step"]
    assert 2 <= stopped < 40 and "stopped by a signal" in out and not (cut / "final.json").exists()
    subprocess.run(_cmd(cut, "resume=true"), check=True, capture_output=True, cwd=ROOT, timeout=600)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(cut / "last.pt")
    assert a["step"] == b["step"] == 40
    for part in ("student", "teacher"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (straight, cut))
    assert fa["target_miou"] == fb["target_miou"]


def test_checkpoint_every_saves_between_evaluations(tmp_path):
    from warpadapt.uda.run import RunState
    from warpadapt.uda.dist import DistInfo
    from omegaconf import OmegaConf

    net = torch.nn.Linear(2, 2)
    before = signal.getsignal(signal.SIGTERM)
    state = RunState(tmp_path / "last.pt", DistInfo(), OmegaConf.create({"train": {"seed": 0, "checkpoint_every": 3}}),
                     model=net)
    saved = [step for step in range(1, 8) if not state.after_step(step, False) and (tmp_path / "last.pt").exists()
             and load_checkpoint(tmp_path / "last.pt")["step"] == step]
    assert saved == [3, 6]
    assert signal.getsignal(signal.SIGTERM) != before  # installed while the state lives
    del state
    import gc
    gc.collect()
    assert signal.getsignal(signal.SIGTERM) == before  # and put back when it goes
