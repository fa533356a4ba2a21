from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from engine.config import FieldError, apply_overrides, from_dict, to_dict
from engine.errors import InputError


@dataclass
class Inner:
    lr: float = 1e-3
    name: Literal["adam", "sgd"] = "adam"


@dataclass
class Outer:
    epochs: int = 1
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    resume: Optional[str] = None


def test_nested_dataclass_from_dict():
    cfg = from_dict(Outer, {"epochs": 3, "inner": {"lr": 1, "name": "sgd"}, "tags": ["a"]})
    assert cfg.epochs == 3 and cfg.inner.lr == 1.0 and cfg.inner.name == "sgd" and cfg.tags == ["a"]
    assert to_dict(cfg)["inner"] == {"lr": 1.0, "name": "sgd"}


@pytest.mark.parametrize("data, message", [
    ({"epoch": 3}, "^epoch: unknown key; did you mean `epochs`"),
    ({"inner": {"learning_rate": 1}}, "^inner.learning_rate: unknown key \\(known: lr, name\\)"),
    ({"inner": {"nme": "sgd"}}, "^inner.nme: unknown key; did you mean `inner.name`"),
    ({"epochs": "3"}, "epochs: expected int"),
    ({"epochs": True}, "epochs: expected int"),
    ({"inner": {"name": "adamw"}}, "inner.name: must be one of"),
    ({"tags": "a"}, "tags: expected a list"),
])
def test_errors_name_the_key(data, message):
    with pytest.raises(InputError, match=message):
        from_dict(Outer, data)


def test_yaml_exponent_without_dot_is_a_float():
    import yaml
    cfg = from_dict(Inner, yaml.safe_load("lr: 1e-3"))
    assert cfg.lr == 0.001
    with pytest.raises(InputError, match="inner.lr: expected float"):
        from_dict(Outer, {"inner": {"lr": "fast"}})


def test_overrides():
    data = apply_overrides({}, ["inner.lr=0.5", "epochs=2", "resume=null"])
    assert data == {"inner": {"lr": 0.5}, "epochs": 2, "resume": None}
    with pytest.raises(InputError):
        apply_overrides({}, ["epochs"])


def test_half_precision_images_need_mixed_precision():
    from engine.training.config import load_config
    with pytest.raises(InputError, match="^render.dtype: bfloat16 needs train.mixed_precision"):
        load_config(None, ["render.dtype=bfloat16", "train.mixed_precision=no"])
    assert load_config(None, ["render.dtype=bfloat16", "train.mixed_precision=bf16"]).render.dtype == "bfloat16"


def test_yaml_no_is_the_word_no_where_a_choice_is_expected():
    from engine.training.config import load_config
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(InputError, match="must be one of no, bf16, fp16, got True"):
        load_config(None, ["train.mixed_precision=yes"])


@dataclass
class Checked:
    rate: float = 0.5
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.rate <= 1:
            raise FieldError("rate", f"must be in [0, 1], got {self.rate}")
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")


@dataclass
class Holder:
    checked: Checked = field(default_factory=Checked)


