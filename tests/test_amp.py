"""train.amp in both recipes (bf16 autocast runs on the CPU; fp16 adds a GradScaler), and the harness piece
(warpadapt.uda.run.MixedPrecision): unscaling before clipping, the scaler state in checkpoints."""
import importlib.util
from pathlib import Path

import pytest
import torch

from warpadapt.uda.checkpoint import load_checkpoint
from warpadapt.uda.run import MixedPrecision

ROOT = Path(__file__).resolve().parents[1]
TINY = {"twopcnet": ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=2",
                     "eval.every=0", "train.batch_size=2", "train.iters=3", "train.burn_in=1", "threads=1",
                     "model.rpn_batch_size=16", "model.roi_batch_size=16", "model.out_indices=[2,3]"],
        "mic": ["data.image_size=[32,64]", "data.train_images=4", "data.val_images=2", "eval.max_images=2",
                "eval.every=0", "eval.pictures=0", "train.batch_size=2", "train.iters=2", "threads=1",
                "model.embed_dim=16"]}


def _main(recipe):
    spec = importlib.util.spec_from_file_location(f"{recipe}_amp", ROOT / "recipes" / f"{recipe}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("recipe", ["twopcnet", "mic"])
def test_recipes_train_with_bf16_autocast(tmp_path, recipe, monkeypatch):
    seen = []
    real = torch.autocast.__init__

    def spy(self, device_type, *args, **kwargs):  # which autocast regions the recipe opens
        seen.append((device_type, kwargs.get("dtype"), kwargs.get("enabled", True)))
        real(self, device_type, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    final = _main(recipe)([f"out_dir={tmp_path}", "train.amp=bf16", *TINY[recipe]])
    assert final["iters"] == int(TINY[recipe][6].split("=")[1])
    assert ("cpu", torch.bfloat16, True) in seen
    assert "amp" in load_checkpoint(tmp_path / "last.pt")


def test_fp16_unscales_before_clipping_and_saves_its_scale():
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 1)
    x = torch.randn(16, 8)
    ref = torch.nn.Linear(8, 1)
    ref.load_state_dict(net.state_dict())
    amp = MixedPrecision("fp16", "cpu")
    opt, ref_opt = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    amp.backward((net(x) ** 2).mean())  # float32 forward: only the scaling matters here
    assert amp.scaler.get_scale() == 65536.0
    amp.step(opt, list(net.parameters()), clip=0.01)
    (ref(x) ** 2).mean().backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01)
    ref_opt.step()
    assert torch.allclose(net.weight, ref.weight, atol=1e-6)  # clipped on the unscaled gradients
    state = amp.state_dict()
    other = MixedPrecision("fp16", "cpu")
    other.load_state_dict(state)
    assert other.scaler.get_scale() == amp.scaler.get_scale()
    with pytest.raises(ValueError, match="train.amp"):
        MixedPrecision("fp8", "cpu")


def test_none_is_plain_float32():
    amp = MixedPrecision("none", "cpu")
    with amp.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert amp.state_dict() == {} or not amp.scaler.is_enabled()
