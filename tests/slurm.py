"""A real one-node Slurm cluster on loopback for the tests (Debian's slurm-wlm 22.05 and munge).

`SlurmCluster(folder)` starts munged (as the munge user, with its own key and socket), slurmctld
and slurmd in the foreground, every file (slurm.conf, state, spool, logs, pid files) under
`folder`, on free ports, and waits until `sinfo` shows the node idle. Client commands get
`SLURM_CONF` from `env`; `submit`, `wait`, `cancel`, `queue` wrap sbatch, scontrol, scancel and
squeue (no accounting daemon: a job's state is read from `scontrol show job`). `stop()` cancels
what is still queued, then stops the daemons it started, and only those. Each daemon also gets
SIGTERM if the process that started it dies, so a killed test session leaves no daemon behind.

The `slurm_cluster` fixture gives a test the session's cluster (started once) and cancels what the
test left queued; it skips the test, with the reason, where Slurm cannot run: not root (slurmd and
munged need it), binaries missing (`apt-get install slurm-wlm munge`; CI does: .ci/run), or
daemons that do not start.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.servers import free_port

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE"}


def skip_reason() -> str | None:
    """Why Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (slurmd and munged run as root and munge)"
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install slurm-wlm munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "needs the munge user (apt-get install munge)"
    return None


def _die_with_parent() -> None:
    """In a daemon's child process before exec: SIGTERM when the starting process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG


class SlurmCluster:
    """One node, `cpus` CPUs (default: this machine's), partition `debug`; see the module docstring."""

    def __init__(self, folder: Path, cpus: int | None = None):
        self.folder = Path(folder)
        self.folder.chmod(0o755)               # munged (user munge) must reach its socket
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []
        self.started = False

    def start(self, seconds: float = 60.0) -> "SlurmCluster":
        try:
            self._start_munge()
            self._write_conf()
            logs = self.folder / "log"
            self._daemon(["slurmctld", "-D", "-i"], logs / "slurmctld.out")
            self._daemon(["slurmd", "-D", "-N", self.host], logs / "slurmd.out")
            self._wait_idle(seconds)
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def _start_munge(self) -> None:
        munge = self.folder / "munge"
        (munge / "key").mkdir(parents=True)
        munge.chmod(0o755)
        (munge / "key").chmod(0o700)
        subprocess.run(["mungekey", "--create", f"--keyfile={munge / 'key' / 'munge.key'}"], check=True,
                       capture_output=True)
        subprocess.run(["chown", "-R", "munge:munge", str(munge)], check=True)
        self.munge_socket = munge / "socket"
        self._daemon(["munged", "-F", f"--socket={self.munge_socket}",
                      f"--key-file={munge / 'key' / 'munge.key'}", f"--log-file={munge / 'munged.log'}",
                      f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}"],
                     self.folder / "log" / "munged.out", user="munge")
        end = time.monotonic() + 20
        while not self.munge_socket.exists():
            if time.monotonic() > end or self.procs[-1].poll() is not None:
                raise RuntimeError(f"munged did not start: {_tail(self.folder / 'log' / 'munged.out')}")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        f = self.folder
        for name in ("state", "spool", "log"):
            (f / name).mkdir(exist_ok=True)
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 512
        lines = [
            "ClusterName=enginetests", f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}", f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={f / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2", "MailProg=/bin/true",
            "SlurmdParameters=config_overrides", "KillWait=10", "MinJobAge=600",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _daemon(self, command: list[str], log: Path, user: str | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, user=user, group=user,
                                               extra_groups=[] if user else None,
                                               preexec_fn=_die_with_parent))

    def _wait_idle(self, seconds: float) -> None:
        end, state = time.monotonic() + seconds, ""
        while time.monotonic() < end:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited: {_tail(self.folder / 'log' / (dead[0] + '.out'))}")
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            state = done.stdout.strip() or done.stderr.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the node is not idle after {seconds:.0f} s (sinfo: {state!r})")

    def command(self, *args: str, check: bool = True) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def submit(self, *args: str, env: dict | None = None) -> str:
        """`sbatch --parsable ARGS`; the job id. The job gets `env` (default: this cluster's)."""
        done = subprocess.run(["sbatch", "--parsable", *args], env=env or self.env, capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def states(self, job: str) -> dict[str, str]:
        """State of each element of `job` (key: array task id, or "" for a job that is not an array)."""
        out = self.command("scontrol", "-o", "show", "job", job)
        states = {}
        for line in out.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            states[fields.get("ArrayTaskId", "")] = fields["JobState"]
        return states

    def queue(self) -> list[str]:
        """The ids of the jobs in the queue (pending, running or completing)."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def wait(self, job: str, seconds: float = 120.0) -> dict[str, str]:
        """Wait until every element of `job` has ended and left the queue; their states."""
        end = time.monotonic() + seconds
        while True:
            states = self.states(job)
            queued = [q for q in self.queue() if q == job or q.startswith(f"{job}_")]
            if not queued and all(s in ENDED for s in states.values()):
                return states
            if time.monotonic() > end:
                raise TimeoutError(f"job {job} has not ended after {seconds:.0f} s: {states}, queued {queued}")
            time.sleep(0.25)

    def wait_for_empty_queue(self, seconds: float = 60.0) -> None:
        end = time.monotonic() + seconds
        while self.queue():
            if time.monotonic() > end:
                raise TimeoutError(f"jobs still queued after {seconds:.0f} s: {self.queue()}")
            time.sleep(0.25)

    def cancel(self, *jobs: str) -> None:
        """`scancel JOBS`: Slurm sends SIGTERM to their processes, SIGKILL after KillWait."""
        self.command("scancel", *jobs)

    def stop(self) -> None:
        """Cancel the jobs still queued, then stop the daemons this object started."""
        if self.started and all(p.poll() is None for p in self.procs):
            try:
                if self.queue():
                    self.command("scancel", "--user", _me(), check=False)
                    self.wait_for_empty_queue(60)
            except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                pass
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs, self.started = [], False


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


@pytest.fixture(scope="session")
def slurm_session():
    """A running SlurmCluster for the session (skips the test, with the reason, where none can run)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="engine-slurm-"))
    cluster = SlurmCluster(folder)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"Slurm did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def slurm_cluster(slurm_session):
    """The session's SlurmCluster, its queue emptied after the test (a failed test's jobs cancelled)."""
    yield slurm_session
    if slurm_session.queue():
        slurm_session.cancel("--user", _me())
        slurm_session.wait_for_empty_queue(60)
