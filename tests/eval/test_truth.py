"""The compact ground truth (`eval.truth`) reads back exactly what the manifest readers give, on real excerpts."""
import pytest
from support.real_data import REAL

from eval.score import Truth, read_truth
from eval.truth import Events, EventStore, unique_names
from manifests import read_dataset
from manifests.common import unique_keys
from manifests.schema import ManifestRow, ReadResult

CASES = [("charades", "charades_sta_train_sample.txt", "Charades_v1_train_sample.csv"),
         ("activitynet", "activitynet_captions_train_sample.json", None),
         ("didemo", "didemo_test_sample.json", None)]


@pytest.mark.parametrize("dataset,name,durations", CASES)
def test_compact_truth_equals_the_readers_rows(dataset, name, durations):
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real excerpt {name} not present")
    dur = REAL / durations if durations else None
    try:
        rows = read_dataset(dataset, path, durations=dur).rows
    except ValueError as exc:  # e.g. DiDeMo without durations: the same refusal
        with pytest.raises(ValueError, match="duration"):
            read_truth(path, dataset, dur)
        pytest.skip(str(exc))
    rows = [r for r in rows if r.duration]
    truth = read_truth(path, dataset, dur)
    expected = {}
    for row in rows:
        t = (float(row.duration), tuple(((e.start, e.end), e.caption) for e in row.events))
        for vid in dict.fromkeys((row.source_id or row.key, row.key)):
            expected[vid] = t
    assert list(truth) == list(expected)
    for vid, (duration, events) in expected.items():
        got = truth[vid]
        assert got.duration == duration and tuple(got.events) == events and got.events == events
        assert [type(x) for span, _ in got.events for x in span] == [type(x) for span, _ in events for x in span]
        assert len(got.events) == len(events) and got.events[-1] == events[-1]


def test_events_keep_ints_unicode_and_order():
    store = EventStore()
    store.add(3, 4.5, "un café ☕")
    store.add(0.1, 7, "b")
    t = Truth(9.0, Events(store, 0, 2))
    assert tuple(t.events) == (((3, 4.5), "un café ☕"), ((0.1, 7), "b"))
    assert type(t.events[0][0][0]) is int and type(t.events[1][0][0]) is float
    assert t.events[-1] == ((0.1, 7), "b") and t.events[:1] == (((3, 4.5), "un café ☕"),)
    with pytest.raises(IndexError):
        t.events[2]
    assert hash(t) == hash(Truth(9.0, tuple(t.events)))


def test_unique_names_follow_the_manifest_rule():
    keys = ["a", "b", "a", "a_2", "a", "b"]
    rows = [ManifestRow(key=k, dataset="x", kind="video", media="m") for k in keys]
    assert unique_names(keys) == [r.key for r in unique_keys(ReadResult(rows, [], {})).rows]
