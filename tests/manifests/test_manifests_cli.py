"""`vtl-pipeline manifest` on every real sample file: exit codes, printed counts, Parquet schema and provenance."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.real_data import REAL  # noqa: E402
from typer.testing import CliRunner

from manifests.schema import manifest_metadata, read_manifest
from pipeline.cli import app

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real samples not present")
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["manifest", *map(str, args)], env={"COLUMNS": "200"})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cases() -> list[tuple[str, list]]:
    """One manifest run per file in the real-samples folder (the CSV is Charades' durations table)."""
    out = [("activitynet", ["--annotations", REAL / "activitynet_captions_train_sample.json"]),
           ("charades", ["--annotations", REAL / "charades_sta_train_sample.txt",
                         "--durations", REAL / "Charades_v1_train_sample.csv"]),
           ("didemo", ["--annotations", REAL / "didemo_test_sample.json"]),
           ("files", ["--annotations", REAL])]
    out += [("files", ["--annotations", p]) for p in sorted(REAL.iterdir()) if p.suffix in (".mov", ".mp4")]
    return out


def test_every_real_file_is_read(tmp_path):
    covered = set()
    expected_rows = {"activitynet": 300, "charades": 257, "didemo": 247}
    for i, (dataset, args) in enumerate(cases()):
        out = tmp_path / f"{i}_{dataset}.parquet"
        res = run("--dataset", dataset, *args, "--out", out)
        assert res.exit_code == 0, res.output
        covered.update(Path(a).name for a in args if isinstance(a, Path) and Path(a).is_file())
        rows = read_manifest(out)
        assert "kept rows" in res.output and str(out) in res.output.replace("\n", "")
        assert len(rows) == expected_rows.get(dataset, len(rows)) and rows
        meta = manifest_metadata(out)
        prov = meta["provenance"]
        assert prov["dataset"] == dataset and prov["producer"]["name"] == "vtl"
        ann = Path(args[1])
        if ann.is_file():
            assert prov["annotations"]["sha256"] == sha256(ann)
        assert meta["stats"]["kept"] == len(rows)
        errors = out.with_name(out.name.removesuffix(".parquet") + ".errors.jsonl")
        assert errors.is_file()
    media_and_annotations = {p.name for p in REAL.iterdir() if p.suffix != ".md"}
    assert media_and_annotations <= covered


def test_printed_counts_and_errors_file(tmp_path):
    out = tmp_path / "real.parquet"
    res = run("--dataset", "files", "--annotations", REAL, "--out", out)
    assert res.exit_code == 0
    lines = [json.loads(x) for x in out.with_name("real.errors.jsonl").read_text().splitlines()]
    non_media = [p for p in REAL.iterdir() if p.suffix not in (".mov", ".mp4")]
    assert len(lines) == len(non_media) and {x["reason"] for x in lines} == {"not_media"}
    assert re.search(rf"rejected not_media\s*│\s*{len(non_media)}\s*│", res.output), res.output
    ch = tmp_path / "ch.parquet"
    res = run("--dataset", "charades", "--annotations", REAL / "charades_sta_train_sample.txt",
              "--durations", REAL / "Charades_v1_train_sample.csv", "--out", ch)
    assert "flagged event_end_past_duration" in res.output
    assert sum(1 for r in read_manifest(ch) if "event_end_past_duration" in r.flags) == 61


def test_parquet_columns_as_design(tmp_path):
    out = tmp_path / "anet.parquet"
    assert run("--dataset", "activitynet", "--annotations", REAL / "activitynet_captions_train_sample.json",
               "--out", out).exit_code == 0
    schema = pq.read_schema(out)
    assert schema.names[:9] == ["key", "dataset", "kind", "media", "window", "duration", "events", "caption",
                                "source_id"]
    assert schema.field("window").type == pa.struct([("start", pa.float64()), ("end", pa.float64())])
    assert schema.field("events").type == pa.list_(
        pa.struct([("start", pa.float64()), ("end", pa.float64()), ("caption", pa.string())]))
    assert schema.field("duration").type == pa.float64() and schema.field("key").type == pa.string()
    table = pq.read_table(out)
    assert table.num_rows == 300
    assert table.column("events").to_pylist()[0][0] == {"start": 0.0, "end": 1.62,
                                                         "caption": "A man was sitting inside a room."}


def test_options_reach_the_reader(tmp_path):
    ann = tmp_path / "iv.jsonl"
    ann.write_text("".join(json.dumps({"YoutubeID": "v", "Start_timestamp": f"00:00:{s:02d}.000",
                                       "End_timestamp": f"00:00:{s + 4:02d}.000", "Caption": "c"}) + "\n"
                           for s in (0, 5)))
    out = tmp_path / "iv.parquet"
    res = run("--dataset", "internvid", "--annotations", ann, "--out", out, "-o", "min_event_s=4.5")
    assert res.exit_code == 0 and read_manifest(out) == []
    assert manifest_metadata(out)["provenance"]["options"] == {"min_event_s": 4.5}
    res = run("--dataset", "internvid", "--annotations", ann, "--out", out)
    assert [r.key for r in read_manifest(out)] == ["v_0"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "kinetics", "--annotations", REAL / "didemo_test_sample.json"], "unknown dataset"),
    (["--dataset", "didemo", "--annotations", REAL / "nope.json"], "not found"),
    (["--dataset", "charades", "--annotations", REAL / "charades_sta_train_sample.txt"], "--durations"),
    (["--dataset", "didemo", "--annotations", REAL / "didemo_test_sample.json", "-o", "x=1"], "no option"),
    (["--dataset", "didemo", "--annotations", REAL / "didemo_test_sample.json", "--media-root", "/nonexistent"],
     "media root"),
])
def test_clear_errors_exit_2(tmp_path, args, message):
    out = tmp_path / "x.parquet"
    res = run(*args, "--out", out)
    assert res.exit_code == 2 and message in res.output and not out.exists()


