"""The storage layer: locations are never mangled, files round-trip locally and on a local S3 server, commits are
atomic, and preflight names the usual storage mistakes in one line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.storage import read_only_user, s3_env

from infra import storage
from infra.preflight import preflight
from infra.storage import StorageError


def test_locations_are_parsed_not_mangled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("s3://b/x/") == "s3://b/x"
    assert storage.resolve("data/out") == str(tmp_path / "data" / "out")
    assert storage.resolve(f"file://{tmp_path}/a") == f"{tmp_path}/a"
    assert storage.join("s3://b/x", "tasks", "plan.json") == "s3://b/x/tasks/plan.json"
    assert storage.join("gs://b", "y") == "gs://b/y"
    assert storage.parent("s3://b/x/i.json") == "s3://b/x" and storage.basename("s3://b/x/i.json") == "i.json"
    assert storage.scheme("s3://b") == "s3" and storage.scheme("/a") == "" and storage.scheme("file:///a") == ""
    with pytest.raises(StorageError, match="hdfs://"):
        storage.resolve("hdfs://namenode/x")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_files_round_trip(where, tmp_path, request):
    root = str(tmp_path / "root") if where == "local" else request.getfixturevalue("s3") + "/root"
    storage.write_json_atomic(storage.join(root, "a", "x.json"), {"k": 1})
    assert storage.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
    with storage.open(storage.join(root, "a", "y.bin"), "wb") as f:
        f.write(b"0123456789")
    assert storage.read_bytes(storage.join(root, "a", "y.bin"), 2, 5) == b"234"
    assert storage.size(storage.join(root, "a", "y.bin")) == 10
    assert storage.listdir(storage.join(root, "a")) == ["x.json", "y.bin"]
    assert storage.listdir(storage.join(root, "none")) == []
    pending = storage.AtomicFile(storage.join(root, "a", "z.tar"))
    with open(pending.local, "wb") as f:
        f.write(b"tar bytes")
    assert not storage.exists(storage.join(root, "a", "z.tar")), "nothing under the final name before commit"
    pending.commit()
    assert storage.read_bytes(storage.join(root, "a", "z.tar")) == b"tar bytes"
    assert not os.path.exists(pending.local)
    storage.remove(storage.join(root, "a", "z.tar"))
    storage.remove(storage.join(root, "a", "z.tar"))  # missing_ok
    assert not storage.exists(storage.join(root, "a", "z.tar"))
    assert storage.isdir(storage.join(root, "a")) and storage.isfile(storage.join(root, "a", "x.json"))


def test_preflight_accepts_good_locations(s3, tmp_path):
    assert preflight(s3 + "/out", write=True) == s3 + "/out"
    assert storage.listdir(s3 + "/out") == [], "the write probe is removed"
    assert preflight(str(tmp_path / "new"), write=True) == str(tmp_path / "new")
    with pytest.raises(StorageError, match="not found"):
        preflight(s3 + "/nothing.parquet")


def _preflight_in_subprocess(url: str, env: dict, write: bool = True) -> subprocess.CompletedProcess:
    code = ("import sys; from infra import storage; from infra.preflight import preflight\n"
            "try:\n    preflight(sys.argv[1], write=sys.argv[2] == '1', what='output')\n"
            "except storage.StorageError as e:\n    print(e); sys.exit(2)\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([sys.executable, "-c", code, url, "1" if write else "0"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_preflight_names_each_storage_mistake(s3, s3_server):
    no_creds = {k: v for k, v in s3_env(s3_server).items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cases = [
        (s3_env(s3_server), "s3://no-such-bucket-vtl/out", "does not exist"),
        (no_creds, f"{s3}/out", "no credentials"),
        (s3_env("http://127.0.0.1:9"), f"{s3}/out", "cannot reach the storage endpoint"),
    ]
    for env, url, message in cases:
        res = _preflight_in_subprocess(url, env)
        assert res.returncode == 2, (url, res.stdout, res.stderr[-2000:])
        assert message in res.stdout and len(res.stdout.strip().splitlines()) == 1, res.stdout
        assert "Traceback" not in res.stderr


def test_preflight_denied_write(s3, s3_server):
    from moto.core.authorization import enable_iam_authentication

    keys = read_only_user(s3_server, s3.removeprefix("s3://"))
    with enable_iam_authentication():
        res = _preflight_in_subprocess(f"{s3}/out", s3_env(s3_server, **keys))
        ok = _preflight_in_subprocess(f"{s3}", s3_env(s3_server, **keys), write=False)
    assert res.returncode == 2 and "permission denied" in res.stdout, (res.stdout, res.stderr[-2000:])
    assert ok.returncode == 0, (ok.stdout, ok.stderr[-2000:])
