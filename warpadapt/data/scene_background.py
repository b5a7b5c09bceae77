"""Background drawing of the synthetic scenes: road, sidewalks, terrain, facades, skyline, sky, texture.

The background is first a palette-code map (one code per material) plus a shade map, turned into RGB
with one lookup table of the style's colours; the semantic map comes from the codes.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from warpadapt.data.labels import SYNTHETIC_THING_TRAIN_IDS
from warpadapt.data.scene_layout import (
    BUILDING, FENCE, ROAD, SIDEWALK, SKY, SKY_DEPTH, TERRAIN, VEGETATION, WALL, SceneParams,
)

__all__ = ["render_background", "add_texture", "value_noise"]


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] of shape (h, w) with features of about ``cell`` pixels."""
    gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
    g = rng.random((gh, gw), dtype=np.float32) * 2 - 1
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _fraction(a):
    return a - np.floor(a)


# palette codes of the background index map
_C_SKY, _C_SKYLINE, _C_ROAD, _C_LANE, _C_SIDEWALK, _C_TILE, _C_CURB = 0, 1, 4, 5, 6, 7, 8
_C_TERRAIN, _C_VEG, _C_WALL, _C_FENCE, _C_WINDOW, _C_FRAME, _C_BUILDING = 9, 11, 13, 14, 15, 16, 20
_CODE_SEM = np.full(256, SKY, np.uint8)
for _c, _s in ((1, BUILDING), (2, BUILDING), (3, BUILDING), (4, ROAD), (5, ROAD), (6, SIDEWALK),
               (7, SIDEWALK), (8, SIDEWALK), (9, TERRAIN), (10, TERRAIN), (11, VEGETATION), (12, VEGETATION),
               (13, WALL), (14, FENCE), (15, BUILDING), (16, BUILDING)):
    _CODE_SEM[_c] = _s
_CODE_SEM[_C_BUILDING:] = BUILDING


def _palette(style) -> np.ndarray:
    lut = np.zeros((256, 1, 3), np.float32)
    for i, c in enumerate(style["skyline"][:3]):
        lut[_C_SKYLINE + i] = c
    for i in range(len(style["skyline"]), 3):
        lut[_C_SKYLINE + i] = style["skyline"][0]
    lut[_C_ROAD], lut[_C_LANE], lut[_C_SIDEWALK] = style["road"], style["lane"], style["sidewalk"]
    lut[_C_TILE] = np.asarray(style["sidewalk"], np.float32) * (1 - style["tile_contrast"])
    lut[_C_CURB] = style["curb"]
    lut[_C_TERRAIN], lut[_C_TERRAIN + 1] = style["terrain"][0], style["terrain"][1]
    lut[_C_VEG], lut[_C_VEG + 1] = style["vegetation"][0], style["vegetation"][1]
    lut[_C_WALL], lut[_C_FENCE] = style["wall"], style["fence"]
    lut[_C_WINDOW], lut[_C_FRAME] = style["window"], style["window_frame"]
    for i, c in enumerate(style["buildings"]):
        lut[_C_BUILDING + i] = c
    return lut


