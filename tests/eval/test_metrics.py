"""Golden tests for eval.metrics: hand-computed values, and the language scores equal pycocoevalcap called directly."""
import shutil

import pytest

from eval.metrics import (
    densevid_iou,
    dvc_metrics,
    f_measure,
    grounding_metrics,
    match_pairs,
    ordered_assignment,
    shared_scorer,
    soda_c,
    temporal_iou,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")


def test_temporal_iou_hand_values():
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(1 / 3)  # overlap 5, union 15
    assert temporal_iou((0, 10), (0, 10)) == 1.0
    assert temporal_iou((0, 10), (20, 30)) == 0.0
    assert temporal_iou((2, 4), (0, 10)) == pytest.approx(0.2)
    assert temporal_iou((60, 20), (10, 70)) == 0.0  # reversed prediction: intersection clamps at 0
    assert temporal_iou((5, 5), (5, 5)) == 0.0  # empty spans


def test_grounding_metrics_five_queries():
    # IoUs 0.8, 0.55, 0.3, 0.1 and one unparsable answer (None → 0).
    # R1@0.3: 0.8, 0.55, 0.3 → 3/5 = 60 %; R1@0.5: 0.8, 0.55 → 40 %; R1@0.7: 0.8 → 20 %.
    # mIoU = (0.8 + 0.55 + 0.3 + 0.1 + 0) / 5 = 1.75 / 5 = 0.35 → 35 %; unparsed 1/5 = 20 %.
    m = grounding_metrics([0.8, 0.55, 0.3, 0.1, None])
    assert m["R1@0.3"] == pytest.approx(60.0)
    assert m["R1@0.5"] == pytest.approx(40.0)
    assert m["R1@0.7"] == pytest.approx(20.0)
    assert m["mIoU"] == pytest.approx(35.0)
    assert m["n"] == 5 and m["unparsed"] == pytest.approx(20.0)
    assert set(m) == {"R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "n", "unparsed"}


def test_grounding_iou_rounded_like_the_reference():
    # 0.496 rounds to 0.50 before thresholding (VTimeLLM rounds each IoU to 2 decimals).
    assert grounding_metrics([0.496])["R1@0.5"] == 100.0
    assert grounding_metrics([0.494])["R1@0.5"] == 0.0
    with pytest.raises(ValueError):
        grounding_metrics([])


def test_ordered_assignment_forbids_crossings():
    total, pairs = ordered_assignment([[0, 1], [1, 0]])  # the two 1s cross: only one may be taken
    assert total == 1 and len(pairs) == 1
    total, pairs = ordered_assignment([[1, 0, 0], [0, 0.5, 2]])
    assert total == 3 and pairs == [(0, 0), (1, 2)]
    assert ordered_assignment([]) == (0.0, [])


def test_soda_c_two_video_toy_case_by_hand():
    # Sentence score: 1 for identical sentences, else 0 (stands in for METEOR so the arithmetic is exact).
    exact = lambda gts, preds: [[1.0 if g == p else 0.0 for p in preds] for g in gts]  # noqa: E731
    gts = {"A": [((0, 10), "a dog runs"), ((10, 20), "a cat sleeps")],
           "B": [((0, 30), "people dance")]}
    preds = {"A": [((5, 20), "a cat sleeps"), ((0, 10), "a dog runs")],  # unsorted on purpose
             "B": [((0, 15), "people dance"), ((15, 30), "people dance")]}
    # Video A (sorted preds p1=[0,10] "dog", p2=[5,20] "cat"):
    #   IoU(g1,p1)=1, IoU(g2,p2)=10/15=2/3; the sentence mask keeps only those two cells.
    #   best ordered total = 1 + 2/3 = 5/3; P = (5/3)/2 = 5/6, R = (5/3)/2 = 5/6, F = 5/6.
    # Video B: g1 vs p1 IoU 15/30 = 0.5, vs p2 0.5; one event can take one prediction → total 0.5.
    #   P = 0.5/2 = 1/4, R = 0.5/1 = 1/2, F = 2·(1/4)(1/2)/(3/4) = 1/3.
    # SODA_c = (5/6 + 1/3) / 2 = 7/12.
    assert soda_c(preds, gts, exact) == pytest.approx(7 / 12, abs=1e-6)
    assert f_measure(0.5, 2, 1) == pytest.approx(1 / 3)
    # A video whose answer was unparsable (no events) scores 0 and still counts.
    assert soda_c({**preds, "C": []}, {**gts, "C": [((0, 1), "x")]}, exact) == pytest.approx(7 / 18, abs=1e-6)


def test_densevid_iou_matches_plain_iou_on_overlaps():
    assert densevid_iou((0, 10), (5, 15)) == pytest.approx(1 / 3)
    assert densevid_iou((0, 10), (20, 30)) == 0.0


@pytest.fixture(scope="module")
def scorer():
    if shutil.which("java") is None:
        pytest.skip("METEOR and the PTB tokenizer need Java (make setup installs a headless JRE)")
    return shared_scorer()


@needs_java
def test_caption_scores_equal_pycocoevalcap_direct(scorer):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    hyps = ["A man is playing a guitar on stage.", "Two dogs run across the field.", "she cuts the onions"]
    refs = ["A man plays the guitar.", "Dogs are running in a grassy field.", "A woman is chopping onions."]
    n = len(hyps)
    both = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(hyps + refs)})  # one Java start
    res = {i: both[i] for i in range(n)}
    gts = {i: both[n + i] for i in range(n)}
    direct_cider = Cider().compute_score(gts, res)[0]
    direct_meteor = Meteor().compute_score(gts, res)[0]
    direct_bleu = Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    toks = scorer.tokenize(hyps + refs)
    assert toks == [both[i][0] for i in range(2 * n)]
    ours = scorer.corpus(list(zip(toks[:n], toks[n:])))
    assert ours["CIDEr"] == pytest.approx(direct_cider)
    assert ours["METEOR"] == pytest.approx(direct_meteor)
    assert ours["BLEU4"] == pytest.approx(direct_bleu)
    assert 0 < ours["METEOR"] < 1


