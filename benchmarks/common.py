"""Helpers shared by the benchmark scripts: records, the printed table, the machine, timing.

A record is one measured number: {"name", "value", "unit", "params"}; `params` says what was
measured (model, device, batch, workers, ...). A skip is a row that could not be measured:
{"name", "params", "reason"}; scripts write their skips next to their records
(`FILE.skipped.json` beside `--out FILE.json`) so that the report can say why a row is missing.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {"torch": "torch", "cupy": "cupy", "dali": "nvidia-dali", "numpy": "numpy",
             "pyarrow": "pyarrow", "webdataset": "webdataset", "accelerate": "accelerate",
             "timm": "timm", "pillow": "pillow"}


def record(name: str, value: float, unit: str, **params) -> dict:
    """One measured number; `value` must be finite."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"record {name} {params}: value {value} is not finite")
    return {"name": name, "value": value, "unit": unit, "params": params}


def skip(name: str, reason: str, **params) -> dict:
    """A row that could not be measured, and why."""
    return {"name": name, "params": params, "reason": reason}


def skipped_path(out: str | Path) -> Path:
    """Where the skips of the records file `out` go: FILE.skipped.json beside FILE.json."""
    out = Path(out)
    return out.with_name(out.stem + ".skipped.json")


def write_results(out: str | Path, records: list[dict], skips: list[dict] = ()) -> None:
    """Write the records to `out` and the skips (if any) beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    if skips:
        skipped_path(out).write_text(json.dumps(list(skips), indent=1) + "\n")


def format_value(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3e}"


def format_params(params: dict, drop: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k not in drop)


def print_table(records: list[dict], skips: list[dict] = (), drop: tuple[str, ...] = ()) -> None:
    """A short fixed-width table of the records, then the skipped rows with their reasons."""
    for r in records:
        print(f"{r['name']:28s} {format_value(r['value']):>12s} {r['unit']:10s} "
              f"{format_params(r['params'], drop)}")
    for s in skips:
        print(f"{s['name']:28s} {'skipped':>12s} {'':10s} {format_params(s['params'], drop)}: {s['reason']}")


# ---- timing ----

def synchronize(device) -> None:
    """Wait for the device's queued work (a CPU-GPU sync point; nothing to do on the CPU)."""
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(batches, step, warmup: int, steps: int, device, windows: int = 1) -> list[float]:
    """Seconds of each of `windows` consecutive windows of `steps` calls of step(batch), after
    `warmup` calls; `batches` is an iterator. Several windows let a caller take the median, which
    a burst of other work on a shared machine does not move."""
    for _ in range(warmup):
        step(next(batches))
    seconds = []
    for _ in range(windows):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step(next(batches))
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


# ---- the machine ----

def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if found:
            return found.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict:
    """GPU names, count and driver (nvidia-smi) when CUDA is available, else {"count": 0}."""
    import torch
    if not torch.cuda.is_available():
        return {"count": 0}
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info = {"count": len(names), "names": names, "cuda_runtime": torch.version.cuda,
            "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        info["driver"] = None
    return info


def library_versions() -> dict:
    """Installed versions of the libraries the benchmarks use (None when missing)."""
    from importlib import metadata
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        for key, prefix in LIBRARIES.items():
            if key not in found and (name == prefix or (key in ("cupy", "dali") and name.startswith(prefix))):
                found[key] = f"{dist.version}" + ("" if name == prefix else f" ({name})")
    return {key: found.get(key) for key in LIBRARIES}


def git_commit() -> dict:
    def git(*args):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None
    status = git("status", "--porcelain", "--", ".", ":!benchmarks/results")   # results being written
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def machine_info() -> dict:
    """CPU, cores, memory, GPU and driver, Python and library versions, git commit."""
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory,
            "platform": platform.platform(), "python": platform.python_version(),
            "gpu": gpu_info(), "libraries": library_versions(), "git": git_commit(),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "tag": machine_tag()}


def machine_tag() -> str:
    """A short host-name-independent name: 'cpu2-nogpu', or the GPU name and count ('nvidia-h100-x1')."""
    import torch
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        name = re.sub(r"[^a-z0-9]+", "-", name.replace("nvidia ", "nvidia-")).strip("-")
        name = re.sub(r"-(pcie|sxm\d*|hbm\d*e?|\d+gb)\b", "", name)
        return f"{name}-x{torch.cuda.device_count()}"
    return f"cpu{os.cpu_count()}-nogpu"


def default_results_dir() -> Path:
    """benchmarks/results/<machine>-<date>."""
    return ROOT / "benchmarks" / "results" / f"{machine_tag()}-{datetime.date.today().isoformat()}"
