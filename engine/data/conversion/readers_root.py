"""NanoAOD-style and Delphes ROOT trees (TTree or RNTuple) -> awkward event records, one chunk at a time.

Readers are columnar: they read only the branches listed below, `step_size` events at a time, so
memory stays bounded whatever the file size; every operation after that is an awkward / numpy
array operation (no Python loop over events). An RNTuple of the same name is read like the tree,
its fields standing for the branches (`Muon.pt` for `Muon_pt`; see root_sources), with the same
checks and messages, saying "field" where a tree's say "branch".

Each chunk is an awkward record array with the fields `engine.data.canonical.schema.events_table` reads
(weight, run, lumi, event, met_pt, met_phi, electrons, muons, jets) plus, on every object, a
boolean `good`: the object passes the identification and isolation the format provides. The
converter drops objects with good = False unless the selection is `none`.

NanoAOD (tree `Events`):
  leptons  Muon_* / Electron_* pt, eta, phi, mass, charge
           muon good: Muon_tightId and Muon_pfRelIso04_all < 0.10 (each where the branch exists)
           electron good: Electron_cutBased >= 4 (tight) and Electron_pfRelIso03_all < 0.10
  jets     Jet_pt, eta, phi, mass; good: tight jet ID, bit 1 of Jet_jetId (where it exists)
  b-tag    the first present of BTAG_MEDIUM_WP (best tagger first); btagged = value > medium WP.
           Negative values (no b-tag information) become 0.
  event    MET_pt, MET_phi, run, luminosityBlock, event; weight = genWeight or 1.
Delphes (tree `Delphes`; leaves `Electron.PT` as Delphes writes them, or `Electron_PT`):
  leptons  PT, Eta, Phi, Charge; mass from the PDG (Delphes stores none); good = True
           (the detector card already applied efficiency and isolation)
  jets     PT, Eta, Phi, Mass, BTag: bit 0 of BTag gives btagged, and btag = 0.0 or 1.0
  event    MissingET.MET / .Phi (first entry), Event.Number (else the entry index),
           Event.Weight (else 1); run = lumi = 0.
"""
from __future__ import annotations

import importlib
import importlib.util
import lzma
import struct
import zlib
from pathlib import Path
from typing import Iterator

import awkward as ak
import numpy as np
import uproot

from engine.data.conversion.jagged import first_per_event, jagged_record, list_parts
from engine.data.conversion.locations import Source, head, location, uproot_source
from engine.data.remote import URL
from engine.data.conversion.root_sources import RNTUPLE_CLASSES, NTupleSource, TreeSource
from engine.errors import InputError

NANOAOD_TREE = "Events"
DELPHES_TREE = "Delphes"
MUON_MASS_GEV = 0.1056584  # PDG 2024
ELECTRON_MASS_GEV = 0.000511

# Medium working points, CMS BTV recommendations (UL2018 for DeepJet and DeepCSV, 2017 for
# CSVv2). They depend on the data-taking era: the value used is recorded in each file's provenance.
BTAG_MEDIUM_WP = {"Jet_btagDeepFlavB": 0.2783, "Jet_btagDeepB": 0.4168, "Jet_btagCSVV2": 0.8838}
ISOLATION_MAX = 0.10
ELECTRON_TIGHT_CUTBASED = 4
JET_TIGHT_ID_BIT = 2

KINEMATICS = ("pt", "eta", "phi", "mass", "charge")
NANOAOD_OPTIONAL = ("genWeight", "Muon_tightId", "Muon_pfRelIso04_all", "Electron_cutBased",
                    "Electron_pfRelIso03_all", "Jet_jetId")
NANOAOD_REQUIRED = ("run", "luminosityBlock", "event", "MET_pt", "MET_phi",
                    *(f"Muon_{f}" for f in KINEMATICS), *(f"Electron_{f}" for f in KINEMATICS),
                    *(f"Jet_{f}" for f in KINEMATICS[:4]))
DELPHES_REQUIRED = {"Electron": ("PT", "Eta", "Phi", "Charge"), "Muon": ("PT", "Eta", "Phi", "Charge"),
                    "Jet": ("PT", "Eta", "Phi", "Mass", "BTag"), "MissingET": ("MET", "Phi")}
