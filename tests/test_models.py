"""Tests for engine.models: the registry, every model's output shape, and the set models'
symmetries (permutation invariance, padding ignored exactly, variable counts)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.data.objects import BJET, ELECTRON, JET, MET
from engine.errors import InputError
from engine.models import INPUT_KEYS, create_model, list_models, model_args, model_input, optimise_for_speed
from engine.models.cnn import TIMM_MODELS

SET_MODELS = ("ffn", "deepsets", "set_transformer")
SYMMETRIC = ("deepsets", "set_transformer")


def make_objects(batch: int, cap: int, seed: int = 0, min_count: int = 1) -> dict:
    """Random padded object batch with the layout of engine.data.objects (MET in the last real slot)."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(min_count, cap + 1, (batch,), generator=g, dtype=torch.int32)
    types = torch.randint(ELECTRON, MET, (batch, cap), generator=g).to(torch.int8)
    features = torch.stack([
        torch.rand(batch, cap, generator=g) * 200 + 5,           # pt
        torch.randn(batch, cap, generator=g) * 1.5,              # eta
        (torch.rand(batch, cap, generator=g) * 2 - 1) * math.pi,  # phi
        torch.rand(batch, cap, generator=g) * 20,                 # mass
        torch.rand(batch, cap, generator=g),                      # btag
        torch.randint(-1, 2, (batch, cap), generator=g).float(),  # charge
    ], dim=-1)
    slots = torch.arange(cap)
    real = slots < counts.long().unsqueeze(1)
    types[slots == (counts.long().unsqueeze(1) - 1)] = MET
    types[~real] = 0
    features[~real] = 0
    return {"types": types, "features": features, "counts": counts}


def make_constituents(batch: int, cap: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, cap + 1, (batch,), generator=g, dtype=torch.int32)
    fatjet = torch.stack([torch.rand(batch, generator=g) * 300 + 200, torch.randn(batch, generator=g),
                          (torch.rand(batch, generator=g) * 2 - 1) * math.pi,
                          torch.rand(batch, generator=g) * 150], dim=-1)
    pid = torch.tensor([11.0, -13.0, 22.0, 211.0, 130.0])[torch.randint(0, 5, (batch, cap), generator=g)]
    constituents = torch.stack([
        torch.rand(batch, cap, generator=g) * 50, fatjet[:, 1:2] + torch.randn(batch, cap, generator=g) * 0.3,
        fatjet[:, 2:3] + torch.randn(batch, cap, generator=g) * 0.3,
        torch.randint(-1, 2, (batch, cap), generator=g).float(), pid], dim=-1)
    constituents[torch.arange(cap) >= counts.long().unsqueeze(1)] = 0
    return {"constituents": constituents, "counts": counts, "fatjet": fatjet}


def test_registry_lists_every_model_of_the_studies():
    expected = {"small_cnn", "cvn", "ffn", "deepsets", "set_transformer", *TIMM_MODELS}
    assert expected <= set(list_models())
    assert set(TIMM_MODELS) == {"resnet50", "inception_v3", "inception_resnet_v2", "vgg16", "vgg19",
                                "densenet121", "mobilenetv2_100"}


def test_unknown_name_and_option_are_input_errors():
    with pytest.raises(InputError, match="unknown model 'resnet51'.*resnet50.*set_transformer"):
        create_model("resnet51", 3)
    with pytest.raises(InputError, match="model.options.widht: .*did you mean `model.options.widths`"):
        create_model("small_cnn", 3, widht=(8,))
    with pytest.raises(InputError, match="model.options.inputs"):
        create_model("deepsets", 3, inputs="image")
    with pytest.raises(InputError, match="model.options.head"):
        create_model("mobilenetv2_100", 3, head="keras")
    with pytest.raises(InputError, match="model.options.dim: expected int, got '64'"):
        create_model("set_transformer", 3, dim="64")
    with pytest.raises(InputError, match="model.options.phi_sizes: expected a list of int"):
        create_model("deepsets", 3, phi_sizes=[100, 2.5])
    with pytest.raises(InputError, match="model.num_classes"):
        create_model("deepsets", 1)
    assert create_model("ffn", 3, cap=None, dropout=0).cap == 16      # int for float, null for int | None
    assert model_input("deepsets", phi_sizes=[8, 8], f_sizes=(8,)) == "objects"


