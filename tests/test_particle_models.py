"""Tests for engine.models.particle: `particlenet` and `part` on objects and jet constituents.

Shapes, the symmetries (permutation of real objects, padding of any content, a common rotation in
phi, events straddling phi = +-pi), zero- and one-object events, the kNN and the pairwise
features against direct four-vector arithmetic, option errors, bfloat16 autocast, learning a toy
problem, real training runs through the trainer on synthetic shards (and an interrupted one
resumed), and, on a GPU, CUDA against CPU.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.data.objects import JET, MUON
from engine.errors import InputError
from engine.models import INPUT_KEYS, create_model, model_args, model_input
from engine.models.particle import knn, pair_features, wrap_phi
from engine.training.config import load_config
from engine.training.logs import read_log
from tests.events import reset_accelerate, synthetic_shards
from tests.test_models import make_constituents, make_objects

MODELS = ("particlenet", "part")
KINDS = ("objects", "constituents")
TINY = {"particlenet": {"blocks": [[4, [16, 16]], [4, [24, 24]]], "fc_dim": 32, "dropout": 0.0},
        "part": {"dim": 16, "heads": 2, "layers": 2, "pair_dims": [8], "ff_dim": 32, "dropout": 0.0}}


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on small batches: one thread is faster than several fighting for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch_of(kind: str, batch: int = 6, seed: int = 0) -> dict:
    """Objects (cap 16) or constituents (cap 24, more than k + 1 real ones in most jets)."""
    return make_objects(batch, 16, seed) if kind == "objects" else make_constituents(batch, 24, seed)


def tiny(name: str, kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, 3, inputs=kind, **TINY[name]).eval()


def run(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(*model_args(model.input_kind, batch))


def values_key(kind: str) -> str:
    return "features" if kind == "objects" else "constituents"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_default_models_give_float_logits_per_event(name, kind):
    torch.manual_seed(0)
    model = create_model(name, 4, inputs=kind)
    assert model.input_kind == kind == model_input(name, inputs=kind)
    batch = batch_of(kind, batch=3)
    logits = model(*model_args(kind, batch))
    assert logits.shape == (3, 4) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert isinstance(list(model.head.modules())[-1], torch.nn.Linear)
    assert model.spec == {"name": name, "num_classes": 4, "options": {"inputs": kind}}
    assert tuple(batch) == INPUT_KEYS[kind]


def permuted(batch: dict, kind: str, seed: int) -> dict:
    """The same events with their real objects in another order (padding left in place)."""
    g = torch.Generator().manual_seed(seed)
    out = {key: value.clone() for key, value in batch.items()}
    for b, n in enumerate(batch["counts"].tolist()):
        order = torch.randperm(n, generator=g)
        out[values_key(kind)][b, :n] = batch[values_key(kind)][b, order]
        if kind == "objects":
            out["types"][b, :n] = batch["types"][b, order]
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_output_is_invariant_under_permutations_of_real_objects(name, kind):
    model, batch = tiny(name, kind), batch_of(kind, batch=8)
    reference = run(model, batch)
    for seed in (1, 2):
        assert torch.allclose(run(model, permuted(batch, kind, seed)), reference, atol=1e-5, rtol=1e-4)
    swapped = {k: v.clone() for k, v in batch.items()}     # moving a real object is not a no-op
    swapped[values_key(kind)][:, 0, 0] *= 3
    assert not torch.allclose(run(model, swapped), reference, atol=1e-4)


def with_padding(batch: dict, kind: str, value: float, extra_slots: int = 0) -> dict:
    """The same events with every padded slot set to `value` (types 4), optionally more slots."""
    out = {key: v.clone() for key, v in batch.items()}
    key = values_key(kind)
    out[key] = F.pad(out[key], (0, 0, 0, extra_slots))
    slots = torch.arange(out[key].shape[1])
    padded = slots >= batch["counts"].long().unsqueeze(1)
    out[key][padded] = value
    if kind == "objects":
        out["types"] = F.pad(out["types"], (0, extra_slots))
        out["types"][padded] = 4
    return out


@pytest.mark.parametrize("training", (False, True), ids=("eval", "train"))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_padded_slots_do_not_influence_the_output(name, kind, training):
    model, batch = tiny(name, kind), batch_of(kind, batch=8)
    model.train(training)          # batch statistics come from real entries only
    reference = run(model, batch)
    for value in (math.nan, math.inf, -1e30, 7.0):
        assert torch.equal(run(model, with_padding(batch, kind, value)), reference), value
    more_slots = run(model, with_padding(batch, kind, math.nan, extra_slots=5))
    assert torch.allclose(more_slots, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_events_with_zero_one_or_two_objects_are_finite(name, kind):
    batch = with_padding(batch_of(kind, batch=4), kind, math.nan)
    batch["counts"] = torch.tensor([0, 1, 2, 0], dtype=torch.int32)
    batch = with_padding(batch, kind, math.nan)
    model = tiny(name, kind)
    logits = run(model, batch)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits[0], logits[3])             # nothing to see: the same output
    model.train()
    loss = F.cross_entropy(model(*model_args(kind, batch)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                        if p.grad is not None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_autocast_trains_and_stays_close_to_float32(name, kind):
    model, batch = tiny(name, kind), batch_of(kind)
    reference = run(model, batch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.allclose(run(model, batch).float(), reference, atol=0.1)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(*model_args(kind, batch)).float(), torch.zeros(6, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                        if p.grad is not None)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_gpu_output_matches_cpu_and_trains_in_bfloat16(name, kind):
    model, batch = tiny(name, kind), with_padding(batch_of(kind), kind, math.nan)
    reference = run(model, batch)
    cuda_model = model.to("cuda")
    cuda_batch = {key: value.to("cuda") for key, value in batch.items()}
    assert torch.allclose(run(cuda_model, cuda_batch).cpu(), reference, atol=1e-4, rtol=1e-3)
    cuda_model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = cuda_model(*model_args(kind, cuda_batch))
    F.cross_entropy(logits.float(), torch.zeros(6, dtype=torch.long, device="cuda")).backward()
    assert torch.isfinite(logits).all() and all(torch.isfinite(p.grad).all() for p in cuda_model.parameters()
                                                if p.grad is not None)


def rotated(batch: dict, kind: str, dphi: float, wrap: bool) -> dict:
    """Every phi (constituents and the jet axis) moved by dphi, wrapped into [-pi, pi) if `wrap`."""
    out = {key: v.clone() for key, v in batch.items()}
    shift = lambda phi: wrap_phi(phi + dphi) if wrap else phi + dphi     # noqa: E731
    real = torch.arange(out[values_key(kind)].shape[1]) < batch["counts"].long().unsqueeze(1)
    values = out[values_key(kind)]
    values[..., 2] = torch.where(real, shift(values[..., 2]), 0.0)       # phi
    if kind == "constituents":
        out["fatjet"][:, 2] = shift(out["fatjet"][:, 2])
    return out


def centred(batch: dict, kind: str) -> dict:
    """The events squeezed to |phi| < 0.6 (and the jet axis at phi 0): far from the +-pi edge."""
    out = {key: v.clone() for key, v in batch.items()}
    values = out[values_key(kind)]
    if kind == "objects":
        values[..., 2] = values[..., 2] * (0.6 / math.pi)
    else:
        values[..., 2] = wrap_phi(values[..., 2] - out["fatjet"][:, 2:3]) * 0.5
        out["fatjet"][:, 2] = 0.0
    return rotated(out, kind, 0.0, wrap=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_phi_enters_only_through_wrapped_differences(name, kind):
    model, batch = tiny(name, kind), centred(batch_of(kind, batch=8), kind)
    reference = run(model, batch)
    assert torch.allclose(run(model, rotated(batch, kind, 2 * math.pi, wrap=False)), reference, atol=1e-4)
    straddling = rotated(batch, kind, math.pi, wrap=True)        # objects on both sides of +-pi
    phis = straddling[values_key(kind)][..., 2][straddling[values_key(kind)][..., 0] > 0]
    assert (phis > 2.6).any() and (phis < -2.6).any()
    assert torch.allclose(run(model, straddling), reference, atol=1e-4)
    assert torch.allclose(run(model, rotated(batch, kind, 1.0, wrap=True)), reference, atol=1e-4)
    one_moved = {key: value.clone() for key, value in batch.items()}     # a relative phi does count
    one_moved[values_key(kind)][:, 0, 2] += 0.5
    assert not torch.allclose(run(model, one_moved), reference, atol=1e-4)


def test_knn_picks_the_nearest_real_neighbours_only():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(5, 12, 2, generator=g)
    counts = torch.tensor([0, 1, 2, 6, 12])
    mask = torch.arange(12) < counts.unsqueeze(1)
    dist = torch.cdist(points, points).square()
    idx, valid = knn(dist, mask, k=4)
    assert idx.shape == valid.shape == (5, 12, 4)
    assert valid.sum((1, 2)).tolist() == [0, 0, 2, 6 * 4, 12 * 4]    # min(k, n - 1) per real object
    for b, n in enumerate(counts.tolist()):
        for i in range(n):
            chosen = set(idx[b, i][valid[b, i]].tolist())
            others = [j for j in range(n) if j != i]
            expected = set(sorted(others, key=lambda j: dist[b, i, j].item())[:4])
            assert chosen == expected
    assert not valid[~mask].any()


def test_pair_features_match_four_vector_arithmetic():
    g = torch.Generator().manual_seed(0)
    pt = torch.rand(2, 5, generator=g) * 100 + 1
    eta = torch.randn(2, 5, generator=g) * 2
    phi = (torch.rand(2, 5, generator=g) * 2 - 1) * math.pi
    mass = torch.rand(2, 5, generator=g) * 10
    i, j = torch.triu_indices(5, 5, offset=1)
    features = pair_features(pt.double(), eta.double(), phi.double(), mass.double(), i, j)
    p = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1).double()
    energy = torch.sqrt(p.square().sum(-1) + mass.double().square())
    m2 = (energy[:, i] + energy[:, j]).square() - (p[:, i] + p[:, j]).square().sum(-1)
    rapidity = 0.5 * torch.log((energy + p[..., 2]) / (energy - p[..., 2]))
    dphi = torch.remainder(phi[:, i] - phi[:, j] + math.pi, 2 * math.pi) - math.pi
    delta = torch.sqrt((rapidity[:, i] - rapidity[:, j]).square() + dphi.double().square())
    pt_min = torch.minimum(pt[:, i], pt[:, j]).double()
    expected = torch.stack([delta.log(), (pt_min * delta).log(),
                            (pt_min / (pt[:, i] + pt[:, j])).log(), m2.log()], -1)
    assert torch.allclose(features, expected, atol=1e-6)
    same = pair_features(pt[:, :1], eta[:, :1], phi[:, :1], torch.zeros(2, 1), torch.tensor([0]),
                         torch.tensor([0]))                        # collinear massless: clamped, finite
    assert torch.isfinite(same).all() and torch.allclose(same[..., 0], torch.tensor(math.log(1e-8)))


def test_unknown_or_malformed_options_are_input_errors():
    with pytest.raises(InputError, match="model.options.k: model 'particlenet' has no option 'k'.*blocks"):
        create_model("particlenet", 3, k=16)
    for bad in ([[16]], [[0, [64]]], [[16, []]], [[16, [64, -1]]], []):
        with pytest.raises(InputError, match="model.options.blocks"):
            create_model("particlenet", 3, blocks=bad)
    with pytest.raises(InputError, match="model.options.heads: dim 64 is not divisible by heads 5"):
        create_model("part", 3, heads=5)
    with pytest.raises(InputError, match="model.options.pair_dims: expected a list of int"):
        create_model("part", 3, pair_dims=[8, 2.5])
    with pytest.raises(InputError, match="model.options.inputs"):
        create_model("part", 3, inputs="image")
    with pytest.raises(InputError, match="model.options.dropout: expected float"):
        create_model("particlenet", 3, dropout="0.1")


def toy_problem(kind: str, n: int, seed: int) -> tuple[dict, torch.Tensor]:
    """Objects: a muon and a jet close in phi (class 0) or back to back (class 1), at a random common phi,
    so only the phi difference tells them apart. Constituents: narrow (0) or wide (1) jets."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    if kind == "objects":
        batch = make_objects(n, 4, seed, min_count=2)
        batch["counts"][:] = 2
        batch = with_padding(batch, kind, 0.0)
        batch["types"][:, 0], batch["types"][:, 1] = MUON, JET    # two different objects
        batch["features"][:, :2] = torch.tensor([[40.0, 0.5, 0.0, 0.1, 0.0, -1.0],
                                                 [80.0, -0.5, 0.0, 10.0, 0.5, 0.0]])
        base = (torch.rand(n, generator=g) * 2 - 1) * math.pi
        gap = torch.where(labels == 1, math.pi - 0.3, 0.3) + torch.rand(n, generator=g) * 0.2
        batch["features"][:, 0, 2], batch["features"][:, 1, 2] = base, wrap_phi(base + gap)
        return batch, labels
    batch = make_constituents(n, 12, seed)
    width = torch.where(labels == 1, 0.4, 0.05).view(-1, 1)
    c = batch["constituents"]
    c[..., 1] = batch["fatjet"][:, 1:2] + torch.randn(c.shape[:2], generator=g) * width
    c[..., 2] = wrap_phi(batch["fatjet"][:, 2:3] + torch.randn(c.shape[:2], generator=g) * width)
    batch["counts"] = batch["counts"].clamp_min(3)
    return with_padding(batch, kind, 0.0), labels


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_model_learns_a_small_separable_problem(name, kind):
    model = tiny(name, kind).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(60):
        batch, labels = toy_problem(kind, 32, seed=step)
        loss = F.cross_entropy(model(*model_args(kind, batch)), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    batch, labels = toy_problem(kind, 256, seed=1000)
    assert (run(model.eval(), batch).argmax(1) == labels).float().mean() > 0.9


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def options_yaml(options: dict) -> str:
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in options.items()) + "}"


