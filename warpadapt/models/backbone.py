"""Build a timm ``features_only`` backbone by name, never downloading (shared by both models).

Any timm family works with the defaults: the levels are chosen from timm's ``feature_info`` (every level
at stride >= 4 unless ``out_indices`` says otherwise), families with fixed-size positional tables are built
for the training size, and a local weights file must cover the backbone or the build fails naming the
counts. The model is probed on PyTorch's ``meta`` device first (no memory, no random numbers drawn), so
the real model is built exactly once and a seeded build gives the same weights as ``timm.create_model``.
Weights files of other code bases (torchvision ResNets, SegFormer / MiT in NVlabs, mmseg or HuggingFace
names) are mapped onto timm's keys first (:mod:`warpadapt.models.convert`).
"""
from __future__ import annotations

import inspect
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from timm.models import clean_state_dict
from torch import nn

from . import convert

__all__ = ["create_backbone", "timm_kwargs_for"]


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"model.backbone: expected a timm model name (str), got {name!r}")
    known = set(timm.list_models())
    if name not in known and name.split(".")[0] not in known:
        raise ValueError(f"model.backbone: unknown timm model {name!r} (see timm.list_models())")


def timm_kwargs_for(name: str, image_size: Sequence[int] | None = None) -> dict:
    """The size arguments ``name`` needs to run at ``image_size`` (H, W): what :func:`create_backbone` adds.

    - plain ViTs (every level at one stride) that support it: ``dynamic_img_size=True``, so any input
      size that is a multiple of the patch works (padded detection batches, other crops);
    - families whose constructor takes ``img_size`` (Swin, EfficientFormerV2, ...): ``img_size=image_size``,
      and ``strict_img_size=False`` where the family has it (Swin then also takes other sizes);
    - everything else (ResNet, ConvNeXt, PVT-v2, ...): nothing.

    Example:
        >>> timm_kwargs_for("resnet18", (128, 256)), timm_kwargs_for("vit_tiny_patch16_224", (128, 256))
        ({}, {'dynamic_img_size': True})
        >>> timm_kwargs_for("swin_tiny_patch4_window7_224", (128, 256))
        {'img_size': (128, 256), 'strict_img_size': False}
    """
    _check_name(name)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
        feats = timm.create_model(name, pretrained=False, features_only=True)
    params = inspect.signature(type(model).__init__).parameters
    plain = len(set(feats.feature_info.reduction())) == 1
    if plain and "dynamic_img_size" in params:
        return {"dynamic_img_size": True}
    out = {}
    if "img_size" in params and image_size is not None:
        out["img_size"] = tuple(int(v) for v in image_size)
        if "strict_img_size" in params:
            out["strict_img_size"] = False
    return out


@contextmanager
def _recorded_loads():
    """Record every ``nn.Module.load_state_dict`` result while timm builds a model (timm loads a
    pretrained file non-strictly and only logs what did not match; we need the counts)."""
    results, original = [], nn.Module.load_state_dict

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        results.append((self, result))
        return result

    nn.Module.load_state_dict = recording
    try:
        yield results
    finally:
        nn.Module.load_state_dict = original


