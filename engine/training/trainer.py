"""The training loop of the network models: a `Trainer` holds the run (accelerator, model,
optimizer, schedule, loaders, inputs, state, log), so each step of the loop reads what it needs
from it.

shards -> loader (split by rank here, never again by `prepare`) -> renderer (CUDA kernel on a GPU,
CPU twin otherwise; image models only) -> model. Accelerate handles devices, DDP, mixed precision,
gradient accumulation and checkpoints: a run stopped anywhere and started again with the same
command resumes from its last checkpoint and ends bit-identical to an uninterrupted run (weights,
validation metrics, log.csv but its timings); every random state that shapes training is in the
checkpoint, and nothing else draws from the global generators. A finished run started again
changes nothing.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import to_dict
from engine.errors import InputError
from engine.training.checkpoint import (TrainerState, clean_checkpoints, export_model, is_exported,
                                        latest_checkpoint, load_checkpoint, read_trainer_state,
                                        save_checkpoint)
from engine.training.config import TrainConfig, TrainSection, check_inputs
from engine.training.data import make_loaders
from engine.training.logs import RunLog


class NonFiniteLoss(InputError):
    pass


def build_model(cfg: TrainConfig, num_classes: int):
    """The configured model (only `cfg.model` is read) with its initial weights and frozen layers."""
    from engine.models import create_model, optimise_for_speed
    from engine.models.transfer import freeze
    from engine.training.weights import load_initial_weights
    model = create_model(cfg.model.name, num_classes, **cfg.model.options)
    if cfg.model.init_weights:
        load_initial_weights(model, cfg.model.init_weights, new_head=cfg.model.new_head)
    report = freeze(model, cfg.model.unfreeze_fraction)
    return optimise_for_speed(model, cfg.model.channels_last, cfg.model.compile), report


def lr_lambda(train: TrainSection, total_steps: int):
    """Linear warm-up, then constant or cosine decay to zero over `total_steps`."""
    warm = train.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))
    return factor


def count_steps(train: TrainSection, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ceil(batches / accumulation) per epoch, capped by max_steps."""
    total = train.epochs * math.ceil(batches_per_epoch / train.grad_accum_steps)
    return min(total, train.max_steps) if train.max_steps > 0 else total


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


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; returns the final validation metrics."""
    return Trainer(cfg).run()


class Trainer:
    """One run: built from the config (the model, optimizer, schedule and loaders prepared, the
    state of the newest checkpoint read), then `run()` trains it to the end."""

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from engine.models import model_input
        from engine.models.transfer import make_optimizer
        from engine.training.inputs import ModelInputs

        manifest = check_inputs(cfg)   # the config against the shards, before any work
        self.cfg, train = cfg, cfg.train
        # cpu=True without CUDA: `accelerate launch --multi_gpu` then runs its processes over gloo
        # (one DDP group on the CPU) instead of as independent copies of the same job.
        self.accelerator = Accelerator(mixed_precision=train.mixed_precision, cpu=not torch.cuda.is_available(),
                                       gradient_accumulation_steps=train.grad_accum_steps)
        set_seed(train.seed)
        self.class_names, self.dataset_kind = manifest["class_names"], manifest["kind"]
        model, self.frozen = build_model(cfg, len(self.class_names))
        self.input_kind = model_input(cfg.model.name, **cfg.model.options)
        self.inputs = ModelInputs(self.input_kind, self.dataset_kind, cfg.render, self.accelerator.device,
                                  train.seed, cfg.model.channels_last)
        self.train_loader, self.val_loader = make_loaders(cfg, self.accelerator.process_index,
                                                          self.accelerator.num_processes)
        self.batches_per_epoch = len(self.train_loader)
        self.total_steps = count_steps(train, self.batches_per_epoch)
        optimizer = make_optimizer(train.optimizer, model.parameters(), train.lr, train.weight_decay,
                                   train.momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train, self.total_steps))
        # Only the model and optimizer are prepared: the loader already splits by rank, and the
        # scheduler is stepped by hand once per optimizer step whatever the number of processes.
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.state, self.resume_from = self._resume()
        self.log: RunLog | None = None
        self.window: _Window | None = None

    def run(self) -> dict:
        """Train from the state read at construction to the end; returns the validation metrics."""
        cfg, state, accelerator = self.cfg, self.state, self.accelerator
        finished = state.step >= self.total_steps or state.epoch >= cfg.train.epochs
        if self.resume_from is not None and finished and is_exported(cfg.output_dir, state):
            accelerator.print(f"{cfg.output_dir}: finished at step {state.step} ({self.resume_from}); "
                              "nothing to do")
            return state.val
        if self.resume_from is not None:
            load_checkpoint(accelerator, self.resume_from)
            accelerator.print(f"resuming from {self.resume_from} (epoch {state.epoch}, step {state.step})")
        self.log = RunLog(cfg.output_dir, accelerator.is_main_process, state.log_rows, state.step)
        self._print_summary()
        done = state.step >= self.total_steps
        while not done and state.epoch < cfg.train.epochs:
            done = self._train_epoch()
            if done or (state.epoch + 1) % cfg.train.eval_every_epochs == 0:
                self._validate()
            state.epoch, state.batch, state.ranks = state.epoch + 1, 0, None
            state.log_rows = self.log.rows
            save_checkpoint(accelerator, cfg.output_dir, state, to_dict(cfg))
        self.log.close()
        self._export()
        return state.val

    def _print_summary(self) -> None:
        accelerator, names = self.accelerator, self.class_names
        accelerator.print(f"{self.cfg.model.name}: {sum(p.numel() for p in self.model.parameters()):,} "
                          f"parameters ({self.frozen.trainable_params:,} trainable); {len(names)} classes "
                          f"{names}; {self.batches_per_epoch} batches x {accelerator.num_processes} "
                          f"process(es) per epoch; device {accelerator.device}")

    def _resume(self) -> tuple[TrainerState, Path | None]:
        """Remove what a killed run left (partial checkpoints), then the trainer state of the newest
        complete checkpoint and its folder, or a fresh state and None."""
        accelerator, output_dir = self.accelerator, self.cfg.output_dir
        if accelerator.is_main_process:
            clean_checkpoints(output_dir)
        accelerator.wait_for_everyone()
        folder = latest_checkpoint(output_dir)
        if folder is None:
            return TrainerState(), None
        state = read_trainer_state(folder)
        if state.ranks is not None and len(state.ranks) != accelerator.num_processes:
            raise InputError(folder, f"saved by {len(state.ranks)} process(es); this run has "
                                     f"{accelerator.num_processes}: resume with as many")
        return state, folder

    def _train_epoch(self) -> bool:
        """One epoch from `state.batch` on; returns True when max_steps is reached."""
        from tqdm import tqdm
        state, accelerator, loader = self.state, self.accelerator, self.train_loader
        loader.set_epoch(state.epoch)
        mine = state.ranks[accelerator.process_index] if state.ranks else None
        if mine is not None:
            loader.load_state_dict(mine["loader"])
        self.window = _Window(accelerator.device, mine["window"] if mine else None)
        seen, tic_epoch = [], time.perf_counter()
        seconds_before = state.seconds   # training time of the run before this epoch
        bar = tqdm(total=self.batches_per_epoch, initial=state.batch, desc=f"epoch {state.epoch}",
                   unit="batch", disable=not accelerator.is_local_main_process, dynamic_ncols=True, leave=False)
        for batch in loader:
            if state.batch >= self.batches_per_epoch:
                break
            if self.cfg.train.record_events:
                seen.append(batch["index"].numpy().copy())
            events = self._train_batch(batch)
            state.batch += 1
            state.images_seen += events * accelerator.num_processes
            state.seconds = seconds_before + time.perf_counter() - tic_epoch
            bar.update(1)
            if accelerator.sync_gradients and self._end_step(bar):
                break
        bar.close()
        state.seconds = seconds_before + time.perf_counter() - tic_epoch
        if self.cfg.train.record_events:
            self._record_events(seen)
        return state.step >= self.total_steps

    def _train_batch(self, batch: dict) -> int:
        """Forward and backward of one batch (an optimizer step when it ends an accumulation);
        returns its number of events."""
        accelerator, model, accum = self.accelerator, self.model, self.cfg.train.grad_accum_steps
        args, labels = self.inputs(batch, self.state.epoch, self.state.batch, train=True)
        if accum > 1 and self.state.batch + 1 == self.batches_per_epoch:
            # the epoch's last batch ends a step (ceil(batches / accum) steps per epoch): no
            # gradient is carried into the next epoch, nor left out of its checkpoint
            accelerator.step = accum - 1
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logits = model(*args).float()
                loss = F.cross_entropy(logits, labels)
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), self.cfg.train.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.window.add(loss, logits, labels)
        return len(labels)

    def _end_step(self, bar) -> bool:
        """After an optimizer step: schedule, log, checkpoint; returns True when max_steps is reached."""
        state, train = self.state, self.cfg.train
        self.scheduler.step()
        state.step += 1
        if state.step % train.log_every_steps == 0 or state.step == self.total_steps:
            loss_value, rate = self._log_window()
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{rate:,.0f}")
            self.window = _Window(self.accelerator.device)
        # the end of the epoch (or of the run) is checkpointed after its validation, in run()
        ends = state.batch >= self.batches_per_epoch or state.step >= self.total_steps
        if state.step % train.checkpoint_every_steps == 0 and not ends:
            self._checkpoint_mid_epoch()
        return state.step >= self.total_steps

    def _checkpoint_mid_epoch(self) -> None:
        """Save the full state with every process's loader position and unlogged window."""
        from accelerate.utils import gather_object
        self._check_finite_weights()
        self.state.ranks = gather_object([{"loader": self.train_loader.state_dict(),
                                           "window": self.window.saved()}])
        self.state.log_rows = self.log.rows
        save_checkpoint(self.accelerator, self.cfg.output_dir, self.state, to_dict(self.cfg))

    def _log_window(self) -> tuple[float, float]:
        """Log the last window's mean loss and accuracy over all processes (one host sync); stop on a
        non-finite loss. Returns (loss, images per second)."""
        accelerator, state, window = self.accelerator, self.state, self.window
        seconds = time.perf_counter() - window.tic
        mean = torch.cat([window.sums[:1] / window.batches, window.sums[1:]])
        sums = accelerator.reduce(mean, reduction="sum")
        loss, correct, events = torch.cat([sums[:1] / accelerator.num_processes, sums[1:]]).tolist()
        if not math.isfinite(loss):
            last = latest_checkpoint(self.cfg.output_dir)
            raise NonFiniteLoss("train", f"loss is {loss} at step {state.step}; stopped. Last good checkpoint: "
                                         f"{last or 'none'} (rerun with a lower train.lr and "
                                         "--resume-with-changes, or into another output_dir; or check the inputs)")
        rate = window.batches * self.cfg.train.batch_size * accelerator.num_processes / max(seconds, 1e-9)
        self.log.write(step=state.step, epoch=state.epoch, split="train", loss=loss, accuracy=correct / events,
                       lr=self.scheduler.get_last_lr()[0], images_per_s=rate, seconds=state.seconds)
        return loss, rate

    def _check_finite_weights(self) -> None:
        """Never save a checkpoint of non-finite weights."""
        if not torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all():   # one sync
            raise NonFiniteLoss("train", f"weights became non-finite before step {self.state.step}; stopped "
                                         "without saving them")

    def _validate(self) -> None:
        """Validation metrics into the state, a row in the log and a line on the console."""
        from engine.training.metrics import classification_metrics
        state, names = self.state, self.class_names
        scores, labels = evaluate_split(self.accelerator, self.model, self.val_loader, self.inputs)
        state.val = metrics = classification_metrics(scores, labels, names, self.cfg.data.signal or names[0])
        loss = float(F.nll_loss(torch.log(torch.from_numpy(scores).clamp_min(1e-12)), torch.from_numpy(labels)))
        self.log.write(step=state.step, epoch=state.epoch, split="val", loss=loss, accuracy=metrics["accuracy"],
                       seconds=state.seconds)
        self.accelerator.print(f"epoch {state.epoch}: val loss {loss:.4f}, accuracy {metrics['accuracy']:.4f}, "
                               f"{metrics['signal']} vs rest {metrics['signal_vs_background_efficiency']:.4f}")

    def _record_events(self, seen: list[np.ndarray]) -> None:
        folder = Path(self.cfg.output_dir) / "events_seen"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch{self.state.epoch:03d}_rank{self.accelerator.process_index:03d}.npy"
        np.save(folder / name, np.concatenate(seen) if seen else np.zeros(0))

    def _export(self) -> None:
        """model.safetensors, config.yaml and run.json (what the model is, steps, timings, validation)."""
        accelerator, state = self.accelerator, self.state
        if accelerator.is_main_process:
            run = {"class_names": self.class_names, "dataset_kind": self.dataset_kind,
                   "input_kind": self.input_kind, "steps": state.step, "epochs": state.epoch,
                   "images_seen": state.images_seen, "train_seconds": state.seconds,
                   "world_size": accelerator.num_processes,
                   "events_per_s": state.images_seen / max(state.seconds, 1e-9), "val": state.val}
            export_model(accelerator.unwrap_model(self.model), self.cfg.output_dir, to_dict(self.cfg), run)
            accelerator.print(f"wrote {self.cfg.output_dir}/model.safetensors, config.yaml, run.json, log.csv")
        accelerator.wait_for_everyone()