@pytest.mark.parametrize(("name", "kind", "dataset"), [("particlenet", "objects", "events"),
                                                        ("part", "constituents", "fatjets")])
def test_trainer_runs_the_model_on_shards(name, kind, dataset, tmp_path):
    from engine.train import train
    shards = synthetic_shards(tmp_path / "data", 40, seed=0, kind=dataset, events_per_member=32)
    options = {**TINY[name], "inputs": kind}
    cfg = load_config(None, [f"data.shards={shards}", f"output_dir={tmp_path / 'run'}",
                             f"model.name={name}", f"model.options={options_yaml(options)}",
                             "train.batch_size=16", "train.max_steps=4", "train.log_every_steps=1",
                             "train.lr=0.003"])
    metrics = train(cfg)
    rows = read_log(tmp_path / "run" / "log.csv")
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert np.isfinite(metrics["accuracy"])
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["input_kind"] == kind and run_info["dataset_kind"] == dataset
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_interrupted_training_resumes_to_the_same_weights_and_batch_statistics(tmp_path, monkeypatch):
    import engine.training.trainer as trainer
    from safetensors.torch import load_file
    shards = synthetic_shards(tmp_path / "data", 40, seed=0, events_per_member=32)
    args = [f"data.shards={shards}", "model.name=particlenet",
            f"model.options={options_yaml(TINY['particlenet'])}", "train.batch_size=16", "train.epochs=2",
            "train.checkpoint_every_steps=3", "train.seed=5"]          # 5 or 6 steps per epoch
    trainer.train(load_config(None, [*args, f"output_dir={tmp_path / 'straight'}"]))
    reset_accelerate()
    real_save = trainer.save_checkpoint

    def save_then_die(accelerator, output_dir, state, config):
        folder = real_save(accelerator, output_dir, state, config)
        if state.step == 6:                                   # mid-run, batch statistics and all
            raise KeyboardInterrupt
        return folder
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(load_config(None, [*args, f"output_dir={tmp_path / 'killed'}"]))
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    reset_accelerate()
    trainer.train(load_config(None, [*args, f"output_dir={tmp_path / 'killed'}"]))
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    assert straight.keys() == resumed.keys() and any("running_var" in key for key in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_speed_benchmark_writes_one_finite_record_per_model_and_input(tmp_path):
    from benchmarks import set_models
    out = tmp_path / "records.json"
    set_models.main(["--quick", "--models", *MODELS, "--out", str(out)])
    records = json.loads(out.read_text())
    assert [(r["params"]["model"], r["params"]["inputs"]) for r in records] == [
        (name, kind) for kind in KINDS for name in MODELS]
    assert all(r["unit"] == "events/s" and r["value"] > 0 and r["params"]["batch"] == 16 for r in records)


@pytest.mark.parametrize("name", MODELS)
def test_max_particles_keeps_the_first_slots_only(name):
    batch = batch_of("constituents", batch=8, seed=3)
    batch["counts"][:4] = 24                                   # some jets beyond the limit, some below
    limited = create_model(name, 3, inputs="constituents", max_particles=10, **TINY[name]).eval()
    full = create_model(name, 3, inputs="constituents", **TINY[name]).eval()
    full.load_state_dict(limited.state_dict())
    cut = {"constituents": batch["constituents"][:, :10].clone(), "counts": batch["counts"].clamp(max=10),
           "fatjet": batch["fatjet"]}
    torch.testing.assert_close(run(limited, batch), run(full, cut))
    assert not torch.allclose(run(limited, batch)[:4], run(full, batch)[:4])
    with pytest.raises(InputError, match="^model.options.max_particles: must be at least 1"):
        create_model(name, 3, max_particles=0)
