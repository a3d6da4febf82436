"""`vtl-pipeline import-vtimellm`: generated VTimeLLM-format JSON + `{id}.npy` folders → training shards."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.qa import shard_hashes

from pipeline.contract.shards import iter_samples, read_errors, read_index
from pipeline.qa.import_vtimellm import ImportConfig, infer_stage, run_import
from pipeline.qa.rules import PLACEHOLDER_RE


def _stage2_record(vid: str, duration: float, spans: list[tuple[float, float]]) -> dict:
    token = {}
    answer = []
    for i, (s, e) in enumerate(spans):
        token[f"<s{i}>"], token[f"<e{i}>"] = s, e
        answer.append(f"From <s{i}> to <e{i}>, event {i}.")
    return {"source": "internvid", "id": vid, "meta": {"split": [10.0, 10.0 + duration], "duration": duration,
                                                      "token": token},
            "conversations": [{"from": "human", "value": "<video>\nCould you please detail the events that took "
                                                          "place during different time segments in the video?"},
                              {"from": "gpt", "value": " ".join(answer)}]}


@pytest.fixture()
def stage2(tmp_path):
    rng = np.random.default_rng(0)
    feat_dir = tmp_path / "intern_clip_feat"
    feat_dir.mkdir()
    records, feats = [], {}
    for i in range(6):
        vid = f"yt{i}-AbC_{i}"
        records.append(_stage2_record(vid, 54.2, [(0, 9.4), (49.4, 53.2)]))
        if i == 3:
            continue  # missing file
        f = (rng.standard_normal((100, 768)) * 3).astype(np.float16)
        if i == 4:
            (feat_dir / f"{vid}.npy").write_bytes(b"not a numpy file")
            continue
        np.save(feat_dir / f"{vid}.npy", f)
        feats[vid] = f
    np.save(feat_dir / "yt5-AbC_5.npy", np.zeros((100, 768, 2), np.float16))  # bad shape
    del feats["yt5-AbC_5"]
    path = tmp_path / "stage2.json"
    path.write_text(json.dumps(records))
    return path, feat_dir, feats


def _run(tmp_path, json_path, feat_dir, name, **kw) -> Path:
    run_import(ImportConfig(json=json_path, features_dir=feat_dir, out=tmp_path / name, progress=False, **kw))
    return tmp_path / name


def test_stage2_import_round_trips_features_bit_exactly_and_reports_missing(tmp_path, stage2):
    json_path, feat_dir, feats = stage2
    out = _run(tmp_path, json_path, feat_dir, "imp")
    samples = {s.key: s for s in iter_samples(out)}
    assert sorted(samples) == sorted(feats)
    for vid, f in feats.items():
        s = samples[vid]
        assert s.features.dtype == np.float16 and s.features.tobytes() == f.tobytes()
        assert s.conversation["turns"][1]["value"] == "From 00 to 17, event 0. From 91 to 98, event 1."
        assert s.conversation["stage"] == 2 and s.conversation["source"] == "import-vtimellm"
        assert s.conversation["form"] == "dense_captioning" and s.conversation["templates"] == ["D1"]
        assert s.meta["window"] == [10.0, 64.2] and s.meta["duration"] == 54.2 and s.meta["kind"] == "video"
        assert not any(PLACEHOLDER_RE.search(t["value"]) for t in s.conversation["turns"])
    reasons = {e.key: e.reason for e in read_errors(out)}
    assert reasons == {"yt3-AbC_3": "missing_features", "yt4-AbC_4": "unreadable_features",
                       "yt5-AbC_5": "bad_shape"}
    index = read_index(out)
    assert index["totals"]["samples"] + index["totals"]["errors"] == 6 == index["qa"]["inputs"]["records"]
    assert index["qa"]["stage"] == 2 and index["num_frames"] == 100 and index["dim"] == 768
    assert index["qa"]["skipped"] == {"bad_shape": 1, "missing_features": 1, "unreadable_features": 1}
    assert index["qa"]["templates"] == {"D1": 3}
    again = _run(tmp_path, json_path, feat_dir, "imp2")
    assert shard_hashes(again) == shard_hashes(out)


def test_pickled_npy_is_refused(tmp_path):
    feat_dir = tmp_path / "f"
    feat_dir.mkdir()
    np.save(feat_dir / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(feat_dir / "n.npy", np.full((100, 768), np.nan, np.float32))
    np.save(feat_dir / "i.npy", np.ones((100, 768), np.int64))
    np.save(feat_dir / "f.npy", np.ones((100, 768), np.float32))
    path = tmp_path / "s.json"
    path.write_text(json.dumps([_stage2_record(k, 10.0, [(1, 2)]) for k in "pnif"]))
    out = _run(tmp_path, path, feat_dir, "o", stage=2)
    assert [(e.key, e.reason) for e in read_errors(out)] == [
        ("p", "unreadable_features"), ("n", "non_finite_features"), ("i", "bad_dtype")]
    assert read_index(out)["qa"]["notes"] == {"features_converted_from_float32": 1}


def test_stage1_llava_records_become_plain_image_samples(tmp_path):
    feat_dir = tmp_path / "f"
    feat_dir.mkdir()
    np.save(feat_dir / "004539375.npy", np.ones(768, np.float16))
    np.save(feat_dir / "002239345.npy", np.full((1, 768), 2, np.float16))
    records = [{"id": i, "image": f"00453/{i}.jpg", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": f"select luxury furniture {i}"}]} for i in ("004539375", "002239345", "000000001")]
    path = tmp_path / "blip_laion_cc_sbu_558k.json"
    path.write_text(json.dumps(records))
    assert infer_stage(records) == 1
    out = _run(tmp_path, path, feat_dir, "s1")
    samples = {s.key: s for s in iter_samples(out)}
    assert samples["004539375"].features.shape == (1, 768) and samples["002239345"].features[0, 0] == 2
    assert samples["004539375"].conversation["turns"] == [
        {"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "select luxury furniture 004539375"}]
    assert samples["004539375"].meta["kind"] == "image" and read_index(out)["num_frames"] == 1
    assert [e.reason for e in read_errors(out)] == ["missing_features"]


def test_stage3_two_dialogues_per_video_and_records_without_meta(tmp_path):
    feat_dir = tmp_path / "f"
    feat_dir.mkdir()
    for vid in ("v_abc", "v_9"):
        np.save(feat_dir / f"{vid}.npy", np.zeros((100, 768), np.float16))
    meta = {"duration": 20.0, "token": {"<s1>": 2.0, "<e1>": 5.0, "<s2>": 6.0, "<e2>": 20.0}}
    dialogue = [{"from": "human", "value": "<video>\nWhat happens from <s1> to <e1>?"},
                {"from": "gpt", "value": "A man jumps, then from <s2> to <e2> he lands."},
                {"from": "human", "value": "Why does he jump at <s1>?"}, {"from": "gpt", "value": "For fun."}]
    records = [{"source": "anet", "id": "v_abc", "meta": meta, "conversations": dialogue},
               {"source": "anet", "id": "v_abc", "meta": meta, "conversations": dialogue[:2]},
               {"id": "v_9", "conversations": [{"from": "human", "value": "Describe the video.\n<video>"},
                                               {"from": "gpt", "value": "A cat sleeps."}]},
               {"id": "v_bad", "meta": meta, "conversations": [{"from": "gpt", "value": "x"}]}]
    path = tmp_path / "stage3.json"
    path.write_text(json.dumps(records))
    assert infer_stage(records) == 3
    out = _run(tmp_path, path, feat_dir, "s3")
    samples = {s.key: s for s in iter_samples(out)}
    assert sorted(samples) == ["v_9", "v_abc-d0", "v_abc-d1"]
    turns = samples["v_abc-d0"].conversation["turns"]
    assert [t["value"] for t in turns[1:3]] == ["A man jumps, then from 30 to 99 he lands.", "Why does he jump at 10?"]
    assert samples["v_abc-d1"].meta["source_key"] == "v_abc" and samples["v_abc-d1"].meta["key"] == "v_abc-d1"
    assert samples["v_9"].conversation["turns"][0]["value"] == "<video>\nDescribe the video."
    qa = read_index(out)["qa"]
    assert qa["notes"] == {"video_token_moved": 1} and qa["skipped"] == {"bad_conversation": 1}
    assert qa["forms"] == {"dialogue": 3} and qa["turns_per_sample"] == {"1": 2, "2": 1}


def test_cli_import_summary(tmp_path, stage2):
    from typer.testing import CliRunner

    from pipeline.cli import app

    json_path, feat_dir, _ = stage2
    result = CliRunner().invoke(app, ["import-vtimellm", "--json", str(json_path), "--features-dir", str(feat_dir),
                                      "--out", str(tmp_path / "cli"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples (3 errors)" in result.output and "missing_features: 1" in result.output
    assert "no --tokenizer given" in result.output
    verify = CliRunner().invoke(app, ["inspect", str(tmp_path / "cli"), "--verify"])
    assert verify.exit_code == 0, verify.output
    missing = CliRunner().invoke(app, ["import-vtimellm", "--json", str(json_path), "--features-dir",
                                       str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output


def test_stage2_multi_turn_templates_are_identified(tmp_path):
    feat_dir = tmp_path / "f"
    feat_dir.mkdir()
    meta = {"duration": 50.0, "token": {"<s0>": 5.0, "<e0>": 10.0, "<s1>": 20.0, "<e1>": 30.0}}
    known = [{"from": "human", "value": "<video>\nCould you tell me what happened from <s1> to <e1> in the video?"},
             {"from": "gpt", "value": "a woman sings."},
             {"from": "human", "value": "Between which frames can we find a dog barking taking place in the video?"},
             {"from": "gpt", "value": "From <s0> to <e0>."}]
    unknown = [known[0], known[1], {"from": "human", "value": "Why?"}, {"from": "gpt", "value": "Because."}]
    records = [{"id": "a", "meta": meta, "conversations": known}, {"id": "b", "meta": meta, "conversations": unknown}]
    for r in records:
        np.save(feat_dir / f"{r['id']}.npy", np.zeros((100, 768), np.float16))
    path = tmp_path / "stage2.json"
    path.write_text(json.dumps(records))
    assert infer_stage(records) == 2
    out = _run(tmp_path, path, feat_dir, "o")
    conv = {s.key: s.conversation for s in iter_samples(out)}
    assert conv["a"]["templates"] == ["E2", "T7"] and conv["a"]["form"] == "multi_turn"
    assert conv["a"]["turns"][0]["value"].endswith("from 40 to 60 in the video?")
    assert conv["b"]["templates"] == []
    qa = read_index(out)["qa"]
    assert qa["notes"] == {"templates_unidentified": 1} and qa["templates"] == {"E2": 1, "T7": 1}


def test_a_nul_or_over_long_id_is_one_error_record(tmp_path):
    """Issue 32 item 11: an id with a NUL ended the whole import (ValueError: embedded null byte), a 10 kB one with
    "File name too long"; each is now one `bad_id` record and the good record beside them is imported."""
    feat_dir = tmp_path / "f"
    feat_dir.mkdir()
    np.save(feat_dir / "good.npy", np.ones((100, 768), np.float16))
    path = tmp_path / "s.json"
    path.write_text(json.dumps([_stage2_record(k, 10.0, [(1, 2)]) for k in ("bad\u0000id", "x" * 10_000, "good")]))
    out = _run(tmp_path, path, feat_dir, "o", stage=2)
    assert sorted(e.reason for e in read_errors(out)) == ["bad_id", "bad_id"]
    assert read_index(out)["totals"]["samples"] == 1


def test_chinese_records_import_unchanged(tmp_path):
    """VTimeLLM's Chinese data (its GLM recipe): Chinese text, `从<s0>到<e0>` answers, a dialogue turn with no times."""
    feat_dir = tmp_path / "feat"
    feat_dir.mkdir()
    f = np.random.default_rng(1).standard_normal((100, 768)).astype(np.float16)
    np.save(feat_dir / "zh-video_1.npy", f)
    record = {"source": "internvid", "id": "zh-video_1",
              "meta": {"split": [0.0, 50.0], "duration": 50.0, "token": {"<s0>": 0.0, "<e0>": 10.0, "<s1>": 25.0,
                                                                       "<e1>": 49.5}},
              "conversations": [
                  {"from": "human", "value": "<video>\n请描述视频中不同时间段发生的事件。"},
                  {"from": "gpt", "value": "从<s0>到<e0>，一个男人在切洋葱。从<s1>到<e1>，他把洋葱放进锅里。"},
                  {"from": "human", "value": "他在做什么菜？"},
                  {"from": "gpt", "value": "他在做洋葱炒蛋。"}]}
    path = tmp_path / "stage2_chinese.json"
    path.write_text(json.dumps([record], ensure_ascii=False), encoding="utf-8")
    out = _run(tmp_path, path, feat_dir, "zh")
    [sample] = list(iter_samples(out))
    turns = sample.conversation["turns"]
    assert [t["value"] for t in turns] == ["<video>\n请描述视频中不同时间段发生的事件。",
                                           "从00到20，一个男人在切洋葱。从50到99，他把洋葱放进锅里。",
                                           "他在做什么菜？", "他在做洋葱炒蛋。"]
    assert sample.features.tobytes() == f.tobytes() and not list(read_errors(out))
    assert read_index(out)["totals"]["samples"] == 1
