"""Map the state dicts people have onto timm's keys: pure functions over dicts (no files, no modules).

Formats (the names ``model.pretrained_format`` / ``create_backbone(pretrained_format=...)`` take):

- ``timm``: as timm saves it; nothing to change.
- ``torchvision``: torchvision ResNet / ResNeXt / Wide-ResNet files. Their keys (``conv1``, ``bn1``,
  ``layer1``..``layer4``, ``fc``) and block layout are exactly timm's ``resnet*`` / ``resnext*`` /
  ``wide_resnet*`` ones, so the mapping is the identity (tests/test_convert.py checks the features agree).
- ``segformer``: the MiT-B0..B5 encoders of SegFormer onto timm's ``pvt_v2_b0..b5``, in either naming
  people have: NVlabs/SegFormer and mmseg 0.x ``mix_transformer.py`` (``patch_embed1.proj``,
  ``block1.0.attn.q``, ``norm1``; the released ``mit_b*.pth`` files; PVT-v2's own originals use the same
  names) or mmseg >= 0.13 ``mit.py`` (``layers.0.0.projection``, ``layers.0.1.0.attn.attn.in_proj_weight``;
  mmseg's converted ``mit_b*`` files and its model-zoo SegFormer checkpoints).
- ``hf_segformer``: HuggingFace ``transformers`` SegFormer (``nvidia/mit-b0`` .. ``mit-b5`` and the
  ``nvidia/segformer-*`` files: ``encoder.block.0.0.attention.self.query``, with or without the
  ``segformer.`` prefix of the ``*For*`` models) and the in-memory names of transformers >= 5
  (``stages.0.blocks.0.attention.q_proj``).

MiT is PVT-v2 with an MLP ratio of 4 in every stage (timm's ``pvt_v2_b0..b4`` default to 8, 8, 4, 4:
:func:`pvt_v2_kwargs` reads the ratios off a converted dict). Keys a conversion does not know are kept
as they are, so they show up as unexpected keys when the file is loaded.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["FORMATS", "unwrap_state_dict", "detect_format", "torchvision_to_timm", "segformer_to_timm",
           "hf_segformer_to_timm", "to_timm", "pvt_v2_kwargs", "pvt_v2_variant"]

FORMATS = ("auto", "timm", "torchvision", "segformer", "hf_segformer")
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")  # timm's order (EMA weights first)
_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile wrappers, in any order and number


def _strip(sd: Mapping, prefix: str, only: bool = False) -> dict:
    """Keys under ``prefix`` without it; the others kept as they are (``only``: dropped)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
        elif not only:
            out[k] = v
    return out


def unwrap_state_dict(checkpoint: Mapping) -> dict:
    """The state dict inside a checkpoint: wrappers and prefixes off.

    - ``{"state_dict_ema" | "model_ema" | "state_dict" | "model": ...}``: that entry (timm's order: EMA
      weights first; an entry that is None is passed over), repeatedly (``{"model": {"state_dict": ...}}``);
    - ``module.`` / ``_orig_mod.`` prefixes (DDP, ``torch.compile``) come off;
    - if any key starts with ``backbone.`` (an mmseg / mmdet checkpoint of a whole segmentor or detector),
      only those keys are kept, without the prefix (the heads are not the backbone's).

    Example:
        >>> unwrap_state_dict({"meta": {}, "state_dict": {"module.backbone.conv1.weight": 1,
        ...                                               "module.decode_head.conv_seg.weight": 2}})
        {'conv1.weight': 1}
        >>> unwrap_state_dict({"model": {"_orig_mod.fc.bias": 3}, "model_ema": None, "epoch": 9})
        {'fc.bias': 3}
    """
    sd = checkpoint
    while True:
        key = next((k for k in _WRAPPERS if isinstance(sd.get(k), Mapping)), None)
        if key is None:
            break
        sd = sd[key]
    out = {}
    for k, v in sd.items():
        while k.startswith(_PREFIXES):
            k = next(k[len(p):] for p in _PREFIXES if k.startswith(p))
        out[k] = v
    if any(k.startswith("backbone.") for k in out):
        out = _strip(out, "backbone.", only=True)
    return out


