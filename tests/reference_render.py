"""Test helper: a slow numpy re-statement of render_common.h (one statement at a time, in float32)
and small seeded inputs for the renderer tests (padded events, large-radius jets)."""
from __future__ import annotations

import numpy as np

from engine.contracts import BJET, JET, MET, NUM_TYPES, PAD
from kernels.presets import LAYOUT

f32 = np.float32
PI, TWO_PI = f32(3.14159265358979), f32(6.28318530717959)
L = LAYOUT


def ref_log(x):
    bits = int(np.array(x, f32).view(np.int32))
    e = ((bits >> 23) & 0xFF) - 127
    m = np.array((bits & 0x007FFFFF) | 0x3F800000, np.int32).view(f32)[()]
    if m > f32(1.41421356):
        m, e = m * f32(0.5), e + 1
    f = m - f32(1)
    s = f / (f32(2) + f)
    s2 = s * s
    p = s2 * (f32(0.333333333) + s2 * (f32(0.2) + s2 * (f32(0.142857143)
                                                     + s2 * (f32(0.111111111) + s2 * f32(0.0909090909)))))
    return f32(e) * f32(0.693147181) + f32(2) * (s + s * p)


def ref_wrap(phi):
    w = phi - TWO_PI * np.floor((phi + PI) / TWO_PI)
    return w - TWO_PI if w >= PI else (w + TWO_PI if w < -PI else w)


def tparam(P, t, field):
    return P[L["RC_P_TYPES"] + t * L["RC_P_TYPE_STRIDE"] + L[field]]


def ref_object(P, t, f, delta=None, flip=False):
    W, H, eta_max = int(P[0]), int(P[1]), P[L["RC_P_ETA_MAX"]]
    pt, eta, phi = f[0], (f32(0) if t == MET else f[1]), f[2]
    if delta is not None:
        phi = phi + delta
        eta = -eta if flip else eta
    ppe = f32(W) / (f32(2) * eta_max)
    cx = (eta + eta_max) * ppe
    cy = (PI - ref_wrap(phi)) * (f32(H) / TWO_PI)
    cy = cy - f32(H) if cy >= H else cy
    cy = cy + f32(H) if cy < 0 else cy
    r = tparam(P, t, "RC_T_RADIUS") * ref_log(max(pt, f32(1))) * ppe
    hw = f32(0.5) * tparam(P, t, "RC_T_STROKE_NEG" if f[5] < 0 else "RC_T_STROKE_POS")
    channel = int(tparam(P, t, "RC_T_CHANNEL"))
    if channel < 0:
        col = [tparam(P, t, k) for k in ("RC_T_RED", "RC_T_GREEN", "RC_T_BLUE")]
    else:
        col = [np.clip(ref_log(f32(1) + max(pt, f32(0))) / ref_log(f32(1) + P[L["RC_P_PT_MAX"]]), 0, 1)]
    reach = r + hw + f32(0.5)
    x0, x1 = max(np.floor(cx - reach) - 1, 0), min(np.ceil(cx + reach) + 1, W - 1)
    y0 = np.floor(cy - reach) - f32(1)
    rows = np.ceil(cy + reach) + f32(1) - y0 + f32(1)
    y0, rows = (0, H) if rows >= H else (int(y0) % H, int(rows))
    return dict(cx=cx, cy=cy, r=r, hw=hw, col=col, channel=channel, x0=int(x0), x1=int(x1), y0=y0, rows=rows)


def ref_event(P, types, feats, count, delta=None, flip=False):
    """(C, H, W) float32 image of one event, every pixel evaluated for every object."""
    W, H, C = int(P[0]), int(P[1]), int(P[2])
    img = np.empty((C, H, W), f32)
    img[:] = P[L["RC_P_BACKGROUND"]:L["RC_P_BACKGROUND"] + C, None, None]
    j, i = np.mgrid[0:H, 0:W]
    drawn = {}
    for k in range(max(0, min(count, len(types)))):
        t, f = int(types[k]), feats[k]
        if not (PAD < t < NUM_TYPES) or not np.all(np.isfinite(f[:3])):
            continue
        g = JET if t == BJET else t
        if 0 <= tparam(P, t, "RC_T_MAX_COUNT") <= drawn.get(g, 0):
            continue
        drawn[g] = drawn.get(g, 0) + 1
        o = ref_object(P, t, f, delta, flip)
        inside = (i >= o["x0"]) & (i <= o["x1"]) & ((j - o["y0"]) % H < o["rows"])
        dx = (i.astype(f32) + f32(0.5)) - o["cx"]
        dy = (j.astype(f32) + f32(0.5)) - o["cy"]
        dy = np.where(dy >= f32(H / 2), dy - f32(H), dy)
        dy = np.where(dy < -f32(H / 2), dy + f32(H), dy)
        d = np.sqrt(dx * dx + dy * dy)
        dist = np.maximum(d - o["r"], f32(0)) if P[L["RC_P_FILLED"]] else np.abs(d - o["r"])
        a = np.clip(o["hw"] + f32(0.5) - dist, f32(0), f32(1))
        channels = range(3) if o["channel"] < 0 else [o["channel"]]
        for n, c in enumerate(channels):
            colour = o["col"][n] if o["channel"] < 0 else o["col"][0]
            img[c] = np.where(inside, img[c] * (f32(1) - a) + colour * a, img[c])
    return img


def to_u8(x):
    return np.floor(np.clip(x, 0, 1) * f32(255) + f32(0.5)).astype(np.uint8)


def make_events(n, seed=0, cap=16):
    """Realistic-looking padded events: 0-2 leptons, 2-6 jets (30-300 GeV), MET last."""
    rng = np.random.default_rng(seed)
    types = np.zeros((n, cap), np.int8)
    feats = np.zeros((n, cap, 6), np.float32)
    counts = np.zeros(n, np.int32)
    for b in range(n):
        jets = list(rng.choice([3, 3, 4], rng.integers(2, 7)))
        kinds = [1] * rng.integers(0, 2) + [2] * rng.integers(0, 2) + jets + [5]
        for k, t in enumerate(kinds):
            types[b, k] = t
            feats[b, k] = [rng.uniform(20, 300), rng.uniform(-2.5, 2.5), rng.uniform(-np.pi, np.pi), 0, 0,
                           rng.choice([-1, 1]) if t in (1, 2) else 0]
        counts[b] = len(kinds)
    return {"types": types, "features": feats, "counts": counts}


def jets(n=3, m=30, seed=5):
    rng = np.random.default_rng(seed)
    cons = np.zeros((n, m, 5), np.float32)
    cons[:, :, 0] = rng.exponential(20, (n, m))
    along = rng.normal(0, 0.25, (n, m))
    cons[:, :, 1] = 1.0 + along * 0.8 + rng.normal(0, 0.03, (n, m))
    cons[:, :, 2] = np.pi - 0.1 + along * 0.6 + rng.normal(0, 0.03, (n, m))   # crosses +-pi
    cons[:, :, 2] = (cons[:, :, 2] + np.pi) % (2 * np.pi) - np.pi
    fatjet = np.tile(np.array([[400, 1.0, np.pi - 0.1, 120]], np.float32), (n, 1))
    return {"constituents": cons, "counts": np.full(n, m, np.int32), "fatjet": fatjet}
