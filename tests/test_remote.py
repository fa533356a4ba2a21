"""Shards behind a URL, read from real servers on loopback (XRootD, S3, HTTP): the same batches as from
the local folder, resume, inspect, the checks a remote split gets, one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.__main__ import main
from engine.data import remote, shards
from engine.data.loader import LoaderConfig, make_loader
from engine.errors import InputError
from tests.events import synthetic_shards
from tests.servers import S3_ENV, free_port, http_server, s3_server, upload, world_readable, xrootd_server

BATCH = 64


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    base = tmp_path_factory.mktemp("remote")
    return synthetic_shards(base, 400, seed=2, shard_seed=1, events_per_member=100, shard_size_mb=0.02)


@pytest.fixture(scope="module")
def xrootd(local):
    with xrootd_server(local) as server:
        yield server


@pytest.fixture(scope="module")
def s3(local):
    with s3_server() as endpoint:
        upload(local, "s3://engine/shards")
        yield endpoint


@pytest.fixture(scope="module")
def http(local):
    with http_server(local.parent) as base:
        yield base


@pytest.fixture(params=["root", "s3", "http"])
def url(request, local):
    if request.param == "root":
        server = request.getfixturevalue("xrootd")
        return server.url(server.export / local.name)
    if request.param == "http":
        return request.getfixturevalue("http") + "/" + local.name
    request.getfixturevalue("s3")
    return "s3://engine/shards"


def _cfg(**kw):
    return LoaderConfig(**{"batch_size": BATCH, "shuffle_buffer": 256, **kw})


def _epochs(path, epochs=(0, 1), split=None, **kw):
    loader = make_loader(path, _cfg(**kw), split=split)
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append([{k: v.clone() for k, v in b.items()} for b in loader])
    return out


def _same(a, b):
    assert len(a) == len(b) and len(a[0]) > 1
    for epoch_a, epoch_b in zip(a, b):
        assert len(epoch_a) == len(epoch_b)
        for x, y in zip(epoch_a, epoch_b):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("workers,prefetch", [(0, 4), (0, 0), (2, 4)])
def test_a_url_gives_the_batches_of_the_local_folder(local, url, workers, prefetch):
    _same(_epochs(url, workers=workers, prefetch_blocks=prefetch), _epochs(local, workers=workers))


def test_a_split_folder_url_and_other_splits(local, url):
    _same(_epochs(url + "/val", epochs=(0,), shuffle=False), _epochs(local, (0,), "val", shuffle=False))
    root, split = shards.locate_split(url + "/test")
    assert (str(root), split) == (url, "test")
    assert shards.load_manifest(url) == json.loads((local / "manifest.json").read_text())
    ids, want = shards.read_identity(url, "train"), shards.read_identity(local, "train")
    assert ids.keys() == want.keys() and all(np.array_equal(ids[k], want[k]) for k in ids)


def test_resume_mid_epoch_from_a_url(local, url):
    loader = make_loader(url, _cfg())
    loader.set_epoch(1)
    it = iter(loader)
    head = [next(it)["index"].clone() for _ in range(3)]
    state = loader.state_dict()
    resumed = make_loader(url, _cfg())
    resumed.load_state_dict(state)
    rest = [b["index"].clone() for b in resumed]
    want = [b["index"] for b in _epochs(local, (1,))[0]]
    assert len(head) + len(rest) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(head + rest, want))


def test_inspect_a_url(local, url, capsys):
    assert main(["inspect", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(local), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["path"] == url
    assert report["splits"] == want["splits"]
    assert main(["inspect", url + "/val"]) == 0
    out = capsys.readouterr().out
    assert "val" in out and "train" not in out and "ok: everything matches" in out


def test_a_missing_folder_or_key_is_one_line(local, url, capsys):
    assert main(["inspect", url + "/nothing-here"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith(f"error: {url}/nothing-here: ")
    with pytest.raises(InputError, match="no split 'holdout'"):
        make_loader(url, _cfg(), split="holdout")


def test_dali_refuses_a_url(url):
    with pytest.raises(InputError, match="DALI's reader reads local shards only"):
        make_loader(url, _cfg(backend="dali"))


def _s3_copy(local, tmp_path, name, change):
    """A copy of the shards, changed by `change(folder)`, uploaded to s3://engine/NAME."""
    folder = tmp_path / name
    shutil.copytree(local, folder)
    change(folder)
    return upload(folder, f"s3://engine/{name}")


def test_a_shard_missing_on_the_server_names_it(local, s3, tmp_path):
    url = _s3_copy(local, tmp_path, "lost", lambda f: (f / "train" / "train-00001.tar").unlink())
    with pytest.raises(InputError) as exc:
        make_loader(url, _cfg())
    assert str(exc.value) == f"{url}/train/train-00001.tar: shard listed in the manifest is missing"
    with pytest.warns(UserWarning, match="skipping shard train/train-00001.tar"):
        loader = make_loader(url, _cfg(skip_bad=True))
    assert [s["name"] for s in loader.summary()["shards_skipped"]] == ["train-00001.tar"]


def _flip_member_name(folder):
    """Same size, but the second member's tar header names another member."""
    tar = folder / "train" / "train-00000.tar"
    offsets, _, names = shards.reader.read_index(folder / "train" / "train-00000.idx")
    raw = bytearray(tar.read_bytes())
    at = int(offsets[1]) - 512
    raw[at:at + len(names[1])] = names[1].replace("1", "7").encode()
    tar.write_bytes(bytes(raw))


