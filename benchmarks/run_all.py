"""Run every benchmark, then write one report: records, machine, markdown tables and plots.

    python -m benchmarks.run_all [--quick | --tiny | --gpu-proof] [--only NAME,...] [--out DIR]

Runs benchmarks/{gpu_tests,generate,convert,loader,render,train,pipelines,set_models,train_gpu}.py
(train.py when present; gpu_tests.py runs `pytest -m gpu` and records its outcome, or says there is
no GPU; train_gpu.py trains on the GPU, or says there is none), each as its own process
(`python -m benchmarks.NAME`, from the repository root) with `--quick` passed through (`--tiny`:
the smallest sizes, for tests) and its records in DIR/NAME.json.
`--gpu-proof` runs only what a GPU machine must prove, sized to end within about 7 minutes:
GPU_PROOF lists the benchmarks, their arguments and time limits (benchmarks/gpu_proof.sh wraps it).
Then writes
  DIR/records.json   every record, with the benchmark it came from
  DIR/skipped.json   rows that could not be measured, and why
  DIR/status.json    per benchmark: exit code, seconds, records, log file
  DIR/machine.json   CPU, cores, GPU and driver, library versions, git commit
  DIR/report.md      the issue's targets beside the measured values, then a table per benchmark
  DIR/*.png          throughput per pipeline; throughput against loader workers
A benchmark that fails is reported and makes the exit code 1; the others still run.
DIR defaults to benchmarks/results/<machine>-<date>.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.common import ROOT, default_results_dir, machine_info, skipped_path

BENCHMARKS = ("gpu_tests", "generate", "convert", "loader", "render", "train", "pipelines", "set_models",
              "train_gpu")
OPTIONAL = ("train",)                 # run when the script exists
TINY_FLAG = {"pipelines": "--tiny"}   # benchmarks with sizes below --quick
# --gpu-proof: benchmark -> (arguments, time limit in seconds); the limits add up to 7 minutes
GPU_PROOF = {
    "gpu_tests": ([], 120),
    "render": ([], 60),
    "pipelines": (["--quick", "--synthetic", "--models", "resnet50,small_cnn", "--workers", "1"], 150),
    "train_gpu": ([], 90),
}


def bench_command(script: Path, mode: str, out: Path) -> list[str]:
    """`python -m PACKAGE.NAME FLAGS --out OUT` for benchmark script PACKAGE/NAME.py."""
    if mode == "gpu-proof":
        flags = GPU_PROOF[script.stem][0]
    else:
        flags = {"full": [], "quick": ["--quick"], "tiny": [TINY_FLAG.get(script.stem, "--quick")]}[mode]
    return [sys.executable, "-m", f"{script.parent.name}.{script.stem}", *flags, "--out", str(out)]


def run_one(name: str, bench_dir: Path, out_dir: Path, mode: str, timeout_s: float) -> dict:
    """Run one benchmark script; its status: rc (None: not run), seconds, records, skips, note."""
    script = bench_dir / f"{name}.py"
    status = {"benchmark": name, "rc": None, "seconds": 0.0, "records": [], "skips": [], "note": ""}
    if not script.exists():
        status["note"] = f"not run: {script.relative_to(bench_dir.parent)} does not exist"
        return status
    out, log = out_dir / f"{name}.json", out_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    paths = dict.fromkeys([str(ROOT), str(bench_dir.resolve().parent), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    start = time.perf_counter()
    print(f"== {name}: {' '.join(bench_command(script, mode, out)[1:])}", flush=True)
    try:
        with open(log, "w") as sink:
            done = subprocess.run(bench_command(script, mode, out), cwd=ROOT, env=env, stdout=sink,
                                  stderr=subprocess.STDOUT, timeout=timeout_s)
        status["rc"] = done.returncode
    except subprocess.TimeoutExpired:
        status["rc"], status["note"] = -1, f"timed out after {timeout_s:.0f} s"
    status["seconds"] = round(time.perf_counter() - start, 1)
    status["log"] = str(log.relative_to(out_dir))
    if status["rc"] == 0:
        status.update(read_outputs(out))
    if status["rc"] != 0 and not status["note"]:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        status["note"] = f"exit code {status['rc']}: {tail[0][:300]}"
    print(f"   {name}: rc={status['rc']} in {status['seconds']} s, {len(status['records'])} records "
          f"{status['note']}", flush=True)
    return status


def read_outputs(out: Path) -> dict:
    """The records (checked: name, finite value, unit, params) and skips a benchmark wrote."""
    try:
        records = json.loads(out.read_text())
        for r in records:
            if not (isinstance(r, dict) and {"name", "value", "unit", "params"} <= r.keys()
                    and isinstance(r["value"], (int, float)) and r["value"] == r["value"]
                    and abs(r["value"]) != float("inf") and isinstance(r["params"], dict)):
                raise ValueError(f"malformed record {r!r:.200}")
    except (OSError, ValueError) as exc:
        return {"rc": 1, "note": f"bad output {out.name}: {exc}", "records": []}
    skips = skipped_path(out)
    return {"records": records, "skips": json.loads(skips.read_text()) if skips.exists() else []}


def write_outputs(out_dir: Path, statuses: list[dict], machine: dict, mode: str, wall_s: float) -> None:
    def tagged(key):
        return [{**item, "benchmark": s["benchmark"]} for s in statuses for item in s[key]]
    records, skips = tagged("records"), tagged("skips")
    (out_dir / "records.json").write_text(json.dumps(records, indent=1) + "\n")
    (out_dir / "skipped.json").write_text(json.dumps(skips, indent=1) + "\n")
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    summary = [{k: v for k, v in s.items() if k not in ("records", "skips")} | {"records": len(s["records"])}
               for s in statuses]
    (out_dir / "status.json").write_text(json.dumps({"mode": mode, "wall_s": round(wall_s, 1),
                                                     "benchmarks": summary}, indent=1) + "\n")
    plots = report.plots(records, out_dir)
    complete = set(BENCHMARKS) - set(OPTIONAL) <= {s["benchmark"] for s in statuses if s["rc"] is not None}
    text = report.markdown(records, skips, summary, machine, mode, wall_s, plots, complete)
    (out_dir / "report.md").write_text(text)


def merge_previous(out_dir: Path, statuses: list[dict], mode: str, wall_s: float) -> tuple[list[dict], float]:
    """With --only into a folder of an earlier run of the same mode: keep the benchmarks not re-run
    (their records re-read from their JSON files, their status as recorded), in the usual order."""
    previous = out_dir / "status.json"
    if not previous.exists():
        return statuses, wall_s
    old = json.loads(previous.read_text())
    if old.get("mode") != mode:
        return statuses, wall_s
    fresh = {s["benchmark"]: s for s in statuses}
    merged = []
    for entry in old["benchmarks"]:
        name = entry["benchmark"]
        if name in fresh:
            merged.append(fresh.pop(name))
        elif entry.get("rc") == 0:
            merged.append({**entry, **read_outputs(out_dir / f"{name}.json")})
        else:
            merged.append({**entry, "records": [], "skips": []})
    merged += fresh.values()
    return merged, sum(s["seconds"] for s in merged)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes: under 5 minutes on 2 CPU cores")
    mode.add_argument("--tiny", action="store_true", help="smallest sizes (tests): only checks that all runs")
    mode.add_argument("--gpu-proof", action="store_true",
                      help=f"on a GPU machine: {', '.join(GPU_PROOF)} at the sizes of GPU_PROOF (~7 minutes)")
    parser.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<machine>-<date>)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per benchmark (default 600 with --quick/--tiny, 7200 otherwise)")
    parser.add_argument("--bench-dir", type=Path, default=Path(__file__).resolve().parent,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = "gpu-proof" if args.gpu_proof else "tiny" if args.tiny else "quick" if args.quick else "full"
    default_names = list(GPU_PROOF) if args.gpu_proof else list(BENCHMARKS)
    names = [n.strip() for n in args.only.split(",")] if args.only else default_names
    unknown = [n for n in names if not (args.bench_dir / f"{n}.py").exists() and n not in BENCHMARKS]
    if args.gpu_proof:
        unknown += [n for n in names if n not in GPU_PROOF and n not in unknown]
    if unknown:
        print(f"error: --only: unknown benchmark(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    out_dir = args.out or default_results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (600.0 if mode != "full" else 7200.0)
    start = time.perf_counter()
    statuses = [run_one(name, args.bench_dir, out_dir, mode, GPU_PROOF[name][1] if args.gpu_proof else timeout)
                for name in names]
    wall = time.perf_counter() - start
    if args.only:
        statuses, wall = merge_previous(out_dir, statuses, mode, wall)
    write_outputs(out_dir, statuses, machine_info(), mode, wall)
    failed = [s["benchmark"] for s in statuses if s["rc"] not in (0, None)
              or (s["rc"] is None and s["benchmark"] not in OPTIONAL)]
    print(f"wrote {out_dir}/report.md ({wall:.0f} s)" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
