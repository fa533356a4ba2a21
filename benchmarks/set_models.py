"""Training speed of the set models: events/s of one forward + backward + optimiser step.

    python -m benchmarks.set_models --threads 1 --batch 256            # CPU, one thread
    python -m benchmarks.set_models --device cuda --batch 256
    python -m benchmarks.set_models --quick --out records.json      # run_all's interface

Each model (default options) is timed on seeded random padded batches of both input kinds:
objects (N = 16 slots) and jet constituents (M = 128 slots), every slot counted whether real or
padding (the models compute on the padded arrays). A finite loss is checked first, then
`--warmup` steps, then the median of `--windows` windows of `--steps` steps.
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import common
from engine.contracts import DEFAULT_CAP, DEFAULT_CONSTITUENT_CAP
from engine.models import create_model, model_args

MODELS = ("particlenet", "part", "deepsets", "set_transformer")
SLOTS = {"objects": DEFAULT_CAP, "constituents": DEFAULT_CONSTITUENT_CAP}


def random_batch(kind: str, batch: int, slots: int, seed: int, device) -> dict:
    """Padded inputs of `kind` with between slots/2 and slots real entries per event."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(slots // 2, slots + 1, (batch,), generator=g, dtype=torch.int32)
    pt = torch.rand(batch, slots, generator=g) * 100 + 1
    eta = torch.randn(batch, slots, generator=g)
    phi = (torch.rand(batch, slots, generator=g) * 2 - 1) * math.pi
    charge = torch.randint(-1, 2, (batch, slots), generator=g).float()
    if kind == "objects":
        features = torch.stack([pt, eta, phi, torch.rand(batch, slots, generator=g) * 10,
                                torch.rand(batch, slots, generator=g), charge], dim=-1)
        types = torch.randint(1, 6, (batch, slots), generator=g).to(torch.int8)
        out = {"types": types, "features": features, "counts": counts}
    else:
        pid = torch.tensor([11.0, 13.0, 22.0, 211.0, 130.0])[torch.randint(0, 5, (batch, slots), generator=g)]
        fatjet = torch.stack([pt.sum(1), eta[:, 0], phi[:, 0], torch.rand(batch, generator=g) * 200], dim=-1)
        constituents = torch.stack([pt, fatjet[:, 1:2] + 0.3 * eta, fatjet[:, 2:3] + 0.3 * eta.flip(1),
                                    charge, pid], dim=-1)
        out = {"constituents": constituents, "counts": counts, "fatjet": fatjet}
    return {key: value.to(device) for key, value in out.items()}


def measure(name: str, kind: str, args) -> dict:
    """events/s of training steps of model `name` on inputs of `kind`."""
    torch.manual_seed(0)
    model = create_model(name, 3, inputs=kind).to(args.device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = random_batch(kind, args.batch, SLOTS[kind], seed=0, device=args.device)
    labels = torch.randint(0, 3, (args.batch,), generator=torch.Generator().manual_seed(1)).to(args.device)

    def step(_):
        loss = F.cross_entropy(model(*model_args(kind, batch)), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss

    if not torch.isfinite(step(None)):
        raise RuntimeError(f"{name} on {kind}: loss is not finite")
    batches = iter(lambda: None, 0)
    seconds = common.timed_steps(batches, step, args.warmup, args.steps, args.device, args.windows)
    return common.record(f"{name}_train", args.batch * args.steps / statistics.median(seconds), "events/s",
                         model=name, inputs=kind, slots=SLOTS[kind], batch=args.batch, device=args.device,
                         threads=torch.get_num_threads())


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--inputs", nargs="+", default=list(SLOTS), choices=list(SLOTS))
    parser.add_argument("--quick", action="store_true", help="batch 16, one timed step (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="records JSON (default: only the table)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.warmup, args.steps, args.windows = 16, 0, 1, 1
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    records = [measure(name, kind, args) for kind in args.inputs for name in args.models]
    common.print_table(records, drop=("device",))
    if args.out is not None:
        common.write_results(args.out, records)


if __name__ == "__main__":
    main()
