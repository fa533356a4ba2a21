"""Train a classifier on shards, on one CPU or many GPUs with the same command.

    accelerate launch -m engine.train --config configs/ci-tiny.yaml [section.key=value ...]
    python -m engine.train --config configs/ci-tiny.yaml            # one process, CPU or GPU

shards -> loader (split by rank here, never again by `prepare`) -> renderer (CUDA kernel on a GPU,
CPU twin otherwise; image models only) -> model. Accelerate handles devices, DDP, mixed precision,
gradient accumulation and checkpoints: a run stopped anywhere and started again with the same
command resumes from its last checkpoint and ends bit-identical to an uninterrupted run (weights,
validation metrics, log.csv but its timings); every random state that shapes training is in the
checkpoint, and nothing else draws from the global generators. A finished run started again
changes nothing.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import to_dict
from engine.errors import EXIT_BAD_INPUT, InputError
from engine.training.checkpoint import (TrainerState, clean_checkpoints, export_model, is_exported,
                                        latest_checkpoint, load_checkpoint, read_trainer_state,
                                        save_checkpoint)
from engine.training.config import TrainConfig, check_inputs, load_config
from engine.training.run_folder import guard_run_folder
from engine.training.logs import RunLog


def build_model(cfg: TrainConfig, num_classes: int):
    """The configured model with its initial weights and frozen layers."""
    from engine.models import create_model, optimise_for_speed
    from engine.models.transfer import freeze
    from engine.training.weights import load_initial_weights
    model = create_model(cfg.model.name, num_classes, **cfg.model.options)
    if cfg.model.init_weights:
        load_initial_weights(model, cfg.model.init_weights, new_head=cfg.model.new_head)
    report = freeze(model, cfg.model.unfreeze_fraction)
    return optimise_for_speed(model, cfg.model.channels_last, cfg.model.compile), report


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warm-up, then constant or cosine decay to zero over `total_steps`."""
    warm = cfg.train.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))
    return factor


def make_loaders(cfg: TrainConfig, rank: int, world: int):
    """Train and validation loaders. `data.train_fraction` keeps a fixed subset of the training
    events (the first fraction of the globally shuffled split), the same in every epoch."""
    from engine.data.loader import make_loader
    from engine.data.shards import load_manifest
    root = Path(cfg.data.shards)
    loader_cfg = cfg.loader
    if cfg.data.train_fraction < 1.0:
        total = load_manifest(root)["splits"]["train"]["events"]
        loader_cfg = replace(loader_cfg, max_events=max(1, round(total * cfg.data.train_fraction)))
    train = make_loader(root, loader_cfg, rank, world, split="train")
    evaluation = replace(cfg.loader, shuffle=False, drop_last=False)
    return train, make_loader(root, evaluation, rank, world, split="val")


def evaluate_split(accelerator, model, loader, inputs) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores (E, K) and labels (E,) of a split, gathered over ranks; the loader's rank
    padding (an event repeated to even out the ranks) is removed by the events' split index."""
    model.eval()
    scores, labels, index = [], [], []
    with torch.no_grad():
        for batch in loader:
            args, y = inputs(batch, epoch=0, step=0, train=False)
            with accelerator.autocast():
                logits = model(*args)
            p, y, i = accelerator.gather((logits.float().softmax(-1), y, batch["index"].to(y.device)))
            scores.append(p.cpu().numpy())
            labels.append(y.cpu().numpy())
            index.append(i.cpu().numpy())
    model.train()
    keep = np.sort(np.unique(np.concatenate(index), return_index=True)[1])   # first of each event
    return np.concatenate(scores)[keep], np.concatenate(labels)[keep]


def _record_events(cfg: TrainConfig, rank: int, epoch: int, seen: list[np.ndarray]) -> None:
    folder = Path(cfg.output_dir) / "events_seen"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"epoch{epoch:03d}_rank{rank:03d}.npy", np.concatenate(seen) if seen else np.zeros(0))


