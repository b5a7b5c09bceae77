"""Weights files of other code bases load onto timm backbones (warpadapt.models.convert + create_backbone's
``pretrained_format``): torchvision ResNets (the keys are timm's), SegFormer / MiT encoders onto pvt_v2 from
HuggingFace (checked against transformers' own SegformerModel, random weights), NVlabs and mmseg names;
the format read off the keys, wrappers and prefixes, and the errors for a file of another architecture.
Nothing downloads: every reference model is built here with random weights."""
import argparse
import re

import pytest
import timm
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from warpadapt.models.backbone import _read_pretrained, create_backbone
from warpadapt.models.convert import (detect_format, hf_segformer_to_timm, pvt_v2_kwargs, pvt_v2_variant,
                                      segformer_to_timm, to_timm, unwrap_state_dict)
from timm.models.pvt_v2 import checkpoint_filter_fn

X = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
MIT_B0 = dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], sr_ratios=[8, 4, 2, 1],
              num_attention_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], mlp_ratios=[4, 4, 4, 4])


def max_diff(a, b) -> float:
    assert len(a) == len(b) and all(p.shape == q.shape for p, q in zip(a, b))
    return max((p - q).abs().max().item() for p, q in zip(a, b))


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Every parameter and BatchNorm statistic off its init (norms not 1/0, stats not 0/1), so a tensor in
    the wrong place shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            t.add_(torch.randn(t.shape, generator=g) * std)
            if name.endswith("running_var"):
                t.abs_().add_(0.5)
    return model.eval()


# --- torchvision ResNets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnet_keys_are_timms_and_give_the_same_features(arch, tmp_path):
    tv = jitter(getattr(torchvision.models, arch)(weights=None))
    sd = tv.state_dict()
    with torch.device("meta"):
        timm_sd = timm.create_model(arch).state_dict()
    assert sd.keys() == timm_sd.keys() and all(sd[k].shape == timm_sd[k].shape for k in sd)  # identical layout
    file = tmp_path / f"{arch}_torchvision.pth"
    torch.save(sd, file)
    with torch.no_grad():
        ref = list(create_feature_extractor(tv, {f"layer{i}": f"layer{i}" for i in range(1, 5)})(X).values())
        for fmt in ("auto", "torchvision") if arch == "resnet18" else ("auto",):
            feats = create_backbone(arch, pretrained_file=str(file), pretrained_format=fmt).eval()
            diff = max_diff(feats(X), ref)
            print(f"{arch} torchvision -> timm ({fmt}): max abs diff {diff:.1e}")
            assert diff <= 1e-5
    assert _read_pretrained(arch, file, "auto", True).state_dict is None  # timm reads the file unchanged


# --- SegFormer / MiT from HuggingFace ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_mit_b0(tmp_path_factory):
    """transformers' MiT-B0 encoder (random weights) saved as the hub files are (``save_pretrained``: the
    ``encoder.block.0.0.attention.self.query`` names of nvidia/mit-b0), its in-memory state dict and its four
    stage outputs on X."""
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install transformers, a dev extra): the "
                               "HF SegFormer reference model cannot be built")
    from safetensors.torch import load_file
    torch.manual_seed(0)
    hf = jitter(transformers.SegformerModel(transformers.SegformerConfig(**MIT_B0)))
    with torch.no_grad():
        ref = list(hf(X, output_hidden_states=True).hidden_states)
    out = tmp_path_factory.mktemp("hf_mit_b0")
    hf.save_pretrained(out)
    return dict(hub=load_file(out / "model.safetensors"), hub_file=out / "model.safetensors",
                memory=hf.state_dict(), ref=ref, dir=out)


