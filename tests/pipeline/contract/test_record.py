"""The conversation.json record and the eval queries as contract functions: constructors, readers that accept the
keys of shards built before the glossary rename, one turn validator behind every check, and the query round trip."""
from __future__ import annotations

import pytest

from pipeline.contract.conversation import check_turns, turns_problem, video_turn
from pipeline.contract.queries import (
    BENCHMARKS,
    DVC_QUERY,
    GROUNDING_QUERY_RE,
    grounding_query,
    normalize_sentence,
    query_sentence,
)
from pipeline.contract.record import (
    eval_record,
    record_benchmark,
    record_form,
    record_problem,
    record_stage,
    training_record,
)
from pipeline.qa.dialogues import RecordError
from pipeline.qa.dialogues import check_turns as dialogue_turns

TURNS = [video_turn("What happens?"), {"from": "gpt", "value": "From 10 to 25."}]
OLD_TRAINING = {"turns": TURNS, "stage": 2, "task": "multi_turn", "templates": ["T1"], "seed": 0, "source": "build-qa"}
OLD_EVAL = {"stage": "eval", "task": "dvc", "turns": [], "queries": [{"id": "v_q0", "query": DVC_QUERY}]}


def test_records_say_stage_form_and_benchmark():
    rec = training_record(TURNS, 2, "multi_turn", ["T1"], 0)
    assert rec == {"turns": TURNS, "stage": 2, "form": "multi_turn", "templates": ["T1"], "seed": 0,
                   "source": "build-qa"}
    assert (record_stage(rec), record_form(rec), record_benchmark(rec), record_problem(rec)) == (2, "multi_turn",
                                                                                                  None, None)
    ev = eval_record("grounding", [{"id": "v_q0", "query": grounding_query("A dog.")}])
    assert "stage" not in ev and "task" not in ev and ev["turns"] == []
    assert (record_stage(ev), record_form(ev), record_benchmark(ev), record_problem(ev)) == (None, "grounding",
                                                                                             "grounding", None)
    assert eval_record("dvc", [], events=[])["events"] == []


def test_old_shards_keys_are_still_read():
    assert (record_stage(OLD_TRAINING), record_form(OLD_TRAINING), record_benchmark(OLD_TRAINING)) == (2, "multi_turn",
                                                                                                       None)
    assert (record_stage(OLD_EVAL), record_form(OLD_EVAL), record_benchmark(OLD_EVAL)) == (None, "dvc", "dvc")
    assert record_problem(OLD_TRAINING) is None and record_problem(OLD_EVAL) is None


@pytest.mark.parametrize("turns, match", [
    ([], "no turns"),
    ([{"from": "gpt", "value": "<video>\na"}, {"from": "gpt", "value": "b"}], "alternate"),
    (["not a turn", {"from": "gpt", "value": "b"}], "alternate"),
    ([video_turn("q"), {"from": "gpt", "value": 3}], "no text value"),
    ([video_turn("q")], "end with a gpt turn"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "exactly once"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, video_turn("r"), {"from": "gpt", "value": "b"}],
     "first human turn"),
])
def test_one_turn_validator_behind_every_check(turns, match):
    """The trainer (check_turns), inspect --verify (record_problem) and the dialogue reader say the same thing."""
    assert match in turns_problem(turns)
    with pytest.raises(ValueError, match=match):
        check_turns(turns)
    assert match in record_problem({"turns": turns, "stage": 3, "form": "dialogue"})
    if match not in ("exactly once", "first human turn"):  # the reader places <video> itself, afterwards
        with pytest.raises(RecordError, match=match):
            dialogue_turns(turns)


def test_record_problem_wants_video_at_the_start():
    turns = [{"from": "human", "value": "What happens? <video>"}, {"from": "gpt", "value": "a"}]
    assert turns_problem(turns) is None and "does not start with" in record_problem({"turns": turns})
    assert record_problem({"benchmark": "grounding", "turns": []}) == "eval sample without a 'queries' list"
    assert record_problem([]) == "not an object with a 'turns' list"


def test_generation_prompts_end_with_a_human_turn():
    assert turns_problem(TURNS[:1], ending="human") is None
    assert "end with a human turn" in turns_problem(TURNS, ending="human")
    assert turns_problem(TURNS[:1], ending=None) is None and turns_problem(TURNS, ending=None) is None


def test_grounding_query_round_trip():
    assert BENCHMARKS == ("grounding", "dvc")
    assert normalize_sentence("  A Man opens the door. ") == "a man opens the door"
    assert normalize_sentence("Why?") == "why?" and normalize_sentence("end..") == "end."
    query = grounding_query(" A Man opens the door. ")
    assert query == "During which frames can we see a man opens the door?"
    assert GROUNDING_QUERY_RE.match(query).group(1) == "a man opens the door"
    assert query_sentence(query) == "a man opens the door"
    assert query_sentence("Some other question.") == "some other question"
    assert DVC_QUERY.endswith('{"event": "xx", "timestamps": "from xx to xx"}.')


def test_real_activitynet_sentence_ending_in_space_period_round_trips():
    # ActivityNet Captions train, v_08ItAtlb60Q, verbatim (a space before the final period)
    sentence = " Men on their bikes are waiting to start a race ."
    assert normalize_sentence(sentence) == "men on their bikes are waiting to start a race"
    assert query_sentence(grounding_query(sentence)) == normalize_sentence(sentence)
