"""What an image looks like: `RenderConfig` and the presets of the studies.

A config is turned into a small float32 parameter table (`param_table`) read by the CUDA kernels
and the CPU twin alike; its layout is defined once, in render_common.h (the RC_P_* / RC_T_*
constants are read from that header here); the object type codes come from engine/contracts.py.

Presets (`preset(name, size_px=None)`):
  madrazo2017  224 px RGB, radius 0.5 ln(pt) / ln(1.1) px (the 2017 code's images), stroke 4 pt at
               56 dpi = 3.11 px; electrons blue, muons green, jets (255,125,125), b-jets red, MET
               black; white background.
  ochoa2023    244 px RGB, muons red with stroke 2 px (mu+) / 1 px (mu-), radius 0.25 ln(pt) (plot
               units = eta units); up to 4 jets (b-jets count as jets) blue and MET black with radius
               0.1 ln(pt) and stroke 1.5 px (the slides give no jet stroke); no electrons, no b-tag.
  channels     224 px, 5 channels (electron, muon, jet, b-jet, MET), black background, each object
               drawn into its own channel with intensity ln(1 + pt) / ln(1 + 500 GeV), clamped to 1.
  jet          224 px, 1 channel: pt-weighted constituents in (delta eta, delta phi) in +-0.8 around the
               jet axis, centred on the pt centroid, principal axis vertical, heavier sides to the
               right and top, total pt normalised to 1 (de Oliveira et al. 2016).
Radii are in eta units, so they scale with the image size; `with_size` also scales the strokes.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from engine import contracts

HEADER = Path(__file__).with_name("render_common.h")
LAYOUT = {name: int(value) for name, value in
          re.findall(r"#define (RC_[PT]_\w+|RC_JET_\w+) (\d+)", HEADER.read_text())}

TYPE_CODES = {name: code for name, code in contracts.OBJECT_TYPES.items() if code != contracts.PAD}
"""Code of each drawn object type (engine/contracts.py; RC_ELECTRON .. RC_MET in the header)."""


@dataclass
class ObjectStyle:
    """How one object type is drawn in an event image."""

    colour: tuple[int, int, int] = (0, 0, 0)
    """RGB 0..255, used when `channel` is -1."""
    channel: int = -1
    """-1: blend `colour` into channels 0..2; k >= 0: blend a pt intensity into channel k only."""
    radius_per_ln_pt: float = 0.5 / math.log(1.1) * 6.0 / 224.0
    """Radius in eta units per ln(pt / GeV); pt below 1 GeV gives radius 0."""
    stroke_px: float = 3.0
    """Stroke width in pixels (positive or zero charge)."""
    stroke_neg_px: float | None = None
    """Stroke width for negative charge; None: same as `stroke_px`."""
    max_count: int = -1
    """Draw at most this many objects of the type per event (-1: all, 0: none)."""

    def __post_init__(self):
        if len(self.colour) != 3 or not all(0 <= c <= 255 for c in self.colour):
            raise ValueError(f"colour must be three values in 0..255, got {self.colour}")
        if self.radius_per_ln_pt < 0 or self.stroke_px < 0 or (self.stroke_neg_px or 0) < 0:
            raise ValueError("radius_per_ln_pt and strokes must be >= 0")


@dataclass
class RenderConfig:
    """An image recipe: event images (`kind='event'`) or jet images (`kind='jet'`)."""

    name: str = "custom"
    kind: Literal["event", "jet"] = "event"
    size_px: int = 224
    """Square images of size_px x size_px."""
    channels: int = 3
    """3 for RGB styles; 1 or 5 for per-type channel styles; 1 for jet images."""
    eta_max: float = 3.0
    """Event images span eta in [-eta_max, eta_max] across and phi in [-pi, pi) up."""
    filled: bool = False
    background: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Background value per channel, in [0, 1]."""
    intensity_pt_max_gev: float = 500.0
    """Channel styles: intensity ln(1 + pt) / ln(1 + this), clamped to 1."""
    electron: ObjectStyle = field(default_factory=lambda: ObjectStyle(colour=(0, 0, 255)))
    muon: ObjectStyle = field(default_factory=lambda: ObjectStyle(colour=(0, 128, 0)))
    jet: ObjectStyle = field(default_factory=lambda: ObjectStyle(colour=(255, 125, 125)))
    bjet: ObjectStyle = field(default_factory=lambda: ObjectStyle(colour=(255, 0, 0)))
    met: ObjectStyle = field(default_factory=lambda: ObjectStyle(colour=(0, 0, 0)))
    jet_range: float = 0.8
    """Jet images span +-jet_range in delta eta and delta phi."""
    jet_centre: bool = True
    jet_rotate: bool = True
    jet_flip: bool = True
    jet_normalise: bool = True

    def __post_init__(self):
        if not 8 <= self.size_px <= 1024:
            raise ValueError(f"size_px must be in 8..1024, got {self.size_px}")
        allowed = (1,) if self.kind == "jet" else (1, 3, 5)
        if self.channels not in allowed:
            raise ValueError(f"{self.kind} images support channels {allowed}, got {self.channels}")
        if len(self.background) != self.channels:
            raise ValueError(f"background needs {self.channels} values, got {len(self.background)}")
        if self.eta_max <= 0 or self.jet_range <= 0 or self.intensity_pt_max_gev <= 0:
            raise ValueError("eta_max, jet_range and intensity_pt_max_gev must be > 0")
        for name in TYPE_CODES if self.kind == "event" else ():
            style = getattr(self, name)
            if style.channel >= self.channels or (style.channel < 0 and self.channels != 3):
                raise ValueError(f"{name}.channel {style.channel} does not fit {self.channels} channels")

    def with_size(self, size_px: int) -> "RenderConfig":
        """The same recipe at another size; radii follow (eta units), strokes scale with size."""
        ratio = size_px / self.size_px
        styles = {name: dataclasses.replace(
            getattr(self, name), stroke_px=getattr(self, name).stroke_px * ratio,
            stroke_neg_px=None if getattr(self, name).stroke_neg_px is None
            else getattr(self, name).stroke_neg_px * ratio) for name in TYPE_CODES}
        return dataclasses.replace(self, size_px=size_px, **styles)

    def param_table(self) -> np.ndarray:
        """(RC_P_SIZE,) float32 parameter table read by the kernels and the CPU twin."""
        L = LAYOUT
        p = np.zeros(L["RC_P_SIZE"], np.float32)
        p[L["RC_P_WIDTH"]] = p[L["RC_P_HEIGHT"]] = self.size_px
        p[L["RC_P_CHANNELS"]] = self.channels
        p[L["RC_P_ETA_MAX"]] = self.eta_max
        p[L["RC_P_FILLED"]] = float(self.filled)
        p[L["RC_P_PT_MAX"]] = self.intensity_pt_max_gev
        p[L["RC_P_JET_RANGE"]] = self.jet_range
        p[L["RC_P_JET_FLAGS"]] = (L["RC_JET_CENTRE"] * self.jet_centre + L["RC_JET_ROTATE"] * self.jet_rotate
                                  + L["RC_JET_FLIP"] * self.jet_flip + L["RC_JET_NORMALISE"] * self.jet_normalise)
        p[L["RC_P_BACKGROUND"]:L["RC_P_BACKGROUND"] + self.channels] = self.background
        for name, code in TYPE_CODES.items():
            style, base = getattr(self, name), L["RC_P_TYPES"] + code * L["RC_P_TYPE_STRIDE"]
            p[base + L["RC_T_RED"]:base + L["RC_T_BLUE"] + 1] = np.asarray(style.colour) / 255.0
            p[base + L["RC_T_CHANNEL"]] = style.channel
            p[base + L["RC_T_RADIUS"]] = style.radius_per_ln_pt
            p[base + L["RC_T_STROKE_POS"]] = style.stroke_px
            p[base + L["RC_T_STROKE_NEG"]] = style.stroke_px if style.stroke_neg_px is None else style.stroke_neg_px
            p[base + L["RC_T_MAX_COUNT"]] = style.max_count
        return p


