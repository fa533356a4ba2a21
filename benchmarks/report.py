"""The benchmark report: markdown tables (targets first) and plots, from the records of run_all.

Records carry the benchmark they came from ({"benchmark", "name", "value", "unit", "params"});
skips ({"benchmark", "name", "params", "reason"}) become rows saying why a value is missing.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.common import format_params, format_value

PIPELINES = ("onthefly", "png", "dali", "bound")
# (what, target text, test on the value, record filter, where it is measured: "gpu" on a GPU only,
#  "cpu-only" on a machine without a GPU (the pipelines run on the GPU when there is one), "any")
TARGETS = (
    ("GPU tests (`pytest -m gpu`) failing", "0", lambda v: v == 0, {"name": "gpu_tests_failed"}, "gpu"),
    ("gpu_fraction_of_copy_bandwidth, 224 px bf16, batch 1024", ">= 0.5", lambda v: v >= 0.5,
     {"name": "gpu_fraction_of_copy_bandwidth", "dtype": "bfloat16", "batch": 1024}, "gpu"),
    ("trainer on the GPU (bf16, CUDA-drawn images): killed and resumed, weights bit-identical", "1",
     lambda v: v == 1, {"name": "train_gpu_resume_identical"}, "gpu"),
    ("cpu_images_per_s_per_core, 224 px RGB uint8 (CPU twin)", ">= 20,000", lambda v: v >= 20000,
     {"name": "cpu_images_per_s_per_core"}, "any"),
    ("onthefly_over_bound, ResNet50 224 px bf16, one GPU, 1 loader worker", ">= 0.97", lambda v: v >= 0.97,
     {"name": "onthefly_over_bound", "model": "resnet50", "workers": 1}, "gpu"),
    ("onthefly_over_bound, small_cnn 64 px, one GPU, 1 loader worker", ">= 0.90", lambda v: v >= 0.90,
     {"name": "onthefly_over_bound", "model": "small_cnn", "workers": 1}, "gpu"),
    ("onthefly_over_png, small_cnn, CPU only (each pipeline at its best worker count)", "> 1", lambda v: v > 1.0,
     {"name": "onthefly_over_png", "model": "small_cnn", "workers": "best", "device": "cpu"}, "cpu-only"),
)


def matches(item: dict, where: dict) -> bool:
    for key, want in where.items():
        got = item.get(key) if key in ("name", "benchmark") else item.get("params", {}).get(key)
        if got != want:
            return False
    return True


def target_rows(records: list[dict], skips: list[dict], machine: dict, mode: str, wall_s: float,
                complete: bool = True) -> list[str]:
    """The targets table; `complete`: every benchmark ran (the --quick time is judged only then)."""
    gpus = machine.get("gpu", {}).get("count", 0)
    rows = ["| target | required | measured | met |", "|---|---|---|---|"]
    for what, required, test, where, place in TARGETS:
        found = [r for r in records if matches(r, where) and
                 (r["params"].get("device") != "cpu" if place == "gpu" else True)]
        if found:
            value = found[0]["value"]
            shown = f"{value:.3f}" if abs(value) < 10 and value != int(value) else format_value(value)
            rows.append(f"| {what} | {required} | {shown} | {'yes' if test(value) else 'no'} |")
            continue
        if place == "gpu" and not gpus:
            reason = "not measured: no GPU on this machine"
        elif place == "cpu-only" and gpus:
            reason = "not measured: this machine has a GPU (the pipelines ran on it)"
        else:
            reasons = [s["reason"] for s in skips if s["name"] in (where["name"], "pipeline_images_per_s")
                       and s["params"].get("model") == where.get("model")]
            reason = f"not measured: {reasons[0]}" if reasons else "not measured (not run, or see its log)"
        rows.append(f"| {what} | {required} | {reason} | — |")
    quick_ok = "yes" if wall_s < 300 else "no"
    measured = f"{wall_s:.0f} s on {machine.get('cores')} cores, {gpus} GPU(s)"
    setup = mode == "quick" and not gpus and machine.get("cores") == 2
    verdict = quick_ok if setup and complete else "— (not that setup)" if not setup else "— (not every benchmark ran)"
    rows.append(f"| `run_all.py --quick` on 2 CPU cores without GPU | < 300 s | {measured} | {verdict} |")
    return rows


def headline_rows(records: list[dict]) -> list[str]:
    """Per model: each pipeline's images/s with 1 worker and at its best, and the ratios."""
    rates = [r for r in records if r["name"] == "pipeline_images_per_s"]
    models = sorted({r["params"]["model"] for r in rates})
    rows = ["| model | device | batch | pipeline | images/s, 1 worker | best images/s (workers) | "
            "workers for 95% of best |", "|---|---|---|---|---|---|---|"]
    for model in models:
        for pipeline in PIPELINES:
            mine = [r for r in rates if r["params"]["model"] == model and r["params"]["pipeline"] == pipeline]
            if not mine:
                continue
            p = mine[0]["params"]
            one = [r["value"] for r in mine if r["params"]["workers"] in (1, None)]
            best = max(mine, key=lambda r: r["value"])
            need = [r["value"] for r in records if matches(r, {"name": "workers_to_95pct_best", "model": model,
                                                               "pipeline": pipeline})]
            rows.append(f"| {model} | {p['device']} | {p['batch']} | {pipeline} | "
                        f"{format_value(one[0]) if one else '—'} | {format_value(best['value'])} "
                        f"({best['params']['workers']}) | {int(need[0]) if need else '—'} |")
    return rows