def create_backbone(name: str, out_indices: Sequence[int] | None = None, pretrained_file: str | None = None,
                    *, min_reduction: int = 4, image_size: Sequence[int] | None = None,
                    pretrained_strict: bool = True, pretrained_format: str = "auto", **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True)``, random init or weights from a local file.

    Args:
        name: any timm model name (``timm.list_models()``; a ``name.tag`` form is accepted).
        out_indices: feature levels to return (timm's ``out_indices``); None = every level of timm's
            default whose stride is at least ``min_reduction``.
        pretrained_file: a local checkpoint (loaded by timm, ``pretrained_cfg_overlay=dict(file=...)``,
            so timm's own key filters and position-table resampling apply); None = random init. Nothing is
            ever downloaded. ``.safetensors`` or anything ``torch.load(weights_only=True)`` reads; wrappers
            (``{"state_dict": ...}``, ``{"model": ...}``, EMA entries first as timm does) and ``module.`` /
            ``backbone.`` prefixes come off (a ``backbone.`` file keeps only those keys: a whole mmseg
            segmentor loads its encoder). A file in another format is converted to timm's keys first and
            handed to timm as a temporary file.
        min_reduction: with ``out_indices=None``, leave out levels finer than this stride (default 4: the
            ResNet stem at stride 2 is dropped; every family has levels at strides 4-32 or one at 16).
        image_size: (H, W) the model will see in training; fixed-size families are built for it
            (:func:`timm_kwargs_for`). None: timm's default size.
        pretrained_strict: True: a ``pretrained_file`` that leaves any backbone tensor unset fails, naming
            the counts of missing and unexpected keys. False: print the counts and go on. A file whose
            tensors have other shapes than the model's always fails (they cannot be loaded).
        pretrained_format: how ``pretrained_file`` names its tensors (:mod:`warpadapt.models.convert`):
            ``"timm"``; ``"torchvision"`` (ResNet / ResNeXt / Wide-ResNet: the keys are timm's, nothing
            changes); ``"segformer"`` (MiT-B0..B5 encoders in NVlabs / mmseg names) and ``"hf_segformer"``
            (HuggingFace ``nvidia/mit-b*``), both onto timm's ``pvt_v2_b0..b5``, built with the file's MLP
            ratios (MiT: 4 in every stage; timm's b0..b4 default to 8, 8, 4, 4); ``"auto"`` (default): read
            the format off the keys (torchvision ResNets are read as ``timm``).
        kwargs: passed to ``timm.create_model`` (they win over the size arguments chosen here).

    Example:
        >>> create_backbone("resnet18", out_indices=(2, 3)).feature_info.reduction()
        [8, 16]
        >>> create_backbone("resnet18").feature_info.reduction()
        [4, 8, 16, 32]
        >>> create_backbone("swin_tiny_patch4_window7_224", image_size=(64, 128), depths=(1, 1, 1, 1))(
        ...     torch.rand(1, 3, 64, 128))[0].shape  # Swin's features are NHWC
        torch.Size([1, 16, 32, 96])
        >>> create_backbone("resnet9000")
        Traceback (most recent call last):
        ...
        ValueError: model.backbone: unknown timm model 'resnet9000' (see timm.list_models())
    """
    _check_name(name)
    if pretrained_format not in convert.FORMATS:
        raise ValueError(f"model.pretrained_format: expected one of {list(convert.FORMATS)}, got {pretrained_format!r}")
    if pretrained_file is not None and not Path(pretrained_file).is_file():
        raise FileNotFoundError(f"model.pretrained_file: no file at {str(pretrained_file)!r}")
    source = None
    if pretrained_file is not None:
        source = _read_pretrained(name, pretrained_file, pretrained_format, pretrained_strict)
    kw = {**timm_kwargs_for(name, image_size), **(source.model_kwargs if source else {}), **kwargs,
          "features_only": True, "pretrained": False}
    if out_indices is not None:
        kw["out_indices"] = tuple(int(i) for i in out_indices)
    else:
        with torch.device("meta"):  # which levels exist: no memory, no random numbers
            info = timm.create_model(name, **kw).feature_info
        strides, indices = info.reduction(), info.out_indices
        keep = [i for i, r in zip(indices, strides) if r >= min_reduction]
        if not keep:
            raise ValueError(f"model.backbone: {name} has no feature level with stride >= {min_reduction} "
                             f"(strides {strides}); pass model.out_indices")
        if len(keep) < len(indices):
            kw["out_indices"] = tuple(keep)
    if source is None:
        return timm.create_model(name, **kw)
    with source.file() as file:
        kw.update(pretrained=True, pretrained_cfg_overlay=dict(file=file))
        with _recorded_loads() as loads:
            model = _create_loading(name, kw, pretrained_file, source.fmt)
    _check_coverage(name, model, loads, pretrained_file, pretrained_strict, source.fmt)
    return model


class _Source:
    """A weights file as timm will read it: the format it was read as, the converted state dict (None:
    timm reads the file itself, unchanged) and the model arguments the file implies."""

    def __init__(self, path, fmt: str, state_dict: dict | None, model_kwargs: dict):
        self.path, self.fmt, self.state_dict, self.model_kwargs = str(path), fmt, state_dict, model_kwargs

    @contextmanager
    def file(self):
        if self.state_dict is None:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="warpadapt-weights-") as tmp:
            converted = Path(tmp) / "converted.pth"
            torch.save(self.state_dict, converted)
            yield str(converted)


def _read_checkpoint(path) -> Mapping:
    """The file's contents: safetensors, or ``torch.load(weights_only=True)`` (memory-mapped when the file
    allows it, so reading the keys and shapes costs little)."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except Exception as e:  # safetensors' own error type
            raise ValueError(f"model.pretrained_file: {path!r} is not a readable safetensors file ({e})") from e
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # files of the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            reason = reason[1].strip() if reason else (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"model.pretrained_file: {path!r} is not a PyTorch checkpoint ({reason})") from e
        raise ValueError(
            f"model.pretrained_file: {path!r} holds pickled Python objects besides tensors ({found[1]}), which "
            "torch.load(weights_only=True) refuses to unpickle; if you trust the file, save its weights alone: "
            "torch.save(torch.load(f, weights_only=False)['model'], 'weights.pth')") from e
    except (RuntimeError, EOFError) as e:
        reason = str(e) or "empty file"
        raise ValueError(f"model.pretrained_file: {path!r} is not a PyTorch checkpoint ({reason})") from e
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"model.pretrained_file: {path!r} holds a {type(ckpt).__name__}, not a state dict")
    return ckpt


def _timm_reads(ckpt: Mapping) -> dict:
    """The state dict timm's own ``load_state_dict`` takes out of ``ckpt`` (its wrapper order, its prefix
    cleaning): when the conversion gives exactly this, timm can read the file itself."""
    key = next((k for k in ("state_dict_ema", "model_ema") if ckpt.get(k) is not None), None)
    key = key or next((k for k in ("state_dict", "model") if k in ckpt), None)
    inner = ckpt[key] if key else ckpt
    return clean_state_dict(inner) if isinstance(inner, Mapping) else {}


def _read_pretrained(name: str, path, fmt: str, strict: bool) -> _Source:
    """Read ``path``, unwrap it, convert it from ``fmt`` to timm's keys and check a SegFormer file fits
    ``name``; the file itself is handed to timm when that changed nothing timm would not change itself."""
    ckpt = _read_checkpoint(path)
    sd = convert.unwrap_state_dict(ckpt)
    try:
        converted, fmt = convert.to_timm(sd, fmt)
    except ValueError as e:
        raise ValueError(f"model.pretrained_file: {str(path)!r}: {e}") from e
    base = name.split(".")[0]
    model_kwargs = {}
    if fmt in ("segformer", "hf_segformer"):
        variant = convert.pvt_v2_variant(converted)
        if not base.startswith("pvt_v2"):
            raise ValueError(
                f"model.pretrained_file: {str(path)!r} is a SegFormer / MiT checkpoint (format {fmt!r}): it loads "
                f"onto timm's pvt_v2_b0..b5, not {name} (model.backbone={variant or 'pvt_v2_bN'})")
        if variant is not None and base in convert.PVT_V2_VARIANTS and variant != base:
            msg = (f"model.pretrained_file: {str(path)!r} has the layout of {variant} (MiT-B{variant[-1]}: depths "
                   f"{convert.PVT_V2_VARIANTS[variant][0]}, widths {convert.PVT_V2_VARIANTS[variant][1]}), "
                   f"not {name}; model.backbone={variant}")
            if convert.PVT_V2_VARIANTS[variant][1] != convert.PVT_V2_VARIANTS[base][1]:
                raise ValueError(msg + " (the widths differ: its tensors cannot be loaded into this model)")
            if strict:  # same widths, other depths: the blocks both have can be loaded
                raise ValueError(msg + " (model.pretrained_strict=false loads the blocks both have and goes on)")
            print(msg + "; going on (model.pretrained_strict=false)")
    if base.startswith("pvt_v2"):
        model_kwargs = convert.pvt_v2_kwargs(converted)
    own = _timm_reads(ckpt)
    unchanged = converted.keys() == own.keys() and all(converted[k] is own[k] for k in own)
    return _Source(path, fmt, None if unchanged else converted, model_kwargs)


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
                            r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)")