def test_model_input_tells_the_trainer_what_to_feed():
    assert model_input("small_cnn") == "image"
    assert model_input("resnet50") == "image"
    assert model_input("cvn") == "image"
    assert model_input("set_transformer") == "objects"
    assert model_input("deepsets", inputs="constituents") == "constituents"
    assert create_model("ffn", 2).input_kind == "objects"


@pytest.mark.parametrize("name,chans,px", [("small_cnn", 3, 32), ("small_cnn", 5, 9), ("cvn", 1, 32)])
def test_small_image_models_give_logits(name, chans, px):
    model = create_model(name, 4, in_chans=chans).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, chans, px, px))
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 4


@pytest.mark.parametrize("arch", TIMM_MODELS)
def test_timm_models_give_logits(arch):
    # 80 px: the smallest size every architecture accepts (Inception needs ~75), fast on CPU.
    model = create_model(arch, 3, in_chans=2).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 2, 80, 80))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert model.spec == {"name": arch, "num_classes": 3, "options": {"in_chans": 2}}


def test_durham_head_is_pooling_and_three_dense_512_dropout_layers():
    model = create_model("mobilenetv2_100", 3, head="durham").eval()
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    drops = [m.p for m in model.head if isinstance(m, torch.nn.Dropout)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1280, 512), (512, 512), (512, 512), (512, 3)]
    assert drops == [0.3, 0.3, 0.3]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_resnet50_smoke_at_small_size_channels_last():
    model = optimise_for_speed(create_model("resnet50", 3, in_chans=3).eval(), channels_last=True)
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name,chans", [("small_cnn", 3), ("cvn", 1)])
def test_channels_last_gives_the_same_logits(name, chans):
    torch.manual_seed(0)
    model = create_model(name, 3, in_chans=chans).eval()
    x = torch.rand(4, chans, 40, 40)
    with torch.no_grad():
        ref = model(x)
        fast = optimise_for_speed(model)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SET_MODELS)
@pytest.mark.parametrize("kind", ["objects", "constituents"])
def test_set_models_give_logits(name, kind):
    cap = 16 if kind == "objects" else 32
    batch = make_objects(5, cap) if kind == "objects" else make_constituents(5, cap)
    options = {"inputs": kind, **({"cap": cap} if name == "ffn" else {})}
    model = create_model(name, 3, **options).eval()
    with torch.no_grad():
        logits = model(*model_args(model.input_kind, batch))
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    assert INPUT_KEYS[kind][0] in batch


