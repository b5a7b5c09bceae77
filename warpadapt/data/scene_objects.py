"""Object drawing of the synthetic scenes: cars, trucks, persons, riders on bicycles, signs, traffic
lights, street lamps, poles and trees, drawn far to near into the image and the label maps at once.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from warpadapt.data.scene_layout import (
    BICYCLE, CAR, PERSON, POLE, RIDER, TRAFFIC_LIGHT, TRAFFIC_SIGN, TRUCK, VEGETATION, Camera,
)

__all__ = ["Canvas", "draw_objects"]


class Canvas:
    """Image + label maps drawn together with OpenCV (sub-pixel, 4 fractional bits)."""

    SHIFT = 4

    def __init__(self, img, sem, inst, depth):
        self.img, self.sem, self.inst, self.depth = img, sem, inst, depth

    def _pts(self, xs, ys):
        points = np.stack([np.asarray(xs, np.float64) - 0.5, np.asarray(ys, np.float64) - 0.5], -1)
        return np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)

    def poly(self, xs, ys, color, sem, inst, z):
        polygon = [self._pts(xs, ys)]
        cv2.fillPoly(self.img, polygon, tuple(float(c) for c in color), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.sem, polygon, int(sem), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.inst, polygon, int(inst), cv2.LINE_8, self.SHIFT)
        cv2.fillPoly(self.depth, polygon, float(z), cv2.LINE_8, self.SHIFT)

    def rect(self, x0, y0, x1, y1, color, sem, inst, z):
        self.poly([x0, x1, x1, x0], [y0, y0, y1, y1], color, sem, inst, z)

    def ellipse(self, cx, cy, rx, ry, color, sem, inst, z, thickness=-1):
        c = (int(round((cx - 0.5) * 16)), int(round((cy - 0.5) * 16)))
        ax = (max(1, int(round(rx * 16))), max(1, int(round(ry * 16))))
        t = thickness if thickness < 0 else max(1, int(round(thickness)))
        for a, v in ((self.img, tuple(float(c_) for c_ in color)), (self.sem, int(sem)),
                     (self.inst, int(inst)), (self.depth, float(z))):
            cv2.ellipse(a, c, ax, 0, 0, 360, v, t, cv2.LINE_8, self.SHIFT)

    def line(self, x0, y0, x1, y1, width, color, sem, inst, z):
        """A thick segment drawn as a quad (width in pixels, at least 1)."""
        dx, dy = x1 - x0, y1 - y0
        n = math.hypot(dx, dy) + 1e-9
        w = max(width, 0.8) / 2
        ox, oy = -dy / n * w, dx / n * w
        self.poly([x0 + ox, x1 + ox, x1 - ox, x0 - ox], [y0 + oy, y1 + oy, y1 - oy, y0 - oy],
                  color, sem, inst, z)


def draw_objects(layout, style, canvas: Canvas, cam: Camera, lights: list) -> list:
    """Draw the layout's objects far to near; returns their (train id, instance id) pairs."""
    counters: dict[int, int] = {}
    things = []  # (train_id, inst_id)

    def new_inst(tid):
        k = counters.get(tid, 0)
        counters[tid] = k + 1
        iid = tid * 1000 + k
        things.append((tid, iid))
        return iid

    def cuboid(x0, x1, y0, y1, z0, z1, color, sem, inst, face_color=None):
        """Axis-aligned cuboid; draws the visible side face, top face (if below the camera), near face."""
        c = np.asarray(color, np.float32)
        if x0 > 0:  # visible left side
            canvas.poly(cam.x([x0, x0, x0, x0], [z0, z1, z1, z0]), cam.y([y0, y0, y1, y1], [z0, z1, z1, z0]),
                        c * 0.72, sem, inst, z0)
        elif x1 < 0:
            canvas.poly(cam.x([x1, x1, x1, x1], [z0, z1, z1, z0]), cam.y([y0, y0, y1, y1], [z0, z1, z1, z0]),
                        c * 0.72, sem, inst, z0)
        if y1 < cam.hc:
            canvas.poly(cam.x([x0, x1, x1, x0], [z0, z0, z1, z1]), cam.y([y1, y1, y1, y1], [z0, z0, z1, z1]),
                        np.minimum(c * 1.12, 1), sem, inst, z0)
        fc = c if face_color is None else np.asarray(face_color, np.float32)
        canvas.rect(cam.x(x0, z0), cam.y(y1, z0), cam.x(x1, z0), cam.y(y0, z0), fc * 0.9, sem, inst, z0)

    for obj in layout["objects"]:
        k, X, Z = obj["kind"], obj["X"], obj["Z"]
        s = cam.scale(Z)
        if k in ("car", "truck"):
            tid = CAR if k == "car" else TRUCK
            iid = new_inst(tid)
            w, h, ln, col = obj["w"], obj["h"], obj["len"], obj["color"]
            x0, x1 = X - w / 2, X + w / 2
            # wheels
            for wx in (x0 + 0.12, x1 - 0.42):
                canvas.rect(cam.x(wx, Z + 0.2), cam.y(0.45, Z + 0.2), cam.x(wx + 0.3, Z + 0.2), cam.y(0.0, Z + 0.2),
                            (0.06, 0.06, 0.07), tid, iid, Z)
            if k == "car":
                hb = h * obj["cab"]
                cuboid(x0, x1, 0.28, hb, Z, Z + ln, col, tid, iid)
                cz0, cz1 = Z + ln * (0.22 if not obj["front"] else 0.3), Z + ln * (0.7 if not obj["front"] else 0.78)
                cuboid(x0 + 0.12, x1 - 0.12, hb, h, cz0, cz1, col, tid, iid,
                       face_color=np.array([0.16, 0.19, 0.23], np.float32) / 0.9)
                # the rear/front glass is seen above the body at the near face
                ly = hb * 0.72
            else:
                cuboid(x0, x1, 0.45, h, Z, Z + ln, obj["color2"] * 0.7 + 0.25, tid, iid)
                if obj["front"]:
                    canvas.rect(cam.x(x0 + 0.15, Z), cam.y(h * 0.9, Z), cam.x(x1 - 0.15, Z), cam.y(h * 0.6, Z),
                                (0.15, 0.18, 0.22), tid, iid, Z)
                ly = 0.8
            lc = (1.0, 0.97, 0.85) if obj["front"] else (0.85, 0.08, 0.05)
            for lx in (x0 + 0.1, x1 - 0.35):
                canvas.rect(cam.x(lx, Z), cam.y(ly + 0.12, Z), cam.x(lx + 0.25, Z), cam.y(ly, Z), lc, tid, iid, Z)
                lights.append((float(cam.x(lx + 0.125, Z)), float(cam.y(ly + 0.06, Z)), max(0.15 * s, 0.7),
                               *lc, 1.0 if obj["front"] else 0.6))
            canvas.rect(cam.x(X - 0.25, Z), cam.y(0.55, Z), cam.x(X + 0.25, Z), cam.y(0.42, Z),
                        (0.9, 0.9, 0.85), tid, iid, Z)
        elif k == "person":
            iid = new_inst(PERSON)
            _draw_person(canvas, cam, obj, X, Z, PERSON, iid, sitting=False)
        elif k == "rider":
            bid = new_inst(BICYCLE)
            _draw_bicycle(canvas, cam, obj, X, Z, BICYCLE, bid)
            rid = new_inst(RIDER)
            _draw_person(canvas, cam, obj, X, Z, RIDER, rid, sitting=True)
        elif k == "sign":
            top = obj["top"]
            canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(top, Z), 0.08 * s, style["pole"], POLE, 0, Z)
            iid = new_inst(TRAFFIC_SIGN)
            r = obj["size"] / 2
            cx, cy, rp = float(cam.x(X, Z)), float(cam.y(top + r * 0.6, Z)), r * s
            sh = obj["shape"]
            if sh == 0:  # prohibition: red ring, white disc
                canvas.ellipse(cx, cy, rp, rp, (0.8, 0.1, 0.1), TRAFFIC_SIGN, iid, Z)
                canvas.ellipse(cx, cy, rp * 0.72, rp * 0.72, (0.95, 0.95, 0.95), TRAFFIC_SIGN, iid, Z)
            elif sh == 1:  # warning triangle
                canvas.poly([cx - rp, cx + rp, cx], [cy + rp * 0.8, cy + rp * 0.8, cy - rp], (0.8, 0.1, 0.1), TRAFFIC_SIGN, iid, Z)
                canvas.poly([cx - rp * 0.6, cx + rp * 0.6, cx], [cy + rp * 0.55, cy + rp * 0.55, cy - rp * 0.45],
                            (0.97, 0.95, 0.9), TRAFFIC_SIGN, iid, Z)
            elif sh == 2:  # blue mandatory disc
                canvas.ellipse(cx, cy, rp, rp, (0.1, 0.3, 0.75), TRAFFIC_SIGN, iid, Z)
                canvas.line(cx, cy + rp * 0.5, cx, cy - rp * 0.5, rp * 0.25, (0.95, 0.95, 0.95), TRAFFIC_SIGN, iid, Z)
            else:  # rectangular direction sign
                canvas.rect(cx - rp * 1.3, cy - rp * 0.8, cx + rp * 1.3, cy + rp * 0.8, (0.05, 0.45, 0.25), TRAFFIC_SIGN, iid, Z)
                canvas.rect(cx - rp * 1.0, cy - rp * 0.2, cx + rp * 0.8, cy + rp * 0.2, (0.95, 0.95, 0.95), TRAFFIC_SIGN, iid, Z)
        elif k == "tlight":
            top = obj["top"] + 0.6
            if obj["overhead"]:
                xa = X - obj["side"] * 3.5
                canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(5.2, Z), 0.12 * s, style["pole"], POLE, 0, Z)
                canvas.line(cam.x(X, Z), cam.y(5.2, Z), cam.x(xa, Z), cam.y(5.2, Z), 0.09 * s, style["pole"], POLE, 0, Z)
                bx, by = xa, 4.3
            else:
                canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(top, Z), 0.1 * s, style["pole"], POLE, 0, Z)
                bx, by = X, top - 0.1
            iid = new_inst(TRAFFIC_LIGHT)
            canvas.rect(cam.x(bx - 0.18, Z), cam.y(by + 0.95, Z), cam.x(bx + 0.18, Z), cam.y(by, Z),
                        (0.08, 0.08, 0.09), TRAFFIC_LIGHT, iid, Z)
            for j, lc in enumerate(((0.95, 0.15, 0.1), (0.95, 0.75, 0.1), (0.2, 0.9, 0.35))):
                on = j == obj["state"]
                ly_ = by + 0.78 - 0.3 * j
                c = lc if on else tuple(0.25 * v for v in lc)
                canvas.ellipse(float(cam.x(bx, Z)), float(cam.y(ly_, Z)), 0.11 * s, 0.11 * s, c, TRAFFIC_LIGHT, iid, Z)
                if on:
                    lights.append((float(cam.x(bx, Z)), float(cam.y(ly_, Z)), max(0.11 * s, 0.7), *lc, 0.8))
        elif k == "lamp":
            hl = obj["lamp_h"]
            xa = X - obj["side"] * 1.4
            canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(hl, Z), 0.14 * s, style["pole"], POLE, 0, Z)
            canvas.line(cam.x(X, Z), cam.y(hl, Z), cam.x(xa, Z), cam.y(hl - 0.1, Z), 0.08 * s, style["pole"], POLE, 0, Z)
            canvas.rect(cam.x(xa - 0.35, Z), cam.y(hl, Z), cam.x(xa + 0.35, Z), cam.y(hl - 0.22, Z),
                        (0.85, 0.85, 0.8), POLE, 0, Z)
            lights.append((float(cam.x(xa, Z)), float(cam.y(hl - 0.2, Z)), max(0.3 * s, 1.0), 1.0, 0.82, 0.55, 2.0))
        elif k == "pole":
            canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(obj["lamp_h"] * 0.9, Z), 0.18 * s,
                        style["pole"], POLE, 0, Z)
        elif k == "tree":
            th = obj["trunk_h"]
            canvas.line(cam.x(X, Z), cam.y(0, Z), cam.x(X, Z), cam.y(th + 0.5, Z), 0.25 * s, style["trunk"], VEGETATION, 0, Z)
            cr = obj["crown"]
            vc = np.asarray(style["vegetation"], np.float32)
            for j, (dx_, dy_, rr) in enumerate(((0, 0, 1.0), (-0.5, -0.3, 0.7), (0.5, -0.2, 0.75), (0.1, 0.5, 0.7))):
                canvas.ellipse(float(cam.x(X + dx_ * cr, Z)), float(cam.y(th + cr + dy_ * cr, Z)), rr * cr * s,
                               rr * cr * s * 0.9, vc[j % 2] * (0.85 + 0.1 * j), VEGETATION, 0, Z)
    return things