def benchmark_rows(records: list[dict], skips: list[dict]) -> list[str]:
    rows = ["| name | params | value | unit |", "|---|---|---|---|"]
    rows += [f"| {r['name']} | {format_params(r['params'])} | {format_value(r['value'])} | {r['unit']} |"
             for r in records]
    rows += [f"| {s['name']} | {format_params(s['params'])} | missing: {s['reason']} | |" for s in skips]
    return rows


def machine_rows(machine: dict) -> list[str]:
    gpu = machine.get("gpu", {})
    gpu_text = (f"{gpu['count']} x {gpu['names'][0]}, driver {gpu.get('driver')}, CUDA {gpu.get('cuda_runtime')}"
                if gpu.get("count") else "none")
    libs = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items() if v)
    git = machine.get("git", {})
    return ["| | |", "|---|---|", f"| CPU | {machine.get('cpu')} ({machine.get('cores')} cores, "
            f"{machine.get('memory_gib')} GiB) |", f"| GPU | {gpu_text} |",
            f"| Python | {machine.get('python')} on {machine.get('platform')} |", f"| libraries | {libs} |",
            f"| commit | {git.get('commit')}{' (with local changes)' if git.get('dirty') else ''} |",
            f"| load average (1 min, at the end) | {machine.get('load_avg_1min')} |"]


def markdown(records: list[dict], skips: list[dict], statuses: list[dict], machine: dict, mode: str,
             wall_s: float, plots: list[str], complete: bool = True) -> str:
    lines = [f"# Benchmarks: {machine.get('tag')}", "",
             f"Mode `{mode}`, {wall_s:.0f} s in all. Timings on a machine shared with other work vary "
             "from run to run; ratios measured in the same run are the figures to compare.", "",
             "## Machine", "", *machine_rows(machine), "", "## Targets", "",
             *target_rows(records, skips, machine, mode, wall_s, complete), "",
             "## Pipelines (same events, same model)", "",
             *headline_rows(records), ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots] + ["", "## Runs", "",
                                                             "| benchmark | exit code | seconds | records | note |",
                                                             "|---|---|---|---|---|"]
    lines += [f"| {s['benchmark']} | {s['rc'] if s['rc'] is not None else 'not run'} | {s['seconds']} | "
              f"{s['records']} | {s['note']} |" for s in statuses]
    for s in statuses:
        mine = [r for r in records if r["benchmark"] == s["benchmark"]]
        missing = [k for k in skips if k["benchmark"] == s["benchmark"]]
        lines += ["", f"## {s['benchmark']}", ""]
        if s["rc"] != 0:
            lines.append(f"No records: {s['note'] or 'failed'}.")
            continue
        lines += benchmark_rows(mine, missing)
    return "\n".join(lines) + "\n"