@needs_java
def test_dvc_metrics_follow_the_matching_protocol(scorer):
    import random

    gts = {"v": [((0, 10), "a man opens the door"), ((10, 30), "the man sits on a chair")]}
    # p1 overlaps g1 with IoU 8/10 = 0.8 only; p2 overlaps g2 with IoU 12/20 = 0.6 only.
    preds = {"v": [((0, 8), "a man opens a door"), ((10, 22), "a man sits down")]}
    m = dvc_metrics(preds, gts, scorer)
    assert set(m) == {"SODA_c", "CIDEr", "METEOR", "BLEU4", "n", "unparsed"} and m["n"] == 1
    # Recompute by hand: at tIoU 0.3 and 0.5 both predictions are paired with their event; at 0.7 only p1 is, p2 is
    # paired with a random string; at 0.9 both are (nothing in common with a random string: METEOR 0).
    toks = scorer.tokenize(["a man opens a door", "a man sits down", "a man opens the door", "the man sits on a chair"])
    tp = [((0, 8), toks[0]), ((10, 22), toks[1])]
    tg = [((0, 10), toks[2]), ((10, 30), toks[3])]
    rng = random.Random(0)
    per_tiou = [scorer.corpus(match_pairs(tp, tg, t, rng))["METEOR"] for t in (0.3, 0.5, 0.7, 0.9)]
    assert per_tiou[0] == per_tiou[1] and per_tiou[2] != per_tiou[0] and per_tiou[3] == 0
    assert m["METEOR"] == pytest.approx(100 * sum(per_tiou) / 4)
    # SODA_c with the METEOR matrix: ordered pairs (g1,p1), (g2,p2); F = total/2 since both sides have 2 events.
    mm = scorer.meteor_matrix([s for _, s in tg], [s for _, s in tp])
    total = 0.8 * mm[0][0] + 0.6 * mm[1][1]
    assert m["SODA_c"] == pytest.approx(100 * total / 2, rel=1e-6)
    with pytest.raises(ValueError, match="no ground truth"):
        dvc_metrics({"other": []}, gts, scorer)


@needs_java
def test_soda_c_toy_case_with_real_meteor(scorer):
    # The toy case above with sentences that share no word: METEOR is 1 for identical sentences and 0 across them
    # (checked below), so the hand arithmetic holds with the real scorer: SODA_c = (5/6 + 1/3) / 2 = 7/12.
    gts = {"A": [((0, 10), "dog runs fast"), ((10, 20), "cat sleeps quietly")], "B": [((0, 30), "people dance")]}
    preds = {"A": [((0, 10), "dog runs fast"), ((5, 20), "cat sleeps quietly")],
             "B": [((0, 15), "people dance"), ((15, 30), "people dance")]}
    assert scorer.meteor_matrix(["dog runs fast", "cat sleeps quietly"], ["dog runs fast", "cat sleeps quietly"]) \
        == [[1.0, 0.0], [0.0, 1.0]]
    assert dvc_metrics(preds, gts, scorer)["SODA_c"] == pytest.approx(100 * 7 / 12, abs=1e-4)