def _draw_person(canvas, cam, obj, X, Z, tid, iid, sitting):
    h = obj["h"]
    s = cam.scale(Z)
    wd = 0.46 * h * 0.5 * obj["wide"]
    st = obj["stride"] * h
    if sitting:
        hip = 1.0
        # legs bent down to the pedals
        for sx in (-0.1, 0.1):
            canvas.line(cam.x(X + sx, Z), cam.y(hip, Z), cam.x(X + sx * 1.2, Z), cam.y(0.35, Z), 0.14 * s,
                        obj["pants"], tid, iid, Z)
        lean = 0.12 * np.sign(obj["yaw"])
        torso_top = hip + 0.55
        canvas.poly(cam.x([X - wd / 2, X + wd / 2, X + wd / 2 + lean, X - wd / 2 + lean], Z),
                    cam.y([hip, hip, torso_top, torso_top], Z), obj["shirt"], tid, iid, Z)
        hy = torso_top + 0.13
        hx = X + lean
    else:
        hip = 0.48 * h
        for sx, sg in ((-0.07 * h, 1), (0.07 * h, -1)):
            canvas.poly(cam.x([X + sx - 0.055 * h, X + sx + 0.055 * h, X + sx + 0.045 * h + sg * st * 0.3,
                               X + sx - 0.045 * h + sg * st * 0.3], Z),
                        cam.y([hip, hip, 0, 0], Z), obj["pants"], tid, iid, Z)
        torso_top = 0.83 * h
        canvas.poly(cam.x([X - wd / 2, X + wd / 2, X + wd / 2 * 1.05, X - wd / 2 * 1.05], Z),
                    cam.y([hip - 0.02, hip - 0.02, torso_top, torso_top], Z), obj["shirt"], tid, iid, Z)
        for sx in (-1, 1):  # arms
            canvas.line(cam.x(X + sx * wd * 0.55, Z), cam.y(torso_top - 0.03, Z), cam.x(X + sx * wd * 0.6, Z),
                        cam.y(hip + 0.02, Z), 0.09 * s, obj["shirt"] * 0.85, tid, iid, Z)
        hy = 0.9 * h
        hx = X
    r = 0.11 * h * 0.6 / 0.66
    canvas.ellipse(float(cam.x(hx, Z)), float(cam.y(hy, Z)), r * 0.8 * s, r * s, obj["skin"], tid, iid, Z)
    canvas.ellipse(float(cam.x(hx, Z)), float(cam.y(hy + r * 0.35, Z)), r * 0.82 * s, r * 0.6 * s,
                   obj["pants"] * 0.5, tid, iid, Z)


