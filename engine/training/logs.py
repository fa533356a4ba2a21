"""Training logs: a CSV file (one row per logged step or evaluation) and TensorBoard events.

A resumed run keeps the first rows its checkpoint counted and drops the rest (rows a killed run
wrote after its last checkpoint), so the finished log.csv equals an uninterrupted run's.
"""
from __future__ import annotations

import csv
from pathlib import Path

from engine.files import atomic_path

COLUMNS = ["step", "epoch", "split", "loss", "accuracy", "lr", "images_per_s", "seconds"]


class RunLog:
    """Appends rows to OUTPUT_DIR/log.csv and scalars to OUTPUT_DIR/tensorboard (main process only).

    `keep_rows` rows of an existing log.csv are kept (0 for a new run); `rows` counts the rows
    written so far on every process, for the checkpoint. TensorBoard events from `step + 1` on
    are purged."""

    def __init__(self, output_dir: str | Path, enabled: bool, keep_rows: int = 0, step: int = 0):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.csv"
        self.rows = keep_rows
        self._tb = None
        if not enabled:
            return
        _truncate(self.path, keep_rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=step + 1)
        except ImportError:  # tensorboard is optional at run time; the CSV always exists
            self._tb = None

    def write(self, **row) -> None:
        self.rows += 1
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in COLUMNS])
        if self._tb is not None:
            for key in ("loss", "accuracy", "lr", "images_per_s"):
                if isinstance(row.get(key), (int, float)):
                    self._tb.add_scalar(f"{row['split']}/{key}", row[key], row["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _truncate(path: Path, keep_rows: int) -> None:
    """log.csv with its header and first `keep_rows` rows, rewritten atomically if it has more."""
    rows = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        if len(rows) == keep_rows:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows([COLUMNS, *rows[:keep_rows]])


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def read_log(path: str | Path) -> list[dict]:
    """Rows of a log.csv as dicts of floats (empty cells dropped)."""
    with Path(path).open() as f:
        return [{k: float(v) if k != "split" else v for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]
