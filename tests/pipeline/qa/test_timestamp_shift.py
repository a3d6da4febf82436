"""The test-only misalignment switch of build-qa moves rendered timestamps and nothing else."""
from pipeline.qa import rules as qa


def test_shift_moves_two_digit_timestamps_and_clamps():
    conv = {"turns": [{"from": "human", "value": "<video>\nWhat happens from 05 to 40 in the video?"},
                      {"from": "gpt", "value": "From 00 to 95. A red square appears."}], "stage": 2}
    shifted = qa.shift_timestamps(conv, 10)
    assert shifted["turns"][0]["value"] == "<video>\nWhat happens from 15 to 50 in the video?"
    assert shifted["turns"][1]["value"] == "From 10 to 99. A red square appears."
    assert shifted["timestamp_shift"] == 10
    assert conv["turns"][1]["value"] == "From 00 to 95. A red square appears."  # input untouched


def test_shift_leaves_other_numbers():
    conv = {"turns": [{"from": "gpt", "value": "100 frames, 7 events, 2024."}]}
    assert qa.shift_timestamps(conv, 10)["turns"][0]["value"] == "100 frames, 7 events, 2024."