def _draw_bicycle(canvas, cam, obj, X, Z, tid, iid):
    s = cam.scale(Z)
    yaw = obj["yaw"]
    half = 0.55 * abs(yaw)
    r = 0.34
    c = obj["bike"]
    xa, xb = X - half, X + half
    for xw in (xa, xb):
        canvas.ellipse(float(cam.x(xw, Z)), float(cam.y(r, Z)), max(r * s * abs(yaw), 0.6), r * s,
                       (0.08, 0.08, 0.08), tid, iid, Z, thickness=max(1.0, 0.06 * s))
    canvas.line(cam.x(xa, Z), cam.y(r, Z), cam.x(X, Z), cam.y(0.95, Z), 0.05 * s, c, tid, iid, Z)
    canvas.line(cam.x(xb, Z), cam.y(r, Z), cam.x(X + half * 0.7, Z), cam.y(1.05, Z), 0.05 * s, c, tid, iid, Z)
    canvas.line(cam.x(X, Z), cam.y(0.95, Z), cam.x(X + half * 0.7, Z), cam.y(0.95, Z), 0.05 * s, c, tid, iid, Z)
    canvas.line(cam.x(xa, Z), cam.y(r, Z), cam.x(xb, Z), cam.y(r, Z), 0.05 * s, c, tid, iid, Z)
