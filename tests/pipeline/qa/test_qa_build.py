"""`vtl-pipeline build-qa` on feature shards written by our own ShardWriter: stages 1-3, eval, determinism,
error accounting, the ActivityNet real sample, the token budget and the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.qa import anet_metas, shard_hashes, train_tokenizer, video_meta, write_feature_shards
from support.real_data import REAL

from pipeline.contract.shards import iter_samples, read_errors, read_index
from pipeline.qa.build import BuildQaConfig, run_build_qa

ANET = REAL / "activitynet_captions_train_sample.json"


def _metas() -> list[dict]:
    ev = [{"start": 1.0, "end": 4.0, "caption": "A dog runs."}, {"start": 5.0, "end": 9.0, "caption": "It sleeps."}]
    return [video_meta("v0", 10.0, ev), video_meta("v1", 20.0, ev + [{"start": 12, "end": 18, "caption": "Rain."}]),
            video_meta("v2", 10.0, [{"start": 3, "end": 2, "caption": "inverted"}]),
            video_meta("v3", 10.0, [], caption="A cat on a sofa."), video_meta("v4", 30.0, ev, caption="  ")]


@pytest.fixture()
def features(tmp_path):
    feats = write_feature_shards(tmp_path / "feat", _metas())
    return tmp_path / "feat", feats


def _build(tmp_path, features_dir, name, **kw) -> Path:
    cfg = BuildQaConfig(features=features_dir, out=tmp_path / name, progress=False, **kw)
    run_build_qa(cfg)
    return tmp_path / name


def test_stage2_writes_features_meta_conversations_and_accounts_for_every_input(tmp_path, features):
    feat_dir, feats = features
    out = _build(tmp_path, feat_dir, "s2", stage="2", seed=5)
    samples = {s.key: s for s in iter_samples(out)}
    assert sorted(samples) == ["v0", "v1", "v4"]
    for key, s in samples.items():
        assert np.array_equal(s.features, feats[key]) and s.features.dtype == np.float16
        assert s.meta == next(m for m in _metas() if m["key"] == key)
        conv = s.conversation
        assert conv["stage"] == 2 and conv["seed"] == 5 and conv["source"] == "build-qa"
        assert conv["turns"][0]["value"].startswith("<video>\n")
        text = " ".join(t["value"] for t in conv["turns"])
        assert all(int(x) <= 99 for x in re.findall(r"\b(\d\d)\b", text))
    errors = read_errors(out)
    assert [(e.key, e.reason) for e in errors] == [("v2", "no_usable_events"), ("v3", "no_usable_events")]
    index = read_index(out)
    qa = index["qa"]
    assert qa["inputs"]["feature_samples"] == 5 == index["totals"]["samples"] + index["totals"]["errors"]
    assert qa["samples"] == 3 and sum(qa["forms"].values()) == 3
    assert qa["skipped"] == {"no_usable_events": 2} and qa["events"]["dropped"] == {"inverted": 1}
    assert sum(qa["templates"].values()) >= 3 and qa["seed"] == 5
    assert qa["token_budget"]["checked"] is False and "tokenizer" in qa["token_budget"]["reason"]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["config"]["seed"] == 5 and run_config["producer"]["name"] == "vtl"


def test_same_seed_gives_byte_identical_shards_other_seed_differs(tmp_path, features):
    feat_dir, _ = features
    a = _build(tmp_path, feat_dir, "a", stage="2", seed=11, samples_per_shard=2)
    b = _build(tmp_path, feat_dir, "b", stage="2", seed=11, samples_per_shard=2)
    assert shard_hashes(a) == shard_hashes(b) and len(shard_hashes(a)) == 2
    assert (a / "errors.jsonl").read_bytes() == (b / "errors.jsonl").read_bytes()
    others = [shard_hashes(_build(tmp_path, feat_dir, f"c{s}", stage="2", seed=s, samples_per_shard=2))
              for s in (12, 13, 14)]
    assert any(h != shard_hashes(a) for h in others)


def test_stage1_plain_captions_and_missing_caption_errors(tmp_path, features):
    out = _build(tmp_path, features[0], "s1", stage="1")
    samples = list(iter_samples(out))
    assert [s.key for s in samples] == ["v3"]
    assert samples[0].conversation["turns"] == [{"from": "human", "value": "<video>\n"},
                                                {"from": "gpt", "value": "A cat on a sofa."}]
    assert samples[0].conversation["form"] == "caption" and samples[0].conversation["seed"] is None
    assert sorted(e.key for e in read_errors(out) if e.reason == "no_caption") == ["v0", "v1", "v2", "v4"]


def test_stage3_joins_dialogues_by_key_with_several_dialogues_per_video(tmp_path, features):
    def dialogue(vid, answer):
        return {"source": "anet", "id": vid, "meta": {"duration": 10.0, "token": {"<s1>": 1.0, "<e1>": 4.0}},
                "conversations": [{"from": "human", "value": "<video>\nWhen does the dog run?"},
                                  {"from": "gpt", "value": answer}]}
    records = [dialogue("v0", "From <s1> to <e1>."), dialogue("v0", "Between <s1> and <e1>."),
               dialogue("src4", "Near <e1>."),
               dialogue("v1", "At <s1>."), dialogue("missing", "From <s1> to <e1>."),
               {"id": "v3", "meta": {"duration": 10.0, "token": {}},
                "conversations": [{"from": "human", "value": "<video>\nWhen?"}, {"from": "gpt", "value": "<s9>"}]}]
    path = tmp_path / "stage3.json"
    path.write_text(json.dumps(records))
    metas = _metas() + [video_meta("v0_2", 10.0, [])]
    metas[4]["source_id"] = "src4"  # joined by source_id when the key has no dialogue
    metas[5]["source_id"] = "v0"  # a second feature row of v0, as the manifest reader of stage3.json makes
    write_feature_shards(tmp_path / "feat3", metas)
    out = _build(tmp_path, tmp_path / "feat3", "s3", stage="3", dialogues=path)
    samples = {s.key: s for s in iter_samples(out)}
    assert sorted(samples) == ["src4", "v0-d0", "v0-d1", "v1"]
    assert samples["src4"].conversation["turns"][1]["value"] == "Near 13."
    assert samples["src4"].meta["source_key"] == "v4"
    assert samples["v0-d0"].conversation["turns"][1]["value"] == "From 10 to 40."
    assert samples["v0-d1"].meta["key"] == "v0-d1" and samples["v0-d1"].meta["source_key"] == "v0"
    # v1's features span 20 s: the time base is the features' duration, and the mismatch is noted.
    assert samples["v1"].conversation["turns"][1]["value"] == "At 05."
    errors = {(e.key, e.reason) for e in read_errors(out)}
    assert errors == {("missing", "no_features"), ("v3", "unrendered_placeholder"), ("v2", "no_dialogue"),
                      ("v0_2", "duplicate_video")}
    qa = read_index(out)["qa"]
    assert qa["inputs"] == {"dialogues": 6, "feature_samples": 6}
    assert qa["notes"]["duration_mismatch"] == 2 and qa["forms"] == {"dialogue": 4}


def test_eval_grounding_and_dvc_samples(tmp_path, features):
    out = _build(tmp_path, features[0], "g", benchmark="grounding")
    conv = {s.key: s.conversation for s in iter_samples(out)}
    assert conv["v0"]["queries"][1] == {"id": "v0_q1", "query": "During which frames can we see it sleeps?",
                                        "sentence": "It sleeps.", "span": [5.0, 9.0]}
    assert conv["v2"]["queries"][0]["span"] == [3.0, 2.0]  # spans stay as published in eval data
    assert [e.key for e in read_errors(out)] == ["v3"]
    out = _build(tmp_path, features[0], "d", benchmark="dvc")
    conv = {s.key: s.conversation for s in iter_samples(out)}
    assert conv["v1"]["benchmark"] == "dvc" and len(conv["v1"]["events"]) == 3
    assert read_index(out)["shards"][0]["name"].startswith("eval-dvc-")


def test_activitynet_real_sample_stage2_represents_every_usable_event(tmp_path):
    metas = anet_metas(ANET, 12)
    write_feature_shards(tmp_path / "feat", metas, dim=16)
    out = _build(tmp_path, tmp_path / "feat", "anet", stage="2", seed=0, samples_per_shard=5)
    samples = {s.key: s for s in iter_samples(out)}
    assert len(samples) + len(read_errors(out)) == len(metas)
    from pipeline.qa.rules import as_phrase, as_sentence, clean_events
    for meta in metas:
        conv = samples[meta["key"]].conversation
        text = "\n".join(t["value"] for t in conv["turns"])
        assert all(0 <= int(x) <= 99 for x in re.findall(r"\b\d\d\b", text)) and "<s" not in text
        clean = clean_events(meta["events"], meta["duration"])
        assert len(clean.kept) + sum(clean.dropped.values()) == len(meta["events"])
        for ev in clean.kept:
            assert as_sentence(ev.caption) in text or as_phrase(ev.caption) in text, (meta["key"], ev.caption)
        if conv["form"] == "multi_turn":
            assert len(conv["turns"]) == 2 * len(clean.kept)
    qa = read_index(out)["qa"]
    assert qa["events"]["kept"] == sum(len(clean_events(m["events"], m["duration"]).kept) for m in metas)
    from typer.testing import CliRunner

    from pipeline.cli import app
    verify = CliRunner().invoke(app, ["inspect", str(out), "--verify"])
    assert verify.exit_code == 0 and "verify: OK" in verify.output, verify.output
    show = CliRunner().invoke(app, ["inspect", str(out), "--show", "1"])
    assert show.exit_code == 0 and "ASSISTANT:" in show.output and metas[0]["key"] in show.output, show.output


def test_token_budget_reports_long_samples_without_truncating(tmp_path, features):
    words = "From to During which frames can we see a dog runs it sleeps rain".split()
    tok = train_tokenizer(tmp_path / "tok", [" ".join(words)] * 3)
    out = tmp_path / "budget"
    from typer.testing import CliRunner

    from pipeline.cli import app
    result = CliRunner().invoke(app, ["build-qa", "--stage", "2", "--features", str(features[0]), "--out", str(out),
                                      "--tokenizer", str(tok), "--max-tokens", "150", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "3 over 150 tokens" in result.output and "over budget" in result.output
    budget = read_index(out)["qa"]["token_budget"]
    assert budget["checked"] and budget["samples_checked"] == 3 and budget["max_seen"] > 100
    over_expected = sorted(s.key for s in iter_samples(out))  # 100 rows + ~60 system words exceed 150
    assert sorted(budget["over_keys"]) == over_expected and budget["over"] == 3
    assert all(len(s.conversation["turns"]) >= 2 for s in iter_samples(out))


def test_config_and_output_folder_errors(tmp_path, features):
    with pytest.raises(ValueError, match="--dialogues"):
        BuildQaConfig(stage="3", features=features[0], out=tmp_path / "x")
    with pytest.raises(ValueError, match="--benchmark grounding"):
        BuildQaConfig(stage="eval", features=features[0], out=tmp_path / "x")
    with pytest.raises(ValueError, match="--stage 1|2|3"):
        BuildQaConfig(features=features[0], out=tmp_path / "x")
    with pytest.raises(ValueError, match="--benchmark must be one of"):
        BuildQaConfig(benchmark="caption", features=features[0], out=tmp_path / "x")
    with pytest.raises(ValueError, match="dense-ratio"):
        BuildQaConfig(stage="2", features=features[0], out=tmp_path / "x", dense_ratio=1.5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        _build(tmp_path, features[0], "never", stage="3", dialogues=bad)
    assert not (tmp_path / "never").exists()
    with pytest.raises(FileNotFoundError, match="index.json"):
        _build(tmp_path, tmp_path / "nothing", "never", stage="2")
    out = _build(tmp_path, features[0], "again", stage="2")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _build(tmp_path, features[0], "again", stage="2")
    _build(tmp_path, features[0], "again", stage="2", overwrite=True)
    assert read_index(out)["totals"]["samples"] == 3


def test_cli_build_qa_prints_summary_and_inspect_verifies(tmp_path, features):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["build-qa", "--stage", "2", "--features", str(features[0]), "--out", str(out),
                                 "--seed", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples (2 errors)" in result.output and "no_usable_events" in result.output
    bad = runner.invoke(app, ["build-qa", "--stage", "4", "--features", str(features[0]), "--out", str(out)])
    assert bad.exit_code == 2 and "--stage must be one of" in bad.output
    verify = runner.invoke(app, ["inspect", str(out), "--verify"])
    assert verify.exit_code == 0, verify.output
    show = runner.invoke(app, ["inspect", str(out), "--show", "2"])
    assert show.exit_code == 0 and "<video>" in show.output, show.output


def test_token_budget_counts_what_the_trainer_encodes(tmp_path):
    """The budget's layout must give the same length as pipeline.contract.conversation.encode (video sentinel → N rows)."""
    from manifests.schema import Event
    from pipeline.contract.conversation import encode
    from pipeline.qa.budget import TokenBudget
    from pipeline.qa.rules import stage1_conversation, stage2_conversation

    words = "From to During which frames can we see a dog runs it sleeps USER ASSISTANT A chat between".split()
    budget = TokenBudget(train_tokenizer(tmp_path / "tok", [" ".join(words)] * 3), 2048, "v1")
    events = [Event(1, 4, "A dog runs."), Event(5, 9, "It sleeps.")]
    for i in range(6):
        turns = stage2_conversation(events, 10.0, 0, f"k{i}")["turns"]
        assert budget.positions(turns, 100) == len(encode(turns, budget.tokenizer, "v1")) - 1 + 100
    budget.fmt = "plain"
    turns = stage1_conversation("A dog runs.")["turns"]
    assert budget.positions(turns, 1) == len(encode(turns, budget.tokenizer, "plain")) - 1 + 1


