"""Image classifiers: a small fast CNN and the ImageNet architectures of the studies via timm.

Every image model takes `forward(images)` with images (B, C, H, W) float (any float dtype the
weights use; normalisation is the caller's job) and returns logits (B, num_classes). All of them
work in channels-last memory format (`model.to(memory_format=torch.channels_last)`).

Every model has a `head` module (the layers trained from scratch when fine-tuning, ending in the
Linear that gives the logits); `engine.models.transfer` relies on it.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.errors import InputError
from engine.models.registry import register_model

# timm architectures of the 2017 study and the Durham poster, by their timm names.
TIMM_MODELS = ("resnet50", "inception_v3", "inception_resnet_v2", "vgg16", "vgg19",
               "densenet121", "mobilenetv2_100")
HEADS = ("linear", "durham")


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A fast CNN for small event images (32-128 px): one 3x3 conv + 2x2 max-pool per stage,
    global average pooling, dropout, linear head. Any channel count and image size."""

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256),
                 dropout: float = 0.2):
        super().__init__()
        stages, c_in = [], in_chans
        for width in widths:
            # ceil_mode keeps a 1x1 map at 1x1, so tiny images pass every stage.
            stages += [conv_bn_relu(c_in, width), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) float -> logits (B, num_classes)."""
        return self.head(self.pool(self.features(images)))


def durham_head(in_features: int, num_classes: int, width: int = 512, dropout: float = 0.3) -> nn.Sequential:
    """The Durham poster's head on pooled features: 3 x [Linear width + ReLU + Dropout] + Linear."""
    layers: list[nn.Module] = []
    for _ in range(3):
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


class TimmNet(nn.Module):
    """A timm architecture as `body` (no classifier, pooled features out) plus our own `head`.

    `body` keeps timm's parameter names, so an ImageNet weight file of the architecture loads
    into it (`engine.models.transfer.apply_imagenet_state`). head="linear" is timm's own head (pooled
    features -> Linear); head="durham" is the poster's: global average pooling of the last
    feature map, then `durham_head` (for VGG this drops timm's 4096-wide convolutional MLP, as
    Keras' VGG16 without its top does).
    """

    def __init__(self, arch: str, num_classes: int, in_chans: int = 3, head: str = "linear",
                 drop_rate: float = 0.0, head_width: int = 512, head_dropout: float = 0.3):
        super().__init__()
        import timm  # imported here: creating any other model should not pay timm's import time

        if head not in HEADS:
            raise InputError("model.options.head", f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        self.arch = arch
        self.body = timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=0,
                                      drop_rate=drop_rate)
        if head == "durham":
            if hasattr(self.body, "pre_logits"):
                self.body.pre_logits = nn.Identity()
            self.head = durham_head(self.body.num_features, num_classes, head_width, head_dropout)
        else:
            width = getattr(self.body, "head_hidden_size", None) or self.body.num_features
            self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) float -> logits (B, num_classes)."""
        return self.head(self.body(images))


@register_model("small_cnn")
def small_cnn(num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256),
              dropout: float = 0.2) -> SmallCNN:
    """Fast CNN for small images; see `SmallCNN`."""
    return SmallCNN(num_classes, in_chans, tuple(widths), dropout)


def _timm_factory(arch: str):
    def factory(num_classes: int, in_chans: int = 3, head: str = "linear", drop_rate: float = 0.0,
                head_width: int = 512, head_dropout: float = 0.3) -> TimmNet:
        return TimmNet(arch, num_classes, in_chans, head, drop_rate, head_width, head_dropout)

    factory.__name__ = arch
    factory.__doc__ = f"timm `{arch}` (random init; see engine.models.transfer for weights) + head."
    return factory


for _arch in TIMM_MODELS:
    register_model(_arch)(_timm_factory(_arch))
