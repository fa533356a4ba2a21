"""Particle-cloud models: `particlenet` (EdgeConv) and `part` (Particle Transformer).

  particlenet: H. Qu and L. Gouskos, "ParticleNet: Jet tagging via particle clouds",
               Phys. Rev. D 101, 056019 (2020), arXiv:1902.08570.
  part:        H. Qu, C. Li and S. Qian, "Particle Transformer for jet tagging",
               ICML 2022, arXiv:2202.03772.

Both take the padded arrays of `engine.data.objects`, like the models of `engine.models.sets`:
  inputs="objects":      forward(types (B,N) int, features (B,N,6) float, counts (B,) int)
  inputs="constituents": forward(constituents (B,M,5) float, counts (B,) int, fatjet (B,4) float)
and return logits (B, num_classes) float32.

Per-particle features are those of `sets.encode_objects` (without its sin/cos of the absolute
phi) or `sets.encode_constituents` (relative to the jet axis: deta, dphi, dR, log pt, log E,
log pt / pt_jet, log E / E_jet, charge and particle type, the papers' inputs less the track
impact parameters, which the shards do not hold), so phi enters only through wrapped
differences: the kNN distance, the edge features and the pairwise features. Both models are
invariant under a common rotation in phi and under permutations of the real objects (unless
`max_particles` keeps only the first slots). Padding is replaced by zeros before any arithmetic,
neighbours and attention never reach a padded slot, and batch normalisation takes its statistics
from real entries only, so whatever a padded slot holds (even NaN) cannot reach the output.

Four-vectors: objects use their pt, eta, mass (MET as a massless object at eta 0); jet
constituents are taken as massless (E = pt cosh eta).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError
from engine.models.registry import register_model
from engine.models.sets import (CONSTITUENT_DIM, OBJECT_DIM, SET_INPUTS, encode_constituents,
                                encode_objects, real_mask)

_PHI_FREE = [i for i in range(OBJECT_DIM) if i not in (2, 3)]   # encode_objects without sin, cos phi
PARTICLE_DIM = {"objects": len(_PHI_FREE), "constituents": CONSTITUENT_DIM}
_EPS = 1e-8


def wrap_phi(dphi: torch.Tensor) -> torch.Tensor:
    """Angle differences mapped into [-pi, pi)."""
    return torch.remainder(dphi + math.pi, 2 * math.pi) - math.pi


def trim_padding(kind: str, inputs, max_particles: int | None = None) -> tuple[torch.Tensor, ...]:
    """The inputs cut to the batch's largest count (at least one slot): the slots beyond it are
    padding in every event, and both models cost at least linearly in the slots (part: squared).
    With `max_particles`, also to the first max_particles slots (of a fat jet: its hardest
    constituents, which come sorted by pt), counts clamped to match. Reading the count is a
    CPU-GPU sync point, once per batch."""
    counts = inputs[1] if kind == "constituents" else inputs[2]
    slots = inputs[0].shape[1]
    n = min(max(int(counts.max()), 1), slots) if counts.numel() else slots
    if max_particles is not None and n > max_particles:
        n, counts = max_particles, counts.clamp(max=max_particles)
    if n == slots:
        return tuple(inputs)
    if kind == "objects":
        return inputs[0][:, :n], inputs[1][:, :n], counts
    return inputs[0][:, :n], counts, inputs[2]


def particle_features(kind: str, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,N,D) float32 per-particle features (zeros in padding) and mask (B,N) bool, free of absolute phi."""
    if kind == "objects":
        x, mask = encode_objects(*inputs)
        return x[..., _PHI_FREE], mask
    return encode_constituents(*inputs)