def test_duplicated_input_key_becomes_an_error_record(tmp_path):
    ev = [{"start": 1.0, "end": 4.0, "caption": "A dog runs."}]
    write_feature_shards(tmp_path / "feat", [video_meta("a", 10.0, ev), video_meta("a", 10.0, ev)],
                         samples_per_shard=1)
    out = _build(tmp_path, tmp_path / "feat", "dup", stage="2")
    assert [s.key for s in iter_samples(out)] == ["a"]
    assert [(e.key, e.reason) for e in read_errors(out)] == [("a", "duplicate_key")]


def test_a_second_build_qa_on_a_busy_out_is_refused(tmp_path, features):
    """Issue 32 item 6: two build-qa runs on one folder lost one run's samples; the second is now refused while the
    first holds `.build-qa.lock`, and a run afterwards takes the folder as usual."""
    from infra.lock import RunLocked, run_lock
    from pipeline.qa.output import RUN_LOCK

    out = tmp_path / "busy"
    with run_lock(str(out), RUN_LOCK, "build-qa"):
        with pytest.raises(RunLocked, match="being written by another build-qa run"):
            _build(tmp_path, features[0], "busy", stage="2")
        assert [p.name for p in out.iterdir()] == [RUN_LOCK]  # the refused run wrote nothing
    assert (_build(tmp_path, features[0], "busy", stage="2") / "index.json").is_file()
    assert not (out / RUN_LOCK).exists()
