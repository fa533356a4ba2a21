"""The shared contracts: engine/contracts.py against kernels/render_common.h, and their users."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import contracts
from engine.data import objects
from kernels import cpu, gpu, presets

HEADER = Path(presets.__file__).with_name("render_common.h")

# Every integer constant of the header that repeats a Python value, with that value.
TIED = {
    "RC_PAD": contracts.PAD, "RC_ELECTRON": contracts.ELECTRON, "RC_MUON": contracts.MUON,
    "RC_JET": contracts.JET, "RC_BJET": contracts.BJET, "RC_MET": contracts.MET,
    "RC_NUM_TYPES": contracts.NUM_TYPES, "RC_MAX_OBJECTS": contracts.MAX_OBJECTS,
    "RC_MAX_CONSTITUENTS": contracts.MAX_CONSTITUENTS, "RC_MAX_CHANNELS": contracts.MAX_CHANNELS,
    "RC_F_PT": contracts.F_PT, "RC_F_ETA": contracts.F_ETA, "RC_F_PHI": contracts.F_PHI,
    "RC_F_CHARGE": contracts.F_CHARGE, "RC_C_PT": contracts.CONSTITUENT_FEATURES.index("pt"),
    "RC_C_ETA": contracts.CONSTITUENT_FEATURES.index("eta"),
    "RC_C_PHI": contracts.CONSTITUENT_FEATURES.index("phi"),
    "RC_FJ_ETA": contracts.FATJET_FEATURES.index("eta"), "RC_FJ_PHI": contracts.FATJET_FEATURES.index("phi"),
    "RC_FJ_WIDTH": len(contracts.FATJET_FEATURES),
}


def header_defines(text: str) -> dict[str, int]:
    """Integer #defines of a C header, comments ignored."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return {name: int(value) for name, value in re.findall(r"^#define (RC_\w+) (-?\d+)\s*$", text, re.MULTILINE)}


def test_header_constants_match_python():
    defines = header_defines(HEADER.read_text())
    for name, value in TIED.items():
        assert name in defines, f"{name} is missing from render_common.h"
        assert defines[name] == value, f"render_common.h {name} = {defines[name]}, engine/contracts.py {value}"


def test_every_type_column_or_cap_define_of_the_header_is_tied():
    """A new type code, column or cap in the header without its Python twin fails here."""
    defines = header_defines(HEADER.read_text())
    layout = {name for name in defines if re.match(r"RC_([PT]_|JET_)", name)}
    assert set(defines) - layout == set(TIED)


@pytest.mark.parametrize("name, edit", [("RC_MUON", 7), ("RC_MAX_OBJECTS", 63), ("RC_NUM_TYPES", 5),
                                        ("RC_F_CHARGE", 4), ("RC_FJ_WIDTH", 5)])
def test_an_edit_on_the_c_side_is_seen(name, edit):
    text = re.sub(rf"#define {name} \d+", f"#define {name} {edit}", HEADER.read_text())
    assert header_defines(text)[name] == edit != TIED[name]


def test_background_slots_hold_max_channels():
    assert presets.LAYOUT["RC_P_TYPES"] - presets.LAYOUT["RC_P_BACKGROUND"] == contracts.MAX_CHANNELS


def test_python_users_read_the_contracts():
    for name in ("PAD", "ELECTRON", "MUON", "JET", "BJET", "MET", "OBJECT_TYPES", "FEATURES", "F_PT", "F_ETA",
                 "F_PHI", "F_MASS", "F_BTAG", "F_CHARGE", "DEFAULT_CAP", "DEFAULT_CONSTITUENT_CAP",
                 "CONSTITUENT_FEATURES", "FATJET_FEATURES"):
        assert getattr(objects, name) is getattr(contracts, name)
    assert presets.TYPE_CODES == {k: v for k, v in contracts.OBJECT_TYPES.items() if k != "pad"}
    assert [contracts.FEATURES[i] for i in (contracts.F_PT, contracts.F_ETA, contracts.F_PHI,
                                            contracts.F_CHARGE)] == ["pt", "eta", "phi", "charge"]
    assert cpu.FATJET_WIDTH == gpu.FATJET_WIDTH == len(contracts.FATJET_FEATURES) == 4
    assert contracts.KERNEL_MIN_FEATURES == max(TIED[k] for k in ("RC_F_PT", "RC_F_ETA", "RC_F_PHI", "RC_C_PT",
                                                                  "RC_C_ETA", "RC_C_PHI")) + 1
    assert contracts.DEFAULT_CAP <= contracts.MAX_OBJECTS
    assert contracts.DEFAULT_CONSTITUENT_CAP <= contracts.MAX_CONSTITUENTS


def test_contracts_import_nothing():
    """Importable by every layer: loading it pulls in no other module of the project or numpy."""
    code = ("import sys; import engine.contracts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'kernels', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['engine', 'engine.contracts']"