def _create_loading(name: str, kw: dict, path, fmt: str) -> nn.Module:
    """``timm.create_model`` with a weights file; tensors of other shapes fail naming the count."""
    try:
        return timm.create_model(name, **kw)
    except RuntimeError as e:
        sizes = _SIZE_MISMATCH.findall(str(e))
        if not sizes:
            raise
        key, file_shape, model_shape = sizes[0]
        raise ValueError(
            f"model.pretrained_file: {str(path)!r} (read as format {fmt!r}) does not fit {name}: {len(sizes)} "
            f"tensors have other shapes (e.g. {key}: {file_shape} in the file, {model_shape} in the model); is it "
            "a checkpoint of this architecture? (model.pretrained_strict=false does not help: tensors of other "
            "shapes cannot be loaded)") from e


def _check_coverage(name, model, loads, path, strict: bool, fmt: str = "timm") -> None:
    """Missing keys = tensors of the returned features model the file did not set (a pruned head does
    not count); unexpected = the file's keys the model has no place for (classifier heads land here)."""
    if not loads:
        raise RuntimeError(f"model.pretrained_file: timm did not load {str(path)!r} into {name}")
    full, result = loads[0]  # timm's load into the full model (nested loads belong to it)
    # the features model holds the full model's own modules (renamed, the head pruned): compare tensors
    own = {id(t) for t in model.state_dict(keep_vars=True).values()}
    tensors = full.state_dict(keep_vars=True)
    missing = [k for k in result.missing_keys if k in tensors and id(tensors[k]) in own]
    unexpected = list(result.unexpected_keys)
    if not missing:
        return
    total = sum(1 for k in model.state_dict() if not k.endswith("num_batches_tracked"))  # BatchNorm makes its own
    msg = (f"model.pretrained_file: {str(path)!r} (read as format {fmt!r}) leaves {len(missing)} of {total} "
           f"tensors of {name} unset "
           f"({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected keys"
           f"{', e.g. ' + str(unexpected[:3]) if unexpected else ''})")
    if strict:
        raise ValueError(msg + "; is it a checkpoint of this architecture? model.pretrained_strict=false "
                               "loads what matches and goes on")
    print(msg + "; going on (model.pretrained_strict=false)")
