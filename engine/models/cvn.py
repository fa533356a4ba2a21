"""`cvn`: a GoogLeNet-style inception network for one-channel jet images, after the NOvA CVN.

The NOvA Convolutional Visual Network (Aurisano et al., arXiv:1604.01444) runs each detector
view through a GoogLeNet-like tower: 7x7/2 convolution, max-pool, 1x1 and 3x3 convolutions,
max-pool, then inception modules (parallel 1x1, 3x3, 5x5 and pooled branches, concatenated),
global average pooling and a linear classifier. A jet image has one view, so this is one tower
with three inception modules (GoogLeNet's 3a, 3b and 4a widths). BatchNorm replaces the
original local response normalisation: it trains reliably from scratch.

forward(images): images (B, C, H, W) float (C = 1 for jet images) -> logits (B, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn

from engine.models.cnn import conv_bn_relu
from engine.models.registry import register_model


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; 3x3 max-pool->1x1), concatenated."""

    def __init__(self, c_in: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, c_pool: int):
        super().__init__()
        self.branch1 = conv_bn_relu(c_in, c1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(c_in, c3_reduce, 1), conv_bn_relu(c3_reduce, c3, 3))
        self.branch5 = nn.Sequential(conv_bn_relu(c_in, c5_reduce, 1), conv_bn_relu(c5_reduce, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn_relu(c_in, c_pool, 1))
        self.out_channels = c1 + c3 + c5 + c_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class CVN(nn.Module):
    """Single-view CVN: stem, inception 3a + 3b, max-pool, inception 4a, average pool, head."""

    def __init__(self, num_classes: int, in_chans: int = 1, dropout: float = 0.4):
        super().__init__()
        pool = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.stem = nn.Sequential(
            conv_bn_relu(in_chans, 64, 7, stride=2), nn.MaxPool2d(**pool),
            conv_bn_relu(64, 64, 1), conv_bn_relu(64, 192, 3), nn.MaxPool2d(**pool),
        )
        inc3a = Inception(192, 64, 96, 128, 16, 32, 32)
        inc3b = Inception(inc3a.out_channels, 128, 128, 192, 32, 96, 64)
        inc4a = Inception(inc3b.out_channels, 192, 96, 208, 16, 48, 64)
        self.inception = nn.Sequential(inc3a, inc3b, nn.MaxPool2d(**pool), inc4a)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(inc4a.out_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) float -> logits (B, num_classes)."""
        return self.head(self.pool(self.inception(self.stem(images))))


@register_model("cvn")
def cvn(num_classes: int, in_chans: int = 1, dropout: float = 0.4) -> CVN:
    """GoogLeNet-style inception network for jet images; see `CVN`."""
    return CVN(num_classes, in_chans, dropout)
