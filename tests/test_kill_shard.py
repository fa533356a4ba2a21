"""Kill safety of `python -m engine shard`: SIGKILL at seeded points spread over a whole run.

After every kill, the output folder is either absent or complete and identical to an uninterrupted
run; a temporary folder left behind is refused by every reader; the next run removes the
temporaries of killed runs and writes the same shards.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import engine.__main__ as cli
from engine.data import shards
from engine.data.generation import synthetic
from engine.data.loader import make_loader
from engine.data.shards.inspect import inspect_shards
from engine.errors import InputError

KILLS = 8
# the child imports everything first, says so, runs the real command on a line from stdin and
# prints how long the command took (on stderr)
CHILD = ("import sys, time, engine.__main__ as cli, engine.commands.shard, engine.data.shards; "
         "print('ready', flush=True); sys.stdin.readline(); start = time.perf_counter(); "
         "rc = cli.main(sys.argv[1:]); print(time.perf_counter() - start, file=sys.stderr); sys.exit(rc)")
OPTIONS = ["--events-per-member", "16", "--shard-size-mb", "0.004", "--seed", "3"]


def _digest(folder):
    """Hash of every file of a shard folder (paths and bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def _run_child(inputs, out, kill_after: float | None) -> tuple[float, int]:
    """Run `shard` in a child; SIGKILL it `kill_after` s after it starts. Returns the seconds the
    command took (when not killed) and the child's pid."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "shard", "--input", str(inputs),
                             "--out", str(out), *OPTIONS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode in ((0, -signal.SIGKILL) if kill_after is not None else (0,)), err
    return (float(err.split()[-1]) if kill_after is None else 0.0), proc.pid


def _temporaries(out):
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _assert_nothing_to_pick_up(out, reference):
    if out.exists():                              # the kill came after the rename: complete
        assert _digest(out) == reference
        assert inspect_shards(out)["ok"]
    else:
        with pytest.raises(InputError, match="no such shard folder"):
            make_loader(out)
    for tmp in _temporaries(out):
        with pytest.raises(InputError, match="unfinished output of a `shard` run"):
            make_loader(tmp)
        with pytest.raises(InputError, match="unfinished output"):
            inspect_shards(tmp / "train")
        assert cli.main(["inspect", str(tmp)]) == 2


@pytest.mark.slow
def test_killed_shard_leaves_nothing_and_the_rerun_cleans_up(tmp_path):
    inputs = tmp_path / "parquet"
    synthetic.write_synthetic(inputs, "events", 600, seed=5)
    duration, _ = _run_child(inputs, tmp_path / "reference", None)
    reference = _digest(tmp_path / "reference")
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    killed_with_temporary = 0
    for k in range(KILLS):                    # kill points spread over [0, 1.2 x the run time]
        _, pid = _run_child(inputs, out, 1.2 * duration * (k + rng.uniform()) / KILLS)
        killed_with_temporary += any(t.name.startswith(f".{out.name}.tmp-{pid}-") for t in _temporaries(out))
        _assert_nothing_to_pick_up(out, reference)
        if out.exists():
            os.replace(out, tmp_path / f"complete-{k}")
    assert killed_with_temporary >= 1, "no kill landed while the shards were being written"
    shards.write_shards([inputs], out, shards.ShardOptions(seed=3, events_per_member=16,
                                                           shard_size_mb=0.004))
    assert _temporaries(out) == [] and _digest(out) == reference