def plots(records: list[dict], out_dir: Path) -> list[str]:
    """PNG plots next to the report; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r for r in records if r["name"] == "pipeline_images_per_s"]
    models = sorted({r["params"]["model"] for r in rates})
    written = []
    if models:
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
        for ax, model in zip(axes[0], models):
            best = {p: max((r["value"] for r in rates if r["params"]["model"] == model
                            and r["params"]["pipeline"] == p), default=0.0) for p in PIPELINES}
            ax.bar(list(best), list(best.values()), color=["C0", "C1", "C2", "0.5"])
            ax.set_title(f"{model}: best images/s per pipeline")
            ax.set_ylabel("images/s")
        fig.tight_layout()
        fig.savefig(out_dir / "pipelines_throughput.png", dpi=100)
        plt.close(fig)
        written.append("pipelines_throughput.png")
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
        for ax, model in zip(axes[0], models):
            for k, p in enumerate(PIPELINES):
                pts = sorted((r["params"]["workers"], r["value"]) for r in rates if r["params"]["model"] == model
                             and r["params"]["pipeline"] == p and isinstance(r["params"]["workers"], int))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=p, color=f"C{k}")
            for r in rates:
                if r["params"]["model"] == model and r["params"]["pipeline"] == "bound":
                    ax.axhline(r["value"], color="0.5", ls="--", label="bound")
            ax.set(title=f"{model}: images/s vs loader workers", xlabel="workers", ylabel="images/s")
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "pipelines_workers.png", dpi=100)
        plt.close(fig)
        written.append("pipelines_workers.png")
    loader = sorted((r["params"]["workers"], r["value"]) for r in records
                    if r["name"] == "loader_events_per_s" and r["params"].get("backend") == "torch")
    if loader:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot(*zip(*loader), marker="o")
        ax.set(title="loader alone: events/s vs workers", xlabel="workers", ylabel="events/s")
        fig.tight_layout()
        fig.savefig(out_dir / "loader_workers.png", dpi=100)
        plt.close(fig)
        written.append("loader_workers.png")
    return written


REPORT_HEADINGS = ("## Machine", "## Targets", "## Runs")
MACHINE_KEYS = {"cpu", "cores", "gpu", "libraries", "git", "tag"}


def check_report(out_dir: str | Path) -> int:
    """Raise ValueError unless run_all's output in `out_dir` is well-formed; returns the record count.

    Every record has name/value/unit/params with a finite value, report.md has its sections and
    tables, machine.json its keys, and every skipped row a reason. Timings are not judged here.
    """
    import json
    import math
    out = Path(out_dir)
    records = json.loads((out / "records.json").read_text())
    if not records:
        raise ValueError(f"{out}/records.json: no records")
    for r in records:
        ok = ({"name", "value", "unit", "params"} <= set(r) and isinstance(r["name"], str)
              and isinstance(r["unit"], str) and isinstance(r["params"], dict)
              and isinstance(r["value"], (int, float)) and math.isfinite(r["value"]))
        if not ok:
            raise ValueError(f"{out}/records.json: malformed record {r}")
    text = (out / "report.md").read_text()
    missing = [h for h in REPORT_HEADINGS if h not in text]
    if missing or "| target | required | measured | met |" not in text:
        raise ValueError(f"{out}/report.md: missing {missing or 'the targets table'}")
    machine = json.loads((out / "machine.json").read_text())
    if not MACHINE_KEYS <= set(machine):
        raise ValueError(f"{out}/machine.json: missing {sorted(MACHINE_KEYS - set(machine))}")
    if any(not s.get("reason") for s in json.loads((out / "skipped.json").read_text())):
        raise ValueError(f"{out}/skipped.json: a skipped row without a reason")
    return len(records)


if __name__ == "__main__":
    import argparse
    import sys
    parser = argparse.ArgumentParser(description="Check that a run_all output folder is well-formed.")
    parser.add_argument("--check", required=True, metavar="DIR")
    args = parser.parse_args()
    try:
        n = check_report(args.check)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.check}: report well-formed ({n} records)")
