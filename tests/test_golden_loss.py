"""Golden loss curves: a tiny seeded CPU run of each model below must log the train and validation
losses stored in tests/golden/losses.json, so a change in numerics (generation, sharding, loading
order, initialisation, the loop) is seen, not guessed.

log.csv keeps 6 significant digits; a rerun, and 1 or 2 threads, give the same digits. The
tolerance (relative 5e-5, a few units of the last digit) still sees the learning rate moved by
0.3 % (8.6e-5 on deepsets); another seed or learning rate 0.004 moves the losses by 7e-2 and 8e-3.
When a change of numerics is intended, regenerate the file and commit it with the change:

    python -m tests.test_golden_loss          # rewrites tests/golden/losses.json
"""
import json
import sys
from pathlib import Path

import pytest

from engine.training.config import load_config
from engine.training.logs import read_log
from tests.events import reset_accelerate, synthetic_shards

GOLDEN = Path(__file__).resolve().parent / "golden" / "losses.json"
RTOL = 5e-5
MODELS = {
    "deepsets": ["model.name=deepsets", "model.options={phi_sizes: [16, 16], f_sizes: [16]}"],
    "set_transformer": ["model.name=set_transformer", "model.options={dim: 16, heads: 2, layers: 1, "
                        "ff_dim: 16, dropout: 0.1}"],
}
COMMON = ["data.signal=ttbar", "train.batch_size=32", "train.epochs=2", "train.log_every_steps=2",
          "train.seed=3", "train.lr=0.003", "train.schedule=cosine", "train.warmup_steps=2"]


def make_shards(folder: Path) -> Path:
    return synthetic_shards(folder, 60, seed=4, shard_seed=6, events_per_member=32)


def loss_curve(shards: Path, out: Path, model: str) -> dict[str, list]:
    """{"train": [[step, loss], ...], "val": [[step, loss], ...]} of a run's log.csv."""
    from engine.train import train
    reset_accelerate()
    train(load_config(None, [f"data.shards={shards}", f"output_dir={out}", *MODELS[model], *COMMON]))
    reset_accelerate()
    rows = read_log(out / "log.csv")
    return {split: [[r["step"], r["loss"]] for r in rows if r["split"] == split] for split in ("train", "val")}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("golden_data"))


@pytest.mark.parametrize("model", list(MODELS))
def test_loss_curve_matches_the_golden_file(shards, tmp_path, model):
    expected = json.loads(GOLDEN.read_text())[model]
    got = loss_curve(shards, tmp_path, model)
    for split in ("train", "val"):
        assert [s for s, _ in got[split]] == [s for s, _ in expected[split]], split
        assert [loss for _, loss in got[split]] == pytest.approx([loss for _, loss in expected[split]],
                                                                rel=RTOL), split


def test_the_golden_curves_descend_and_differ_between_models():
    golden = json.loads(GOLDEN.read_text())
    for curve in golden.values():
        assert len(curve["train"]) >= 4 and len(curve["val"]) == 2
        assert curve["train"][-1][1] < curve["train"][0][1]
    assert golden["deepsets"]["train"] != golden["set_transformer"]["train"]


def regenerate(folder: Path) -> None:
    shards = make_shards(folder / "data")
    curves = {model: loss_curve(shards, folder / model, model) for model in MODELS}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(curves, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        regenerate(Path(tmp))
    sys.exit(0)
