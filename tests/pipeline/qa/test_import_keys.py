"""import-vtimellm's bounded key bookkeeping gives the same keys as the list rule (pipeline.qa.dialogues)."""
import random

from pipeline.qa.dialogues import assign_keys
from pipeline.qa.import_keys import KeyCounts, iter_keyed_bounded


def _bounded(records):
    counts = KeyCounts()
    for r in records:
        from pipeline.qa.dialogues import _video_key

        if (k := _video_key(r)) is not None:
            counts.add(k)
    counts.settle(lambda: records)
    return [(kr.key, kr.video_key, kr.position) for kr in iter_keyed_bounded(records, counts)]


def test_same_keys_as_the_list_rule_with_duplicates_and_clashing_ids():
    rng = random.Random(3)
    ids = ["a", "a", "a-d0", "b", "a-d1", "c-d0", "c", "c", 7, None, "", "x/y", "x_y", "b-d0"]
    ids += [f"v{rng.randrange(40)}" for _ in range(300)] + [f"v{rng.randrange(40)}-d{rng.randrange(3)}" for _ in range(50)]
    rng.shuffle(ids)
    records = [{"id": i} if i is not None else {} for i in ids] + ["not a dict"]
    expected = [(kr.key, kr.video_key, kr.position) for kr in assign_keys(records)]
    assert _bounded(records) == expected
    assert any(k is None for k, v, _ in expected if v is not None)  # a clash was refused


def test_unique_ids_keep_nothing_per_record():
    counts = KeyCounts()
    for i in range(1000):
        counts.add(f"id{i}")
    counts.settle(lambda: (_ for _ in ()).throw(AssertionError("no second pass without repeats")))
    assert not counts.repeated and not counts.exact and counts["id5"] == 1
