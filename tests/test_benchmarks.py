"""The benchmark harness: run_all on the smallest sizes writes a well-formed report (timings are not
checked against targets here), and a failing benchmark is reported without stopping the others."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, gpu_tests, report, run_all

ROOT = Path(__file__).resolve().parents[1]


def check_records(records: list[dict]) -> None:
    assert records
    for r in records:
        assert set(r) >= {"name", "value", "unit", "params"}, r
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]), r
        assert isinstance(r["name"], str) and isinstance(r["unit"], str) and isinstance(r["params"], dict)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--tiny",
                           "--only", "pipelines", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_records_are_well_formed(tiny_run):
    records = json.loads((tiny_run / "records.json").read_text())
    check_records(records)
    assert report.check_report(tiny_run) == len(records)
    names = {r["name"] for r in records}
    assert {"pipeline_images_per_s", "onthefly_over_png", "onthefly_over_bound", "workers_to_95pct_best",
            "prepare_s", "disk_bytes_per_event"} <= names
    pipelines = {r["params"]["pipeline"] for r in records if r["name"] == "pipeline_images_per_s"}
    assert {"onthefly", "png", "bound"} <= pipelines
    for r in records:
        if r["name"] == "pipeline_images_per_s":
            assert {"model", "device", "batch", "workers"} <= set(r["params"]) and r["value"] > 0
    shards = [r for r in records if r["name"] == "disk_bytes_per_event" and r["params"]["format"] == "event shards"]
    png = [r for r in records if r["name"] == "disk_bytes_per_event" and r["params"]["format"] == "png files"]
    assert shards and png and shards[0]["value"] < png[0]["value"]


def test_missing_rows_say_why(tiny_run):
    skips = json.loads((tiny_run / "skipped.json").read_text())
    assert all(s["reason"] and "name" in s and "params" in s for s in skips)
    text = (tiny_run / "report.md").read_text()
    if not common.gpu_info()["count"]:
        assert "no GPU on this machine" in text
        assert any(s["params"].get("model") == "resnet50" for s in skips)


def test_report_and_machine(tiny_run):
    text = (tiny_run / "report.md").read_text()
    for heading in ("## Machine", "## Targets", "## Pipelines (same events, same model)", "## Runs",
                    "## pipelines"):
        assert heading in text
    assert "| target | required | measured | met |" in text and "| name | params | value | unit |" in text
    assert (tiny_run / "pipelines_throughput.png").stat().st_size > 1000
    assert (tiny_run / "pipelines_workers.png").stat().st_size > 1000
    machine = json.loads((tiny_run / "machine.json").read_text())
    assert {"cpu", "cores", "gpu", "libraries", "git", "tag"} <= set(machine)
    libraries = {"torch", "numpy", "pyarrow", "webdataset", "accelerate", "timm", "cupy", "dali"}
    assert libraries <= set(machine["libraries"])
    assert machine["libraries"]["torch"] and machine["cores"] >= 1
    status = json.loads((tiny_run / "status.json").read_text())
    assert status["benchmarks"][0]["rc"] == 0 and status["mode"] == "tiny"


def test_failing_benchmark_is_reported_and_others_run(tmp_path, monkeypatch):
    bench = tmp_path / "benches"
    bench.mkdir()
    (bench / "good.py").write_text(
        "import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
        "assert '--quick' in sys.argv\n"
        "json.dump([{'name': 'x_per_s', 'value': 2.5, 'unit': '1/s', 'params': {'k': 1}}], open(out, 'w'))\n")
    (bench / "bad.py").write_text("raise SystemExit('broken on purpose')\n")
    monkeypatch.setattr(run_all, "BENCHMARKS", ("bad", "good", "absent"))
    monkeypatch.setattr(run_all, "OPTIONAL", ("absent",))
    out = tmp_path / "out"
    rc = run_all.main(["--quick", "--out", str(out), "--bench-dir", str(bench)])
    assert rc == 1
    records = json.loads((out / "records.json").read_text())
    assert [(r["benchmark"], r["value"]) for r in records] == [("good", 2.5)]
    text = (out / "report.md").read_text()
    assert "broken on purpose" in text and "does not exist" in text
    assert "| x_per_s | k=1 | 2.5 | 1/s |" in text


def test_check_report_rejects_a_bad_record(tiny_run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    records = json.loads((copy / "records.json").read_text())
    records[0]["value"] = "fast"
    (copy / "records.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match="malformed record"):
        report.check_report(copy)


def test_only_merges_into_an_earlier_run(tmp_path, monkeypatch):
    bench = tmp_path / "benches"
    bench.mkdir()
    for name, value in (("first", 1.0), ("second", 2.0)):
        (bench / f"{name}.py").write_text(
            "import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
            f"json.dump([{{'name': '{name}', 'value': {value}, 'unit': 's', 'params': {{}}}}], open(out, 'w'))\n")
    monkeypatch.setattr(run_all, "BENCHMARKS", ("first", "second"))
    out = tmp_path / "out"
    assert run_all.main(["--quick", "--out", str(out), "--bench-dir", str(bench)]) == 0
    (bench / "second.py").write_text((bench / "second.py").read_text().replace("2.0", "3.0"))
    assert run_all.main(["--quick", "--only", "second", "--out", str(out), "--bench-dir", str(bench)]) == 0
    records = json.loads((out / "records.json").read_text())
    assert [(r["name"], r["value"]) for r in records] == [("first", 1.0), ("second", 3.0)]
    assert report.check_report(out) == 2


def test_malformed_records_fail_the_benchmark(tmp_path):
    out = tmp_path / "b.json"
    out.write_text(json.dumps([{"name": "x", "value": float("nan"), "unit": "s", "params": {}}]))
    assert run_all.read_outputs(out)["rc"] == 1
    with pytest.raises(ValueError):
        common.record("x", float("inf"), "s")


def test_targets_read_the_right_records():
    machine = {"gpu": {"count": 1}, "cores": 16}
    records = [{"name": "onthefly_over_bound", "value": 0.98, "unit": "ratio",
                "params": {"model": "resnet50", "workers": 1, "device": "NVIDIA H100"}},
               {"name": "onthefly_over_bound", "value": 0.5, "unit": "ratio",
                "params": {"model": "small_cnn", "workers": 1, "device": "NVIDIA H100"}}]
    rows = report.target_rows(records, [], machine, "full", 100.0)
    assert any("ResNet50" in r and "0.980 | yes" in r for r in rows)
    assert any("small_cnn 64 px" in r and "0.500 | no" in r for r in rows)
    assert any("this machine has a GPU" in r for r in rows)


def test_machine_tag_and_default_dir():
    tag = common.machine_tag()
    assert tag and " " not in tag and "/" not in tag
    assert common.default_results_dir().parent == ROOT / "benchmarks" / "results"


def test_gpu_tests_records_each_outcome(tmp_path):
    suite = tmp_path / "test_sample.py"
    suite.write_text("import pytest\n"
                     "def test_ok():\n    assert True\n"
                     "def test_broken():\n    assert False\n"
                     "def test_absent():\n    pytest.skip('no device')\n")
    records, rc = gpu_tests.run_pytest("Test GPU", ("-q", "-p", "no:cacheprovider", str(suite)))
    check_records(records)
    counts = {r["name"]: r["value"] for r in records if r["name"].startswith("gpu_tests_")}
    assert counts == {"gpu_tests_passed": 1, "gpu_tests_failed": 1, "gpu_tests_skipped": 1} and rc == 1
    failed = [r["params"]["test"] for r in records if r["name"] == "gpu_test_failed"]
    assert len(failed) == 1 and failed[0].endswith("test_broken")
    rows = report.target_rows([{**r, "benchmark": "gpu_tests"} for r in records], [],
                              {"gpu": {"count": 1}, "cores": 16}, "full", 1.0)
    assert any("GPU tests" in row and "| 1 | no |" in row for row in rows)


def test_gpu_tests_without_a_gpu_say_why(tmp_path):
    if common.gpu_info()["count"]:
        pytest.skip("this machine has a GPU")
    out = tmp_path / "gpu_tests.json"
    assert gpu_tests.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text()) == []
    skips = json.loads(common.skipped_path(out).read_text())
    assert skips and "no GPU" in skips[0]["reason"]


def test_benchmarks_run_as_modules_without_path_edits(tmp_path):
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        assert "sys.path" not in script.read_text(), f"{script.name} edits sys.path"
    command = run_all.bench_command(ROOT / "benchmarks" / "render.py", "quick", tmp_path / "r.json")
    assert command == [sys.executable, "-m", "benchmarks.render", "--quick", "--out", str(tmp_path / "r.json")]
    assert "python3 -m benchmarks.run_all --gpu-proof" in (ROOT / "benchmarks" / "gpu_proof.sh").read_text()
    done = subprocess.run([sys.executable, "-m", "benchmarks.report", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--check" in done.stdout
