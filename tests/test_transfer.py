"""Tests for engine.models.transfer and engine.training.weights: checkpoints round-trip exactly, a new
head keeps the body, bad files are InputErrors, ImageNet files load into timm bodies, freezing really freezes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.models import create_model, model_args
from engine.models.transfer import classifier_keys, freeze, make_optimizer, parameterised_layers
from engine.training.weights import load_checkpoint, load_imagenet, load_initial_weights, save_weights


def make_objects(batch: int, cap: int) -> dict:
    """A small padded object batch (types, features, counts) with varied counts."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(1, cap + 1, (batch,), generator=g, dtype=torch.int32)
    real = torch.arange(cap) < counts.long().unsqueeze(1)
    types = torch.randint(1, 6, (batch, cap), generator=g).to(torch.int8) * real
    features = torch.rand(batch, cap, 6, generator=g) * torch.tensor([100.0, 2, 3, 10, 1, 1]) * real.unsqueeze(-1)
    return {"types": types, "features": features, "counts": counts}


def outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return model(*model_args(model.input_kind, batch))


@pytest.mark.parametrize("fmt", ["torch", "safetensors", "directory", "wrapped"])
def test_save_then_load_restores_outputs_exactly(tmp_path, fmt):
    torch.manual_seed(0)
    source = create_model("set_transformer", 3, layers=1)
    batch = make_objects(16, 16)
    if fmt == "torch":
        path = tmp_path / "w.pt"
        torch.save(source.state_dict(), path)
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_weights(source, path)
    elif fmt == "directory":            # as Accelerate's save_state lays it out
        path = tmp_path / "checkpoint"
        save_weights(source, path / "model.safetensors")
    else:                               # {"model": state_dict} with DDP's "module." prefix
        path = tmp_path / "w.pt"
        torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}, "step": 7}, path)
    torch.manual_seed(1)
    target = create_model("set_transformer", 3, layers=1)
    assert not torch.equal(outputs(target, batch), outputs(source, batch))
    report = load_checkpoint(target, path)
    assert torch.equal(outputs(target, batch), outputs(source, batch))
    assert report["new_head"] == [] and report["loaded"] == len(source.state_dict())


def test_image_model_round_trip_includes_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    source = create_model("small_cnn", 2, in_chans=1, widths=(8, 16))
    source.train()
    source(torch.rand(8, 1, 16, 16) * 5)          # moves the BatchNorm running statistics
    save_weights(source, tmp_path / "cnn.safetensors")
    target = create_model("small_cnn", 2, in_chans=1, widths=(8, 16))
    load_initial_weights(target, tmp_path / "cnn.safetensors")
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(target.eval()(x), source.eval()(x))


def test_new_head_for_another_class_count_keeps_the_body(tmp_path):
    torch.manual_seed(0)
    source = create_model("deepsets", 3)
    save_weights(source, tmp_path / "pre.safetensors")
    target = create_model("deepsets", 2)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(InputError, match="checkpoint has 3 classes but the model has 2; set new_head"):
        load_checkpoint(target, tmp_path / "pre.safetensors")
    report = load_checkpoint(target, tmp_path / "pre.safetensors", new_head=True)
    head = classifier_keys(target)
    assert head == {"head.weight", "head.bias"} and report["new_head"] == sorted(head)
    for key, value in target.state_dict().items():
        expected = fresh[key] if key in head else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_new_head_of_the_durham_mlp_replaces_only_the_logits_layer(tmp_path):
    torch.manual_seed(0)
    source = create_model("mobilenetv2_100", 3, head="durham")
    torch.save(source.state_dict(), tmp_path / "pre.pt")
    target = create_model("mobilenetv2_100", 5, head="durham")
    load_checkpoint(target, tmp_path / "pre.pt", new_head=True)
    assert classifier_keys(target) == {"head.9.weight", "head.9.bias"}
    assert torch.equal(target.head[6].weight, source.head[6].weight)
    assert target.head[9].weight.shape == (5, 512)


def test_missing_and_unreadable_files_are_input_errors(tmp_path):
    model = create_model("deepsets", 3)
    with pytest.raises(InputError, match="nope.pt: weight file not found"):
        load_checkpoint(model, tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no weights in this directory"):
        load_checkpoint(model, tmp_path / "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pt: cannot read weights"):
        load_checkpoint(model, tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a state_dict"):
        load_checkpoint(model, tmp_path / "list.pt")


def test_checkpoint_of_another_architecture_is_an_input_error(tmp_path):
    save_weights(create_model("deepsets", 3), tmp_path / "ds.safetensors")
    with pytest.raises(InputError, match=r"written for model 'deepsets'.*'set_transformer', another architecture"):
        load_checkpoint(create_model("set_transformer", 3), tmp_path / "ds.safetensors")
    torch.save(create_model("small_cnn", 3, in_chans=3).state_dict(), tmp_path / "rgb.pt")
    shapes = r"features.0.0.weight has shape \(32, 3, 3, 3\) in the file but \(32, 1, 3, 3\)"
    with pytest.raises(InputError, match=shapes):
        load_checkpoint(create_model("small_cnn", 3, in_chans=1), tmp_path / "rgb.pt")
    with pytest.raises(InputError, match="another architecture"):
        load_checkpoint(create_model("small_cnn", 2), tmp_path / "ds.safetensors", new_head=True)


def test_imagenet_file_loads_into_the_timm_body_with_adapted_first_conv(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    imagenet = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=1000)
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(tmp_path / "in1k.safetensors"))
    model = create_model("mobilenetv2_100", 3, in_chans=1, head="durham")
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_initial_weights(model, tmp_path / "in1k.safetensors")
    reference = imagenet.state_dict()
    body = model.body.state_dict()
    assert report["loaded"] == len(body)
    assert torch.equal(body["blocks.3.0.conv_pw.weight"], reference["blocks.3.0.conv_pw.weight"])
    assert torch.allclose(body["conv_stem.weight"], reference["conv_stem.weight"].sum(1, keepdim=True))
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())


