"""Image-free models on object lists: `ffn`, `deepsets` and `set_transformer`.

Inputs are the padded arrays of `engine.data.objects` (real objects first, then padding):
  inputs="objects":      forward(types (B,N) int, features (B,N,6) float, counts (B,) int)
                         features = [pt GeV, eta, phi rad, mass GeV, btag, charge]
  inputs="constituents": forward(constituents (B,M,5) float, counts (B,) int, fatjet (B,4) float)
                         constituents = [pt, eta, phi, charge, pid]; fatjet = [pt, eta, phi, mass]
All return logits (B, num_classes) float32.

Slots at or beyond `counts` are padding. Each input is first mapped, slot by slot, to a feature
vector (`encode_objects` / `encode_constituents`); padding is replaced by zeros *before* any
arithmetic, so whatever a padded slot holds (even NaN) cannot reach the output. `deepsets` and
`set_transformer` are permutation invariant over the real objects and ignore padding exactly
(masked sums and key-padding masks); `ffn` sees the slots in order, as the 2017 baseline did.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.objects import DEFAULT_CAP, DEFAULT_CONSTITUENT_CAP, OBJECT_TYPES
from engine.errors import InputError
from engine.models.registry import register_model

N_TYPES = len(OBJECT_TYPES) - 1          # one-hot over the real types 1..5 (electron .. MET)
OBJECT_DIM = 7 + N_TYPES                 # log pt, eta, sin phi, cos phi, log mass, btag, charge, type
CONSTITUENT_DIM = 8 + 5                  # deta, dphi, dR, log pt, log E, 2 log fractions, charge, type
SET_INPUTS = ("objects", "constituents")


def real_mask(counts: torch.Tensor, slots: int) -> torch.Tensor:
    """(B,) int counts -> (B, slots) bool, True for the first counts[b] slots."""
    return torch.arange(slots, device=counts.device) < counts.long().unsqueeze(1)


def encode_objects(types: torch.Tensor, features: torch.Tensor, counts: torch.Tensor):
    """Per-object encoding shared by all set models.

    Returns x (B, N, 12) float32 = [log(1+pt), eta, sin phi, cos phi, log(1+mass), btag, charge,
    one-hot type (electron, muon, jet, b-jet, MET)] with zeros in padded slots, and mask (B, N) bool.
    sin/cos make phi wrap around; logs tame the pt and mass scales.
    """
    mask = real_mask(counts, types.shape[1])
    f = torch.where(mask.unsqueeze(-1), features.float(), 0.0)
    pt, eta, phi, mass, btag, charge = f.unbind(-1)
    continuous = torch.stack([torch.log1p(pt.clamp_min(0)), eta, torch.sin(phi), torch.cos(phi),
                              torch.log1p(mass.clamp_min(0)), btag, charge], dim=-1)
    codes = torch.where(mask, types.long(), 0).clamp(0, N_TYPES)
    onehot = F.one_hot(codes, N_TYPES + 1)[..., 1:].float()
    return torch.cat([continuous, onehot], dim=-1) * mask.unsqueeze(-1), mask


def _pid_classes(pid: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
    """(B,M) pid, charge -> (B,M,5) one-hot: electron, muon, photon, charged hadron, neutral hadron."""
    apid = pid.abs().round()
    electron, muon, photon = apid == 11, apid == 13, apid == 22
    other = ~(electron | muon | photon)
    return torch.stack([electron, muon, photon, other & (charge != 0), other & (charge == 0)], -1).float()


def encode_constituents(constituents: torch.Tensor, counts: torch.Tensor, fatjet: torch.Tensor):
    """Per-constituent encoding relative to the jet axis, as ParticleNet and ParT use it.

    Returns x (B, M, 13) float32 = [deta, dphi (wrapped), dR, log pt, log E, log(pt / pt_jet),
    log(E / E_jet), charge, particle type one-hot (electron, muon, photon, charged hadron, neutral
    hadron)] with zeros in padded slots, and mask (B, M) bool. Constituents are massless
    (E = pt cosh eta); the jet's E follows from its pt, eta and mass. Momenta are clamped at
    1e-6 GeV before the logs, so every entry is finite.
    """
    mask = real_mask(counts, constituents.shape[1])
    c = torch.where(mask.unsqueeze(-1), constituents.float(), 0.0)
    pt, eta, phi, charge, pid = c.unbind(-1)
    jet_pt, jet_eta, jet_phi, jet_mass = fatjet.float().unsqueeze(-1).unbind(1)   # each (B, 1)
    deta = eta - jet_eta
    dphi = torch.remainder(phi - jet_phi + math.pi, 2 * math.pi) - math.pi
    log_pt = torch.log(pt.clamp_min(1e-6))
    log_e = torch.log((pt * torch.cosh(eta)).clamp_min(1e-6))
    jet_e = torch.hypot(jet_pt * torch.cosh(jet_eta), jet_mass)
    continuous = torch.stack([deta, dphi, torch.hypot(deta, dphi), log_pt, log_e,
                              log_pt - torch.log(jet_pt.clamp_min(1e-6)),
                              log_e - torch.log(jet_e.clamp_min(1e-6)), charge], dim=-1)
    x = torch.cat([continuous, _pid_classes(pid, charge)], dim=-1)
    return x * mask.unsqueeze(-1), mask


ENCODERS = {"objects": (encode_objects, OBJECT_DIM), "constituents": (encode_constituents, CONSTITUENT_DIM)}


class SetModel(nn.Module):
    """Base: encode the inputs of `input_kind`, then `forward_set(x (B,N,D), mask (B,N))`."""

    def __init__(self, inputs: str):
        super().__init__()
        self.input_kind = inputs
        self.encode, self.in_dim = ENCODERS[inputs]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """(types, features, counts) or (constituents, counts, fatjet) -> logits (B, num_classes)."""
        x, mask = self.encode(*inputs)
        return self.forward_set(x, mask)

    def forward_set(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear + ReLU (+ Dropout) for each consecutive pair of `sizes`."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FFN(SetModel):
    """The 2017 baseline: the `cap` encoded slots flattened, `depth` x [Linear hidden, ReLU, Dropout]."""

    def __init__(self, num_classes: int, inputs: str, cap: int, hidden: int, depth: int, dropout: float):
        super().__init__(inputs)
        self.cap = cap
        self.body = mlp([cap * self.in_dim] + [hidden] * depth, dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward_set(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.cap:
            raise ValueError(f"ffn built for {self.cap} slots got {x.shape[1]}")
        x = F.pad(x, (0, 0, 0, self.cap - x.shape[1]))   # fewer slots: the rest is padding
        return self.head(self.body(x.flatten(1)))


class DeepSets(SetModel):
    """Energy-/Particle-Flow Network: Phi per object, masked sum (or mean), F on the sum."""

    def __init__(self, num_classes: int, inputs: str, phi_sizes, f_sizes, pool: str, dropout: float):
        super().__init__(inputs)
        if pool not in ("sum", "mean"):
            raise InputError("model.options.pool", f"deepsets pools by 'sum' or 'mean', not {pool!r}")
        self.pool = pool
        self.phi = mlp([self.in_dim, *phi_sizes])
        self.f = mlp([phi_sizes[-1], *f_sizes], dropout)
        self.head = nn.Linear(f_sizes[-1], num_classes)

    def forward_set(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latent = (self.phi(x) * mask.unsqueeze(-1)).sum(dim=1)    # padding contributes exact zeros
        if self.pool == "mean":
            latent = latent / mask.sum(dim=1, keepdim=True).clamp_min(1)
        return self.head(self.f(latent))


class AttentionPool(nn.Module):
    """Pooling by multi-head attention (Set Transformer's PMA) with one learned seed query."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.seed = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = self.seed.expand(h.shape[0], -1, -1)
        out, _ = self.attn(query, h, h, key_padding_mask=~mask, need_weights=False)
        return out.squeeze(1)


class SetTransformer(SetModel):
    """Embedding, pre-norm self-attention blocks with a key padding mask, attention or mean pooling."""

    def __init__(self, num_classes: int, inputs: str, dim: int, heads: int, layers: int,
                 ff_dim: int, dropout: float, pool: str):
        super().__init__(inputs)
        if pool not in ("attention", "mean"):
            raise InputError("model.options.pool", f"set_transformer pools by 'attention' or 'mean', not {pool!r}")
        self.embed = nn.Linear(self.in_dim, dim)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.pool = AttentionPool(dim, heads) if pool == "attention" else None
        self.post = mlp([dim, dim])
        self.head = nn.Linear(dim, num_classes)

    def forward_set(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # An event with no objects would mask every key (softmax of nothing = NaN); let it see
        # its first (all-zero) slot instead, so it gets a finite, constant output.
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(dim=1)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, src_key_padding_mask=~mask)
        h = self.norm(h)
        if self.pool is not None:
            pooled = self.pool(h, mask)
        else:
            pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.head(self.post(pooled))


def _default_cap(inputs: str, cap: int | None) -> int:
    return cap if cap is not None else (DEFAULT_CAP if inputs == "objects" else DEFAULT_CONSTITUENT_CAP)


@register_model("ffn", inputs=SET_INPUTS)
def ffn(num_classes: int, inputs: str = "objects", cap: int | None = None, hidden: int = 500,
        depth: int = 5, dropout: float = 0.5) -> FFN:
    """The 2017 study's baseline: 5 hidden layers x 500, ReLU, dropout 0.5, on the padded slots."""
    return FFN(num_classes, inputs, _default_cap(inputs, cap), hidden, depth, dropout)


@register_model("deepsets", inputs=SET_INPUTS)
def deepsets(num_classes: int, inputs: str = "objects", phi_sizes: tuple[int, ...] = (100, 100, 256),
             f_sizes: tuple[int, ...] = (100, 100, 100), pool: str = "sum", dropout: float = 0.0) -> DeepSets:
    """Particle-Flow-Network style deep set: Phi 100-100-256, masked sum, F 100-100-100."""
    return DeepSets(num_classes, inputs, tuple(phi_sizes), tuple(f_sizes), pool, dropout)


@register_model("set_transformer", inputs=SET_INPUTS)
def set_transformer(num_classes: int, inputs: str = "objects", dim: int = 64, heads: int = 4,
                    layers: int = 3, ff_dim: int = 128, dropout: float = 0.1,
                    pool: str = "attention") -> SetTransformer:
    """Self-attention over objects with a key padding mask; attention or masked-mean pooling."""
    return SetTransformer(num_classes, inputs, dim, heads, layers, ff_dim, dropout, pool)