def _hf_encoder(sd: Mapping) -> dict:
    """A HF SegFormer dict reduced to its encoder: the ``segformer.`` prefix of the *For* models off
    (their heads dropped), and the v4 / hub ``encoder.`` prefix off."""
    if any(k.startswith("segformer.") for k in sd):
        sd = _strip(sd, "segformer.", only=True)
    return _strip(sd, "encoder.")


def detect_format(state_dict: Mapping) -> str:
    """The format of an unwrapped state dict (:func:`unwrap_state_dict`), from its keys.

    ``hf_segformer`` (``patch_embeddings.`` keys), ``segformer`` (NVlabs ``patch_embed1.`` or mmseg
    ``layers.0.0.projection.``), else ``timm``: timm's own files and torchvision ResNets, whose keys are
    timm's (``torchvision`` needs no conversion, so it is never what this returns).

    Example:
        >>> [detect_format({k: 0}) for k in ("segformer.encoder.patch_embeddings.0.proj.weight",
        ...     "stages.0.patch_embeddings.proj.weight", "patch_embed1.proj.weight",
        ...     "layers.0.0.projection.weight", "layer1.0.conv1.weight", "patch_embed.proj.weight")]
        ['hf_segformer', 'hf_segformer', 'segformer', 'segformer', 'timm', 'timm']
    """
    keys = list(_hf_encoder(state_dict))
    if any(re.match(r"(patch_embeddings\.\d+|stages\.\d+\.patch_embeddings)\.proj\.", k) for k in keys):
        return "hf_segformer"
    if any(re.match(r"patch_embed\d\.proj\.|layers\.\d+\.0\.projection\.", k) for k in state_dict):
        return "segformer"
    return "timm"


def torchvision_to_timm(state_dict: Mapping) -> dict:
    """A torchvision ResNet / ResNeXt / Wide-ResNet state dict onto timm's ``resnet*`` / ``resnext*`` /
    ``wide_resnet*``: the keys already agree (stem ``conv1``/``bn1``, ``layerN.i.convK``/``bnK``/
    ``downsample.0|1``, head ``fc``), so this only checks the dict is one and returns a copy.

    Example:
        >>> torchvision_to_timm({"conv1.weight": 0, "layer1.0.conv1.weight": 1, "fc.bias": 2})
        {'conv1.weight': 0, 'layer1.0.conv1.weight': 1, 'fc.bias': 2}
        >>> torchvision_to_timm({"features.0.weight": 0})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: format 'torchvision': only ResNet / ResNeXt / Wide-ResNet files are supported ...
    """
    if "conv1.weight" not in state_dict or not any(k.startswith("layer1.") for k in state_dict):
        raise ValueError("format 'torchvision': only ResNet / ResNeXt / Wide-ResNet files are supported "
                         f"(keys conv1.*, layer1.* ...); got keys like {list(state_dict)[:3]}")
    return dict(state_dict)


def _embed(i: int) -> str:
    """timm's name of the patch embedding in front of stage ``i``."""
    return "patch_embed" if i == 0 else f"stages.{i}.downsample"


_MMSEG_BLOCK = {"attn.attn.out_proj.": "attn.proj.", "ffn.layers.0.": "mlp.fc1.", "ffn.layers.1.": "mlp.dwconv.",
                "ffn.layers.4.": "mlp.fc2."}


