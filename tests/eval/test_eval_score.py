"""`vtl-eval score` on the real Charades-STA excerpt with predictions written here, plus the input checks."""
import csv
import json
import shutil

import pytest
from support.real_data import REAL
from typer.testing import CliRunner

from eval.cli import app
from eval.score import read_predictions, read_truth

STA = REAL / "charades_sta_train_sample.txt"
CSV = REAL / "Charades_v1_train_sample.csv"
pytestmark = pytest.mark.skipif(not STA.is_file(), reason="real Charades-STA excerpt not present")


def _first_queries(n):
    """The first n queries (None: all) of the excerpt whose video has a duration, read independently of the readers."""
    lengths = {r["id"]: float(r["length"]) for r in csv.DictReader(open(CSV))}
    out = []
    for line in open(STA):
        head, _, sentence = line.rstrip("\n").partition("##")
        vid, s, e = head.split()
        if vid in lengths:
            out.append((vid, float(s), float(e), sentence, lengths[vid]))
        if len(out) == n:
            return out
    if n is None:
        return out
    raise AssertionError("excerpt too short")


def _iou(p, g):
    inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
    return inter / (max(p[1], g[1]) - min(p[0], g[0]))


def test_score_grounding_on_charades_excerpt(tmp_path):
    q = _first_queries(6)
    lines, ious = [], []
    # 0: answer text with the GT quantised to the 0–99 scale → IoU of (a/100·D, b/100·D) with the GT
    vid, s, e, sent, d = q[0]
    a, b = min(round(s / d * 100), 99), min(round(e / d * 100), 99)
    lines.append({"video": vid, "query": f"During which frames can we see {sent.lower().rstrip('.')}?",
                  "answer": f"The event happens from {a:02d} to {b:02d}."})
    ious.append(round(_iou((a / 100 * d, b / 100 * d), (s, e)), 2))
    # 1: unparsable
    vid, s, e, sent, d = q[1]
    lines.append({"video": vid, "query": sent, "answer": "I am not sure."})
    ious.append(0.0)
    # 2: a span in seconds (another system's output), exactly the GT → IoU 1
    vid, s, e, sent, d = q[2]
    lines.append({"video": vid, "query": sent, "span": [s, e]})
    ious.append(1.0)
    # 3: reversed answer → IoU 0
    vid, s, e, sent, d = q[3]
    lines.append({"video": vid, "query": sent, "answer": "From 90 to 10."})
    ious.append(0.0)
    # 4: the whole video
    vid, s, e, sent, d = q[4]
    lines.append({"video": vid, "sentence": sent, "answer": "00 to 99"})
    ious.append(round(_iou((0.0, 0.99 * d), (s, e)), 2))
    pred = tmp_path / "predictions.jsonl"
    pred.write_text("".join(json.dumps(x) + "\n" for x in lines))

    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred), "--annotations",
                                   str(STA), "--durations", str(CSV), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    reported = set(m) - {"scoring", "lenient", "missing", "missing_queries", "missing_rule"}
    assert m["scoring"] == "vtimellm" and set(m["lenient"]) - {"rules"} == reported
    assert reported == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "n", "unparsed"}
    assert m["n"] == 5 and m["unparsed"] == pytest.approx(20.0)
    # the excerpt's other queries have no prediction: scored over the 5, the rest counted and warned about
    assert m["missing"] == len(_first_queries(None)) - 5 and len(m["missing_queries"]) == 20
    pairs = {(x[0], x[3].lower().rstrip(".")) for x in _first_queries(None)}
    listed = {tuple(x) for x in m["missing_queries"]}
    assert listed <= pairs and not listed & {(x[0], x[3].lower().rstrip(".")) for x in q[:5]}
    assert f"warning: {m['missing']} annotated queries" in res.output
    assert m["mIoU"] == pytest.approx(100 * sum(ious) / 5)
    for t in (0.3, 0.5, 0.7):
        assert m[f"R1@{t}"] == pytest.approx(100 * sum(i >= t for i in ious) / 5)
    assert (tmp_path / "out" / "grounding.png").stat().st_size > 1000
    run = json.loads((tmp_path / "out" / "run_config.json").read_text())
    assert run["producer"]["name"] == "vtl" and run["config"]["benchmark"] == "grounding"


def test_score_rejects_bad_input_clearly(tmp_path):
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"video": "AO8RW", "query": "x", "answer": "00 to 10"}\nnot json\n')
    with pytest.raises(ValueError, match=":2: not JSON"):
        read_predictions(pred, "grounding")
    pred.write_text('{"video": "AO8RW", "query": "x"}\n')
    with pytest.raises(ValueError, match="needs 'answer' or 'span'"):
        read_predictions(pred, "grounding")
    pred.write_text('{"video": "NOPE1", "query": "a person is putting a book on a shelf.", "answer": "00 to 10"}\n')
    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred), "--annotations",
                                   str(STA), "--durations", str(CSV)])
    assert res.exit_code == 2 and "NOPE1" in res.output
    pred.write_text('{"video": "AO8RW", "query": "a sentence nobody wrote", "answer": "00 to 10"}\n')
    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred), "--annotations",
                                   str(STA), "--durations", str(CSV)])
    assert res.exit_code == 2 and "a sentence nobody wrote" in res.output