def test_a_modified_shard_fails_when_its_member_is_read(local, s3, tmp_path):
    url = _s3_copy(local, tmp_path, "modified", _flip_member_name)
    loader = make_loader(url, _cfg(shuffle=False))          # no per-member request at open
    with pytest.raises(InputError) as exc:
        list(loader)
    assert str(exc.value).startswith(f"{url}/train/train-00000.tar: member 000001.blk: tar header")
    with pytest.warns(UserWarning, match="member 000001.blk: tar header"):
        skipping = make_loader(url, _cfg(skip_bad=True))    # skip_bad reads every member at open
    assert [s["name"] for s in skipping.summary()["shards_skipped"]] == ["train-00000.tar"]
    assert main(["inspect", url]) == 2


def test_a_truncated_shard_on_the_server_is_refused_at_open(local, s3, tmp_path):
    def cut(folder):
        tar = folder / "train" / "train-00002.tar"
        tar.write_bytes(tar.read_bytes()[:-1024])
    url = _s3_copy(local, tmp_path, "cut", cut)
    with pytest.raises(InputError, match=r"train-00002.tar: \d+ bytes, the manifest says \d+"):
        make_loader(url, _cfg())


def _cli_subprocess(*argv, env):
    return subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("scheme", ["s3", "root", "http"])
def test_a_server_that_is_down_is_one_line_exit_2(scheme, monkeypatch):
    port = free_port()
    env = {**dict(__import__("os").environ), **S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    if scheme == "root":
        pytest.importorskip("fsspec_xrootd")
        url = f"root://127.0.0.1:{port}//data/shards"
    elif scheme == "http":
        url = f"http://127.0.0.1:{port}/shards"
    else:
        pytest.importorskip("s3fs")
        url = "s3://engine/shards"
    res = _cli_subprocess("inspect", url, env=env)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(f"error: {url}") and ": cannot read from the server (" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_a_file_url_is_a_local_path(local):
    assert remote.location(f"file://{local}") == local
    assert not remote.is_url(f"file://{local}") and remote.is_url("s3://b/x")
    assert str(remote.URL("root://host//data/x/") / "train") == "root://host//data/x/train"
    assert remote.URL("s3://bucket/a/b").parent == remote.URL("s3://bucket/a")


@pytest.mark.slow
def test_train_and_evaluate_on_s3_as_on_the_local_folder(local, s3, tmp_path):
    from engine.train import train
    from engine.training.config import check_inputs, load_config
    from tests.events import reset_accelerate
    metrics, evaluated = [], []
    for name, where in (("local", str(local)), ("s3", "s3://engine/shards")):
        cfg = load_config(None, [f"data.shards={where}", "data.signal=ttbar", "train.batch_size=64",
                                 "model.name=deepsets", "train.epochs=1", "train.lr=0.003",
                                 f"output_dir={tmp_path / name}"])
        check_inputs(cfg)
        metrics.append(train(cfg))
        reset_accelerate()
        assert main(["evaluate", "--checkpoint", str(tmp_path / name), "--shards", where,
                     "--out", str(tmp_path / f"eval-{name}")]) == 0
        evaluated.append(json.loads((tmp_path / f"eval-{name}" / "metrics.json").read_text()))
    assert metrics[0] == metrics[1] and metrics[0]
    for m in evaluated:
        for key in ("checkpoint", "shards", "train_seconds"):
            m.pop(key, None)
    assert evaluated[0] == evaluated[1] and evaluated[0]["events"] == 180


@pytest.mark.parametrize("seed", range(6))
def test_a_flipped_byte_on_the_server_is_read_right_or_one_line(local, s3, tmp_path, seed):
    rng = np.random.default_rng(seed)

    def flip(folder):
        tar = folder / "train" / f"train-0000{seed % 3}.tar"
        raw = bytearray(tar.read_bytes())
        for at in rng.integers(0, len(raw), 1 + seed % 3):
            raw[at] ^= 1 << int(rng.integers(8))
        tar.write_bytes(bytes(raw))
    url = _s3_copy(local, tmp_path, f"flip{seed}", flip)
    want = _epochs(local, (0,))[0]
    try:
        got = _epochs(url, (0,))[0]
    except InputError as exc:
        assert str(exc).startswith(f"{url}/train/train-0000{seed % 3}.tar: ") and "\n" not in str(exc)
        return
    assert len(got) == len(want)             # a flip in tar padding changes nothing read
    assert all(torch.equal(a[k], b[k]) for a, b in zip(got, want) for k in a)


def test_ranks_split_a_url_as_they_split_the_local_folder(local, url):
    for rank in range(3):
        got = make_loader(url, _cfg(), rank, 3)
        want = make_loader(local, _cfg(), rank, 3)
        assert all(torch.equal(a["index"], b["index"]) for a, b in zip(got, want, strict=True))


def test_a_shard_the_server_may_not_read_is_one_line(local, xrootd):
    if os.geteuid() != 0:
        pytest.skip("the xrootd server runs as this user, who may read anything it owns")
    folder = xrootd.export / "guarded"
    if not folder.exists():
        shutil.copytree(local, folder)
    world_readable(folder)
    (folder / "train" / "train-00001.tar").chmod(0o000)       # xrootd runs as nobody
    url = xrootd.url(folder)
    with pytest.raises(InputError) as exc:
        list(make_loader(url, _cfg(shuffle=False)))
    message = str(exc.value)
    assert message.startswith(f"{url}/train/train-00001.tar: cannot read from the server (")
    assert "\n" not in message and "ermission" in message


def test_fat_jet_batches_from_a_url_carry_msoftdrop_and_parton(tmp_path):
    jets = synthetic_shards(tmp_path, 60, seed=3, kind="fatjets", events_per_member=20)
    with http_server(tmp_path) as base:
        remote = _epochs(f"{base}/{jets.name}", epochs=(0,), batch_size=16)
    local = _epochs(jets, epochs=(0,), batch_size=16)
    _same(remote, local)
    assert {"msoftdrop", "parton", "fatjet"} <= remote[0][0].keys()