class NonFiniteLoss(InputError):
    pass


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns the final validation metrics."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from engine.data.shards import load_manifest
    from engine.models import model_input
    from engine.models.transfer import make_optimizer
    from engine.training.inputs import ModelInputs
    from engine.training.metrics import classification_metrics

    check_inputs(cfg)   # the config against the shards, before any work (main() also guards the run folder)
    # cpu=True without CUDA: `accelerate launch --multi_gpu` then runs its processes over gloo
    # (one DDP group on the CPU) instead of as independent copies of the same job.
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=cfg.train.grad_accum_steps)
    set_seed(cfg.train.seed)
    manifest = load_manifest(Path(cfg.data.shards))
    class_names, kind = manifest["class_names"], manifest["kind"]
    model, frozen = build_model(cfg, len(class_names))
    input_kind = model_input(cfg.model.name, **cfg.model.options)
    inputs = ModelInputs(input_kind, kind, cfg.render, accelerator.device, cfg.train.seed,
                         cfg.model.channels_last)
    train_loader, val_loader = make_loaders(cfg, accelerator.process_index, accelerator.num_processes)
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.train.grad_accum_steps)
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps > 0:
        total_steps = min(total_steps, cfg.train.max_steps)

    optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr,
                               cfg.train.weight_decay, cfg.train.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    # Only the model and optimizer are prepared: the loader already splits by rank, and the
    # scheduler is stepped by hand once per optimizer step whatever the number of processes.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    state, resume_from = _resume(cfg, accelerator)
    finished = state.step >= total_steps or state.epoch >= cfg.train.epochs
    if resume_from is not None and finished and is_exported(cfg.output_dir, state):
        accelerator.print(f"{cfg.output_dir}: finished at step {state.step} ({resume_from}); nothing to do")
        return state.val
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from)
        accelerator.print(f"resuming from {resume_from} (epoch {state.epoch}, step {state.step})")
    log = RunLog(cfg.output_dir, accelerator.is_main_process, state.log_rows, state.step)
    accelerator.print(f"{cfg.model.name}: {sum(p.numel() for p in model.parameters()):,} parameters "
                      f"({frozen.trainable_params:,} trainable); {len(class_names)} classes {class_names}; "
                      f"{batches_per_epoch} batches x {accelerator.num_processes} process(es) per epoch; "
                      f"device {accelerator.device}")
    done = state.step >= total_steps
    while not done and state.epoch < cfg.train.epochs:
        done = _train_epoch(cfg, accelerator, model, optimizer, scheduler, train_loader, inputs,
                            state, batches_per_epoch, total_steps, log)
        if done or (state.epoch + 1) % cfg.train.eval_every_epochs == 0:
            scores, labels = evaluate_split(accelerator, model, val_loader, inputs)
            state.val = classification_metrics(scores, labels, class_names, cfg.data.signal or class_names[0])
            _log_validation(accelerator, state, scores, labels, log)
        state.epoch, state.batch, state.ranks = state.epoch + 1, 0, None
        state.log_rows = log.rows
        save_checkpoint(accelerator, cfg.output_dir, state, to_dict(cfg))
    log.close()
    _export(cfg, accelerator, model, state,
            {"class_names": class_names, "dataset_kind": kind, "input_kind": input_kind})
    return state.val


def _export(cfg: TrainConfig, accelerator, model, state: TrainerState, about: dict) -> None:
    """model.safetensors, config.yaml and run.json (`about` + steps, timings, validation metrics)."""
    if accelerator.is_main_process:
        run = {**about, "steps": state.step, "epochs": state.epoch, "images_seen": state.images_seen,
               "train_seconds": state.seconds, "world_size": accelerator.num_processes,
               "events_per_s": state.images_seen / max(state.seconds, 1e-9), "val": state.val}
        export_model(accelerator.unwrap_model(model), cfg.output_dir, to_dict(cfg), run)
        accelerator.print(f"wrote {cfg.output_dir}/model.safetensors, config.yaml, run.json, log.csv")
    accelerator.wait_for_everyone()