@pytest.mark.parametrize("data, message", [
    ({"checked": {"rate": 2}}, "^checked.rate: must be in \\[0, 1\\], got 2.0$"),
    ({"checked": {"count": 0}}, "^checked.count: must be at least 1, got 0$"),    # plain ValueError
    ({"checked": {"count": 1, "rate": -1}}, "^checked.rate: "),
])
def test_value_errors_name_the_full_key(data, message):
    with pytest.raises(InputError, match=message):
        from_dict(Holder, data)
    assert from_dict(Holder, {"checked": {"rate": 1, "count": 2}}).checked.rate == 1.0


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=3"], "^train.epoch: unknown key; did you mean `train.epochs`\\?$"),
    (["trian.lr=0.1"], "^trian: unknown key; did you mean `train`\\?$"),
    (["loader.batchsize=3"], "^loader.batchsize: unknown key; did you mean `loader.batch_size`"),
    (["model.unfreeze_fraction=1.5"], "^model.unfreeze_fraction: must be in \\[0, 1\\], got 1.5$"),
    (["model.unfreeze_fraction=-0.1"], "^model.unfreeze_fraction: "),
    (["render.preset=madrazo"], "^render.preset: unknown preset 'madrazo'; did you mean `madrazo2017`"),
    (["render.preset=zzz"],
     "^render.preset: unknown preset 'zzz' \\(known: channels, jet, madrazo2017, ochoa2023\\)"),
    (["render.size_px=0"], "^render.size_px: must be at least 1"),
    (["train.lr=0"], "^train.lr: must be positive, got 0.0$"),
    (["train.epochs=0"], "^train.epochs: must be at least 1, got 0$"),
    (["data.shards=s", "data.train_fraction=0"], "^data.train_fraction: must lie in \\(0, 1\\], got 0.0$"),
    (["loader.batch_size=32"], "^loader.batch_size: 32 disagrees with train.batch_size 256"),
    (["train.batch_size=64", "loader.batch_size=256"], "^loader.batch_size: 256 disagrees with train.batch_size 64"),
    (["loader.seed=1"], "^loader.seed: 1 disagrees with train.seed 0"),
    (["train.seed=3", "loader.seed=1"], "^loader.seed: 1 disagrees with train.seed 3"),
])
def test_training_config_errors_name_the_yaml_key(overrides, message):
    from engine.training.config import load_config
    with pytest.raises(InputError, match=message):
        load_config(None, overrides)


def test_model_and_boundary_values_that_are_fine():
    from engine.training.config import load_config
    for value in (0, 1, 0.25):
        assert load_config(None, [f"model.unfreeze_fraction={value}"]).model.unfreeze_fraction == value
    cfg = load_config(None, ["train.batch_size=64", "loader.batch_size=64", "train.seed=5", "loader.seed=5"])
    assert (cfg.loader.batch_size, cfg.loader.seed) == (64, 5)
    cfg = load_config(None, ["train.batch_size=64", "train.seed=5"])
    assert (cfg.loader.batch_size, cfg.loader.seed) == (64, 5)       # taken from train


def test_a_written_config_loads_again_with_train_overrides(tmp_path):
    import yaml
    from engine.training.config import load_config
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(load_config(None, ["train.batch_size=64"])), sort_keys=False))
    assert load_config(path, ["train.batch_size=32"]).loader.batch_size == 32   # its loader copy follows
    with pytest.raises(InputError, match="^loader.batch_size: 64 disagrees with train.batch_size 32"):
        load_config(path, ["train.batch_size=32", "loader.batch_size=64"])   # set explicitly: checked


@pytest.fixture(scope="module")
def event_shards(tmp_path_factory):
    from tests.events import synthetic_shards
    return synthetic_shards(tmp_path_factory.mktemp("config_events"), 10, seed=0, events_per_member=16)


@pytest.fixture(scope="module")
def fatjet_shards(tmp_path_factory):
    from tests.events import synthetic_shards
    return synthetic_shards(tmp_path_factory.mktemp("config_fatjets"), 10, seed=0, kind="fatjets",
                            events_per_member=16)


def _check(shards, *overrides):
    from engine.training.config import check_inputs, load_config
    return check_inputs(load_config(None, [f"data.shards={shards}", *overrides]))