def test_hf_mit_b0_onto_timm_pvt_v2_b0_gives_the_same_stage_outputs(hf_mit_b0, tmp_path):
    hub = hf_mit_b0["hub"]
    assert "encoder.block.0.0.attention.self.query.weight" in hub  # the hub's names
    # a *ForSemanticSegmentation / *ForImageClassification file: "segformer." prefix and a head
    whole = {**{f"segformer.{k}": v for k, v in hub.items()}, "decode_head.linear_fuse.weight": torch.zeros(4, 4),
             "classifier.weight": torch.zeros(10, 256)}
    assert all(detect_format(sd) == "hf_segformer" for sd in (hub, hf_mit_b0["memory"], whole))
    files = {"hub": hf_mit_b0["hub_file"], "memory": tmp_path / "memory.pth", "whole": tmp_path / "whole.pth"}
    torch.save(hf_mit_b0["memory"], files["memory"])
    torch.save({"state_dict": whole}, files["whole"])
    for kind, file in files.items():
        for fmt in ("auto", "hf_segformer") if kind == "hub" else ("auto",):
            feats = create_backbone("pvt_v2_b0", pretrained_file=str(file), pretrained_format=fmt).eval()
            with torch.no_grad():
                diff = max_diff(feats(X), hf_mit_b0["ref"])
            print(f"HF MiT-B0 ({kind} names, {fmt}) -> pvt_v2_b0: max abs diff {diff:.1e}")
            assert diff < 1e-4  # HF's LayerNorms use eps 1e-5 where MiT (and timm) use 1e-6
    # with HF's eps the outputs agree to float rounding: the only difference is that eps
    from functools import partial
    exact = create_backbone("pvt_v2_b0", pretrained_file=str(files["hub"]),
                            norm_layer=partial(timm.layers.LayerNorm, eps=1e-5)).eval()
    with torch.no_grad():
        diff = max_diff(exact(X), hf_mit_b0["ref"])
    print(f"HF MiT-B0 -> pvt_v2_b0 with LayerNorm eps 1e-5: max abs diff {diff:.1e}")
    assert diff < 1e-6


def test_hf_key_value_order_matters(hf_mit_b0):
    """Negative control: timm's kv is [k; v]; the other order gives visibly other outputs (so the 1e-4
    above does test the mapping)."""
    sd = hf_segformer_to_timm(hf_mit_b0["hub"])
    swapped = {k: (torch.cat(v.chunk(2)[::-1]) if ".attn.kv." in k else v) for k, v in sd.items()}
    model = timm.create_model("pvt_v2_b0", features_only=True, **pvt_v2_kwargs(sd)).eval()
    model.load_state_dict(swapped, strict=False)
    with torch.no_grad():
        assert max_diff(model(X), hf_mit_b0["ref"]) > 1e-2


# --- SegFormer / MiT in NVlabs and mmseg names ------------------------------------------------------------

def timm_to_nvlabs(sd: dict) -> dict:
    """timm's pvt_v2 names -> NVlabs/SegFormer mix_transformer.py names (+ the ImageNet head of mit_b*.pth)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", k)
        k = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", k)
        out[k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = v
    return {**out, "head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}


def nvlabs_to_mmseg(sd: dict) -> dict:
    """NVlabs names -> mmseg mit.py names, as mmseg's tools/model_converters/mit2mmseg.py renames them."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"patch_embed(\d)\.(proj|norm)\.(.*)", k)
        if m:
            out[f"layers.{int(m[1]) - 1}.0.{'projection' if m[2] == 'proj' else 'norm'}.{m[3]}"] = v
        elif m := re.match(r"norm(\d)\.(.*)", k):
            out[f"layers.{int(m[1]) - 1}.2.{m[2]}"] = v
        elif m := re.match(r"block(\d)\.(\d+)\.(.*)", k):
            pre, rest = f"layers.{int(m[1]) - 1}.1.{m[2]}.", m[3]
            if rest.startswith("attn.q."):
                p = rest.split(".")[-1]
                out[f"{pre}attn.attn.in_proj_{p}"] = torch.cat([v, sd[k.replace("attn.q.", "attn.kv.")]])
            elif rest.startswith("attn.kv."):
                continue
            else:
                for old, new in (("attn.proj.", "attn.attn.out_proj."), ("mlp.fc1.", "ffn.layers.0."),
                                 ("mlp.dwconv.dwconv.", "ffn.layers.1."), ("mlp.fc2.", "ffn.layers.4.")):
                    if rest.startswith(old):
                        rest = new + rest[len(old):]
                        if new in ("ffn.layers.0.", "ffn.layers.4.") and rest.endswith("weight"):
                            v = v[:, :, None, None]
                out[pre + rest] = v
    return out