DELPHES_OPTIONAL = {"Event": ("Number", "Weight")}
BITMASK_BRANCHES = ("Jet_jetId", "Jet.BTag", "Jet_BTag")
"""Branches read bit by bit: they must hold integers."""


def _decompression_errors() -> tuple[type[BaseException], ...]:
    """The errors the installed decompressors raise on corrupt baskets."""
    errors: list[type[BaseException]] = [zlib.error, lzma.LZMAError]
    for module, name in (("isal.isal_zlib", "error"), ("lz4.block", "LZ4BlockError"),
                         ("zstandard", "ZstdError")):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            errors.append(getattr(importlib.import_module(module), name))
    return tuple(errors)


READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, struct.error, AssertionError,
               AttributeError, TypeError, NotImplementedError, UnboundLocalError,
               uproot.deserialization.DeserializationError, *_decompression_errors())
"""What uproot raises on truncated or corrupt bytes: its parsers of headers, streamers, baskets and
pages assert, index and decompress untrusted data, so each of these means a corrupt file
(UnboundLocalError: uproot's decompression, when the compressed size it is given is zero)."""


def use_fast_zlib() -> str:
    """Have uproot inflate ZLIB baskets with ISA-L when python-isal is installed: uproot's own
    `ZLIB.library` option, about twice as fast as the standard library, same bytes out.

    uproot decompresses through an instance of the option's base class, so the option is set
    there. Returns the library in use ("zlib" if isal is missing or uproot changed).
    """
    decompressor = getattr(uproot.compression, "_DecompressZLIB", None)
    if decompressor is None or getattr(decompressor, "library", None) is None:
        return "zlib"
    if decompressor.library == "zlib" and importlib.util.find_spec("isal") is not None:
        decompressor.library = "isal"
    return decompressor.library


def open_tree(path: str | Path, tree_name: str | None = None):
    """Open `path` as ROOT; return (file, tree) — tree None if `tree_name` is None.

    Missing, empty, non-ROOT and unreadable files, and a missing tree, are InputErrors.
    """
    path = location(path)
    magic = head(path, 4)
    if not magic:
        raise InputError(path, "empty file")
    if magic != b"root":
        raise InputError(path, "not a ROOT file")
    try:
        target, options = uproot_source(path)
        root = uproot.open(target, **options)
    except ValueError as exc:
        if "not a ROOT file" in str(exc):
            raise InputError(path, "not a ROOT file") from None
        raise InputError(path, f"unreadable ROOT file ({_first_line(exc)})") from None
    except READ_ERRORS as exc:
        raise InputError(path, f"unreadable ROOT file, truncated? ({_first_line(exc)})") from None
    try:
        _check_length(root, path)
        if tree_name is None:
            return root, None
        trees = tree_names(root, path)
        if tree_name not in trees:
            found = ", ".join(trees) or "none"
            raise InputError(path, f"no tree '{tree_name}' (trees in the file: {found})")
        return root, _read_tree(root, tree_name, path)
    except InputError:
        root.file.close()
        raise


def _check_length(root, path: Source) -> None:
    """InputError if the file is shorter than the end its ROOT header records (fEND)."""
    end, size = int(root.file.fEND), int(root.file.source.num_bytes)
    if size < end:
        raise InputError(path, f"truncated file: the ROOT header says {end:,} bytes, the file has {size:,}")


def _read_tree(root, tree_name: str, path: Path):
    try:
        return root[tree_name]
    except READ_ERRORS as exc:
        raise InputError(path, f"unreadable tree '{tree_name}', truncated? ({_first_line(exc)})") from None