def kinematics(kind: str, inputs) -> tuple[torch.Tensor, ...]:
    """pt, eta, phi, mass, each (B,N) float32 with zeros in padded slots."""
    counts = inputs[1] if kind == "constituents" else inputs[2]
    values = inputs[0] if kind == "constituents" else inputs[1]
    mask = real_mask(counts, values.shape[1]).unsqueeze(-1)
    if kind == "objects":
        pt, eta, phi, mass = torch.where(mask, values[..., :4].float(), 0.0).unbind(-1)
    else:
        pt, eta, phi = torch.where(mask, values[..., :3].float(), 0.0).unbind(-1)
        mass = torch.zeros_like(pt)
    return pt, eta, phi, mass


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last dimension of x (..., C) whose batch statistics come from the
    entries where mask (...) is True only, so padding never shifts them. In training the masked
    entries come out as 0; in evaluation every entry is normalised by the running statistics."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        real = x[mask] if self.training else None
        if real is None or real.shape[0] < 2:
            flat = F.batch_norm(x.reshape(-1, x.shape[-1]), self.running_mean, self.running_var,
                                self.weight, self.bias, False, 0.0, self.eps)
            return flat.view(x.shape)
        self.num_batches_tracked += 1
        normalised = F.batch_norm(real, self.running_mean, self.running_var, self.weight, self.bias,
                                  True, self.momentum, self.eps)
        out = normalised.new_zeros(x.shape)
        out[mask] = normalised
        return out


# ----------------------------------------------------------------------------- ParticleNet

