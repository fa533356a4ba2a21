"""Run the GPU tests (`pytest -m gpu`) and record their outcome beside the benchmarks.

    python -m benchmarks.gpu_tests [--quick] --out FILE.json

On a machine with a CUDA GPU: runs `python -m pytest -m gpu` on the test modules that hold GPU
tests (its output is printed, so run_all keeps it in logs/gpu_tests.log) and writes records
gpu_tests_passed / _failed / _skipped (unit: tests) with the device named, and one
gpu_test_failed record per failing test (value 1).
Without a GPU it writes a skip row saying so. `--quick` changes nothing: the GPU tests are small.
Exits 0 when pytest ran, whatever its outcome: failures are results, shown in the report.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.common import ROOT, print_table, record, skip, write_results


def gpu_test_files() -> tuple[str, ...]:
    """The test modules that hold GPU tests (only these are collected: the others need packages a
    GPU machine may lack, such as Pythia)."""
    return tuple(sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                        if "mark.gpu" in p.read_text()))


PYTEST_ARGS = ("-m", "gpu", "-q", "-p", "no:cacheprovider", *gpu_test_files())


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed | failed | skipped, from pytest's JUnit XML."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        found[name] = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds
                       else "passed")
    return found


def run_pytest(device: str, args: tuple[str, ...] = PYTEST_ARGS) -> tuple[list[dict], int]:
    """Records of one pytest run (its output goes to this process's stdout), and its exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "gpu_tests.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", *args, f"--junitxml={junit}"], cwd=ROOT)
        if not junit.exists():
            raise RuntimeError(f"pytest wrote no report (exit code {done.returncode})")
        found = outcomes(junit)
    params = {"device": device, "pytest": " ".join(args)}
    records = [record(f"gpu_tests_{kind}", sum(v == kind for v in found.values()), "tests", **params)
               for kind in ("passed", "failed", "skipped")]
    records += [record("gpu_test_failed", 1, "test", test=name, device=device)
                for name, kind in sorted(found.items()) if kind == "failed"]
    return records, done.returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all; the same tests")
    parser.add_argument("--out", type=Path, required=True, help="records JSON file")
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        skips = [skip("gpu_tests_passed", "no GPU on this machine: the GPU tests skip themselves",
                      pytest=" ".join(PYTEST_ARGS))]
        write_results(args.out, [], skips)
        print_table([], skips)
        return 0
    records, rc = run_pytest(torch.cuda.get_device_name(0))
    write_results(args.out, records)
    print_table(records)
    print(f"pytest exit code {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
