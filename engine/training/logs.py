"""Training logs: a CSV file (one row per logged step or evaluation) and TensorBoard events."""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ["step", "epoch", "split", "loss", "accuracy", "lr", "images_per_s", "seconds"]


class RunLog:
    """Appends rows to OUTPUT_DIR/log.csv and scalars to OUTPUT_DIR/tensorboard (main process only)."""

    def __init__(self, output_dir: str | Path, enabled: bool):
        self.enabled = enabled
        self.path = Path(output_dir) / "log.csv"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except ImportError:  # tensorboard is optional at run time; the CSV always exists
            self._tb = None

    def write(self, **row) -> None:
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


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def read_log(path: str | Path) -> list[dict]:
    """Rows of a log.csv as dicts of floats (empty cells dropped)."""
    with Path(path).open() as f:
        return [{k: float(v) if k != "split" else v for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]