@pytest.fixture(scope="module")
def mit_b0():
    """A random MiT-B0 = timm pvt_v2_b0 with MLP ratio 4 (the architectures are the same code), its state
    dict and its features on X."""
    torch.manual_seed(1)
    model = jitter(timm.create_model("pvt_v2_b0", mlp_ratios=(4, 4, 4, 4)), seed=1)
    with torch.no_grad():
        ref = model.forward_intermediates(X, intermediates_only=True)
    return dict(sd={k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, ref=ref)


def test_nvlabs_and_mmseg_mit_files_load_onto_pvt_v2_b0(mit_b0, tmp_path):
    nvlabs = timm_to_nvlabs(mit_b0["sd"])
    assert {"patch_embed1.proj.weight", "block1.0.attn.q.weight", "block4.1.mlp.dwconv.dwconv.bias",
            "norm1.weight"} <= nvlabs.keys()
    # timm's own filter for the original PVT-v2 names (the same code base) agrees with the names used here
    assert checkpoint_filter_fn(dict(nvlabs), None).keys() == {**mit_b0["sd"], "head.weight": 0, "head.bias": 0}.keys()
    assert segformer_to_timm(nvlabs).keys() == checkpoint_filter_fn(dict(nvlabs), None).keys()
    mmseg = nvlabs_to_mmseg(nvlabs)
    assert "layers.0.1.0.attn.attn.in_proj_weight" in mmseg and mmseg["layers.0.1.0.ffn.layers.0.weight"].ndim == 4
    converted = segformer_to_timm(mmseg)
    assert converted.keys() == mit_b0["sd"].keys() and all(converted[k].equal(v) for k, v in mit_b0["sd"].items())
    segmentor = {"meta": {"mmseg_version": "0.30.0", "CLASSES": ("road", "sky")},
                 "state_dict": {**{f"backbone.{k}": v for k, v in mmseg.items()},
                                "decode_head.conv_seg.weight": torch.zeros(2, 256, 1, 1)}}
    for kind, ckpt in (("nvlabs", nvlabs), ("mmseg", mmseg), ("mmseg segmentor", segmentor)):
        file = tmp_path / f"{kind.replace(' ', '_')}.pth"
        torch.save(ckpt, file)
        for fmt in ("auto", "segformer") if kind == "nvlabs" else ("auto",):
            feats = create_backbone("pvt_v2_b0", pretrained_file=str(file), pretrained_format=fmt).eval()
            with torch.no_grad():
                diff = max_diff(feats(X), mit_b0["ref"])
            print(f"MiT-B0 ({kind} names, {fmt}) -> pvt_v2_b0: max abs diff {diff:.1e}")
            assert diff <= 1e-6


def test_mit_mlp_ratio_is_read_off_the_file(mit_b0, tmp_path):
    """MiT-B0 has MLP ratio 4 in every stage, timm's pvt_v2_b0 8, 8, 4, 4: the model is built as the file is."""
    file = tmp_path / "mit_b0.pth"
    torch.save(timm_to_nvlabs(mit_b0["sd"]), file)
    src = _read_pretrained("pvt_v2_b0", file, "auto", True)
    assert (src.fmt, src.model_kwargs) == ("segformer", {"mlp_ratios": (4, 4, 4, 4)})
    feats = create_backbone("pvt_v2_b0", pretrained_file=str(file))
    assert feats.stages_0.blocks[0].mlp.fc1.out_features == 4 * 32
    assert pvt_v2_variant(segformer_to_timm(timm_to_nvlabs(mit_b0["sd"]))) == "pvt_v2_b0"


# --- detection, wrappers, prefixes ------------------------------------------------------------------------

def test_format_is_detected_from_the_keys(mit_b0):
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    nvlabs = timm_to_nvlabs(mit_b0["sd"])
    cases = {"timm": [resnet, mit_b0["sd"], timm.create_model("convnext_atto").state_dict()],
             "segformer": [nvlabs, nvlabs_to_mmseg(nvlabs)]}  # hf_segformer: in the HF test
    for fmt, dicts in cases.items():
        for sd in dicts:
            assert detect_format(sd) == fmt
            assert to_timm(sd)[1] == fmt


def test_wrappers_and_prefixes_come_off(tmp_path):
    torch.manual_seed(2)
    sd = jitter(timm.create_model("resnet18"), seed=2).state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    wrapped = {  # kind: the checkpoint
        "state_dict": {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
        "model": {"model": {f"_orig_mod.module.{k}": v for k, v in sd.items()}, "epoch": 3, "model_ema": None},
        "backbone": {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in sd.items()},
                                                "decode_head.conv_seg.weight": torch.zeros(3)}},
        "nested": {"model": {"state_dict": sd}},
        "ema": {"model": sd, "model_ema": ema},  # timm's order: the EMA weights
    }
    for kind, ckpt in wrapped.items():
        want = ema if kind == "ema" else sd
        assert unwrap_state_dict(ckpt).keys() == want.keys()
        file = tmp_path / f"{kind}.pth"
        torch.save(ckpt, file)
        got = create_backbone("resnet18", pretrained_file=str(file)).state_dict()
        assert all(v.equal(want[k]) for k, v in got.items()), kind
        # what timm reads alone is handed over as it is; the others are converted into a temporary file
        handed_over = _read_pretrained("resnet18", file, "auto", True).state_dict is None
        assert handed_over == (kind not in ("backbone", "nested"))


