"""`vtl-pipeline manifest` with media in an object store (moto's S3 server): a prefix listed like a folder, and
`--media-root s3://...`, give the same rows as the same files on local disk (media as URLs instead of paths)."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from infra import storage
from manifests.schema import read_manifest
from pipeline.cli import app

runner = CliRunner()
NAMES = ("b.mp4", "a.mkv", "sub/c d.mp4", "sub/x/e.jpg", "notes.txt", ".hidden/f.mp4", "sub/.g.mp4", "a.webm",
         "v_abcdefghijk.mp4")


def _tree(root: Path, prefix: str) -> None:
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
        storage.upload(root / name, f"{prefix}/{name}")


def _manifest(*args: str) -> tuple[list, list]:
    res = runner.invoke(app, ["manifest", *map(str, args)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = Path(args[args.index("--out") + 1])
    rejected = [json.loads(ln) for ln in out.with_name(out.stem + ".errors.jsonl").read_text().splitlines()]
    return read_manifest(out), rejected


def _same(local_rows, remote_rows, root: Path, prefix: str) -> None:
    def strip(text, base):
        return text.replace(base, "<root>") if text else text

    assert [(r.key, r.kind, strip(r.media, str(root)), strip(r.source_id, str(root))) for r in local_rows] == \
        [(r.key, r.kind, strip(r.media, prefix), strip(r.source_id, prefix)) for r in remote_rows]


def test_a_prefix_is_listed_like_a_folder(s3, tmp_path):
    root = (tmp_path / "media").resolve()
    _tree(root, f"{s3}/videos")
    local, local_rej = _manifest("--dataset", "files", "--annotations", root, "--out", tmp_path / "l.parquet")
    remote, remote_rej = _manifest("--dataset", "files", "--annotations", f"{s3}/videos/",
                                   "--out", tmp_path / "r.parquet")
    assert [r.key for r in local] == ["a", "a_2", "b", "c_d", "e", "v_abcdefghijk"]
    _same(local, remote, root, f"{s3}/videos")
    assert all(r.media.startswith(f"{s3}/videos/") for r in remote)
    assert [(e["reason"], e["source_id"].replace(str(root), "<r>")) for e in local_rej] == \
        [(e["reason"], e["source_id"].replace(f"{s3}/videos", "<r>")) for e in remote_rej] != []
    assert "shadow" not in (tmp_path / "r.parquet").read_bytes().decode("latin-1")


def test_media_root_url_for_a_dataset_reader(s3, tmp_path):
    root = (tmp_path / "media").resolve()
    _tree(root, f"{s3}/videos")
    ann = tmp_path / "anet.json"
    ann.write_text(json.dumps({
        "v_abcdefghijk": {"duration": 10.0, "timestamps": [[0, 4]], "sentences": ["a man walks."]},
        "v_missingvid1": {"duration": 8.0, "timestamps": [[1, 2]], "sentences": ["a dog runs."]}}))
    local, local_rej = _manifest("--dataset", "activitynet", "--annotations", ann, "--media-root", root,
                                 "--out", tmp_path / "l.parquet")
    remote, remote_rej = _manifest("--dataset", "activitynet", "--annotations", ann, "--media-root",
                                   f"{s3}/videos", "--out", tmp_path / "r.parquet")
    assert [r.media for r in remote] == [f"{s3}/videos/v_abcdefghijk.mp4"]
    _same(local, remote, root, f"{s3}/videos")
    assert [e["reason"] for e in local_rej] == [e["reason"] for e in remote_rej] == ["media_missing"]
    assert remote_rej[0]["detail"].startswith(f"{s3}/videos/")


def test_an_empty_prefix_is_one_clear_error(s3, tmp_path):
    res = runner.invoke(app, ["manifest", "--dataset", "files", "--annotations", f"{s3}/nothing/",
                              "--out", str(tmp_path / "m.parquet")])
    assert res.exit_code == 2 and "not found" in res.output and not (tmp_path / "m.parquet").exists()