def tree_names(root, path: str | Path) -> list[str]:
    """Names (without cycle) of the TTrees and RNTuples at the top of an open ROOT file."""
    try:
        classes = root.classnames(recursive=False)
    except READ_ERRORS as exc:
        raise InputError(path, f"unreadable ROOT directory, truncated? ({_first_line(exc)})") from None
    return sorted({k.split(";")[0] for k, c in classes.items() if c in ("TTree", "TNtuple", *RNTUPLE_CLASSES)})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def source_of(tree, path: Path) -> TreeSource | NTupleSource:
    """The branches of a TTree or the fields of an RNTuple, behind one interface."""
    return NTupleSource(tree, path) if tree.classname in RNTUPLE_CLASSES else TreeSource(tree, path)


def require_finite(source: TreeSource | NTupleSource, flat: dict[str, np.ndarray]) -> None:
    """InputError naming the first floating-point branch (or field) holding NaN or inf."""
    for name, values in flat.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise InputError(source.path, f"{bad} NaN or infinite value(s) in {source.describe(name)}")


class Chunk:
    """One chunk of branches as flat numpy arrays, with the offsets of the jagged ones."""

    def __init__(self, source: TreeSource | NTupleSource, arrays: dict[str, ak.Array], per_event: set[str]):
        """`per_event`: the branches that must hold one number per event; the others a list."""
        self.path, self.describe = source.path, source.describe
        self.flat: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            self._check_layout(name, array, name in per_event)
            if array.ndim == 1:
                content = ak.to_layout(array)
            else:
                self.offsets[name], content = list_parts(array)
            if content.is_option:  # an RNTuple's std::optional; a tree has no such branch
                raise InputError(self.path, f"{self.describe(name)} holds optional values "
                                            f"(std::optional), expected numbers")
            self.flat[name] = ak.to_numpy(content)
            self._check_dtype(name, self.flat[name].dtype)
        self.n = len(next(iter(arrays.values())))

    def _check_layout(self, name: str, array: ak.Array, per_event: bool) -> None:
        what = self.describe(name)
        if per_event and array.ndim != 1:
            raise InputError(self.path, f"{what} must hold one number per event, found a list per event")
        if not per_event and array.ndim == 1:
            raise InputError(self.path, f"{what} must hold a list per event (one entry per "
                                        f"object), found one number per event")
        if array.ndim > 2:
            raise InputError(self.path, f"{what} holds nested lists, expected "
                                        f"{'numbers' if per_event else 'a list of numbers'} per event")

    def _check_dtype(self, name: str, dtype: np.dtype) -> None:
        if dtype.kind not in "biuf":
            raise InputError(self.path, f"{self.describe(name)} holds {dtype} values, expected numbers")
        if name in BITMASK_BRANCHES and dtype.kind not in "biu":
            raise InputError(self.path, f"{self.describe(name)} holds {dtype} values, "
                                        f"expected integers (a bit mask)")

    def __contains__(self, name: str) -> bool:
        return name in self.flat

    def __getitem__(self, name: str) -> np.ndarray:
        return self.flat[name]

    def collection(self, fields: dict[str, str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(offsets, {field: flat array}) of branches {field: branch} that share one counter."""
        names = list(fields.values())
        offsets = self.offsets[names[0]]
        for name in names[1:]:
            if not np.array_equal(self.offsets[name], offsets):
                raise InputError(self.path, f"{self.describe(names[0])} and {self.describe(name)} have "
                                            f"different numbers of entries per event")
        return offsets, {field: self.flat[branch] for field, branch in fields.items()}


class RootReader:
    """Shared part of the ROOT readers: open, check branches (or fields), iterate chunks of arrays."""

    format = ""
    tree_name = ""

    def __init__(self, path: str | Path, step_size: int):
        self.path = location(path)
        self.step_size = step_size
        use_fast_zlib()
        self._root, tree = open_tree(self.path, self.tree_name)
        try:
            self.source = source_of(tree, self.path)
            self.keys = self.source.keys
            self.branches = self._resolve()
            problem = self.source.check_not_truncated(self.branches)
            if problem:
                raise InputError(self.path, problem)
            self.num_events = self.source.num_entries
        except READ_ERRORS as exc:
            self.close()
            kind = "RNTuple" if tree.classname in RNTUPLE_CLASSES else "tree"
            raise InputError(self.path, f"unreadable {kind} '{self.tree_name}', truncated or corrupt? "
                                        f"({_first_line(exc)})") from None
        except InputError:
            self.close()
            raise

    def _resolve(self) -> list[str]:
        raise NotImplementedError

    def _per_event(self) -> set[str]:
        """The branches that hold one number per event (the others hold one list per event)."""
        raise NotImplementedError

    def _missing(self, wanted: list[str]) -> None:
        missing = [name for name in wanted if name not in self.keys]
        if missing:
            raise InputError(self.path, f"{self._container()} has no {self.source.noun} "
                                        f"{', '.join(repr(m) for m in missing)}")

    def _container(self) -> str:
        """The container as messages name it: tree 'Events' or RNTuple 'Events'."""
        return f"{self.source.kind} '{self.tree_name}'"

    def chunks(self) -> Iterator[ak.Array]:
        """Event records of up to `step_size` events each, in file order."""
        arrays = self.source.chunks(self.branches, self.step_size)
        while True:
            try:
                chunk, entry_start = next(arrays)
            except StopIteration:
                return
            except READ_ERRORS as exc:
                if isinstance(self.path, URL) and isinstance(exc, OSError):    # the server, not the file
                    raise InputError(self.path, f"cannot read from the server ({_first_line(exc)})") from None
                raise InputError(self.path, f"cannot read the data, truncated or corrupt? "
                                            f"({_first_line(exc)})") from None
            chunk = Chunk(self.source, chunk, self._per_event())
            require_finite(self.source, chunk.flat)
            yield self._events(chunk, entry_start)

    def _events(self, chunk: Chunk, entry_start: int) -> ak.Array:
        raise NotImplementedError

    def provenance(self) -> dict:
        return self.source.provenance(self.branches)

    def close(self) -> None:
        self._root.file.close()


def _event_record(header: dict[str, np.ndarray], **collections: ak.Array) -> ak.Array:
    return ak.zip({**header, **collections}, depth_limit=1)


class NanoAODReader(RootReader):
    """CMS NanoAOD-style `Events` trees."""

    format = "nanoaod"
    tree_name = NANOAOD_TREE

    def _resolve(self) -> list[str]:
        self._missing(list(NANOAOD_REQUIRED))
        found = [b for b in BTAG_MEDIUM_WP if b in self.keys]
        if not found:
            raise InputError(self.path, f"{self._container()} has no b-tag {self.source.noun} "
                                        f"(looked for {', '.join(BTAG_MEDIUM_WP)})")
        self.btag_branch, self.btag_wp = found[0], BTAG_MEDIUM_WP[found[0]]
        self.optional = [b for b in NANOAOD_OPTIONAL if b in self.keys]
        return [*NANOAOD_REQUIRED, self.btag_branch, *self.optional]

    def _per_event(self) -> set[str]:
        return {b for b in self.branches if not b.startswith(("Muon_", "Electron_", "Jet_"))}

    def _events(self, c: Chunk, entry_start: int) -> ak.Array:
        return _event_record(
            {"weight": c["genWeight"] if "genWeight" in c else np.ones(c.n, np.float32),
             "run": c["run"], "lumi": c["luminosityBlock"], "event": c["event"],
             "met_pt": c["MET_pt"], "met_phi": c["MET_phi"]},
            electrons=self._leptons(c, "Electron", ("Electron_cutBased", ELECTRON_TIGHT_CUTBASED),
                                    "Electron_pfRelIso03_all"),
            muons=self._leptons(c, "Muon", ("Muon_tightId", True), "Muon_pfRelIso04_all"),
            jets=self._jets(c))

    @staticmethod
    def _leptons(c: Chunk, prefix: str, tight: tuple[str, object], isolation: str) -> ak.Array:
        offsets, fields = c.collection({f: f"{prefix}_{f}" for f in KINEMATICS})
        good = np.ones(len(fields["pt"]), dtype=bool)
        if tight[0] in c:
            good &= c[tight[0]] >= tight[1]
        if isolation in c:
            good &= c[isolation] < ISOLATION_MAX
        return jagged_record(offsets, {**fields, "good": good})

    def _jets(self, c: Chunk) -> ak.Array:
        offsets, fields = c.collection({f: f"Jet_{f}" for f in KINEMATICS[:4]} | {"btag": self.btag_branch})
        btag = np.maximum(fields["btag"], np.float32(0.0))
        good = ((c["Jet_jetId"] & JET_TIGHT_ID_BIT) != 0 if "Jet_jetId" in c
                else np.ones(len(btag), dtype=bool))
        return jagged_record(offsets, {**fields, "btag": btag, "btagged": btag > self.btag_wp, "good": good})

    def provenance(self) -> dict:
        return {**super().provenance(), "btag_branch": self.source.column(self.btag_branch),
                "btag_medium_wp": self.btag_wp,
                "lepton_id": "Muon_tightId, Electron_cutBased>=4; relative isolation < 0.10",
                "jet_id": "Jet_jetId bit 1 (tight)"}


class DelphesReader(RootReader):
    """Delphes `Delphes` trees, with `X.Field` (Delphes) or `X_Field` (uproot) leaf names."""

    format = "delphes"
    tree_name = DELPHES_TREE

    def _leaf(self, collection: str, field: str) -> str | None:
        for name in (f"{collection}.{field}", f"{collection}_{field}"):
            if name in self.keys:
                return name
        return None

    def _resolve(self) -> list[str]:
        self.names = {(c, f): self._leaf(c, f) for c, fields in DELPHES_REQUIRED.items() for f in fields}
        self._missing([f"{c}.{f}" for (c, f), name in self.names.items() if name is None])
        for collection, fields in DELPHES_OPTIONAL.items():
            for field in fields:
                if self._leaf(collection, field):
                    self.names[collection, field] = self._leaf(collection, field)
        return list(self.names.values())

    def _per_event(self) -> set[str]:
        return set()

    def _collection(self, c: Chunk, collection: str, fields: tuple[str, ...]):
        return c.collection({f: self.names[collection, f] for f in fields})

    def _lepton(self, c: Chunk, collection: str, mass_gev: float) -> ak.Array:
        offsets, f = self._collection(c, collection, ("PT", "Eta", "Phi", "Charge"))
        n = len(f["PT"])
        return jagged_record(offsets, {"pt": f["PT"], "eta": f["Eta"], "phi": f["Phi"],
                                       "mass": np.full(n, mass_gev, np.float32), "charge": f["Charge"],
                                       "good": np.ones(n, dtype=bool)})

    def _jets(self, c: Chunk) -> ak.Array:
        offsets, f = self._collection(c, "Jet", ("PT", "Eta", "Phi", "Mass", "BTag"))
        bit = (f["BTag"] & 1) != 0
        return jagged_record(offsets, {"pt": f["PT"], "eta": f["Eta"], "phi": f["Phi"], "mass": f["Mass"],
                                       "btag": bit.astype(np.float32), "btagged": bit,
                                       "good": np.ones(len(bit), dtype=bool)})

    def _first(self, c: Chunk, collection: str, field: str) -> np.ndarray | None:
        name = self.names.get((collection, field))
        return None if name is None else first_per_event(c.offsets[name], c[name])

    def _events(self, c: Chunk, entry_start: int) -> ak.Array:
        weight, number = self._first(c, "Event", "Weight"), self._first(c, "Event", "Number")
        zeros = np.zeros(c.n, np.int64)
        return _event_record(
            {"weight": np.ones(c.n, np.float32) if weight is None else weight,
             "run": zeros, "lumi": zeros,
             "event": np.arange(entry_start, entry_start + c.n) if number is None else number,
             "met_pt": self._first(c, "MissingET", "MET"), "met_phi": self._first(c, "MissingET", "Phi")},
            electrons=self._lepton(c, "Electron", ELECTRON_MASS_GEV),
            muons=self._lepton(c, "Muon", MUON_MASS_GEV),
            jets=self._jets(c))

    def provenance(self) -> dict:
        return {**super().provenance(), "btag_branch": self.names["Jet", "BTag"],
                "btag_medium_wp": "bit 0 of BTag", "lepton_id": "as applied by the Delphes card"}
