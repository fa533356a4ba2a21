"""The block codec (engine/data/shards/encoding.py): round trips in every codec, the stored precision,
truncation, the CRC and the header checks, on small seeded inputs."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from engine.data import objects
from engine.data.canonical import schema
from engine.data.generation import synthetic
from engine.data.shards import encoding


def padded_events(n=40, cap=10, seed=0):
    """Seeded padded events: a few leptons and jets with charges and b-tags, MET last."""
    rng = np.random.default_rng(seed)
    types = np.zeros((n, cap), np.int8)
    feats = np.zeros((n, cap, len(objects.FEATURES)), np.float32)
    for b in range(n):
        kinds = [1] * rng.integers(0, 3) + [2] * rng.integers(0, 2) + list(rng.choice([3, 4], rng.integers(0, 6)))
        kinds = kinds[:cap - 1] + [5]
        for k, t in enumerate(kinds):
            types[b, k] = t
            feats[b, k] = [rng.uniform(1, 2000), 0.0 if t == 5 else rng.uniform(-5, 5), rng.uniform(-np.pi, np.pi),
                           rng.uniform(0, 100), rng.uniform(0, 1), rng.choice([-1, 1]) if t in (1, 2) else 0]
    return types, feats, rng.integers(0, 3, n)


def wrapped(a, b):
    d = np.abs(a - b) % (2 * np.pi)
    return np.minimum(d, 2 * np.pi - d)


@pytest.mark.parametrize("codec", encoding.CODECS)
def test_events_round_trip_within_the_stated_precision(codec):
    types, feats, labels = padded_events()
    data = encoding.encode(encoding.block_from_padded(types, feats, labels), first_index=100, codec=codec)
    assert encoding.read_header(data).codec == codec
    out = encoding.decode_padded(data, types.shape[1])
    np.testing.assert_array_equal(out["types"], types)
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_array_equal(out["counts"], (types != 0).sum(axis=1))
    np.testing.assert_array_equal(out["index"], np.arange(100, 100 + len(types)))
    assert out["truncated"] == 0 and (out["weights"] == 1).all()
    got, real = out["features"], types != 0
    f = objects
    for col in (f.F_PT, f.F_MASS, f.F_BTAG):                               # float16
        ref = feats[..., col][real]
        assert np.all(np.abs(got[..., col][real] - ref) <= 2.0 ** -11 * np.abs(ref) + 1e-7)
    assert np.all(np.abs(got[..., f.F_ETA][real] - feats[..., f.F_ETA][real]) <= encoding.ETA_STEP / 2 + 1e-6)
    assert np.all(wrapped(got[..., f.F_PHI][real], feats[..., f.F_PHI][real]) <= encoding.PHI_STEP / 2 + 1e-6)
    np.testing.assert_array_equal(got[..., f.F_CHARGE], feats[..., f.F_CHARGE])
    assert (got[~real] == 0).all()                                        # padding stays zero


def test_codecs_store_the_same_columns_and_encoding_is_deterministic():
    types, feats, labels = padded_events(seed=1)
    block = encoding.block_from_padded(types, feats, labels)
    assert encoding.encode(block) == encoding.encode(block)
    decoded = [encoding.decode(encoding.encode(block, codec=c)) for c in encoding.CODECS]
    for other in decoded[1:]:
        for name in decoded[0].columns:
            np.testing.assert_array_equal(other.columns[name], decoded[0].columns[name])
    sizes = {c: len(encoding.encode(block, codec=c)) for c in encoding.CODECS}
    assert sizes["lz4"] < sizes["none"] and sizes["zstd"] < sizes["none"]


def test_small_cap_drops_objects_but_keeps_met_last():
    types, feats, labels = padded_events(n=30, cap=10, seed=2)
    out = encoding.decode_padded(encoding.encode(encoding.block_from_padded(types, feats, labels)), 3)
    counts = (types != 0).sum(axis=1)
    assert out["truncated"] == int(np.maximum(counts - 3, 0).sum()) > 0
    np.testing.assert_array_equal(out["counts"], np.minimum(counts, 3))
    last = out["types"][np.arange(30), out["counts"] - 1]
    assert (last == objects.MET).all()
    keep = counts <= 3
    np.testing.assert_array_equal(out["types"][keep], types[keep, :3])


def test_eta_beyond_the_range_is_clipped_and_counted():
    types = np.array([[3, 3, 5]], np.int8)
    feats = np.zeros((1, 3, 6), np.float32)
    feats[0, :, 0], feats[0, :2, 1] = [50, 60, 20], [9.5, -7.9]
    block = encoding.block_from_padded(types, feats, np.array([1]))
    assert block.clipped == 1
    out = encoding.decode_padded(encoding.encode(block), 3)["features"][0, :, 1]
    assert out[0] == np.float32(encoding.ETA_LIMIT) and abs(out[1] + 7.9) <= encoding.ETA_STEP


@pytest.mark.parametrize("column, value, message", [(0, 70000.0, "float16"), (3, -1e6, "float16")])
def test_values_float16_cannot_hold_are_refused(column, value, message):
    types, feats, labels = padded_events(n=3, seed=3)
    feats[1, 0, column] = value
    with pytest.raises(encoding.BlockError, match=message), np.errstate(over="ignore"):
        encoding.block_from_padded(types, feats, labels)


@pytest.mark.parametrize("label", [-1, 256])
def test_labels_outside_a_byte_are_refused(label):
    types, feats, labels = padded_events(n=3, seed=4)
    labels[2] = label
    with pytest.raises(encoding.BlockError, match="0..255"):
        encoding.block_from_padded(types, feats, labels)


def test_events_table_and_take_agree_with_reference_padding():
    table = schema.events_table(synthetic.synthetic_events("ttbar", 25, seed=6), "ttbar", ["ttbar", "wjets"])
    block = encoding.block_from_events_table(table)
    ref = objects.pad_events(table, 16)
    out = encoding.decode_padded(encoding.encode(block), 16)
    np.testing.assert_array_equal(out["types"], ref["types"])
    np.testing.assert_array_equal(out["counts"], ref["counts"])
    assert np.allclose(out["features"], ref["features"], rtol=2.0 ** -11, atol=encoding.ETA_STEP)
    rows = np.array([4, 0, 17])
    sub = encoding.decode_padded(encoding.encode(encoding.take(block, rows)), 16)
    for key in ("types", "features", "counts", "labels"):
        np.testing.assert_array_equal(sub[key], out[key][rows])


def test_fatjets_round_trip_with_truncation_and_pids():
    table = schema.fatjets_table(synthetic.synthetic_fatjets("top", 12, seed=7), "top", ["qcd", "top"])
    block = encoding.block_from_fatjets_table(table)
    assert encoding.decode(encoding.encode(block)).pids.tolist() == block.pids.tolist()
    for cap in (128, 8):
        ref = objects.pad_fatjets(table, cap)
        out = encoding.decode_padded(encoding.encode(block, codec="zstd"), cap)
        assert out["truncated"] == ref["truncated"] and (ref["truncated"] > 0) == (cap == 8)
        np.testing.assert_array_equal(out["counts"], ref["counts"])
        for key in ("fatjet", "msoftdrop", "parton"):
            np.testing.assert_array_equal(out[key], ref[key])
        for col in (3, 4):                                                # charge, pid: exact
            np.testing.assert_array_equal(out["constituents"][..., col], ref["constituents"][..., col])
        assert np.allclose(out["constituents"][..., 0], ref["constituents"][..., 0], rtol=2.0 ** -11)
    rows = np.array([11, 3])
    whole = encoding.decode_padded(encoding.encode(block), 128)
    sub = encoding.decode_padded(encoding.encode(encoding.take(block, rows)), 128)
    for key in ("fatjet", "msoftdrop", "parton", "counts", "constituents"):
        np.testing.assert_array_equal(sub[key], whole[key][rows])
    shapes = encoding.batch_shapes("fatjets", 5, 8)
    assert shapes["constituents"] == ((5, 8, len(objects.CONSTITUENT_FEATURES)), np.float32)
    assert shapes["msoftdrop"] == ((5,), np.float32) and shapes["parton"] == ((5,), np.int32)


def test_a_block_of_format_version_1_asks_for_a_rebuild():
    table = schema.fatjets_table(synthetic.synthetic_fatjets("qcd", 4, seed=1), "qcd", ["qcd"])
    older = bytearray(encoding.encode(encoding.block_from_fatjets_table(table)))
    older[4] = 1
    with pytest.raises(encoding.BlockError, match=r"version 1 \(this engine reads 2: rebuild the shards "
                                                  r"with `python -m engine shard`\)"):
        encoding.decode(bytes(older))


def small_block_bytes(**kw):
    types = np.array([[1, 4, 3, 5], [2, 5, 0, 0]], np.int8)
    feats = np.zeros((2, 4, 6), np.float32)
    feats[0, :, 0], feats[0, :, 2] = [30, 80, 40, 20], [np.pi, -np.pi, 0.5, 3.14159]
    feats[1, :2, 0], feats[0, 1, 4], feats[0, 0, 5] = [25, 10], 0.9, -1
    return types, encoding.encode(encoding.block_from_padded(types, feats, np.array([0, 2])), **kw)


def test_codec_unit_cases():
    types, data = small_block_bytes(first_index=7)
    out = encoding.decode_padded(data, 4)
    np.testing.assert_array_equal(out["types"], types)
    np.testing.assert_array_equal(out["index"], [7, 8])
    assert abs(out["features"][0, 0, 2] + np.pi) < 1e-4            # phi = +pi wraps to -pi
    corrupt = bytearray(data)
    corrupt[-3] ^= 0xFF
    with pytest.raises(encoding.BlockError, match="CRC"):
        encoding.decode(bytes(corrupt))
    newer = bytearray(data)
    newer[4] = encoding.FORMAT_VERSION + 1
    with pytest.raises(encoding.BlockError, match="version"):
        encoding.decode(bytes(newer))


@pytest.mark.parametrize("codec", encoding.CODECS)
def test_every_flipped_payload_byte_fails_the_crc(codec):
    _, data = small_block_bytes(codec=codec)
    for at in range(encoding.HEADER.size, len(data)):
        bad = bytearray(data)
        bad[at] ^= 0x01
        with pytest.raises(encoding.BlockError, match="CRC"):
            encoding.decode(bytes(bad))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d[:encoding.HEADER.size - 1], "shorter than its header"),
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:6] + bytes([2]) + d[7:], "unknown block kind"),
    (lambda d: d[:7] + bytes([9]) + d[8:], "codec"),
    (lambda d: d[:-5], "CRC"),
])
def test_header_checks(edit, message):
    _, data = small_block_bytes()
    with pytest.raises(encoding.BlockError, match=message):
        encoding.decode(edit(data))


def test_a_payload_shorter_than_its_header_says_is_refused():
    _, data = small_block_bytes(codec="none")
    values = list(encoding.HEADER.unpack_from(data))
    short = data[encoding.HEADER.size:-4]
    values[-1] = zlib.crc32(short)
    with pytest.raises(encoding.BlockError, match="payload shorter than its header says"):
        encoding.decode(encoding.HEADER.pack(*values) + short)


@pytest.mark.parametrize("field", ["n_events", "n_objects", "n_pids", "raw_size"])
def test_header_sizes_must_agree_before_anything_is_decompressed(field):
    types = np.array([[1, 3, 5], [2, 5, 0]], np.int8)
    data = encoding.encode(encoding.block_from_padded(types, np.ones((2, 3, 6), np.float32),
                                                      np.array([0, 1])))
    values = list(encoding.HEADER.unpack_from(data))
    values[5 + ["n_events", "n_objects", "n_pids", "raw_size"].index(field)] += 1 << 20
    forged = encoding.HEADER.pack(*values) + data[encoding.HEADER.size:]
    with pytest.raises(encoding.BlockError, match="header inconsistent"):
        encoding.read_header(forged)
    with pytest.raises(encoding.BlockError, match="header inconsistent"):
        encoding.decode(forged)
