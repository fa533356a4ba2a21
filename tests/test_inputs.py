"""Tests for engine.training.inputs: a loader batch becomes a model's forward arguments; images are
drawn on the fly, reproducibly per (seed, epoch, step), augmented only in training."""
import pytest
import torch

from engine.data.loader import LoaderConfig, make_loader
from engine.errors import InputError
from engine.models import INPUT_KEYS
from engine.training.config import RenderSection
from engine.training.inputs import ModelInputs, augmentation_seed
from tests.events import synthetic_shards

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    shards = synthetic_shards(tmp_path_factory.mktemp("inputs_data"), 20, seed=1, events_per_member=16)
    return next(iter(make_loader(shards, LoaderConfig(batch_size=16, shuffle=False), split="train")))


def images(batch, epoch=0, step=0, train=True, **render):
    inputs = ModelInputs("image", "events", RenderSection(size_px=16, **render), CPU, seed=7)
    (out,), labels = inputs(batch, epoch, step, train)
    return out, labels


def test_augmentation_seeds_are_distinct_reproducible_and_31_bit():
    seeds = {augmentation_seed(s, e, t) for s in range(3) for e in range(4) for t in range(50)}
    assert len(seeds) == 3 * 4 * 50 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert augmentation_seed(5, 2, 9) == augmentation_seed(5, 2, 9)
    assert 0 <= augmentation_seed(2**40, 10**6, 10**9) < 2**31 - 1


def test_set_inputs_are_the_batch_tensors_in_argument_order(batch):
    kind = "objects"
    args, labels = ModelInputs(kind, "events", RenderSection(), CPU, seed=0)(batch, 0, 0, train=True)
    assert len(args) == len(INPUT_KEYS[kind])
    for arg, key in zip(args, INPUT_KEYS[kind]):
        assert torch.equal(arg, batch[key])
    assert torch.equal(labels, batch["labels"]) and labels.dtype == torch.int64


def test_images_are_drawn_at_the_configured_size_and_dtype(batch):
    out, labels = images(batch, dtype="bfloat16")
    assert out.shape[0] == len(labels) == 16 and out.shape[-2:] == (16, 16) and out.dtype == torch.bfloat16
    assert out.float().sum() > 0 and torch.isfinite(out.float()).all()


def test_training_images_repeat_per_step_and_change_between_steps(batch):
    first, _ = images(batch, epoch=1, step=3)
    assert torch.equal(first, images(batch, epoch=1, step=3)[0])
    assert not torch.equal(first, images(batch, epoch=1, step=4)[0])
    assert not torch.equal(first, images(batch, epoch=2, step=3)[0])


def test_evaluation_and_unaugmented_images_ignore_epoch_and_step(batch):
    plain, _ = images(batch, train=False)
    assert torch.equal(plain, images(batch, epoch=5, step=11, train=False)[0])
    assert torch.equal(plain, images(batch, epoch=5, step=11, train=True, augment=False)[0])
    assert not torch.equal(plain, images(batch, epoch=5, step=11, train=True)[0])


def test_a_jet_preset_on_event_shards_is_an_error_naming_render_preset():
    with pytest.raises(InputError, match=r"render.preset.*'jet' draws jet images.*events"):
        ModelInputs("image", "events", RenderSection(preset="jet"), CPU, seed=0)
    with pytest.raises(InputError, match=r"render.preset.*draws event images.*fatjets"):
        ModelInputs("image", "fatjets", RenderSection(), CPU, seed=0)
