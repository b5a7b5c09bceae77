"""Both recipes as a user meets them on the command line: --help, one-line errors, a reused out_dir,
a pretrained file that does not fit (subprocesses: what the shell shows)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["twopcnet", "mic"]
TINY = {"twopcnet": ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=2",
                     "eval.every=0", "train.batch_size=2", "train.iters=1", "train.burn_in=1", "threads=1",
                     "model.rpn_batch_size=16", "model.roi_batch_size=16"],
        "mic": ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=2",
                "eval.every=0", "eval.pictures=0", "train.batch_size=2", "train.iters=1", "threads=1",
                "model.embed_dim=16"]}


def shell(recipe, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env=env)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_key_and_exits_0(recipe, flag):
    proc = shell(recipe, flag)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "warp.fwhm = 13.0" in out and "model.backbone = " in out and "model.kwargs = {}" in out
    assert "usage: python" in out and "--config" in out and "Traceback" not in out + proc.stderr
    assert ("synthetic_day2night" if recipe == "twopcnet" else "synthetic_clear2fog") in out


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_bad_key_prints_one_line_naming_it(recipe, tmp_path):
    proc = shell(recipe, f"out_dir={tmp_path}", "warp.fwhmm=3")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config: unknown key 'warp.fwhmm'"), proc.stderr
    proc = shell(recipe, f"out_dir={tmp_path}", "warp.fwhm=-1", *TINY[recipe])  # the library checks the range
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: config: warp.fwhm")
    debug = shell(recipe, f"out_dir={tmp_path}", "warp.fwhmm=3", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_reused_out_dir_refuses_unless_resume_or_overwrite(recipe, tmp_path):
    out = tmp_path / "run"
    assert shell(recipe, f"out_dir={out}", *TINY[recipe]).returncode == 0
    first = (out / "final.json").read_text()
    proc = shell(recipe, f"out_dir={out}", *TINY[recipe])
    assert proc.returncode == 2 and "already holds a run" in proc.stderr and "resume=true" in proc.stderr
    assert (out / "final.json").read_text() == first  # nothing was touched
    assert shell(recipe, f"out_dir={out}", "overwrite=true", *TINY[recipe]).returncode == 0
    assert shell(recipe, f"out_dir={out}", "resume=true", *TINY[recipe]).returncode == 0


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_pretrained_file_that_does_not_fit_fails_naming_the_counts(recipe, tmp_path):
    bad = tmp_path / "random.pth"
    torch.save({"head.weight": torch.rand(3, 3)}, bad)
    args = [f"out_dir={tmp_path / 'run'}", "model.backbone=resnet18", f"model.pretrained_file={bad}", *TINY[recipe]]
    proc = shell(recipe, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: model.pretrained_file:") and "missing keys" in err and "1 unexpected keys" in err
    assert "model.pretrained_strict=false" in err
    loose = shell(recipe, *args, "model.pretrained_strict=false", "overwrite=true")
    assert loose.returncode == 0, loose.stderr[-2000:]
    assert "missing keys" in loose.stdout and "going on" in loose.stdout