# --- errors -----------------------------------------------------------------------------------------------

def test_a_file_of_another_architecture_fails_naming_the_counts(mit_b0, tmp_path, capsys):
    resnet, mit = tmp_path / "resnet18.pth", tmp_path / "mit_b0.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    torch.save(timm_to_nvlabs(mit_b0["sd"]), mit)
    with pytest.raises(ValueError, match=r"^model\.pretrained_file: .*resnet18\.pth' \(read as format 'timm'\) "
                                         r"leaves \d+ of \d+ tensors of pvt_v2_b0 unset \(\d+ missing keys, .*"
                                         r"; \d+ unexpected keys.*model\.pretrained_strict=false"):
        create_backbone("pvt_v2_b0", pretrained_file=str(resnet))
    create_backbone("pvt_v2_b0", pretrained_file=str(resnet), pretrained_strict=False)
    assert "going on (model.pretrained_strict=false)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"is a SegFormer / MiT checkpoint \(format 'segformer'\): it loads onto "
                                         r"timm's pvt_v2_b0\.\.b5, not resnet18 \(model\.backbone=pvt_v2_b0\)"):
        create_backbone("resnet18", pretrained_file=str(mit))
    for strict in (True, False):  # MiT-B0 and B1 differ in width: nothing loads
        with pytest.raises(ValueError, match=r"has the layout of pvt_v2_b0 .* not pvt_v2_b1; model\.backbone="
                                             r"pvt_v2_b0 \(the widths differ"):
            create_backbone("pvt_v2_b1", pretrained_file=str(mit), pretrained_strict=strict)
    with pytest.raises(ValueError, match=r"does not fit pvt_v2_b1: \d+ tensors have other shapes \(e\.g\. "
                                         r"patch_embed\.proj\.weight: \[32, 3, 7, 7\] in the file, \[64, 3, 7, 7\]"):
        create_backbone("pvt_v2_b1", pretrained_file=str(mit), pretrained_format="timm")  # timm's filter, no check
    b2 = {**timm_to_nvlabs(mit_b0["sd"])}  # a MiT-B0 with a third block in stage 1: B0 widths, other depths
    b2.update({k.replace("block1.1.", "block1.2."): v for k, v in b2.items() if k.startswith("block1.1.")})
    torch.save(b2, deeper := tmp_path / "deeper.pth")
    assert pvt_v2_variant(segformer_to_timm(b2)) is None  # no MiT has these depths: no layout check, loads
    create_backbone("pvt_v2_b0", pretrained_file=str(deeper))
    resnet50 = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), resnet50)
    with pytest.raises(ValueError, match=r"resnet50\.pth' \(read as format 'timm'\) does not fit resnet18: "
                                         r"\d+ tensors have other shapes"):
        create_backbone("resnet18", pretrained_file=str(resnet50))


def test_bad_formats_and_unreadable_files_fail_clearly(mit_b0, tmp_path):
    mit, pickled = tmp_path / "mit_b0.pth", tmp_path / "train_checkpoint.pth"
    torch.save(timm_to_nvlabs(mit_b0["sd"]), mit)
    torch.save({"model": torchvision.models.resnet18(weights=None).state_dict(), "args": argparse.Namespace(lr=1)},
               pickled)
    with pytest.raises(ValueError, match=r"format 'torchvision': only ResNet / ResNeXt / Wide-ResNet"):
        create_backbone("resnet18", pretrained_file=str(mit), pretrained_format="torchvision")
    with pytest.raises(ValueError, match=r"^model\.pretrained_format: expected one of \['auto', 'timm', "):
        create_backbone("resnet18", pretrained_format="mmdet")
    with pytest.raises(ValueError, match=r"holds pickled Python objects besides tensors \(argparse\.Namespace\).*"
                                         r"torch\.load\(f, weights_only=False\)"):
        create_backbone("resnet18", pretrained_file=str(pickled))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^model\.pretrained_file: .*junk\.pth' is not a PyTorch checkpoint"):
        create_backbone("resnet18", pretrained_file=str(tmp_path / "junk.pth"))
