"""CPU twin of the renderers: against the numpy re-statement of render_common.h
(tests/reference_render.py), geometry, phi wrap, augmentation, presets, jet preprocessing, bad input
and the `render` command."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.render import render_events, render_jets
from kernels import cpu
from kernels.presets import PRESETS, RenderConfig, preset
from tests.reference_render import f32, jets, make_events, ref_event, ref_wrap, to_u8


def draw(batch, cfg, **kw):
    return render_events(batch, cfg, **kw).images.numpy()


# ---- the twin against the reference -----------------------------------------------------------

@pytest.mark.parametrize("name", ["madrazo2017", "ochoa2023", "channels"])
def test_twin_matches_reference(name):
    cfg = preset(name, 64)
    batch = make_events(4, seed=1)
    P = cfg.param_table()
    images = draw(batch, cfg)
    u8 = draw(batch, cfg, dtype=torch.uint8)
    for b in range(4):
        ref = ref_event(P, batch["types"][b], batch["features"][b], batch["counts"][b])
        np.testing.assert_array_equal(images[b], ref)
        np.testing.assert_array_equal(u8[b], to_u8(ref))


def test_layouts_dtypes_and_threads_agree():
    cfg, batch = preset("madrazo2017", 96), make_events(8, seed=2)
    base = draw(batch, cfg, threads=1)
    assert np.array_equal(draw(batch, cfg, threads=2), base)
    last = render_events(batch, cfg, channels_last=True).images
    assert last.is_contiguous(memory_format=torch.channels_last) and np.array_equal(last.numpy(), base)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(render_events(batch, cfg, dtype=dtype).images, torch.from_numpy(base).to(dtype))
    assert np.array_equal(draw(batch, cfg, dtype=torch.uint8), to_u8(base))


# ---- geometry ---------------------------------------------------------------------------------

def one(t, pt, eta, phi, charge=0.0):
    types = np.array([[t]], np.int8)
    feats = np.array([[[pt, eta, phi, 0, 0, charge]]], np.float32)
    return {"types": types, "features": feats, "counts": np.array([1], np.int32)}


def test_circle_lands_on_the_right_pixels_with_the_right_radius():
    cfg = preset("madrazo2017")                                      # 224 px, eta +-3 across
    img = draw(one(2, 100.0, 1.5, 0.0), cfg)[0]                      # a green muon
    cx, cy = (1.5 + 3) / 6 * 224, 112.0
    radius = 0.5 * math.log(100.0) / math.log(1.1)                   # 24.15 px
    red = img[0]
    assert red[int(cy), int(cx)] == 1.0                              # an outline: the centre stays white
    row = red[int(cy)]                                               # pixel centres at y = 112.5
    right = int(np.argmin(row[int(cx):])) + 0.5
    left = int(cx) - int(np.argmin(row[int(cx)::-1])) + 0.5
    assert abs(right - radius) <= 1.0 and abs((cx - left) - radius) <= 1.0
    assert row[int(cx + radius)] == 0.0                              # full coverage on the ring
    assert np.allclose(img[:, int(cy), int(cx + radius)], [0, 128 / 255, 0])


def test_small_pt_gives_a_dot_not_a_negative_radius():
    img = draw(one(1, 0.5, 0.0, 0.0), preset("madrazo2017"))[0]
    assert img[2, 112, 112] == 1.0 and img[0, 112, 112] < 0.1       # blue dot at the centre
    assert (img[0] < 1).sum() < 30


def test_phi_wraps_around():
    img = draw(one(3, 300.0, 0.0, np.pi - 0.05), preset("madrazo2017"))[0]
    coloured = (img[1] < 1).any(axis=1)
    assert coloured[:5].any() and coloured[-5:].any()                 # near the top AND the bottom edge
    assert not coloured[60:170].any()


# ---- augmentation -----------------------------------------------------------------------------

def test_augmentation_is_seeded_and_is_a_phi_rotation_plus_eta_flip():
    cfg, batch = preset("madrazo2017", 64), make_events(6, seed=3)
    a = draw(batch, cfg, augment=True, seed=7)
    assert np.array_equal(a, draw(batch, cfg, augment=True, seed=7))
    assert not np.array_equal(a, draw(batch, cfg, augment=True, seed=8))
    delta, flip = cpu.augment_params(7, np.arange(6))
    assert np.all((delta >= -np.pi) & (delta < np.pi))
    moved = {k: v.copy() for k, v in batch.items()}
    moved["features"][..., 2] += delta[:, None]
    moved["features"][..., 1] *= np.where(flip, -1, 1)[:, None].astype(np.float32)
    assert np.array_equal(a, draw(moved, cfg))                       # exactly the transformed event


def test_augmentation_keeps_objects_and_radii():
    cfg = preset("madrazo2017")
    batch = one(3, 150.0, 0.7, 0.3)
    plain = (draw(batch, cfg)[0, 1] < 1).sum()
    for seed in range(5):
        img = draw(batch, cfg, augment=True, seed=seed, index_offset=seed)[0, 1]
        assert abs(int((img < 1).sum()) - int(plain)) <= 0.03 * plain   # same ring, other place
    _, flips = cpu.augment_params(0, np.arange(1000))
    assert 400 < flips.sum() < 600


# ---- presets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"jet"}))
def test_every_event_preset_draws(name):
    cfg = preset(name)
    result = render_events(make_events(3, seed=4), cfg)
    images = result.images.numpy()
    assert images.shape == (3, cfg.channels, cfg.size_px, cfg.size_px) and int(result.skipped) == 0
    background = np.asarray(cfg.background, np.float32)[:, None, None]
    assert all((img != background).any() for img in images)


def test_ochoa_encodes_muon_charge_and_keeps_four_jets():
    cfg = preset("ochoa2023")
    plus = (draw(one(2, 50.0, 0.0, 0.0, +1.0), cfg)[0, 1] < 1).sum()
    minus = (draw(one(2, 50.0, 0.0, 0.0, -1.0), cfg)[0, 1] < 1).sum()
    assert plus > 1.5 * minus
    assert (draw(one(1, 50.0, 0.0, 0.0), cfg) == 1).all()            # no electrons
    jets = {"types": np.full((1, 5), 3, np.int8), "counts": np.array([5], np.int32),
            "features": np.zeros((1, 5, 6), np.float32)}
    jets["features"][0, :, 0] = 100.0
    jets["features"][0, :, 1] = [-2.0, -1.0, 0.0, 1.0, 2.0]
    img = draw(jets, cfg)[0]
    column = int((2.0 + 3) / 6 * 244)
    assert (img[0, :, column - 8:column + 8] == 1).all()             # the fifth jet is not drawn


def test_sizes_scale_the_radius():
    small = draw(one(2, 100.0, 0.0, 0.0), preset("madrazo2017", 112))[0, 0]
    large = draw(one(2, 100.0, 0.0, 0.0), preset("madrazo2017", 224))[0, 0]
    def width(img):
        return np.ptp(np.nonzero((img < 0.5).any(axis=0))[0])
    assert abs(width(large) - 2 * width(small)) <= 3


# ---- jet images -------------------------------------------------------------------------------

def moments(img):
    y, x = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
    w = img / img.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    return mx, my, (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum(), (w * (x - mx) * (y - my)).sum()


def test_subnormal_inputs_are_zero_as_on_the_gpu():
    """The kernels run with -ftz=true (CuPy adds it): a subnormal pt is 0 there, so the constituent
    is not deposited; the twin flushes subnormals too and draws the same image."""
    cfg, batch = preset("jet", 32), jets(2, 30)
    tiny = {k: v.copy() for k, v in batch.items()}
    tiny["constituents"][:, 7, 0] = np.float32(1e-40)                # subnormal pt
    without = {k: v.copy() for k, v in batch.items()}
    without["constituents"][:, 7, 0] = 0.0
    got = render_jets(tiny, cfg).images
    assert torch.equal(got, render_jets(without, cfg).images)


def test_jet_preprocessing():
    cfg = preset("jet", 64)
    batch = jets()
    images = render_jets(batch, cfg).images.numpy()[:, 0]
    for img in images:
        assert abs(img.sum() - 1.0) < 1e-5                              # normalised
        mx, my, vxx, vyy, vxy = moments(img)
        assert abs(mx - 32) < 2 and abs(my - 32) < 2                    # centred
        assert vyy > 5 * vxx and abs(vxy) < 0.2 * vyy                   # principal axis vertical
        assert img[:, 32:].sum() >= img[:, :32].sum() and img[:32].sum() >= img[32:].sum()   # flips
    raw = render_jets(batch, RenderConfig(kind="jet", size_px=64, channels=1, background=(0.0,),
                                          jet_centre=False, jet_rotate=False, jet_flip=False,
                                          jet_normalise=False)).images.numpy()[:, 0]
    inside = batch["constituents"][0, :, 0].sum()
    assert 0.9 * inside <= raw[0].sum() <= inside + 1e-3                # pt-weighted, mostly in +-0.8
    _, _, vxx, vyy, vxy = moments(raw[0])
    assert abs(vxy) > 0.3 * math.sqrt(vxx * vyy)                        # unrotated: diagonal


def test_jet_twin_matches_deposits():
    cfg = RenderConfig(kind="jet", size_px=25, channels=1, background=(0.0,), jet_centre=False,
                       jet_rotate=False, jet_flip=False, jet_normalise=False)
    batch = jets(1, 10)
    img = render_jets(batch, cfg).images.numpy()[0, 0]
    ref = np.zeros((25, 25), np.float32)
    c, fj, R = batch["constituents"][0], batch["fatjet"][0], f32(0.8)
    for pt, eta, phi in c[:, :3]:
        u = ((eta - fj[1]) + R) / (f32(2) * R) * f32(25)
        v = (R - ref_wrap(phi - fj[2])) / (f32(2) * R) * f32(25)
        if 0 <= u < 25 and 0 <= v < 25:
            ref[int(np.floor(v)), int(np.floor(u))] += pt
    np.testing.assert_array_equal(img, ref)


# ---- bad input --------------------------------------------------------------------------------

def test_bad_inputs_are_skipped_counted_and_never_written_out_of_bounds():
    cfg = preset("madrazo2017", 64)
    batch = make_events(5, seed=6)
    good = draw(batch, cfg)
    bad = {k: v.copy() for k, v in batch.items()}
    n = bad["counts"][0]
    bad["types"][0, n], bad["features"][0, n, :3], bad["counts"][0] = 3, [np.nan, 0, 0], n + 1
    bad["types"][1, 1], bad["features"][1, 1, 2] = 3, np.inf      # replaces an object: skipped
    bad["types"][2, 0] = 9                                         # unknown type code
    bad["counts"][3] = 999                                         # clamped to N (padding: type 0)
    bad["counts"][4] = -3                                          # nothing drawn
    result = render_events(bad, cfg)
    images = result.images.numpy()
    assert int(result.skipped) == 3 + (16 - batch["counts"][3])
    assert np.array_equal(images[0], good[0])
    assert (images[4] == 1).all()
    far = one(3, 1e30, 50.0, 1e6)                                    # far outside, huge radius
    assert int(render_events(far, cfg).skipped) == 0
    empty = {"types": np.zeros((2, 4), np.int8), "features": np.zeros((2, 4, 6), np.float32),
             "counts": np.zeros(2, np.int32)}
    assert (draw(empty, cfg) == 1).all()


def test_wrong_arrays_are_refused():
    cfg, batch = preset("madrazo2017", 32), make_events(2)
    with pytest.raises(TypeError):
        cpu.render_events(batch["types"].astype(np.int32), batch["features"], batch["counts"],
                          cfg.param_table(), np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError):
        cpu.render_events(batch["types"], batch["features"], batch["counts"], cfg.param_table(),
                          np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError):
        render_jets(jets(), cfg)


# ---- the command ------------------------------------------------------------------------------

def write_events(path, n=5):
    import awkward as ak
    from engine.data.canonical import parquet_io, schema
    rng = np.random.default_rng(9)
    def lepton(k):
        return [{"pt": 30.0 + k, "eta": 0.5, "phi": 1.0, "mass": 0.0, "charge": -1}]
    records = [{"weight": 1.0, "run": 1, "lumi": 1, "event": k, "met_pt": 40.0, "met_phi": -1.0,
                "electrons": lepton(k) if k % 2 else [], "muons": [] if k % 2 else lepton(k),
                "jets": [{"pt": float(rng.uniform(30, 300)), "eta": float(rng.uniform(-2, 2)),
                          "phi": float(rng.uniform(-3, 3)), "mass": 5.0, "btag": 0.1, "btagged": j == 0}
                         for j in range(4)]} for k in range(n)]
    table = schema.events_table(ak.Array(records), "ttbar", ["ttbar", "wjets"])
    parquet_io.write_table(path, table, "events", ["ttbar", "wjets"], {"test": True})


def test_render_command(tmp_path):
    from engine.__main__ import main
    write_events(tmp_path / "ev.parquet")
    out = tmp_path / "img"
    assert main(["render", "--input", str(tmp_path / "ev.parquet"), "--n", "3", "--preset", "madrazo2017",
                 "--format", "npy", "--size", "64", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.npy", "000001.npy", "000002.npy", "contact_sheet.png"]
    first = np.load(out / "000000.npy")
    assert first.shape == (3, 64, 64) and first.dtype == np.float32 and (first < 1).any()
    assert main(["render", "--input", str(tmp_path), "--n", "9", "--preset", "channels",
                 "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("0*.png"))) == 5       # only 5 events exist
    from PIL import Image
    assert Image.open(tmp_path / "png" / "contact_sheet.png").format == "PNG"


def test_render_command_bad_input(tmp_path, capsys):
    from engine.__main__ import main
    write_events(tmp_path / "ev.parquet")
    assert main(["render", "--input", str(tmp_path / "ev.parquet"), "--n", "2", "--preset", "jet",
                 "--out", str(tmp_path / "o")]) == 2
    assert "holds events" in capsys.readouterr().err
    assert main(["render", "--input", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert main(["render", "--input", str(tmp_path), "--size", "4", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_render_command_reads_shards_in_stored_order(tmp_path):
    from engine.__main__ import main
    from engine.data import shards
    from engine.data.generation import synthetic
    from engine.data.loader import LoaderConfig, make_loader
    synthetic.write_synthetic(tmp_path / "pq", "events", 20, seed=5)
    shards.write_shards([tmp_path / "pq"], tmp_path / "shards", shards.ShardOptions(seed=5))
    out = tmp_path / "img"
    assert main(["render", "--input", str(tmp_path / "shards"), "--split", "test", "--n", "4",
                 "--format", "npy", "--size", "32", "--out", str(out)]) == 0
    first = next(iter(make_loader(tmp_path / "shards", LoaderConfig(batch_size=4, shuffle=False), split="test")))
    want = render_events({k: first[k] for k in ("types", "features", "counts")}, preset("madrazo2017", 32)).images
    for k in range(4):
        assert np.array_equal(np.load(out / f"{k:06d}.npy"), want[k].numpy())
    assert main(["render", "--input", str(tmp_path / "shards"), "--preset", "jet", "--out", str(tmp_path / "j")]) == 2
