"""Real storage servers on loopback for the tests: XRootD (Debian's xrootd-server), S3 (moto in
server mode) and HTTP (aiohttp's static files: Python's http.server answers no Range request).
Each serves a folder of this machine; a test that needs a server whose binary or package is
absent is skipped, naming what to install (CI installs them: .ci/run, setup.py)."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def world_readable(folder: Path) -> None:
    """Let the XRootD server (which runs as `nobody`) read everything under `folder`."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for parent in folder.parents:           # pytest's tmp folders are private (0700)
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)


class XRootD:
    """An xrootd server exporting folder `export` on a free port of 127.0.0.1."""

    def __init__(self, export: Path):
        self.export, self.port = export, free_port()
        self.work = Path(tempfile.mkdtemp(prefix="xrootd-"))
        cfg = self.work / "xrootd.cfg"
        cfg.write_text(f"xrd.port {self.port}\nall.export {export}\n"
                       f"all.adminpath {self.work}\nall.pidpath {self.work}\n")
        world_readable(self.work)
        self.work.chmod(0o777)
        command = ["xrootd", "-p", str(self.port), "-n", "engine-tests", "-c", str(cfg),
                   "-l", str(self.work / "xrootd.log")]
        if os.geteuid() == 0:                  # xrootd refuses to run as root
            command[1:1] = ["-R", "nobody"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def url(self, path: Path) -> str:
        return f"root://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)


@contextmanager
def xrootd_server(source: Path):
    """An xrootd server over a world-readable copy of folder `source`, at `server.export /
    source.name`. The copy lives outside pytest's temporary folders: pytest makes its user folder
    private again whenever a session starts, which would lock the server (user nobody) out."""
    if shutil.which("xrootd") is None:
        pytest.skip("needs the xrootd server binary (apt-get install xrootd-server)")
    pytest.importorskip("fsspec_xrootd", reason="needs fsspec-xrootd (pip install -e '.[dev]')")
    export = Path(tempfile.mkdtemp(prefix="xrootd-data-"))
    try:
        shutil.copytree(source, export / source.name)
        world_readable(export)
        server = XRootD(export)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(export, ignore_errors=True)


@contextmanager
def s3_server(process: bool = False):
    """moto's S3 server on a free port (in a thread, or its own process with `process`); yields
    its endpoint URL, set (with dummy credentials) in the environment while it runs, so every
    s3:// URL of the test reaches it."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (pip install -e '.[dev]')")
    pytest.importorskip("s3fs", reason="needs s3fs")
    port = free_port()
    if process:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
    else:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)    # a line per request otherwise
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
            env.setenv(key, value)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            if process:
                server.terminate()
                server.wait()
            else:
                server.stop()


@contextmanager
def http_server(folder: Path):
    """aiohttp's static file server (Range requests, folder index pages) over `folder`, in a
    thread; yields its base URL (http://127.0.0.1:PORT, `folder` at its root)."""
    import asyncio
    import threading
    web = pytest.importorskip("aiohttp.web", reason="needs aiohttp")
    port, loop, ready = free_port(), asyncio.new_event_loop(), threading.Event()
    app = web.Application()
    app.router.add_static("/", folder, show_index=True)
    runner = web.AppRunner(app, access_log=None)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def upload(folder: Path, url: str) -> str:
    """Copy local folder `folder` to S3 URL `url` (bucket made if needed); returns `url`."""
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = url.removeprefix("s3://").partition("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(folder), url.removeprefix("s3://"), recursive=True)
    return url
