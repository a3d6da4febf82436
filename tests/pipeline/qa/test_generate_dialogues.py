"""`build-qa --stage 3 --generate`: prompt, parser and validation rules (pure, fast), and whole runs with a tiny LLM
trained in a fixture (parseable dialogues) and its random-weight twin (garbage, all rejected with reasons)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gen_helpers import build_dialogue_llms
from support.qa import anet_metas, shard_hashes, video_meta, write_feature_shards
from support.real_data import REAL

from manifests.schema import Event
from pipeline.contract.shards import iter_samples, read_errors, read_index
from pipeline.qa import llm_dialogues as llm
from pipeline.qa.build import BuildQaConfig, run_build_qa
from pipeline.qa.rules import PLACEHOLDER_RE

EVENTS = [Event(0.0, 3.0, "A man opens a door"), Event(3.0, 7.0, "He walks to the 2 windows")]


def test_prompt_lists_events_as_symbols_in_order_after_the_example():
    prompt = llm.build_prompt(EVENTS)
    assert prompt.endswith("Events:\nfrom <s1> to <e1>: A man opens a door.\n"
                           "from <s2> to <e2>: He walks to the 2 windows.\nDialogue:\n")
    assert prompt.count("Events:") == 2 and "3.0" not in prompt and "You are an AI visual assistant" in prompt
    assert llm.event_tokens(EVENTS) == {"<s1>": 0.0, "<e1>": 3.0, "<s2>": 3.0, "<e2>": 7.0}


def test_parse_keeps_placeholders_and_stops_at_a_new_example():
    text = ("User: What happens from <s1> to <e1>?\nAssistant: A man opens\n a door.\n"
            "User: When does he walk?\nAssistant: From <s2> to <e2>.\n\nEvents:\nfrom <s1> ...")
    assert llm.parse_dialogue(text) == [
        {"from": "human", "value": "What happens from <s1> to <e1>?"}, {"from": "gpt", "value": "A man opens a door."},
        {"from": "human", "value": "When does he walk?"}, {"from": "gpt", "value": "From <s2> to <e2>."}]


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("just words", "no_turns"), ("hello\nUser: a?\nAssistant: b.", "text_before_turns"),
    ("User: a?\nAssistant:", "empty_turn"), ("User: a?\nUser: b?\nAssistant: c.", "not_alternating"),
    ("User: a?", "not_alternating"), ("Assistant: a.", "not_alternating"),
    ("User: when?\nAssistant: From <s3> to <e3>.", "unknown_event"),
    ("User: when?\nAssistant: From <s0> to <e1>.", "unknown_event"),
    ("User: when?\nAssistant: At <t1>.", "unknown_tag"),
    ("User: when?\nAssistant: From 12.5 s to <e1>.", "raw_timestamp"),
    ("User: when?\nAssistant: At 00:12.", "raw_timestamp"),
    ("User: What are the children doing at the start of the video?\nAssistant: From <s1> to <e1>, they stand face "
     "to face and shake their fists three times.", "copies_prompt"),
])
def test_every_rule_rejects_with_its_reason(text, reason):
    prompt = llm.build_prompt(EVENTS)
    with pytest.raises(llm.Rejected) as info:
        llm.check_dialogue(llm.parse_dialogue(text), EVENTS, prompt)
    assert info.value.reason == reason


def test_a_caption_number_is_not_a_leak_and_rendering_is_stage_3s():
    raw = llm.parse_dialogue("User: How many windows?\nAssistant: 2 windows, from <s2> to <e2>.")
    llm.check_dialogue(raw, EVENTS, llm.build_prompt(EVENTS))
    turns = llm.rendered_turns(raw, EVENTS, 10.0)
    assert turns == [{"from": "human", "value": "<video>\nHow many windows?"},
                     {"from": "gpt", "value": "2 windows, from 30 to 70."}]


@pytest.fixture(scope="module")
def llms(tmp_path_factory):
    """The trained fixture LLM and its random twin. 800 CPU steps (about a minute): with 400, in the locked
    environment, 3 of the 8 videos got a valid dialogue where the test asks for 4."""
    return build_dialogue_llms(tmp_path_factory.mktemp("llm"), steps=800)


@pytest.fixture(scope="module")
def random_llm(tmp_path_factory):
    return build_dialogue_llms(tmp_path_factory.mktemp("rllm"), steps=0)[1]


def _features(tmp_path: Path, metas: list[dict]) -> Path:
    write_feature_shards(tmp_path / "feats", metas)
    return tmp_path / "feats"


def _cfg(feats: Path, out: Path, model: Path, **kw) -> BuildQaConfig:
    return BuildQaConfig(features=feats, out=out, stage="3", generate=True, llm=model, progress=False,
                         llm_batch_size=kw.pop("llm_batch_size", 16), max_new_tokens=kw.pop("max_new_tokens", 160),
                         **kw)


def _synthetic_metas(n: int) -> list[dict]:
    captions = ["A man walks into the room", "A woman picks up a red ball", "The dog runs across the yard"]
    metas = [video_meta(f"v{i}", 50.0, [{"start": 10.0 * j, "end": 10.0 * j + 8, "caption": captions[j % 3]}
                                        for j in range(5 - i % 2)]) for i in range(n)]
    metas.append(video_meta("noev", 30.0, []))
    return metas


def _accounting(out: Path, per_video: int = 2) -> tuple[dict, list]:
    index, errors = read_index(out), read_errors(out)
    qa = index["qa"]
    videos = qa["inputs"]["feature_samples"]
    no_events = sum(e.reason in ("no_usable_events", "bad_duration") for e in errors)
    assert qa["inputs"].get("dialogues_requested", 0) == (videos - no_events) * per_video
    assert qa["samples"] + len(errors) == (videos - no_events) * per_video + no_events
    return index, errors


@pytest.mark.slow
def test_trained_llm_writes_valid_dialogues_with_provenance_deterministically(tmp_path, llms):
    trained, _ = llms
    feats = _features(tmp_path, _synthetic_metas(8))
    run_build_qa(_cfg(feats, tmp_path / "a", trained, seed=3))
    index, errors = _accounting(tmp_path / "a")
    assert index["qa"]["samples"] >= 4, [(e.key, e.reason, e.detail) for e in errors]
    assert all(e.reason.startswith("llm_") for e in errors if e.key != "noev")
    samples = list(iter_samples(tmp_path / "a"))
    for s in samples:
        c = s.conversation
        assert c["stage"] == 3 and c["form"] == "dialogue" and c["seed"] == 3
        assert c["turns"][0]["value"].startswith("<video>\n") and not PLACEHOLDER_RE.search(json.dumps(c["turns"]))
        g = c["generation"]
        assert g["prompt"].endswith("Dialogue:\n") and g["model"] == str(trained.resolve()) and g["seed"] == 3
        assert g["sampling"]["temperature"] == 0.7 and s.meta["source_key"] in g["request"]
    run_config = json.loads((tmp_path / "a" / "run_config.json").read_text())
    assert run_config["generation"]["sampling"]["top_p"] == 0.9
    # no resume in build-qa: a rerun into a fresh --out gives byte-identical shards and the same errors
    run_build_qa(_cfg(feats, tmp_path / "b", trained, seed=3))
    assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
    assert (tmp_path / "a" / "errors.jsonl").read_text() == (tmp_path / "b" / "errors.jsonl").read_text()


def test_random_weight_llm_garbage_all_becomes_error_records(tmp_path, random_llm):
    feats = _features(tmp_path, _synthetic_metas(4))
    run_build_qa(_cfg(feats, tmp_path / "out", random_llm, max_new_tokens=48))
    index, errors = _accounting(tmp_path / "out")
    assert index["qa"]["samples"] == 0 and len(errors) == 9
    assert all(e.reason.startswith("llm_") and "text:" in e.detail for e in errors if e.key != "noev")


@pytest.mark.slow
def test_real_activitynet_and_didemo_give_verified_shards_the_trainer_encodes(tmp_path, llms):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from manifests.readers import read_dataset
    from pipeline.cli import app
    from pipeline.contract.conversation import encode

    trained, _ = llms
    didemo = [video_meta(r.key, r.duration, [{"start": e.start, "end": e.end, "caption": e.caption} for e in r.events])
              for r in read_dataset("didemo", REAL / "didemo_test_sample.json").rows[:20]]
    metas = anet_metas(REAL / "activitynet_captions_train_sample.json", 20) + didemo
    feats = _features(tmp_path, metas)
    res = CliRunner().invoke(app, ["build-qa", "--stage", "3", "--generate", "--llm", str(trained), "--features",
                                   str(feats), "--out", str(tmp_path / "out"), "--llm-batch-size", "40",
                                   "--max-new-tokens", "160", "--no-progress"])
    assert res.exit_code == 0, res.output
    index, errors = _accounting(tmp_path / "out")
    # the fixture LLM rejects most of its real-data dialogues (docs/build-qa.md: ~90 % ActivityNet, ~60 % DiDeMo)
    assert index["qa"]["samples"] >= 5 and all(e.reason.startswith("llm_") for e in errors)
    assert CliRunner().invoke(app, ["inspect", str(tmp_path / "out"), "--verify"]).exit_code == 0
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    for s in iter_samples(tmp_path / "out"):
        assert len(encode(s.conversation["turns"], tokenizer, "v1")) > 0
    # the stage-3 trainer's own shard reader: every written sample tokenized, with supervised answer tokens
    from train.data.token_cache import build_table

    tables = [build_table(str(tmp_path / "out" / sh["name"]), tokenizer, "v1") for sh in index["shards"]]
    assert sum(len(t) for t in tables) == index["qa"]["samples"]
    assert all((t.labels >= 0).any() for t in tables)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_executor_gives_the_local_executors_output(tmp_path, random_llm):
    feats = _features(tmp_path, _synthetic_metas(3))
    run_build_qa(_cfg(feats, tmp_path / "local", random_llm, max_new_tokens=24, temperature=0.0))
    run_build_qa(_cfg(feats, tmp_path / "ray", random_llm, max_new_tokens=24, temperature=0.0, executor="ray"))
    assert (tmp_path / "local" / "errors.jsonl").read_text() == (tmp_path / "ray" / "errors.jsonl").read_text()
    assert json.loads((tmp_path / "ray" / "run_config.json").read_text())["config"]["executor"] == "ray"


@pytest.mark.parametrize("kw, message", [
    ({"generate": True}, "--llm"), ({"generate": True, "llm": Path("m"), "dialogues": Path("d.json")}, "replaces"),
    ({"dialogues": Path("d.json"), "llm": Path("m")}, "only used with --generate"),
    ({"generate": True, "llm": Path("m"), "executor": "slurm"}, "--executor"),
    ({"generate": True, "llm": Path("m"), "dialogues_per_video": 0}, "≥ 1"),
    ({"generate": True, "llm": Path("m"), "top_p": 0.0}, "--top-p"),
])
def test_generate_option_errors(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        BuildQaConfig(features=tmp_path / "f", out=tmp_path / "o", stage="3", **kw)


def test_a_model_that_does_not_load_stops_the_run(tmp_path):
    feats = _features(tmp_path, _synthetic_metas(1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load"):
        run_build_qa(_cfg(feats, tmp_path / "out", tmp_path / "empty", tokenizer=None))