#: NVlabs (``patch_embed1``, ``block1.0``, ``norm1``) and mmseg ``mit.py`` (``layers.i.0`` embedding, ``layers.i.2``
#: norm) names that map one to one; mmseg's blocks (``layers.i.1.j``) need the rules in the function.
_SEGFORMER_RENAMES = (
    (r"patch_embed(\d)\.(.*)", lambda m: f"{_embed(int(m[1]) - 1)}.{m[2]}"),
    (r"block(\d)\.(\d+)\.(.*)",
     lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.{m[3].replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')}"),
    (r"norm(\d)\.(.*)", lambda m: f"stages.{int(m[1]) - 1}.norm.{m[2]}"),
    (r"layers\.(\d+)\.0\.(.*)", lambda m: f"{_embed(int(m[1]))}.{m[2].replace('projection.', 'proj.')}"),
    (r"layers\.(\d+)\.2\.(.*)", lambda m: f"stages.{m[1]}.norm.{m[2]}"),
)


def segformer_to_timm(state_dict: Mapping) -> dict:
    """A SegFormer MiT (or original PVT-v2) state dict, NVlabs or mmseg ``mit.py`` names, onto timm's
    ``pvt_v2_b*``.

    NVlabs / mmseg 0.x: ``patch_embedN`` -> ``patch_embed`` (N=1) or ``stages.{N-1}.downsample``,
    ``blockN.j`` -> ``stages.{N-1}.blocks.j`` (``mlp.dwconv.dwconv`` -> ``mlp.dwconv``; ``attn.q``,
    ``attn.kv``, ``attn.sr``, ``attn.norm``, ``attn.proj``, ``norm1/2``, ``mlp.fc1/fc2`` keep their names),
    ``normN`` -> ``stages.{N-1}.norm``. mmseg ``mit.py``: ``layers.i.0`` is the patch embedding
    (``projection`` -> ``proj``), ``layers.i.1.j`` the blocks (``attn.attn.in_proj_*`` is q, k, v stacked:
    split into ``attn.q`` and ``attn.kv``; ``attn.attn.out_proj`` -> ``attn.proj``; ``ffn.layers.0/1/4``
    are fc1 (a 1x1 conv: reshaped to a linear weight), the depthwise conv and fc2), ``layers.i.2`` the
    stage norm.

    Example:
        >>> sd = segformer_to_timm({"patch_embed2.proj.weight": 0, "block1.0.mlp.dwconv.dwconv.bias": 1,
        ...                         "norm4.weight": 2, "head.weight": 3})
        >>> sd  # doctest: +NORMALIZE_WHITESPACE
        {'stages.1.downsample.proj.weight': 0, 'stages.0.blocks.0.mlp.dwconv.bias': 1,
         'stages.3.norm.weight': 2, 'head.weight': 3}
        >>> import torch
        >>> sd = segformer_to_timm({"layers.0.1.0.attn.attn.in_proj_bias": torch.arange(6.),
        ...                         "layers.0.1.0.ffn.layers.0.weight": torch.zeros(8, 2, 1, 1)})
        >>> {k: v.tolist() if v.ndim == 1 else tuple(v.shape) for k, v in sd.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'stages.0.blocks.0.attn.q.bias': [0.0, 1.0], 'stages.0.blocks.0.attn.kv.bias': [2.0, 3.0, 4.0, 5.0],
         'stages.0.blocks.0.mlp.fc1.weight': (8, 2)}
    """
    out = {}
    for k, v in state_dict.items():
        renamed = next((rename(m) for pattern, rename in _SEGFORMER_RENAMES if (m := re.match(pattern, k))), None)
        if renamed is not None:
            out[renamed] = v
            continue
        m = re.match(r"layers\.(\d+)\.1\.(\d+)\.(.*)", k)
        if m:
            block, rest = f"stages.{m[1]}.blocks.{m[2]}.", m[3]
            pm = re.fullmatch(r"attn\.attn\.in_proj_(weight|bias)", rest)
            if pm:  # [q; k; v] stacked on dim 0: timm keeps q apart and k, v together
                dim = v.shape[0] // 3
                out[f"{block}attn.q.{pm[1]}"], out[f"{block}attn.kv.{pm[1]}"] = v[:dim], v[dim:]
                continue
            for old, new in _MMSEG_BLOCK.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    if rest in ("mlp.fc1.weight", "mlp.fc2.weight") and v.ndim == 4:
                        v = v.reshape(v.shape[:2])  # 1x1 conv -> linear
                    break
            out[block + rest] = v
            continue
        out[k] = v
    return out


_HF_BLOCK = {  # HF (hub / transformers 4 names, transformers >= 5 names) -> timm, inside one block
    "layer_norm_1.": "norm1.", "layernorm_before.": "norm1.",
    "layer_norm_2.": "norm2.", "layernorm_after.": "norm2.",
    "attention.self.query.": "attn.q.", "attention.q_proj.": "attn.q.",
    "attention.self.sr.": "attn.sr.", "attention.sequence_reduction.sequence_reduction.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.", "attention.sequence_reduction.layer_norm.": "attn.norm.",
    "attention.output.dense.": "attn.proj.", "attention.o_proj.": "attn.proj.",
    "mlp.dense1.": "mlp.fc1.", "mlp.fc1.": "mlp.fc1.",
    "mlp.dense2.": "mlp.fc2.", "mlp.fc2.": "mlp.fc2.",
    "mlp.dwconv.dwconv.": "mlp.dwconv.",
}
_HF_KV = {"attention.self.key.": 0, "attention.k_proj.": 0, "attention.self.value.": 1, "attention.v_proj.": 1}


def hf_segformer_to_timm(state_dict: Mapping) -> dict:
    """A HuggingFace SegFormer state dict (hub files or transformers >= 5 names; ``SegformerModel`` or the
    encoder of a ``*For*`` model) onto timm's ``pvt_v2_b*``.

    ``patch_embeddings.i`` -> ``patch_embed`` / ``stages.i.downsample`` (``layer_norm`` -> ``norm``),
    ``block.i.j`` / ``stages.i.blocks.j`` -> ``stages.i.blocks.j``, ``layer_norm.i`` -> ``stages.i.norm``.
    In a block: ``layer_norm_1/2`` -> ``norm1/2``, ``query`` -> ``attn.q``, ``key`` and ``value`` are
    concatenated (in that order, dim 0) into timm's ``attn.kv``, ``sr`` / ``layer_norm`` -> ``attn.sr`` /
    ``attn.norm``, ``output.dense`` -> ``attn.proj``, ``dense1/2`` -> ``mlp.fc1/2``, ``dwconv.dwconv`` ->
    ``mlp.dwconv``. The heads of the *For* models (``decode_head``, ``classifier``) are dropped.

    Example:
        >>> import torch
        >>> sd = hf_segformer_to_timm({"segformer.encoder.block.0.0.attention.self.key.bias": torch.zeros(2),
        ...     "segformer.encoder.block.0.0.attention.self.value.bias": torch.ones(2),
        ...     "segformer.encoder.patch_embeddings.1.layer_norm.weight": torch.ones(1),
        ...     "segformer.encoder.layer_norm.3.bias": torch.zeros(1), "classifier.weight": torch.zeros(1)})
        >>> {k: v.tolist() for k, v in sd.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'stages.1.downsample.norm.weight': [1.0], 'stages.3.norm.bias': [0.0],
         'stages.0.blocks.0.attn.kv.bias': [0.0, 0.0, 1.0, 1.0]}
    """
    out, kv = {}, {}
    for k, v in _hf_encoder(state_dict).items():
        m = re.match(r"(?:patch_embeddings\.(\d+)|stages\.(\d+)\.patch_embeddings)\.(.*)", k)
        if m:
            out[f"{_embed(int(m[1] or m[2]))}.{m[3].replace('layer_norm.', 'norm.')}"] = v
            continue
        m = re.match(r"(?:layer_norm\.(\d+)|stages\.(\d+)\.layer_norm)\.(.*)", k)
        if m:
            out[f"stages.{m[1] or m[2]}.norm.{m[3]}"] = v
            continue
        m = re.match(r"(?:block\.(\d+)|stages\.(\d+)\.blocks)\.(\d+)\.(.*)", k)
        if not m:
            out[k] = v
            continue
        block, rest = f"stages.{m[1] or m[2]}.blocks.{m[3]}.", m[4]
        old = next((p for p in _HF_KV if rest.startswith(p)), None)
        if old is not None:
            kv.setdefault(block + "attn.kv." + rest[len(old):], [None, None])[_HF_KV[old]] = (k, v)
            continue
        old = next((p for p in _HF_BLOCK if rest.startswith(p)), None)
        out[block + (rest if old is None else _HF_BLOCK[old] + rest[len(old):])] = v
    for name, (k_item, v_item) in kv.items():
        if k_item is None or v_item is None:  # half a pair: kept under its own name (an unexpected key)
            out.update(p for p in (k_item, v_item) if p is not None)
        else:
            out[name] = torch.cat([k_item[1], v_item[1]], 0)
    return out


def to_timm(state_dict: Mapping, fmt: str = "auto") -> tuple[dict, str]:
    """``(state dict in timm's keys, the format it was read as)``; ``fmt="auto"``: :func:`detect_format`.
    The dict is taken as it is: :func:`unwrap_state_dict` it first.

    Example:
        >>> to_timm({"norm1.weight": 0, "patch_embed1.proj.bias": 1})
        ({'stages.0.norm.weight': 0, 'patch_embed.proj.bias': 1}, 'segformer')
        >>> to_timm({"conv1.weight": 0}, "timm")
        ({'conv1.weight': 0}, 'timm')
    """
    if fmt not in FORMATS:
        raise ValueError(f"pretrained_format: expected one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        fmt = detect_format(state_dict)
    convert = {"timm": dict, "torchvision": torchvision_to_timm, "segformer": segformer_to_timm,
               "hf_segformer": hf_segformer_to_timm}[fmt]
    return convert(state_dict), fmt


def pvt_v2_kwargs(state_dict: Mapping) -> dict:
    """The ``timm.create_model("pvt_v2_b*", ...)`` arguments a timm-keyed PVT-v2 dict needs beyond the
    name: ``mlp_ratios`` from each stage's first ``mlp.fc1`` (MiT: 4 everywhere; timm's b0..b4: 8, 8, 4, 4).
    ``{}`` when the dict has no such keys.

    Example:
        >>> import torch
        >>> pvt_v2_kwargs({f"stages.{i}.blocks.0.mlp.fc1.weight": torch.zeros(4 * c, c)
        ...                for i, c in enumerate((32, 64, 160, 256))})
        {'mlp_ratios': (4, 4, 4, 4)}
        >>> pvt_v2_kwargs({"conv1.weight": torch.zeros(1)})
        {}
    """
    ratios = []
    while (w := state_dict.get(f"stages.{len(ratios)}.blocks.0.mlp.fc1.weight")) is not None:
        r = w.shape[0] / w.shape[1]
        ratios.append(int(r) if r == int(r) else r)
    return {"mlp_ratios": tuple(ratios)} if ratios else {}


PVT_V2_VARIANTS = {  # name: (depths, embed dims); MiT-BN has the layout of pvt_v2_bN
    "pvt_v2_b0": ((2, 2, 2, 2), (32, 64, 160, 256)),
    "pvt_v2_b1": ((2, 2, 2, 2), (64, 128, 320, 512)),
    "pvt_v2_b2": ((3, 4, 6, 3), (64, 128, 320, 512)),
    "pvt_v2_b3": ((3, 4, 18, 3), (64, 128, 320, 512)),
    "pvt_v2_b4": ((3, 8, 27, 3), (64, 128, 320, 512)),
    "pvt_v2_b5": ((3, 6, 40, 3), (64, 128, 320, 512)),
}


def pvt_v2_variant(state_dict: Mapping) -> str | None:
    """Which of timm's ``pvt_v2_b0..b5`` a timm-keyed PVT-v2 / MiT dict has the layout of (blocks per
    stage and stage widths, read off ``stages.i.blocks.j.*`` and ``stages.i.norm.weight``); None if none.

    Example:
        >>> import torch
        >>> sd = {f"stages.{i}.norm.weight": torch.zeros(c) for i, c in enumerate((32, 64, 160, 256))}
        >>> sd.update({f"stages.{i}.blocks.{j}.norm1.weight": torch.zeros(1) for i in range(4) for j in range(2)})
        >>> pvt_v2_variant(sd), pvt_v2_variant({"conv1.weight": torch.zeros(1)})
        ('pvt_v2_b0', None)
    """
    depths, dims = [0, 0, 0, 0], []
    for k in state_dict:
        m = re.match(r"stages\.([0-3])\.blocks\.(\d+)\.", k)
        if m:
            depths[int(m[1])] = max(depths[int(m[1])], int(m[2]) + 1)
    for i in range(4):
        w = state_dict.get(f"stages.{i}.norm.weight")
        dims.append(None if w is None else int(w.shape[0]))
    layout = (tuple(depths), tuple(dims))
    return next((name for name, v in PVT_V2_VARIANTS.items() if v == layout), None)