def test_ffn_is_five_hidden_layers_of_500_with_dropout_half():
    model = create_model("ffn", 3, cap=16)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(16 * 12, 500)] + [(500, 500)] * 4 + [(500, 3)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 5


def _permute_real(batch: dict, keys: tuple[str, ...], seed: int) -> dict:
    """Shuffle the real slots of every event (padding stays at the end)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in batch.items()}
    for b, n in enumerate(batch["counts"].tolist()):
        order = torch.randperm(n, generator=g)
        for key in keys:
            out[key][b, :n] = batch[key][b, :n][order]
    return out


@pytest.mark.parametrize("name", SYMMETRIC)
def test_set_models_are_permutation_invariant(name):
    torch.manual_seed(1)
    model = create_model(name, 3).eval()
    batch = make_objects(32, 16, seed=2, min_count=4)
    shuffled = _permute_real(batch, ("types", "features"), seed=3)
    assert not torch.equal(shuffled["features"], batch["features"])
    with torch.no_grad():
        ref, out = model(*model_args("objects", batch)), model(*model_args("objects", shuffled))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_constituent_models_are_permutation_invariant(name):
    model = create_model(name, 2, inputs="constituents").eval()
    batch = make_constituents(16, 24, seed=4)
    shuffled = _permute_real(batch, ("constituents",), seed=5)
    with torch.no_grad():
        ref = model(*model_args("constituents", batch))
        out = model(*model_args("constituents", shuffled))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SET_MODELS)
def test_garbage_in_padding_changes_nothing(name):
    model = create_model(name, 3).eval()
    batch = make_objects(32, 16, seed=6)
    garbage = {k: v.clone() for k, v in batch.items()}
    pad = torch.arange(16) >= batch["counts"].long().unsqueeze(1)
    noise = torch.randn(garbage["features"].shape) * 1e4
    noise[..., 0] = float("nan")
    noise[..., 1] = float("inf")
    garbage["features"][pad] = noise[pad]
    garbage["types"][pad] = 3
    with torch.no_grad():
        ref, out = model(*model_args("objects", batch)), model(*model_args("objects", garbage))
    assert torch.equal(out, ref)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_same_event_at_any_cap_and_in_any_batch(name):
    model = create_model(name, 3).eval()
    batch = make_objects(16, 8, seed=7)
    wide = {"types": F.pad(batch["types"], (0, 8)), "features": F.pad(batch["features"], (0, 0, 0, 8)),
            "counts": batch["counts"]}
    with torch.no_grad():
        ref = model(*model_args("objects", batch))
        out = model(*model_args("objects", wide))
        alone = model(*(v[3:4] for v in model_args("objects", batch)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, ref[3:4], rtol=1e-5, atol=1e-5)
    assert len(set(batch["counts"].tolist())) > 3


def test_phi_wraps_and_empty_events_stay_finite():
    model = create_model("set_transformer", 3).eval()
    batch = make_objects(8, 8, seed=8)
    turned = {k: v.clone() for k, v in batch.items()}
    turned["features"][..., 2] += 2 * math.pi
    empty = {k: v.clone() for k, v in batch.items()}
    empty["counts"][:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(*model_args("objects", turned)), model(*model_args("objects", batch)),
                                   rtol=1e-4, atol=1e-4)
        out = model(*model_args("objects", empty))
    assert torch.isfinite(out).all() and torch.allclose(out, out[:1].expand_as(out))


def synthetic_sets(n: int, cap: int, seed: int) -> dict:
    """A separable set problem: the label is the number of b-jets (0, 1 or 2), placed at random
    slots among random electrons, muons and jets; counts vary from 3 to cap."""
    g = torch.Generator().manual_seed(seed)
    batch = make_objects(n, cap, seed=seed, min_count=3)
    labels = torch.randint(0, 3, (n,), generator=g)
    types, features = batch["types"], batch["features"]
    types[(types == BJET)] = JET
    features[..., 4] = torch.where(types == JET, features[..., 4] * 0.5, 0.0)
    for b in range(n):
        real = int(batch["counts"][b]) - 1      # the last real slot is MET
        slots = torch.randperm(real, generator=g)[: int(labels[b])]
        types[b, slots] = BJET
        features[b, slots, 4] = 0.5 + 0.5 * torch.rand(len(slots), generator=g)
    return {**batch, "labels": labels}


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread: with two, synchronisation costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SYMMETRIC)
def test_set_models_learn_a_separable_set_problem(name, one_thread):
    torch.manual_seed(0)
    train, test = synthetic_sets(4096, 12, seed=10), synthetic_sets(1024, 12, seed=11)
    model = create_model(name, 3, **({"dropout": 0.0} if name == "set_transformer" else {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(300):
        idx = torch.randint(0, 4096, (64,), generator=torch.Generator().manual_seed(step))
        loss = F.cross_entropy(model(*(v[idx] for v in model_args("objects", train))), train["labels"][idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(*model_args("objects", test)).argmax(1) == test["labels"]).float().mean().item()
    assert sum(losses[-30:]) / 30 < 0.5 * sum(losses[:30]) / 30
    assert accuracy > 0.8, accuracy       # chance is 1/3


def test_constituents_are_encoded_relative_to_the_jet_as_particlenet_does():
    from engine.models.sets import CONSTITUENT_DIM, encode_constituents
    jet = torch.tensor([[400.0, 0.5, 3.1, 120.0]])
    # a charged pion across phi = +-pi from the axis, a photon, then a NaN-filled padded slot
    constituents = torch.tensor([[[40.0, 0.7, -3.1, 1.0, 211.0], [10.0, 0.5, 3.1, 0.0, 22.0],
                                  [float("nan")] * 5]])
    x, mask = encode_constituents(constituents, torch.tensor([2], dtype=torch.int32), jet)
    assert x.shape == (1, 3, CONSTITUENT_DIM) and mask.tolist() == [[True, True, False]]
    dphi = 2 * math.pi - 6.2
    jet_e = math.hypot(400 * math.cosh(0.5), 120)
    expected = [0.2, dphi, math.hypot(0.2, dphi), math.log(40), math.log(40 * math.cosh(0.7)),
                math.log(40 / 400), math.log(40 * math.cosh(0.7) / jet_e), 1.0, 0, 0, 0, 1, 0]
    torch.testing.assert_close(x[0, 0], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert x[0, 1, 8:].tolist() == [0, 0, 1, 0, 0] and x[0, 1, 7] == 0        # a neutral photon
    assert (x[0, 2] == 0).all()                                                # padding: exact zeros