def test_manifest_command_stays_light(tmp_path):
    """Building a manifest (e.g. on a cluster's head node) must not pull in torch, ray or decord."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom pipeline.cli import app\n"
            f"r = CliRunner().invoke(app, ['manifest', '--dataset', 'didemo', '--annotations', "
            f"'{REAL / 'didemo_test_sample.json'}', '--out', '{tmp_path / 'd.parquet'}'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('torch', 'ray', 'decord', 'open_clip', 'deepspeed') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_manifest_reads_and_writes_s3(s3, tmp_path):
    """Annotations and the manifest as s3:// URLs: nothing lands in a local ./s3: folder, provenance names the URL."""
    from infra import storage

    storage.upload(REAL / "didemo_test_sample.json", f"{s3}/ann/didemo.json")
    res = run("--dataset", "didemo", "--annotations", f"{s3}/ann/didemo.json", "--out", f"{s3}/m/didemo.parquet")
    assert res.exit_code == 0, res.output
    assert storage.listdir(f"{s3}/m") == ["didemo.errors.jsonl", "didemo.parquet"]
    local = tmp_path / "d.parquet"
    assert run("--dataset", "didemo", "--annotations", REAL / "didemo_test_sample.json", "--out", local).exit_code == 0
    with storage.open(f"{s3}/m/didemo.parquet") as f:
        remote_rows = read_manifest(f)
        f.seek(0)
        provenance = manifest_metadata(f)["provenance"]
    assert remote_rows == read_manifest(local)
    assert provenance["annotations"]["path"] == f"{s3}/ann/didemo.json"
    assert not Path("s3:").exists()
    res = run("--dataset", "didemo", "--annotations", "s3://no-such-bucket-vtl/x.json", "--out", tmp_path / "x.parquet")
    assert res.exit_code == 2 and "does not exist" in res.output