def _resume(cfg: TrainConfig, accelerator) -> tuple[TrainerState, Path | None]:
    """Remove what a killed run left (partial checkpoints), then the trainer state of the newest
    complete checkpoint and its folder, or a fresh state and None."""
    if accelerator.is_main_process:
        clean_checkpoints(cfg.output_dir)
    accelerator.wait_for_everyone()
    folder = latest_checkpoint(cfg.output_dir)
    if folder is None:
        return TrainerState(), None
    state = read_trainer_state(folder)
    if state.ranks is not None and len(state.ranks) != accelerator.num_processes:
        raise InputError(folder, f"saved by {len(state.ranks)} process(es); this run has "
                                 f"{accelerator.num_processes}: resume with as many")
    return state, folder


def _log_validation(accelerator, state: TrainerState, scores: np.ndarray, labels: np.ndarray,
                    log: RunLog) -> None:
    metrics = state.val
    loss = float(F.nll_loss(torch.log(torch.from_numpy(scores).clamp_min(1e-12)), torch.from_numpy(labels)))
    log.write(step=state.step, epoch=state.epoch, split="val", loss=loss, accuracy=metrics["accuracy"],
              seconds=state.seconds)
    accelerator.print(f"epoch {state.epoch}: val loss {loss:.4f}, accuracy {metrics['accuracy']:.4f}, "
                      f"{metrics['signal']} vs rest {metrics['signal_vs_background_efficiency']:.4f}")


class _Window:
    """Running sums of the training batches since the last logged step, kept on the device so
    that adding a batch needs no host sync. `saved` is what a checkpoint keeps of it."""

    def __init__(self, device: torch.device, saved: list | None = None):
        # loss sum, correct predictions, events (counts exact in float32 up to 2**24)
        self.sums = torch.zeros(3, dtype=torch.float32, device=device)
        self.batches = 0
        if saved is not None:
            self.sums.copy_(torch.tensor(saved[:3], dtype=torch.float32))
            self.batches = saved[3]
        self.tic = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.sums[0] += loss.detach()
        self.sums[1] += (logits.detach().argmax(-1) == labels).sum()
        self.sums[2] += len(labels)
        self.batches += 1

    def saved(self) -> list:
        """[loss sum, correct, events, batches] as exact Python numbers (a host sync)."""
        return [*self.sums.tolist(), self.batches]


def _train_epoch(cfg, accelerator, model, optimizer, scheduler, loader, inputs, state: TrainerState,
                 batches_per_epoch: int, total_steps: int, log: RunLog) -> bool:
    """One epoch from `state.batch` on; returns True when max_steps is reached."""
    from tqdm import tqdm
    loader.set_epoch(state.epoch)
    mine = state.ranks[accelerator.process_index] if state.ranks else None
    if mine is not None:
        loader.load_state_dict(mine["loader"])
    window = _Window(accelerator.device, mine["window"] if mine else None)
    seen, tic_epoch, accum = [], time.perf_counter(), cfg.train.grad_accum_steps
    seconds_before = state.seconds   # training time of the run before this epoch
    bar = tqdm(total=batches_per_epoch, initial=state.batch, desc=f"epoch {state.epoch}", unit="batch",
               disable=not accelerator.is_local_main_process, dynamic_ncols=True, leave=False)
    for batch in loader:
        if state.batch >= batches_per_epoch:
            break
        if cfg.train.record_events:
            seen.append(batch["index"].numpy().copy())
        args, labels = inputs(batch, state.epoch, state.batch, train=True)
        if accum > 1 and state.batch + 1 == batches_per_epoch:
            # the epoch's last batch ends a step (ceil(batches / accum) steps per epoch): no
            # gradient is carried into the next epoch, nor left out of its checkpoint
            accelerator.step = accum - 1
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logits = model(*args).float()
                loss = F.cross_entropy(logits, labels)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        window.add(loss, logits, labels)
        state.batch += 1
        state.images_seen += len(labels) * accelerator.num_processes
        state.seconds = seconds_before + time.perf_counter() - tic_epoch
        bar.update(1)
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        state.step += 1
        if state.step % cfg.train.log_every_steps == 0 or state.step == total_steps:
            loss_value, rate = _log_window(cfg, accelerator, state, window, scheduler, log)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:,.0f}")
            window = _Window(accelerator.device)
        # the end of the epoch (or of the run) is checkpointed after its validation, just below
        ends = state.batch >= batches_per_epoch or state.step >= total_steps
        if state.step % cfg.train.checkpoint_every_steps == 0 and not ends:
            _checkpoint_mid_epoch(cfg, accelerator, model, state, loader, window, log)
        if state.step >= total_steps:
            break
    bar.close()
    state.seconds = seconds_before + time.perf_counter() - tic_epoch
    if cfg.train.record_events:
        _record_events(cfg, accelerator.process_index, state.epoch, seen)
    return state.step >= total_steps