def test_truth_indexed_by_source_id_with_durations():
    truth = read_truth(STA, durations=CSV)
    vid, s, e, sent, d = _first_queries(1)[0]
    assert truth[vid].duration == pytest.approx(d)
    assert ((s, e), sent) in [(tuple(span), text) for span, text in truth[vid].events]


ANET = REAL / "activitynet_captions_train_sample.json"


@pytest.mark.skipif(shutil.which("java") is None or not ANET.is_file(), reason="needs Java and the ActivityNet excerpt")
def test_score_dvc_on_activitynet_excerpt(tmp_path):
    data = json.loads(ANET.read_text())
    (v1, a1), (v2, _) = list(data.items())[:2]
    d = a1["duration"]
    # Video 1: the ground truth written as the model would (JSON, two-digit positions); video 2: unparsable.
    items = [{"event": s.strip(), "timestamps": f"from {min(round(a / d * 100), 99):02d} to "
                                                f"{max(min(round(b / d * 100), 99) - 1, 0):02d}"}
             for (a, b), s in zip(a1["timestamps"], a1["sentences"])]
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"video": v1, "query": "describe", "answer": json.dumps(items)}) + "\n"
                    + json.dumps({"video": v2, "query": "describe", "answer": "A video."}) + "\n")
    res = CliRunner().invoke(app, ["score", "--benchmark", "dvc", "--predictions", str(pred), "--annotations", str(ANET)])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    reported = set(m) - {"scoring", "lenient", "missing", "missing_videos", "missing_rule"}
    assert m["scoring"] == "vtimellm" and set(m["lenient"]) - {"rules"} == reported
    assert reported == {"SODA_c", "CIDEr", "METEOR", "BLEU4", "n", "unparsed"}
    assert m["missing"] == len(data) - 2
    assert m["n"] == 2 and m["unparsed"] == pytest.approx(50.0)
    # Video 1 repeats its ground truth: its METEOR is high at every tIoU; video 2 scores 0; the mean is ~half.
    assert 25 < m["METEOR"] <= 50 and 25 < m["SODA_c"] <= 50
    assert (tmp_path / "dvc.png").is_file()


def test_score_against_a_manifest_parquet(tmp_path):
    from manifests import read_dataset
    from manifests.schema import write_manifest

    manifest = write_manifest(read_dataset("charades", STA, durations=CSV), tmp_path / "m.parquet", {"test": True})
    vid, s, e, sent, d = _first_queries(1)[0]
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"video": vid, "query": sent, "span": [s, e]}) + "\n")
    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred),
                                   "--annotations", str(manifest)])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["mIoU"] == 100.0 and m["n"] == 1 and m["unparsed"] == 0.0


def test_missing_queries_and_videos_are_counted_once_per_video():
    from eval.score import Truth, missing_queries, missing_videos

    t = Truth(10.0, (((0.0, 5.0), "A man runs."), ((5.0, 9.0), "a man runs"), ((1.0, 2.0), "a dog")))
    truth = {"src": t, "key": t, "other": Truth(5.0, (((0.0, 1.0), "x"),))}  # source id and key share one video
    records = [{"video": "key", "sentence": "a man runs"}]
    assert missing_queries(records, truth) == [["src", "a man runs"], ["src", "a dog"], ["other", "x"]]
    assert missing_videos({"key": []}, truth) == ["other"]


def test_malformed_spans_and_events_are_named():
    from eval.score import Truth, score

    truth = {"v": Truth(10.0, (((0.0, 5.0), "a man runs"),))}
    with pytest.raises(ValueError, match="a span must be"):
        score("grounding", [{"video": "v", "query": "a man runs", "span": [1]}], truth)
    with pytest.raises(ValueError, match="events must be"):
        score("dvc", [{"video": "v", "events": [{"start": 0}]}], truth)


def test_query_only_prediction_on_a_sentence_ending_in_space_period(tmp_path):
    anet = REAL / "activitynet_captions_train_sample.json"
    vid, sentence = "v_08ItAtlb60Q", " Men on their bikes are waiting to start a race ."
    assert sentence in json.loads(anet.read_text())[vid]["sentences"]
    pred = tmp_path / "pred.jsonl"
    query = f"During which frames can we see {sentence.strip().lower()[:-1].rstrip()}?"
    pred.write_text(json.dumps({"video": vid, "query": query, "answer": "From 00 to 10."}) + "\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["score", "--benchmark", "grounding", "--predictions", str(pred),
                                   "--annotations", str(anet), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["n"] == 1
