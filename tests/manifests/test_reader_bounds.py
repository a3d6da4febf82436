"""Issue 32, findings 14 and 16 on the readers: annotation files are streamed or capped, and the folder reader counts
every entry it cannot read (dangling links, link loops, folders named like media) as a rejection."""
from __future__ import annotations

import json
import os
import tracemalloc

import pytest
from typer.testing import CliRunner

from manifests import read_dataset
from manifests.jsonstream import check_annotation_size

PAD = "x" * 100_000  # a field no reader keeps: a whole-file read holds every one of them at once


def _peak_mb(fn) -> tuple[object, float]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dataset", ["didemo", "vtimellm"])
def test_didemo_and_vtimellm_stream_their_files(tmp_path, dataset):
    """200 records padded to 20 MB: read a record at a time, the peak stays a few MB (json.load held > 40 MB)."""
    if dataset == "didemo":
        recs = [{"video": f"v{i}.mp4", "times": [[0, 1]] * 4, "description": f"thing {i}", "pad": PAD}
                for i in range(200)]
    else:
        recs = [{"id": f"v{i}", "source": "internvid", "pad": PAD,
                 "conversations": [{"from": "human", "value": "<video>\nWhat happens?"},
                                   {"from": "gpt", "value": "From <s0> to <e0>, a thing."}],
                 "meta": {"duration": 10.0, "token": {"<s0>": 1.0, "<e0>": 4.0}}} for i in range(200)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(recs))
    assert path.stat().st_size > 20e6
    result, peak = _peak_mb(lambda: read_dataset(dataset, path))
    assert len(result.rows) == 200, result.rejected[:3]
    assert peak < 8, f"{peak:.1f} MB peak reading a {path.stat().st_size / 1e6:.0f} MB file"
    key = "queries_in" if dataset == "didemo" else "records_in"
    assert result.stats[key] == 200
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="expected a list"):
        read_dataset(dataset, path)


def test_a_file_read_whole_over_the_cap_is_refused_in_one_line(tmp_path):
    """`vtl-eval score` holds a JSON (not JSONL) predictions file whole: a sparse 600 MB one is refused by its size."""
    from eval.cli import app as eval_app

    big = tmp_path / "pred.json"
    with open(big, "wb") as f:
        f.write(b"[\n")
        f.truncate(600 << 20)  # sparse: no disk used, never read
    small = tmp_path / "small.json"
    small.write_text("[1, 2]")
    assert check_annotation_size(small, max_mb=1) == small
    with pytest.raises(ValueError, match=r"small.json: 0 MB is over the 1e-06 MB"):
        check_annotation_size(small, max_mb=1e-6)
    ann = tmp_path / "anet.json"
    ann.write_text(json.dumps({"v_a": {"duration": 10.0, "timestamps": [[0, 5]], "sentences": ["one thing."]}}))
    result = CliRunner().invoke(eval_app, ["score", "--benchmark", "grounding", "--predictions", str(big),
                                           "--annotations", str(ann), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pred.json: 600 MB is over the 512 MB" in errors[0], result.output
    assert "Traceback" not in result.output


def test_folder_links_loops_and_media_named_folders_are_counted_rejections(tmp_path):
    root = tmp_path / "media"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.mp4").write_bytes(b"\0")
    (root / "good_link.mp4").symlink_to(root / "real" / "a.mp4")
    (root / "dangling.mp4").symlink_to(root / "nowhere.mp4")
    (root / "loop1.mp4").symlink_to(root / "loop2.mp4")
    (root / "loop2.mp4").symlink_to(root / "loop1.mp4")
    (root / "folder.mp4").mkdir()
    (root / "linked_folder").symlink_to(root / "real")
    os.mkfifo(root / "pipe.mp4")
    (root / ".hidden_link.mp4").symlink_to(root / "nowhere.mp4")  # hidden entries stay out, as before
    result = read_dataset("files", root)
    reasons = {os.path.basename(r.source_id): r.reason for r in result.rejected}
    assert reasons == {"dangling.mp4": "dangling_link", "loop1.mp4": "link_loop", "loop2.mp4": "link_loop",
                       "folder.mp4": "not_a_file", "linked_folder": "not_a_file", "pipe.mp4": "not_a_file"}
    assert sorted(r.key for r in result.rows) == ["a", "good_link"]
    assert result.stats["inputs"] == len(result.rows) + len(result.rejected) == 8
