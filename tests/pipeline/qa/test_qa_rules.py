"""The pure QA rules: timestamps in text, the stage-2 mix and templates, event cleaning, caption insertion,
placeholders, evaluation queries."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from manifests.schema import Event
from pipeline.contract.queries import DVC_QUERY
from pipeline.qa import rules as qa
from pipeline.qa import templates
from pipeline.qa.dialogues import RecordError, assign_keys, render_dialogue

WORKED = {"id": "aMEDuIHmJJM", "meta": {"split": [129.8, 184.0], "duration": 54.2,
                                         "token": {"<s0>": 0, "<e0>": 9.4, "<s1>": 49.4, "<e1>": 53.2}},
          "conversations": [{"from": "human", "value": "<video>\nCould you please detail the events?"},
                            {"from": "gpt", "value": "From <s0> to <e0>, a man talks. From <s1> to <e1>, he waves."}]}


def test_reference_worked_example_renders_00_17_91_98():
    turns, note = render_dialogue(WORKED, 54.2)
    assert note is None
    assert turns[1]["value"] == "From 00 to 17, a man talks. From 91 to 98, he waves."
    assert qa.leftover_placeholders(turns) == []


def test_placeholders_render_in_every_turn_and_never_survive():
    record = {"id": "x", "meta": {"duration": 100.0, "token": {"<s1>": 10, "<e1>": 20.4, "<s2>": 99.9, "<e2>": 100}},
              "conversations": [{"from": "human", "value": "<video>\nWhat happens between <s1> and <e1>?"},
                                {"from": "gpt", "value": "A dog runs."},
                                {"from": "human", "value": "And from <s2> to <e2>?"},
                                {"from": "gpt", "value": "From <s2> to <e2> it sleeps, after <e1>."}]}
    turns, _ = render_dialogue(record, 100.0)
    assert [t["value"] for t in turns] == ["<video>\nWhat happens between 10 and 20?", "A dog runs.",
                                          "And from 99 to 99?", "From 99 to 99 it sleeps, after 20."]
    assert not any(qa.PLACEHOLDER_RE.search(t["value"]) for t in turns)
    missing = {**record, "meta": {"duration": 100.0, "token": {"<s1>": 10}}}
    with pytest.raises(RecordError) as err:
        render_dialogue(missing, 100.0)
    assert err.value.reason == "unrendered_placeholder" and "<e1>" in err.value.detail


def test_video_token_is_placed_at_the_start():
    turns = [{"from": "human", "value": "What is this?\n<video>"}, {"from": "gpt", "value": "A cat."}]
    fixed, note = qa.place_video_token(turns)
    assert fixed[0]["value"] == "<video>\nWhat is this?" and note == "video_token_moved"
    fixed, note = qa.place_video_token([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}])
    assert fixed[0]["value"] == "<video>\nHi" and note == "video_token_added"
    with pytest.raises(ValueError):
        qa.place_video_token([{"from": "human", "value": "<video>\n<video>"}, {"from": "gpt", "value": "x"}])


def test_thirty_templates_with_the_right_slots():
    assert len(templates.DENSE_CAPTIONING) == len(templates.EVENT_CAPTIONING) == len(templates.TEMPORAL_GROUNDING) == 10
    assert all("{" not in t for t in templates.DENSE_CAPTIONING.values())
    assert all("{s}" in t and "{e}" in t and "{T}" not in t for t in templates.EVENT_CAPTIONING.values())
    assert all("{T}" in t and "{s}" not in t for t in templates.TEMPORAL_GROUNDING.values())


def _events(n: int) -> list[Event]:
    return [Event(10.0 * i, 10.0 * i + 8, f"Event number {i} happens.") for i in range(n)]


def test_stage2_mix_over_10k_samples_is_20_80_and_uses_every_template():
    events = _events(4)
    tasks, used = Counter(), Counter()
    for i in range(10_000):
        conv = qa.stage2_conversation(events, 50.0, seed=7, key=f"v{i}")
        tasks[conv["form"]] += 1
        used.update(conv["templates"])
    assert abs(tasks["dense_captioning"] / 10_000 - 0.20) <= 0.015
    assert abs(tasks["multi_turn"] / 10_000 - 0.80) <= 0.015
    assert set(used) == set(templates.TEMPLATES)
    grounding = sum(v for k, v in used.items() if k.startswith("T"))
    captioning = sum(v for k, v in used.items() if k.startswith("E"))
    assert abs(grounding / (grounding + captioning) - 0.5) < 0.02


def test_built_questions_parse_back_to_their_template_ids():
    for i in range(300):
        conv = qa.stage2_conversation(_events(3), 30.0, seed=2, key=f"id{i}")
        questions = [t["value"] for t in conv["turns"] if t["from"] == "human"]
        assert [qa.identify_template(q) for q in questions] == conv["templates"]
    assert qa.identify_template("<video>\nWhat is the man doing?") is None


def test_stage2_is_deterministic_per_seed_and_key_and_ratios_are_configurable():
    events = _events(3)
    a = qa.stage2_conversation(events, 40.0, seed=1, key="abc")
    assert a == qa.stage2_conversation(events, 40.0, seed=1, key="abc")
    variants = {repr(qa.stage2_conversation(events, 40.0, seed=s, key="abc")) for s in range(20)}
    assert len(variants) > 5
    assert all(qa.stage2_conversation(events, 40.0, 0, f"k{i}", dense_ratio=1.0)["form"] == "dense_captioning"
               for i in range(50))
    only_grounding = qa.stage2_conversation(events, 40.0, 0, "k", dense_ratio=0.0, grounding_ratio=1.0)
    assert only_grounding["form"] == "multi_turn" and all(t.startswith("T") for t in only_grounding["templates"])


def test_dense_captioning_answer_is_in_time_order_with_rendered_spans():
    events = [Event(30.0, 40.0, "The man leaves"), Event(0.0, 9.4, "A man talks.")]
    turns = qa.dense_captioning_turns(events, 54.2, "D3")
    assert turns[0]["value"] == "<video>\n" + templates.DENSE_CAPTIONING["D3"]
    assert turns[1]["value"] == "From 00 to 17, A man talks. From 55 to 74, The man leaves."


def test_multi_turn_covers_each_event_once_with_video_token_first():
    events = _events(5)
    conv = qa.stage2_conversation(events, 50.0, seed=3, key="mt", dense_ratio=0.0)
    turns = conv["turns"]
    assert len(turns) == 10 and turns[0]["value"].startswith("<video>\n")
    assert sum(t["value"].count("<video>") for t in turns) == 1
    text = " ".join(t["value"] for t in turns)
    for i in range(5):
        assert f"vent number {i} happens" in text
    for template_id, (q, a) in zip(conv["templates"], zip(turns[0::2], turns[1::2])):
        if template_id.startswith("T"):
            assert re.fullmatch(r"From \d\d to \d\d\.", a["value"])
        else:
            assert re.search(r"from \d\d to \d\d in the video", q["value"]) and a["value"].endswith(".")


def test_caption_insertion_rules():
    assert qa.as_phrase("  A man is  running. ") == "a man is running"
    assert qa.as_phrase("NBA players dunk!") == "NBA players dunk"
    assert qa.as_phrase("I see a cat") == "I see a cat"
    assert qa.as_sentence("a dog barks") == "a dog barks."
    assert qa.as_sentence("Is it raining?") == "Is it raining?"
    q, a = qa.event_turn(Event(0, 5, "The boy jumps."), 10.0, "T1")
    assert q == "During which frames can we see the boy jumps happening in the video?" and a == "From 00 to 50."
    q, a = qa.event_turn(Event(0, 5, "the boy jumps"), 10.0, "E2")
    assert q == "Could you tell me what happened from 00 to 50 in the video?" and a == "the boy jumps."


def test_event_cleaning_rules_and_counts():
    raw = [{"start": 0, "end": 5, "caption": "ok"},
           {"start": 4, "end": 8, "caption": "overlaps the first"},
           {"start": 9, "end": 7, "caption": "inverted"},
           {"start": 12, "end": 15, "caption": "outside"},
           {"start": 8, "end": 11, "caption": "sticks out"},
           {"start": 1, "end": 2, "caption": "   "},
           {"start": "x", "end": 2, "caption": "bad time"},
           {"start": 0, "end": 5, "caption": "ok"},
           {"start": 10, "end": 10, "caption": "zero at the end"}]
    kept = qa.clean_events(raw, 10.0, "keep")
    assert [e.caption for e in kept.kept] == ["ok", "overlaps the first", "sticks out"]
    assert kept.kept[2] == Event(8.0, 10.0, "sticks out")
    assert kept.dropped == Counter(inverted=1, outside_window=2, empty_caption=1, bad_time=1, duplicate=1)
    assert kept.notes == Counter(clipped=1, overlapping=1)
    dropped = qa.clean_events(raw, 10.0, "drop")
    assert [e.caption for e in dropped.kept] == ["ok", "sticks out"]
    assert dropped.dropped["overlapping"] == 1
    assert sum(kept.dropped.values()) + len(kept.kept) == len(raw)


def test_eval_queries_follow_vtimellm():
    events = [{"start": 1.5, "end": 4.0, "caption": " A Man opens the door. "}, {"start": 2, "end": 3, "caption": ""}]
    conv, dropped = qa.eval_conversation("grounding", "vid", events)
    assert conv["queries"] == [{"id": "vid_q0", "query": "During which frames can we see a man opens the door?",
                                "sentence": "A Man opens the door.", "span": [1.5, 4.0]}]
    assert conv["benchmark"] == "grounding" and "stage" not in conv and conv["turns"] == [] and dropped == Counter(empty_caption=1)
    conv, _ = qa.eval_conversation("dvc", "vid", events)
    assert conv["queries"][0]["query"] == DVC_QUERY
    assert '{"event": "xx", "timestamps": "from xx to xx"}' in conv["queries"][0]["query"]
    assert conv["events"] == [{"span": [1.5, 4.0], "sentence": "A Man opens the door."}]
    assert qa.eval_conversation("dvc", "vid", events[1:])[0] is None


def test_key_rule_suffixes_repeated_ids_only():
    records = [{"id": "a"}, {"id": "b.mp4"}, {"id": "a"}, {"id": ""}, {"id": "a-d0"}]
    keys = [kr.key for kr in assign_keys(records)]
    assert keys == ["a-d0", "b_mp4", "a-d1", None, None]