MADRAZO_RADIUS = 0.5 / math.log(1.1) * 6.0 / 224.0   # 0.5 ln(pt)/ln(1.1) px at 224 px over 6 eta units
MADRAZO_STROKE_PX = 4.0 * 56.0 / 72.0                # 4 pt at 56 dpi


def _madrazo2017() -> RenderConfig:
    def style(colour):
        return ObjectStyle(colour=colour, radius_per_ln_pt=MADRAZO_RADIUS, stroke_px=MADRAZO_STROKE_PX)
    return RenderConfig(name="madrazo2017", electron=style((0, 0, 255)), muon=style((0, 128, 0)),
                        jet=style((255, 125, 125)), bjet=style((255, 0, 0)), met=style((0, 0, 0)))


def _ochoa2023() -> RenderConfig:
    jets = ObjectStyle(colour=(0, 0, 255), radius_per_ln_pt=0.1, stroke_px=1.5, max_count=4)
    return RenderConfig(
        name="ochoa2023", size_px=244,
        electron=ObjectStyle(max_count=0),
        muon=ObjectStyle(colour=(255, 0, 0), radius_per_ln_pt=0.25, stroke_px=2.0, stroke_neg_px=1.0),
        jet=jets, bjet=dataclasses.replace(jets),
        met=ObjectStyle(colour=(0, 0, 0), radius_per_ln_pt=0.1, stroke_px=1.5))


def _channels() -> RenderConfig:
    def style(channel):
        return ObjectStyle(channel=channel, radius_per_ln_pt=MADRAZO_RADIUS, stroke_px=MADRAZO_STROKE_PX)
    return RenderConfig(name="channels", channels=5, background=(0.0,) * 5, electron=style(0),
                        muon=style(1), jet=style(2), bjet=style(3), met=style(4))


def _jet() -> RenderConfig:
    return RenderConfig(name="jet", kind="jet", channels=1, background=(0.0,))


PRESETS = {"madrazo2017": _madrazo2017, "ochoa2023": _ochoa2023, "channels": _channels, "jet": _jet}


def preset(name: str, size_px: int | None = None) -> RenderConfig:
    """A preset by name (see module docstring), optionally at another size."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    cfg = PRESETS[name]()
    return cfg if size_px is None or size_px == cfg.size_px else cfg.with_size(size_px)