def test_imagenet_file_of_another_architecture_or_model_is_an_input_error(tmp_path):
    import timm

    torch.save(timm.create_model("densenet121", pretrained=False).state_dict(), tmp_path / "dn.pth")
    with pytest.raises(InputError, match="do not fit model 'mobilenetv2_100'"):
        load_imagenet(create_model("mobilenetv2_100", 3), tmp_path / "dn.pth")
    with pytest.raises(InputError, match="timm models only"):
        load_imagenet(create_model("cvn", 2), tmp_path / "dn.pth")


@pytest.mark.parametrize("fraction,unfrozen", [(0, 0), (0.2, 2), (0.7, 6), (1, 8)])
def test_freeze_counts_for_the_durham_fractions(fraction, unfrozen):
    model = create_model("small_cnn", 3, widths=(8, 8, 8, 8))   # 4 conv + 4 BatchNorm layers + head
    report = freeze(model, fraction)
    assert (report.layers, report.unfrozen_layers) == (8, unfrozen)
    layers = [m for _, m in parameterised_layers(model) if m is not model.head]
    trainable = [all(p.requires_grad for p in m.parameters(recurse=False)) for m in layers]
    assert trainable == [False] * (8 - unfrozen) + [True] * unfrozen
    assert all(p.requires_grad for p in model.head.parameters())
    n_head = sum(p.numel() for p in model.head.parameters())
    assert report.trainable_params == n_head + sum(p.numel() for m, t in zip(layers, trainable) if t
                                                   for p in m.parameters(recurse=False))
    assert report.trainable_params + report.frozen_params == sum(p.numel() for p in model.parameters())


def test_freeze_fraction_on_a_timm_model_and_bad_fraction():
    report = freeze(create_model("resnet50", 3), 0.2)
    assert report.layers == 106 and report.unfrozen_layers == 21     # 53 conv + 53 BatchNorm layers
    assert abs(report.unfrozen_fraction - 0.2) < 0.01
    with pytest.raises(InputError, match="model.unfreeze_fraction"):
        freeze(create_model("deepsets", 3), 1.5)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_frozen_weights_do_not_move_when_training(optimizer):
    torch.manual_seed(0)
    model = create_model("cvn", 2, in_chans=1)
    freeze(model, 0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    opt = make_optimizer(optimizer, model.parameters(), lr=1e-2, weight_decay=1e-4)
    model.train()
    for _ in range(2):
        loss = F.cross_entropy(model(torch.rand(4, 1, 32, 32) * 3), torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert frozen and len(frozen) < len(before)
    for name in before:
        module = name.rsplit(".", 1)[0]
        if name.endswith("num_batches_tracked"):              # a counter, unused with a fixed momentum
            continue
        if name in frozen or f"{module}.weight" in frozen:  # its parameters and running statistics
            assert torch.equal(after[name], before[name]), name
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(after[n], before[n])]
    assert len(changed) == sum(p.requires_grad for p in model.parameters())


def test_unfreezing_again_restores_everything():
    model = create_model("small_cnn", 3)
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    freeze(model, 0)
    report = freeze(model, 1)
    assert report.frozen_params == 0 and all(p.requires_grad for p in model.parameters())
    assert [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta


def test_make_optimizer_names_and_errors():
    model = create_model("deepsets", 3)
    assert type(make_optimizer("adam", model.parameters(), 1e-3)) is torch.optim.Adam
    assert type(make_optimizer("adamw", model.parameters(), 1e-3, weight_decay=0.01)) is torch.optim.AdamW
    rms = make_optimizer("rmsprop", model.parameters(), 1e-4)
    assert type(rms) is torch.optim.RMSprop and rms.defaults["alpha"] == 0.9
    sgd = make_optimizer("sgd", model.parameters(), 0.1)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    assert make_optimizer("sgd", model.parameters(), 0.1, momentum=0.5).defaults["momentum"] == 0.5
    with pytest.raises(InputError, match="train.optimizer: unknown optimizer 'lamb'"):
        make_optimizer("lamb", model.parameters(), 1e-3)
    with pytest.raises(InputError, match="train.lr"):
        make_optimizer("adam", model.parameters(), 0.0)
    freeze(model, 0, train_head=False)
    with pytest.raises(InputError, match="no trainable parameters"):
        make_optimizer("adam", model.parameters(), 1e-3)
    freeze(model, 0)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == \
        sum(p.numel() for p in model.head.parameters())