@pytest.mark.parametrize("kind, overrides, message", [
    ("events", ["data.signal=higgs"],
     "^data.signal: 'higgs' is not among the classes of .* \\(known: dy, ttbar, wjets\\)$"),
    ("events", ["data.signal=ttbr"], "^data.signal: 'ttbr' is not among .*; did you mean `ttbar`\\?$"),
    ("fatjets", ["data.signal=ttbar"], "^data.signal: 'ttbar' is not among .* \\(known: qcd, top\\)$"),
    ("fatjets", ["model.name=deepsets", "model.options.inputs=objects"],
     "^model.options.inputs: deepsets reads objects .* holds fatjets; set model.options.inputs: constituents$"),
    ("fatjets", ["model.name=part", "model.options.inputs=objects"], "^model.options.inputs: part reads objects"),
    ("fatjets", ["model.name=ffn", "model.options.inputs=image"],
     "^model.options.inputs: model 'ffn' takes inputs objects or constituents, not 'image'$"),
    ("events", ["model.name=deepsets", "model.options.inputs=constituents"],
     "^model.options.inputs: deepsets reads constituents .* holds events; set model.options.inputs: objects$"),
    ("fatjets", ["model.name=small_cnn"],
     "^render.preset: 'madrazo2017' draws event images, but .* holds fatjets \\(presets for fatjets: jet\\)$"),
    ("events", ["model.name=cvn", "render.preset=jet"],
     "^render.preset: 'jet' draws jet images, but .* holds events \\(presets for events: madrazo2017, ochoa2023, "
     "channels\\)$"),
    ("events", ["model.name=resnet51"], "^model.name: unknown model 'resnet51'"),
    ("events", ["model.name=set_transformer", "model.options.dimm=8"],
     "^model.options.dimm: model 'set_transformer' has no option 'dimm'; did you mean `model.options.dim`\\?"),
    ("events", ["model.name=set_transformer", "model.options.dim=eight"], "^model.options.dim: expected int"),
    ("events", ["model.name=gbt", "model.options.max_iters=3"],
     "^model.options.max_iters: not an option of gbt.*did you mean `model.options.max_iter`"),
    ("events", ["model.name=gbt", "model.options.random_state=3"],
     "^model.options.random_state: not an option of gbt .*the seed is train.seed"),
])
def test_config_is_checked_against_the_shards(event_shards, fatjet_shards, kind, overrides, message):
    shards = event_shards if kind == "events" else fatjet_shards
    with pytest.raises(InputError, match=message):
        _check(shards, *overrides)


@pytest.mark.parametrize("kind, overrides", [
    ("events", ["data.signal=ttbar"]),
    ("events", ["model.name=small_cnn", "render.preset=channels"]),
    ("events", ["model.name=deepsets", "render.preset=jet"]),      # set models draw no images
    ("events", ["model.name=gbt", "model.options.max_iter=3"]),
    ("fatjets", ["data.signal=top", "model.name=cvn", "render.preset=jet"]),
    ("fatjets", ["model.name=deepsets", "model.options.inputs=constituents"]),
    ("fatjets", ["model.name=ffn", "model.options.inputs=constituents"]),
])
def test_configs_that_fit_the_shards_pass(event_shards, fatjet_shards, kind, overrides):
    shards = event_shards if kind == "events" else fatjet_shards
    assert _check(shards, *overrides)["kind"] == kind


@pytest.mark.parametrize("name", ["ffn", "deepsets", "set_transformer", "particlenet", "part", "gbt"])
def test_a_model_without_inputs_reads_the_kind_the_shards_hold(event_shards, fatjet_shards, name):
    from engine.training.config import check_inputs, load_config, model_input_kind
    for shards, kind, wanted in ((fatjet_shards, "fatjets", "constituents"), (event_shards, "events", "objects")):
        cfg = load_config(None, [f"data.shards={shards}", f"model.name={name}", "model.options={}"])
        check_inputs(cfg)
        assert model_input_kind(cfg.model, kind) == wanted
        # recorded in the config only where it is not the model's default (event configs stay as they were)
        recorded = {"inputs": "constituents"} if kind == "fatjets" and name != "gbt" else {}
        assert cfg.model.options == recorded
        check_inputs(cfg)                                   # a second check changes nothing
        assert cfg.model.options == recorded


def test_a_config_that_does_not_fit_the_shards_stops_before_any_work(event_shards, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "engine.train", f"data.shards={event_shards}",
                          f"output_dir={out}", "model.name=deepsets", "data.signal=higgs"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: data.signal: 'higgs' is not among the classes of "
                                               f"{event_shards} (known: dy, ttbar, wjets)"]
    assert not out.exists()
