"""`python -m engine convert` on inputs behind URLs, read from real servers on loopback (XRootD and
S3 from tests/servers.py, and an HTTP server answering range requests): the same bytes as from the
local disk, `--files-from` lists, resume from the server's sizes, and one line (exit 2) for a
missing file or a server that is down."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import uproot

from engine.__main__ import main
from engine.data.conversion import locations
from engine.data.remote import URL
from engine.errors import InputError
from tests import rootfiles as rf
from tests.servers import S3_ENV, s3_server, upload, xrootd_server

REPO = Path(__file__).resolve().parents[1]
BUCKET = "s3://convert/data"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A folder of small inputs: NanoAOD (a TTree and an RNTuple), Delphes and JSON, and bad ones."""
    d = tmp_path_factory.mktemp("remote-inputs") / "data"
    d.mkdir()
    rf.write_root(d / "nano.root", "Events", [rf.nanoaod_branches(400, seed=1)])
    rf.write_root(d / "other.root", "Events", [rf.nanoaod_branches(300, seed=2, first_event=1000)])
    rf.write_root(d / "delphes.root", "Delphes", [rf.delphes_branches(200, seed=3)], naming="dotted")
    rf.write_json(d / "study.json", rf.json_events(150, seed=4))
    ntuple = rf.write_rntuple(d / "ntuple.root", "Events", [rf.nanoaod_branches(300, seed=5)], page_checksums=True)
    (d / "flipped.root").write_bytes(flipped_page(ntuple, "Jet.pt"))
    data = (d / "nano.root").read_bytes()
    (d / "truncated.root").write_bytes(data[:len(data) // 2])
    (d / "text.root").write_text("not a ROOT file at all\n")
    (d / "folder.root").mkdir()
    (d / "folder.root" / "inside").write_text("x")
    return d


def flipped_page(path: Path, field: str) -> bytes:
    """The bytes of RNTuple file `path` with one bit flipped in the first page of `field`."""
    with uproot.open(path) as f:
        ntuple = f["Events"]
        column = next(i for i, c in enumerate(ntuple.column_records) if c.field_id == ntuple[field].field_id)
        page = ntuple.page_link_list[0][column].pages[0]
        assert page.has_checksum
    data = bytearray(path.read_bytes())
    data[page.locator.offset + page.locator.num_bytes // 2] ^= 0x10
    return bytes(data)


@pytest.fixture(scope="module")
def xrootd(data):
    with xrootd_server(data) as server:
        yield server


@pytest.fixture(scope="module")
def s3(data):
    with s3_server() as endpoint:
        upload(data, BUCKET)
        yield endpoint


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with `Range: bytes=a-b` requests answered 206, as web servers of data do."""

    def log_message(self, *args):
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start, end = int(match[1]), min(int(match[2]) + 1 if match[2] else len(data), len(data))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        return io.BytesIO(data[start:end])


@pytest.fixture(scope="module")
def web(data):
    """An HTTP server of `data` on loopback; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=data))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def served(server, data: Path, name: str) -> str:
    """The root:// URL of file `name` of `data`, which `server` serves a copy of."""
    return server.url(server.export / data.name / name)


def url_of(data: Path, scheme: str, name: str, request) -> str:
    if scheme == "http":
        return f"{request.getfixturevalue('web')}/{name}"
    if scheme == "root":
        return served(request.getfixturevalue("xrootd"), data, name)
    request.getfixturevalue("s3")
    return f"{BUCKET}/{name}"


def convert(*args, out: Path, label: str = "ttbar") -> int:
    return main(["convert", *map(str, args), "--out", str(out), "--label", label])


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("scheme", ["root", "s3", "http"])
@pytest.mark.parametrize("name", ["nano.root", "delphes.root", "study.json", "ntuple.root"])
def test_a_url_gives_the_bytes_of_the_local_file(data, scheme, name, request, tmp_path, capsys):
    """Provenance names the input by its file name and size, so the outputs are equal byte for byte."""
    url = url_of(data, scheme, name, request)
    assert convert(data / name, "--step-size", "64", out=tmp_path / "local") == 0
    assert convert(url, "--step-size", "64", out=tmp_path / "remote") == 0
    stem = Path(name).stem
    local, far = (tmp_path / d / f"{stem}.parquet" for d in ("local", "remote"))
    assert local.read_bytes() == far.read_bytes()
    record = json.loads((tmp_path / "remote" / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [url]
    assert f"{url}: " in capsys.readouterr().out


def test_files_from_a_mixed_list(data, xrootd, s3, tmp_path, capsys):
    """Comments and blank lines skipped, a relative path taken from the list's folder, the order kept."""
    here = tmp_path / "lists"
    here.mkdir()
    shutil.copy(data / "delphes.root", here / "delphes.root")
    listing = here / "inputs.txt"
    entries = [served(xrootd, data, "nano.root"), f"{BUCKET}/other.root", "delphes.root",
               str(data / "study.json")]
    listing.write_text(f"# inputs\n\n{entries[0]}\n  {entries[1]}  \n#{entries[2]}\n{entries[2]}\n\n"
                       f"{entries[3]}\n")
    assert convert("--files-from", listing, out=tmp_path / "out", label="mix") == 0
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [entries[0], entries[1], str(here / "delphes.root"),
                                                         entries[3]]
    assert [r["format"] for r in record["converted"]] == ["nanoaod", "nanoaod", "delphes", "json"]
    assert "converted 4 of 4 input(s)" in capsys.readouterr().out


def test_files_from_with_inputs_and_a_list_behind_a_url(data, s3, tmp_path):
    """Inputs on the command line come first; a listed relative name is relative to the list's URL."""
    shutil.copy(data / "other.root", tmp_path / "other.root")
    listing = tmp_path / "remote.txt"
    listing.write_text("nano.root\n# study.json\nstudy.json\n")
    put(listing, f"{BUCKET}/lists/remote.txt")
    put(data / "nano.root", f"{BUCKET}/lists/nano.root")
    put(data / "study.json", f"{BUCKET}/lists/study.json")
    assert convert(tmp_path / "other.root", "--files-from", f"{BUCKET}/lists/remote.txt",
                   out=tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [str(tmp_path / "other.root"),
                                                         f"{BUCKET}/lists/nano.root",
                                                         f"{BUCKET}/lists/study.json"]


def put(local: Path, url: str) -> None:
    """Write one file to an S3 URL (replacing what is there)."""
    import s3fs
    s3fs.S3FileSystem(skip_instance_cache=True).put_file(str(local), url.removeprefix("s3://"))


@pytest.mark.parametrize("text,words", [("# nothing\n\n", "lists no input"), (None, "no such file"),
                                        (b"\xff\xfe\x00bin", "not a text file")])
def test_a_bad_list_is_one_line(tmp_path, capsys, text, words):
    listing = tmp_path / "list.txt"
    if isinstance(text, str):
        listing.write_text(text)
    elif text is not None:
        listing.write_bytes(text)
    assert convert("--files-from", listing, out=tmp_path / "out") == 2
    assert error_lines(capsys) == [f"error: {listing}: {words}" + error_tail(words)]
    assert not (tmp_path / "out").exists()


def error_tail(words: str) -> str:
    return {"lists no input": " (one path or URL a line)",
            "not a text file": " (a list of input paths or URLs, one a line)"}.get(words, "")


def test_a_list_with_crlf_a_bom_and_names_holding_hashes(tmp_path):
    listing = tmp_path / "sub" / "list.txt"
    listing.parent.mkdir()
    entries = ["a#1.root", "  # comment", str(tmp_path / "abs.root"), f"file://{tmp_path}/f.root",
               "root://host//eos/x.root", "../up.json", "\t"]
    listing.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(entries).encode())
    assert locations.file_list(listing) == [listing.parent / "a#1.root", tmp_path / "abs.root",
                                            tmp_path / "f.root", URL("root://host//eos/x.root"),
                                            listing.parent / "../up.json"]


@pytest.mark.parametrize("source", ["s3://bucket", "."])
def test_an_input_without_a_file_name_is_refused(tmp_path, capsys, source):
    assert convert(source, out=tmp_path / "out") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].endswith(": names no file (an output is named after its input's file name)")


def test_no_input_at_all_is_one_line(tmp_path, capsys):
    assert convert(out=tmp_path / "out") == 2
    assert error_lines(capsys) == ["error: INPUT: none given: name files or URLs, or --files-from LIST"]


@pytest.mark.parametrize("scheme", ["root", "s3"])
@pytest.mark.parametrize("name,words", [
    ("missing.root", "no such file"),
    ("folder.root", "is a folder, not a file"),
    ("truncated.root", "truncated"),
    ("text.root", "neither a ROOT file nor JSON"),
])
def test_a_bad_url_is_one_line_naming_it(data, scheme, name, words, request, tmp_path, capsys):
    url = url_of(data, scheme, name, request)
    assert convert(url, data / "nano.root", out=tmp_path / "out") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: ") and words in lines[0]
    assert not (tmp_path / "out").exists()          # checked before anything is converted


@pytest.mark.parametrize("scheme", ["root", "s3"])
def test_a_page_checksum_is_verified_through_the_url(data, scheme, request, tmp_path, capsys):
    url = url_of(data, scheme, "flipped.root", request)
    assert convert(url, out=tmp_path / "out") == 2
    assert error_lines(capsys) == [f"error: {url}: corrupt page of field 'Jet.pt' in cluster 0 "
                                   f"(its checksum does not match)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme", ["root", "s3", "http"])
def test_a_missing_url_is_exactly_no_such_file(data, scheme, request, tmp_path, capsys):
    url = url_of(data, scheme, "missing.root", request)
    assert url.startswith(("root://127.0.0.1:", "s3://", "http://127.0.0.1:"))
    assert convert(url, out=tmp_path / "out") == 2
    assert error_lines(capsys) == [f"error: {url}: no such file"]


@pytest.mark.parametrize("scheme", ["root", "s3"])
def test_skip_bad_converts_the_others_and_reports_the_missing_url(data, scheme, request, tmp_path, capsys):
    missing = url_of(data, scheme, "missing.root", request)
    good = url_of(data, scheme, "nano.root", request)
    assert convert(good, missing, data / "other.root", "--skip-bad", out=tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "converted 2 of 3 input(s)" in out
    lines = err.strip().splitlines()
    assert lines[-2:] == [f"error: {missing}: no such file", "skipped 1 bad input(s)"]
    record = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert [r["input"] for r in record["converted"]] == [good, str(data / "other.root")]
    assert record["failed"] == [{"input": missing, "problem": "no such file"}]


def test_rerun_skips_by_the_servers_size_and_refuses_a_changed_file(data, s3, tmp_path, capsys):
    """Resume compares the input's name and byte size, asked of the server."""
    url, out = f"{BUCKET}/resume/events.root", tmp_path / "out"
    put(data / "nano.root", url)
    assert convert(url, out=out) == 0
    written = (out / "events.parquet").read_bytes()
    capsys.readouterr()
    assert convert(url, out=out) == 0
    assert "converted 0 of 1 input(s), 1 skipped as already converted" in capsys.readouterr().out
    put(data / "other.root", url)           # same name, another size
    assert convert(url, out=out) == 2
    sizes = f"{(data / 'nano.root').stat().st_size} -> {(data / 'other.root').stat().st_size}"
    assert error_lines(capsys) == [f"error: {out / 'events.parquet'}: written with other settings "
                                   f"(input_bytes {sizes}): use another --out or remove it"]
    assert (out / "events.parquet").read_bytes() == written


def test_a_url_and_a_local_file_of_the_same_stem_are_refused(data, xrootd, tmp_path, capsys):
    url = served(xrootd, data, "nano.root")
    assert convert(data / "nano.root", url, out=tmp_path / "out") == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: would write the same output as ")


def test_remote_inputs_are_tasks_of_a_worker_pool(data, xrootd, s3, tmp_path):
    urls = [served(xrootd, data, "nano.root"), f"{BUCKET}/other.root", served(xrootd, data, "study.json")]
    assert convert(*urls, "--workers", "2", out=tmp_path / "pool") == 0
    assert convert(*urls, out=tmp_path / "one") == 0
    for stem in ("nano", "other", "study"):
        assert (tmp_path / "pool" / f"{stem}.parquet").read_bytes() == \
            (tmp_path / "one" / f"{stem}.parquet").read_bytes()


def test_names_and_sizes_of_urls(data, xrootd):
    url = URL(served(xrootd, data, "nano.root"))
    assert locations.input_name(url) == "nano.root" and locations.input_stem(url) == "nano"
    assert locations.input_stem(URL("https://host/a/run2012.root?download=1#x")) == "run2012"
    assert locations.size(url) == (data / "nano.root").stat().st_size
    assert locations.head(url, 4) == b"root"
    with pytest.raises(InputError, match="no such file"):
        locations.size(URL(served(xrootd, data, "nope.json")))


@pytest.mark.parametrize("scheme", ["root", "s3"])
def test_a_stopped_server_is_one_line_exit_2(data, scheme, tmp_path):
    """In a fresh process, as a user meets it: the XRootD client gives up after its short retries."""
    env = {**os.environ, "XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "1", "XRD_REQUESTTIMEOUT": "5"}
    if scheme == "root":
        with xrootd_server(data) as server:
            url = served(server, data, "nano.root")
    else:
        with s3_server() as endpoint:
            upload(data, BUCKET)
        env.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "1"})
        url = f"{BUCKET}/nano.root"
    proc = subprocess.run([sys.executable, "-m", "engine", "convert", url, "--out", str(tmp_path / "out"),
                           "--label", "ttbar"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: cannot read from the server (")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_a_server_that_stops_mid_conversion_is_one_line(tmp_path):
    """The server goes away while a worker reads the data: one line naming the URL, exit 2, and
    nothing left in --out."""
    source = tmp_path / "source"
    source.mkdir()
    rf.write_root(source / "big.root", "Events", [rf.nanoaod_branches(20_000, seed=9)])
    out = tmp_path / "out"
    with xrootd_server(source) as server:
        url = served(server, source, "big.root")
        proc = subprocess.Popen([sys.executable, "-m", "engine", "convert", url, "--out", str(out), "--label",
                                 "ttbar", "--step-size", "100"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and not (out.exists() and any(out.iterdir())):     # the sink is open
            time.sleep(0.002)
        server.stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [next(line for line in err.splitlines() if line.startswith("error: "))]
    assert err.startswith(f"error: {url}: cannot read from the server (")
    assert not out.exists() or not any(out.iterdir())

@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_from_the_servers(data, xrootd, s3, tmp_path):
    """A run of URLs killed after its first output keeps only complete outputs; the rerun skips
    them (by the servers' sizes) and ends with the bytes of a local run."""
    names = ["nano.root", "other.root", "delphes.root", "study.json"]
    urls = [served(xrootd, data, n) if i % 2 == 0 else f"{BUCKET}/{n}" for i, n in enumerate(names)]
    options = ["--label", "ttbar", "--step-size", "20", "--workers", "1"]
    assert main(["convert", *(str(data / n) for n in names), "--out", str(tmp_path / "local"), *options]) == 0
    clean = {p.name: p.read_bytes() for p in (tmp_path / "local").glob("*.parquet")}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "engine", "convert", *urls, "--out", str(out), *options]
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not list(out.glob("*.parquet")):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    kept = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    assert 0 < len(kept) < len(names), "the run ended before the kill: nothing was tested"
    assert all(clean[name] == data for name, data in kept.items())
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} skipped as already converted" in rerun.stdout
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == clean
    assert sorted(p.name for p in out.iterdir()) == sorted([*clean, "convert.json"])

@pytest.mark.slow
def test_the_benchmark_records_both_sources_and_their_ratio():
    """benchmarks/remote_convert.py at a tiny size: six `convert` subprocesses."""
    from benchmarks.remote_convert import convert_rate
    if shutil.which("xrootd") is None:
        pytest.skip("needs the xrootd server binary (apt-get install xrootd-server)")
    workdir = Path(tempfile.mkdtemp(prefix="remote-convert-"))    # outside pytest's private folders
    try:
        records, skips = convert_rate(workdir, events=2_000, rounds=1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert skips == []
    rates = {r["params"]["source"]: r["value"] for r in records if r["name"] == "remote_convert_events_per_s"}
    assert set(rates) == {"local", "root"} and all(v > 0 for v in rates.values())
    ratio = next(r for r in records if r["name"] == "remote_convert_over_local")
    assert ratio["params"] == {"source": "root"} and ratio["value"] == pytest.approx(rates["root"] / rates["local"],
                                                                                     rel=0.01)