def _gather(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (B,N,C), idx (B,N,k) -> (B,N,k,C): the neighbours' rows."""
    b, n, k = idx.shape
    flat = idx.reshape(b, n * k, 1).expand(-1, -1, values.shape[-1])
    return values.gather(1, flat).view(b, n, k, values.shape[-1])


@torch.no_grad()
def knn(dist: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest real neighbours (self excluded) by dist (B,N,N).

    Returns idx (B,N,k') long and valid (B,N,k') bool with k' = min(k, N-1): an event with n real
    objects has min(k, n-1) valid neighbours per real object; the other entries are invalid.
    """
    n = dist.shape[1]
    kk = max(min(k, n - 1), 0)
    self_pair = torch.eye(n, dtype=torch.bool, device=dist.device)
    dist = dist.float().masked_fill(self_pair | ~mask.unsqueeze(1), math.inf)
    idx = dist.topk(kk, dim=-1, largest=False).indices
    per_event = (mask.sum(1) - 1).clamp(0, k)
    valid = torch.arange(kk, device=dist.device) < per_event.view(-1, 1, 1)
    return idx, valid & mask.unsqueeze(-1)


def eta_phi_distance(eta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """(B,N) eta, phi -> (B,N,N) squared distance deta^2 + dphi^2 with dphi wrapped."""
    deta = eta.unsqueeze(2) - eta.unsqueeze(1)
    return deta.square() + wrap_phi(phi.unsqueeze(2) - phi.unsqueeze(1)).square()


def feature_distance(x: torch.Tensor) -> torch.Tensor:
    """(B,N,C) -> (B,N,N) squared Euclidean distance, in float32 even under autocast."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.detach().float()
        square = x.square().sum(-1)
        return square.unsqueeze(2) + square.unsqueeze(1) - 2 * x @ x.transpose(1, 2)


class EdgeConv(nn.Module):
    """One EdgeConv block: edge MLP on (x_i, x_j - x_i) over the k neighbours, mean aggregation,
    plus a Linear + BatchNorm shortcut, ReLU. `coordinates` adds (deta, dphi)_ij to the edges.

    The first edge Linear on (x_i, x_j - x_i) is computed as A x_i + B x_j (the same function),
    per particle before gathering, so the (B,N,k,2C) concatenation is never built.
    """

    def __init__(self, in_dim: int, k: int, channels: tuple[int, ...], coordinates: bool):
        super().__init__()
        self.k = k
        self.center = nn.Linear(in_dim, channels[0])
        self.neighbour = nn.Linear(in_dim, channels[0], bias=False)
        self.coordinates = nn.Linear(2, channels[0], bias=False) if coordinates else None
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.norms = nn.ModuleList(MaskedBatchNorm(c) for c in channels)
        self.shortcut = nn.Linear(in_dim, channels[-1])
        self.shortcut_norm = MaskedBatchNorm(channels[-1])

    def forward(self, x, mask, idx, valid, edge_coordinates=None) -> torch.Tensor:
        """x (B,N,C), mask (B,N), idx/valid (B,N,k), edge_coordinates (B,N,k,2) -> (B,N,C_out)."""
        edges = self.center(x).unsqueeze(2) + _gather(self.neighbour(x), idx)
        if self.coordinates is not None:
            edges = edges + self.coordinates(edge_coordinates)
        edges = F.relu(self.norms[0](edges, valid))
        for linear, norm in zip(self.linears, self.norms[1:]):
            edges = F.relu(norm(linear(edges), valid))
        weights = valid.to(edges.dtype)
        mean = torch.einsum("bnkc,bnk->bnc", edges, weights) / weights.sum(2, keepdim=True).clamp_min(1)
        out = F.relu(mean + self.shortcut_norm(self.shortcut(x), mask))
        return out * mask.unsqueeze(-1)


class ParticleNet(nn.Module):
    """Input BatchNorm, EdgeConv blocks (kNN in (eta, phi) first, in feature space after),
    global average pooling over real particles, FC + ReLU + dropout, logits."""

    def __init__(self, num_classes: int, inputs: str, blocks, fc_dim: int, dropout: float,
                 max_particles: int | None = None):
        super().__init__()
        self.input_kind, self.max_particles = inputs, max_particles
        dim = PARTICLE_DIM[inputs]
        self.input_norm = MaskedBatchNorm(dim)
        self.blocks = nn.ModuleList()
        for i, (k, channels) in enumerate(blocks):
            self.blocks.append(EdgeConv(dim, k, channels, coordinates=i == 0))
            dim = channels[-1]
        self.head = nn.Sequential(nn.Linear(dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(fc_dim, num_classes))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """(types, features, counts) or (constituents, counts, fatjet) -> logits (B, num_classes)."""
        inputs = trim_padding(self.input_kind, inputs, self.max_particles)
        x, mask = particle_features(self.input_kind, inputs)
        _, eta, phi, _ = kinematics(self.input_kind, inputs)
        x = self.input_norm(x, mask) * mask.unsqueeze(-1)
        for i, block in enumerate(self.blocks):
            if i == 0:
                idx, valid = knn(eta_phi_distance(eta, phi), mask, block.k)
                deta = _gather(eta.unsqueeze(-1), idx) - eta.unsqueeze(-1).unsqueeze(-1)
                dphi = wrap_phi(_gather(phi.unsqueeze(-1), idx) - phi.unsqueeze(-1).unsqueeze(-1))
                x = block(x, mask, idx, valid, torch.cat([deta, dphi], dim=-1))
            else:
                idx, valid = knn(feature_distance(x), mask, block.k)
                x = block(x, mask, idx, valid)
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return self.head(pooled)


def _check_blocks(blocks) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """[[k, [channels...]], ...] from a config -> tuple form; InputError on any other shape."""
    problem = InputError("model.options.blocks", f"expected a list of [k, [channels...]] with k >= 1 and "
                         f"positive channels, got {blocks!r}")
    if not blocks:
        raise problem
    checked = []
    for block in blocks:
        if (not isinstance(block, (list, tuple)) or len(block) != 2 or not isinstance(block[0], int)
                or block[0] < 1 or not isinstance(block[1], (list, tuple)) or not block[1]
                or not all(isinstance(c, int) and c > 0 for c in block[1])):
            raise problem
        checked.append((block[0], tuple(block[1])))
    return tuple(checked)


# ----------------------------------------------------------------------------- ParT

def pair_features(pt, eta, phi, mass, i, j) -> torch.Tensor:
    """Interaction features of the pairs (i[p], j[p]): (B,P,4) = ln Delta, ln kT, ln z, ln m^2.

    Delta = sqrt(dy^2 + dphi^2) (rapidity y, wrapped dphi), kT = min(pt) Delta,
    z = min(pt) / (pt_i + pt_j), m^2 = (p_i + p_j)^2; logs clamped at 1e-8.
    m^2 = m_i^2 + m_j^2 + 2 (mT_i mT_j cosh dy - pt_i pt_j cos dphi) uses differences only.
    """
    mt = torch.hypot(pt, mass)
    y = torch.asinh(pt * torch.sinh(eta) / mt.clamp_min(_EPS))
    dy = y[:, i] - y[:, j]
    dphi = wrap_phi(phi[:, i] - phi[:, j])
    pt_i, pt_j = pt[:, i], pt[:, j]
    delta = torch.hypot(dy, dphi)
    pt_min = torch.minimum(pt_i, pt_j)
    m2 = (mass[:, i].square() + mass[:, j].square()
          + 2 * (mt[:, i] * mt[:, j] * torch.cosh(dy) - pt_i * pt_j * torch.cos(dphi)))
    features = [delta, pt_min * delta, pt_min / (pt_i + pt_j).clamp_min(_EPS), m2]
    return torch.stack([torch.log(f.clamp_min(_EPS)) for f in features], dim=-1)


class PairEmbedding(nn.Module):
    """Pairwise features -> one attention bias per head, (B, heads, N, N), by a pointwise MLP
    on the pairs i < j (the features are symmetric), mirrored to j > i. A particle's bias
    towards itself is 0: its features (Delta = 0) would only be clamped constants."""

    def __init__(self, dims: tuple[int, ...], heads: int):
        super().__init__()
        sizes = (4, *dims)
        self.input_norm = MaskedBatchNorm(4)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(MaskedBatchNorm(d) for d in dims)
        self.out = nn.Linear(sizes[-1], heads)

    def forward(self, kinematic: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        n = mask.shape[1]
        i, j = torch.triu_indices(n, n, offset=1, device=mask.device)
        pair_mask = mask[:, i] & mask[:, j]
        u = self.input_norm(pair_features(*kinematic, i, j), pair_mask)
        for linear, norm in zip(self.linears, self.norms):
            u = F.gelu(norm(linear(u), pair_mask))
        u = self.out(u).float() * pair_mask.unsqueeze(-1)          # (B, P, heads)
        bias = u.new_zeros(mask.shape[0], n, n, u.shape[-1])
        bias[:, i, j] = u
        bias[:, j, i] = u
        return bias.permute(0, 3, 1, 2)


class AttentionBlock(nn.Module):
    """ParT's block: LN, multi-head attention with an additive bias, LN, residual;
    LN, Linear, GELU, LN, Linear, residual. Queries and keys/values may differ (class attention)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.post_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_dim), nn.GELU(), nn.LayerNorm(ff_dim),
                                nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)          # (B, heads, L, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B,Lq,D) queries, context (B,Lk,D) keys/values, bias (B, 1 or heads, Lq, Lk) -> (B,Lq,D)."""
        q = self._split(self.query(self.norm(x)))
        k, v = map(self._split, self.key_value(self.norm(context)).chunk(2, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.post_norm(self.out(attended.transpose(1, 2).flatten(2))))
        return x + self.ff(x)


def _key_bias(keys: torch.Tensor) -> torch.Tensor:
    """(B,L) bool keys -> (B,1,1,L) float: 0 where a key may be attended, -inf elsewhere."""
    return torch.zeros(keys.shape, device=keys.device).masked_fill(~keys, -math.inf)[:, None, None, :]


class ParticleTransformer(nn.Module):
    """Particle embedding; particle attention blocks biased by the embedded pairwise features;
    class-attention blocks in which a class token attends to itself and the particles; LN, logits."""

    def __init__(self, num_classes: int, inputs: str, dim: int, heads: int, layers: int,
                 class_layers: int, pair_dims: tuple[int, ...], ff_dim: int, dropout: float,
                 max_particles: int | None = None):
        super().__init__()
        if dim % heads:
            raise InputError("model.options.heads", f"dim {dim} is not divisible by heads {heads}")
        self.input_kind, self.max_particles = inputs, max_particles
        self.input_norm = MaskedBatchNorm(PARTICLE_DIM[inputs])
        self.embed = nn.Sequential(nn.Linear(PARTICLE_DIM[inputs], dim), nn.GELU(), nn.LayerNorm(dim),
                                   nn.Linear(dim, dim))
        self.pair_embed = PairEmbedding(pair_dims, heads)
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.class_blocks = nn.ModuleList(                   # no dropout in class attention, as in the paper
            AttentionBlock(dim, heads, ff_dim, 0.0) for _ in range(class_layers))
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """(types, features, counts) or (constituents, counts, fatjet) -> logits (B, num_classes)."""
        inputs = trim_padding(self.input_kind, inputs, self.max_particles)
        x, mask = particle_features(self.input_kind, inputs)
        x = self.embed(self.input_norm(x, mask)) * mask.unsqueeze(-1)
        # An event with no objects would mask every key (softmax of nothing = NaN); let it see
        # its first (all-zero) slot instead, so it gets a finite, constant output.
        keys = mask.clone()
        keys[:, 0] |= ~mask.any(dim=1)
        bias = self.pair_embed(kinematics(self.input_kind, inputs), mask) + _key_bias(keys)
        for block in self.blocks:
            x = block(x, x, bias)
        cls = self.class_token.expand(x.shape[0], -1, -1)
        class_keys = _key_bias(torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1))
        for block in self.class_blocks:
            cls = block(cls, torch.cat([cls, x], dim=1), class_keys)
        return self.head(self.norm(cls.squeeze(1)))


# ----------------------------------------------------------------------------- registry

def _check_max_particles(max_particles: int | None) -> int | None:
    if max_particles is not None and max_particles < 1:
        raise InputError("model.options.max_particles", f"must be at least 1 (or null: all), got {max_particles}")
    return max_particles


@register_model("particlenet", inputs=SET_INPUTS)
def particlenet(num_classes: int, inputs: str = "objects",
                blocks: tuple[tuple[int | tuple[int, ...], ...], ...] = (
                    (16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))),
                fc_dim: int = 256, dropout: float = 0.1, max_particles: int | None = None) -> ParticleNet:
    """ParticleNet (Qu and Gouskos 2020): `blocks` of [k, [channels]] EdgeConv, FC 256, dropout 0.1.
    ParticleNet-Lite is blocks [[7, [32, 32, 32]], [7, [64, 64, 64]]], fc_dim 128. `max_particles`
    keeps only the first slots of each event (of a fat jet: its hardest constituents; null: all)."""
    return ParticleNet(num_classes, inputs, _check_blocks(blocks), fc_dim, dropout,
                       _check_max_particles(max_particles))


@register_model("part", inputs=SET_INPUTS)
def part(num_classes: int, inputs: str = "objects", dim: int = 64, heads: int = 4, layers: int = 4,
         class_layers: int = 1, pair_dims: tuple[int, ...] = (32, 32), ff_dim: int = 256,
         dropout: float = 0.1, max_particles: int | None = None) -> ParticleTransformer:
    """Particle Transformer (Qu et al. 2022) scaled down: dim 64, 4 heads, 4 particle, 1 class block.
    `max_particles` keeps only the first slots of each event (of a fat jet: its hardest constituents;
    null: all)."""
    return ParticleTransformer(num_classes, inputs, dim, heads, layers, class_layers, tuple(pair_dims),
                               ff_dim, dropout, _check_max_particles(max_particles))