def render_background(layout, style, params: SceneParams, rng) -> tuple:
    """Background as a palette-code map + a shade map, turned into RGB with one LUT."""
    H, W = params.height, params.width
    f, vx, yh, hc = layout["f"], layout["vx"], layout["yh"], params.cam_height
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]
    xs = (np.arange(W, dtype=np.float32) + 0.5)[None, :]
    dy = ys - np.float32(yh)  # (H,1)
    ground_row = dy > 0
    Zg = np.where(ground_row, f * hc / np.maximum(dy, 1e-3), SKY_DEPTH).astype(np.float32)  # (H,1)
    X = (xs - np.float32(vx)) * (Zg / np.float32(f))  # (H,W) lateral metres on the ground plane
    Zgf = np.broadcast_to(Zg, (H, W))

    code = np.zeros((H, W), np.uint8)
    shade = np.ones((H, W), np.float32)
    depth = np.where(ground_row, Zgf, np.float32(SKY_DEPTH)).astype(np.float32)

    # distant skyline: a step profile in pixels above the horizon
    counts, heights, amp = layout["skyline"]
    edges = np.cumsum(counts) / counts.sum() * W * 1.05
    col_idx = np.minimum(np.searchsorted(edges, xs[0]), len(heights) - 1)
    sk_h = (heights[col_idx] * amp * 0.12 * H + 1.0).astype(np.float32)[None, :]
    sk = (dy <= 0) & (-dy < sk_h)
    code = np.where(sk, (_C_SKYLINE + col_idx % 3).astype(np.uint8)[None, :], code).astype(np.uint8)
    depth[sk] = 600.0

    # ground: road / sidewalk (+ tiles, curb) / terrain by lateral position
    rl, rr = layout["road_l"], layout["road_r"]
    tex = value_noise(rng, 96, 96, 6.0)
    mapx = X * 4.0
    mapx -= np.floor(mapx / 96) * 96
    mapy = np.ascontiguousarray(Zgf) * 2.0
    mapy -= np.floor(mapy / 96) * 96
    gtex = cv2.remap(tex, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    g = np.broadcast_to(ground_row, (H, W))
    road = g & (X >= rl) & (X <= rr)
    side = g & ~road & (X >= rl - layout["side_l"]) & (X <= rr + layout["side_r"])
    terr = g & ~road & ~side
    tile = style["tile"]
    tl = (_fraction(X / tile) < 0.12) | (_fraction(Zgf / tile) < 0.12)
    curb = (np.abs(X - rl) < 0.25) | (np.abs(X - rr) < 0.25)
    dl, gap, ph = layout["dash"]
    lw = layout["lane_w"]
    marks = (np.abs(X - (rl + 0.35)) < 0.07) | (np.abs(X - (rr - 0.35)) < 0.07)
    xm = (X - rl) / lw
    near_div = (np.abs(xm - np.round(xm)) * lw < 0.07) & (xm > 0.5) & (xm < len(layout["lanes"]) - 0.5)
    marks |= near_div & (_fraction((Zgf + ph) / (dl + gap)) < dl / (dl + gap))
    code[road] = _C_ROAD
    code[road & marks] = _C_LANE
    code[side] = _C_SIDEWALK
    code[side & tl] = _C_TILE
    code[side & curb] = _C_CURB
    code[terr] = _C_TERRAIN
    code[terr & (gtex > 0)] = _C_TERRAIN + 1
    shade = np.where(road & ~marks, 1 + style["road_patch"] * gtex, shade).astype(np.float32)

    # facades on both sides (buildings with windows/bricks, tree lines, walls, fences)
    window_rand = np.full((H, W), -1.0, np.float32)
    for side_name, xb, cols in (("l", layout["fac_l"], xs[0] < vx - 0.5), ("r", layout["fac_r"], xs[0] > vx + 0.5)):
        segs = layout["segs_" + side_name]
        cidx = np.nonzero(cols)[0]
        if len(cidx) == 0:
            continue
        c0, c1 = int(cidx[0]), int(cidx[-1]) + 1
        Zf = np.clip(f * xb / (xs[0, c0:c1] - vx), 0.5, 2000.0).astype(np.float32)  # (w,)
        ends = np.array([s["z1"] for s in segs])
        si = np.searchsorted(ends, Zf)
        valid = (si < len(segs)) & (Zf > segs[0]["z0"])
        si = np.minimum(si, len(segs) - 1)

        def col(key, dflt=0.0):
            a = np.array([s[key] for s in segs], np.float32)[si]
            return np.where(valid, a, np.float32(dflt)).astype(np.float32)[None, :]
        typ = np.where(valid, np.array([s["type"] for s in segs])[si], 4)[None, :]
        h_main = col("h")
        freqs, phases = layout["vegwave_" + side_name]
        wave = sum(np.sin(Zf * fr + ph_) for fr, ph_ in zip(freqs, phases)) / 3.0
        h_veg = col("hveg") * (1 + 0.3 * wave) + 0.6 * np.sin(Zf * 3.1 + phases[0])
        h_veg = np.where(typ == 4, 0.0, np.maximum(h_veg, 0.0)).astype(np.float32)
        # rows that can hold a facade pixel: above the lowest facade bottom
        ybot = min(H, int(math.ceil(yh + f * hc / max(float(Zf.min()), 1e-3))) + 1)
        ytop = max(0, int(math.floor(yh + f * (hc - 30.0) / max(float(Zf.min()), 1e-3))))
        if ybot <= ytop:
            continue
        Y = hc - dy[ytop:ybot] * (Zf[None, :] / np.float32(f))  # (h,w) facade-plane height
        above = Y >= 0
        is_b = (typ == 0) & above & (Y < h_main)
        low = ((typ == 2) | (typ == 3)) & above & (Y < h_main)
        vegm = (typ != 0) & (typ != 4) & above & (Y < h_veg) & ~low
        fencem = low & (typ == 3)
        u = Zf[None, :] - col("z0")
        if fencem.any():
            lattice = (_fraction(u / 0.35) < 0.35) | (_fraction(Y / 0.6) < 0.15) | (Y < 0.2)
            fenc_open = fencem & ~lattice
            fencem &= lattice
            vegm |= fenc_open & (Y < h_veg)
            low &= ~fenc_open
        wallm = low & ~fencem
        key = col("key")
        bcode = (_C_BUILDING + (col("col") * len(style["buildings"])).astype(np.int32) % len(style["buildings"]))
        kind = np.where(key < style["glass_prob"], 2, np.where(key < style["glass_prob"] + style["brick_prob"], 1, 0))
        su, sv = col("su", 3.0), col("sv", 3.4)
        wf = np.where(kind == 2, 0.88, col("wf", 0.5))
        hf = np.where(kind == 2, 0.85, col("hf", 0.5))
        fu = _fraction(u / su)
        fv = _fraction(Y / sv)
        inside = (Y > 3.2) & (Y < h_main - 0.8) & is_b
        du = np.abs(fu - 0.5)
        win = (du < wf / 2) & (fv > 0.3) & (fv < 0.3 + hf) & inside
        frame = (du < wf / 2 + 0.06) & (fv > 0.25) & (fv < 0.35 + hf) & inside & ~win
        brick = (kind == 1) & ((_fraction(Y / 0.3) < 0.17) | (_fraction((u + 0.55 * (np.floor(Y / 0.3) % 2)) / 1.1) < 0.07)) & is_b
        shop = is_b & (Y < 3.0) & (Y > 0.3) & (_fraction(u / 6.0) < 0.66)
        sub = code[ytop:ybot, c0:c1]
        sub[is_b] = np.broadcast_to(bcode, sub.shape)[is_b]
        sub[frame] = _C_FRAME
        sub[win | shop] = _C_WINDOW
        sub[vegm] = _C_VEG
        sub[wallm] = _C_WALL
        sub[fencem] = _C_FENCE
        ssh = shade[ytop:ybot, c0:c1]
        np.copyto(ssh, np.broadcast_to(col("bright", 1.0) * (1 - 0.25 * brick), ssh.shape), where=is_b)
        wid = np.floor(u / su) * 7.13 + np.floor(Y / sv) * 3.71 + col("wseed")
        wr = _fraction(np.sin(wid) * 43758.5453).astype(np.float32)
        np.copyto(window_rand[ytop:ybot, c0:c1], wr, where=win)
        fac = is_b | vegm | wallm | fencem
        np.copyto(depth[ytop:ybot, c0:c1], np.broadcast_to(Zf[None, :], fac.shape), where=fac)

    sem = cv2.LUT(code, _CODE_SEM)
    img = cv2.LUT(cv2.merge([code, code, code]), _palette(style))
    img *= cv2.merge([shade, shade, shade])
    # sky gradient + clouds where code == sky
    skym = code == _C_SKY
    rows = np.nonzero(skym.any(1))[0]
    if len(rows):
        r1 = int(rows[-1]) + 1
        t = np.clip(ys[:r1, 0] / max(yh, 1.0), 0, 1)[:, None, None] ** 1.5
        sky = np.asarray(style["sky_top"], np.float32) * (1 - t) + np.asarray(style["sky_horizon"], np.float32) * t
        cl = np.clip(value_noise(rng, r1, W, 40.0) * 0.8 + value_noise(rng, r1, W, 12.0) * 0.35 + style["cloud"] - 0.6, 0, 1)
        cl = cl * (1 - 0.6 * t[..., 0])
        sky = sky + (np.asarray(style["cloud_color"], np.float32) - sky) * cv2.merge([cl, cl, cl])
        np.copyto(img[:r1], sky, where=skym[:r1, :, None])
    return img, sem, depth, window_rand


def add_texture(img, sem, style, rng) -> None:
    """Class-dependent texture: multiplicative noise, strongest on vegetation and walls."""
    H, W = sem.shape
    amp = np.full((256, 1), style["grain"], np.float32)
    amp[VEGETATION] = style["veg_grain"]
    amp[TERRAIN] = style["veg_grain"] * 0.5
    amp[BUILDING] = style["wall_grain"]
    amp[WALL] = style["wall_grain"] * 1.3
    amp[ROAD] = style["road_grain"]
    amp[SIDEWALK] = style["road_grain"] * 0.7
    amp[SKY] = 0.0
    for t in SYNTHETIC_THING_TRAIN_IDS:
        amp[t] = 0.03
    cell = style["noise_cell"]
    n = value_noise(rng, H, W, cell) * 0.6 + value_noise(rng, H, W, cell * 4) * 0.4
    # leaf clusters: darker blobs on vegetation
    blobs = value_noise(rng, H, W, cell * 2.0)
    veg = (sem == VEGETATION).astype(np.float32)
    m = 1.0 + cv2.LUT(sem, amp.reshape(1, 256)) * n - veg * 0.4 * (blobs > 0.2)
    img *= cv2.merge([m, m, m])
    np.clip(img, 0, 1, out=img)