def _checkpoint_mid_epoch(cfg, accelerator, model, state, loader, window: _Window, log: RunLog) -> None:
    """Save the full state with every process's loader position and unlogged window."""
    from accelerate.utils import gather_object
    _check_finite_weights(accelerator, model, state)
    state.ranks = gather_object([{"loader": loader.state_dict(), "window": window.saved()}])
    state.log_rows = log.rows
    save_checkpoint(accelerator, cfg.output_dir, state, to_dict(cfg))


def _log_window(cfg, accelerator, state, window: _Window, scheduler, log) -> tuple[float, float]:
    """Log the last window's mean loss and accuracy over all processes (one host sync); stop on a
    non-finite loss. Returns (loss, images per second)."""
    seconds = time.perf_counter() - window.tic
    mean = torch.cat([window.sums[:1] / window.batches, window.sums[1:]])
    sums = accelerator.reduce(mean, reduction="sum")
    loss, correct, events = torch.cat([sums[:1] / accelerator.num_processes, sums[1:]]).tolist()
    if not math.isfinite(loss):
        last = latest_checkpoint(cfg.output_dir)
        raise NonFiniteLoss("train", f"loss is {loss} at step {state.step}; stopped. Last good checkpoint: "
                                     f"{last or 'none'} (lower train.lr, or check the inputs)")
    rate = window.batches * cfg.train.batch_size * accelerator.num_processes / max(seconds, 1e-9)
    log.write(step=state.step, epoch=state.epoch, split="train", loss=loss, accuracy=correct / events,
              lr=scheduler.get_last_lr()[0], images_per_s=rate, seconds=state.seconds)
    return loss, rate


def _check_finite_weights(accelerator, model, state) -> None:
    """Never save a checkpoint of non-finite weights."""
    bad = any(not torch.isfinite(p).all() for p in model.parameters())
    if bad:
        raise NonFiniteLoss("train", f"weights became non-finite before step {state.step}; stopped "
                                     "without saving them")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (configs/NAME.yaml); defaults are used without one")
    parser.add_argument("overrides", nargs="*", help="section.key=value (value parsed as YAML)")
    parser.add_argument("--resume-with-changes", action="store_true",
                        help="go on with a run in output_dir whose config differs from this one "
                             "(the changes are recorded in output_dir/config_changes.yaml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        check_inputs(cfg)
        status = guard_run_folder(cfg, allow_changes=args.resume_with_changes)
        if cfg.model.name == "gbt" and status == "same" and (Path(cfg.output_dir) / "gbt.pkl").is_file():
            print(f"{cfg.output_dir}: already trained with this config; nothing to do")
        elif cfg.model.name == "gbt":
            from engine.training.gbt import train_gbt
            train_gbt(cfg)
        else:
            train(cfg)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
