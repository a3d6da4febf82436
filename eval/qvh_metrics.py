"""QVHighlights metrics as pure functions, by the rules of the benchmark's standalone scorer (moment_detr,
`standalone_eval/eval.py` and `utils.py`):

Moment retrieval (per query, ground truth = its `relevant_windows`):
- only the first `MAX_WINDOWS` = 10 predicted windows are kept, in submission order (before any sorting by score);
- windows are scored as given: a window past the video's end is not clipped;
- R1@m: the FIRST listed window (not the best scored) against the ground-truth window it overlaps most; a hit when
  IoU ≥ m; share of queries, m in {0.5, 0.7};
- AP at IoU threshold t (t in 0.5, 0.55, …, 0.95): predictions sorted by score, descending, ties in submission order
  (a stable sort); each is a true positive when the ground-truth window it overlaps most among those not yet taken has
  IoU ≥ t (ground-truth windows visited by IoU, descending, the later window first among equal IoUs), else a false
  positive; AP = VOC all-point interpolated area (precision made non-increasing, summed over recall steps). mAP@t =
  mean over queries; MR-mAP = mean over the ten thresholds;
- by length: `short` (0, 10] s, `middle` (10, 30], `long` (30, 150]: a query counts in a range when one of its
  ground-truth windows has a length in it, and only those windows are its ground truth there; its predictions all
  stay. A range with no query has no figure (None).
Highlight detection (per query, 2-second clips 0 .. int(duration / 2) - 1; clips not listed score 0 for all three
annotators; a clip is positive at a level when the annotator's score ≥ 2 (Fair), 3 (Good) or 4 (VeryGood)):
- Hit@1: the clip with the highest predicted score (the first such clip on ties) is a hit when ANY of the three
  annotators marks it positive (max over annotators); a clip index past the video is a miss;
- AP per query and annotator: predicted scores cut or zero-padded to the video's clip count; all-negative labels
  give 0, all-positive 1; otherwise the average, over the distinct score levels that add a positive, of the
  interpolated precision there (the highest precision at that or any lower score level); HL-mAP = mean over queries
  and annotators.
Figures are percentages rounded to 2 decimals as the scorer prints them (format, not banker's tricks: f"{x:.2f}").

Where the reference breaks or returns NaN, this module decides (and docs/eval.md says so): a query with no
predicted windows is AP 0 and an R1 miss (the reference drops it from mAP and fails at R1); an empty saliency list is
all zeros for AP and a Hit@1 miss; a window with end ≤ start has IoU 0 with everything.
"""
from __future__ import annotations

from typing import Mapping, Sequence

Window = tuple[float, float]
ScoredWindow = tuple[float, float, float]

MAX_WINDOWS = 10
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
R1_THRESHOLDS = (0.5, 0.7)
LENGTH_RANGES = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0)}
"""(low, high]: a ground-truth window of length l is in a range when low < l ≤ high."""
SALIENCY_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}
CLIP_SECONDS = 2.0


def percent(x: float | None) -> float | None:
    """A fraction as the scorer reports it: percent, 2 decimals."""
    return None if x is None else float(f"{100 * x:.2f}")


def window_iou(a: Window, b: Window) -> float:
    """IoU of two windows, union = the two lengths minus the overlap; 0 when a window is empty or reversed."""
    if not (a[0] < a[1] and b[0] < b[1]):
        return 0.0
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def voc_ap(hits: Sequence[bool], n_gt: int) -> float:
    """VOC all-point interpolated AP of a ranked list of hits against `n_gt` ground-truth items."""
    precision, recall, tp = [], [], 0
    for k, hit in enumerate(hits, 1):
        tp += bool(hit)
        precision.append(tp / k)
        recall.append(tp / n_gt)
    p = [0.0, *precision, 0.0]
    r = [0.0, *recall, 1.0]
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    return sum((r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1])


def query_ap(gts: Sequence[Window], preds: Sequence[ScoredWindow],
             thresholds: Sequence[float] = IOU_THRESHOLDS) -> list[float]:
    """AP of one query at each IoU threshold; `preds` already cut to the kept windows."""
    if not preds or not gts:
        return [0.0] * len(thresholds)
    ranked = sorted(preds, key=lambda w: -w[2])  # stable: equal scores keep their submission order
    ious = [[window_iou((s, e), g) for g in gts] for s, e, _ in ranked]
    out = []
    for t in thresholds:
        taken: set[int] = set()
        hits = []
        for row in ious:
            hit = False
            for j in sorted(range(len(gts)), key=row.__getitem__)[::-1]:  # not reverse=True: later first on ties
                if row[j] < t:
                    break
                if j not in taken:
                    taken.add(j)
                    hit = True
                    break
            hits.append(hit)
        out.append(voc_ap(hits, len(gts)))
    return out


def top1_iou(gts: Sequence[Window], preds: Sequence[ScoredWindow]) -> float:
    """IoU of the first listed window with the ground-truth window it overlaps most (0 with no prediction)."""
    if not preds:
        return 0.0
    return max(window_iou(preds[0][:2], g) for g in gts)


def in_range(gts: Sequence[Window], low: float, high: float) -> list[Window]:
    return [w for w in gts if low < w[1] - w[0] <= high]


def _mr_block(gts: Mapping[str, Sequence[Window]], preds: Mapping[str, Sequence[ScoredWindow] | None]) -> dict:
    """mAP per threshold, their mean and R1 (fractions) over `gts`' queries; a query absent from `preds` (None)
    scores 0 everywhere."""
    if not gts:
        return {"mAP": None, **{f"mAP@{t}": None for t in IOU_THRESHOLDS}, **{f"R1@{m}": None for m in R1_THRESHOLDS}}
    aps, top = [], []
    for qid, windows in gts.items():
        kept = list(preds.get(qid) or [])[:MAX_WINDOWS]
        aps.append(query_ap(windows, kept))
        top.append(top1_iou(windows, kept))
    by_t = [sum(a[i] for a in aps) / len(aps) for i in range(len(IOU_THRESHOLDS))]
    out = {f"mAP@{t}": v for t, v in zip(IOU_THRESHOLDS, by_t)}
    out["mAP"] = sum(by_t) / len(by_t)
    out.update({f"R1@{m}": sum(x >= m for x in top) / len(top) for m in R1_THRESHOLDS})
    return out


def moment_retrieval(gts: Mapping[str, Sequence[Window]], preds: Mapping[str, Sequence[ScoredWindow] | None]) -> dict:
    """The scorer's MR brief keys (percent) plus `MR-<range>-n` (queries in each length range)."""
    full = _mr_block(gts, preds)
    out = {"MR-full-R1@0.5": percent(full["R1@0.5"]), "MR-full-R1@0.7": percent(full["R1@0.7"]),
           "MR-full-mAP": percent(full["mAP"]), "MR-full-mAP@0.5": percent(full["mAP@0.5"]),
           "MR-full-mAP@0.75": percent(full["mAP@0.75"])}
    for name, (low, high) in LENGTH_RANGES.items():
        sub = {q: w for q, ws in gts.items() if (w := in_range(ws, low, high))}
        out[f"MR-{name}-mAP"] = percent(_mr_block(sub, preds)["mAP"])
        out[f"MR-{name}-n"] = len(sub)
    return out


def clip_labels(duration: float, clip_ids: Sequence[int], saliency: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Per 2-second clip of the video, the three annotators' scores (0 for clips not listed)."""
    labels = [(0, 0, 0)] * int(duration / CLIP_SECONDS)
    for c, row in zip(clip_ids, saliency):
        labels[c] = tuple(row)
    return labels


def saliency_ap(positive: Sequence[bool], scores: Sequence[float]) -> float:
    """AP of predicted clip scores against one annotator's binary labels (same length), the scorer's rule."""
    if all(positive) or not any(positive):
        return float(bool(positive) and positive[0])
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    groups: list[tuple[int, int]] = []  # cumulative (true positives, predicted positives) per distinct score
    tp = 0
    for k, i in enumerate(order):
        tp += bool(positive[i])
        if k + 1 == len(order) or scores[order[k + 1]] != scores[i]:
            groups.append((tp, k + 1))
    precision = [t / n for t, n in groups]
    best, interpolated = 0.0, [0.0] * len(groups)
    for g in range(len(groups) - 1, -1, -1):  # the best precision at this or any lower score level
        best = max(best, precision[g])
        interpolated[g] = best
    steps = [g for g in range(len(groups)) if groups[g][0] > (groups[g - 1][0] if g else 0)]
    return sum(interpolated[g] for g in steps) / len(steps)


def fit_scores(scores: Sequence[float], n_clips: int) -> list[float]:
    """Predicted scores cut or zero-padded to the video's clip count."""
    return [float(x) for x in scores[:n_clips]] + [0.0] * max(0, n_clips - len(scores))


def highlight_detection(labels: Mapping[str, Sequence[Sequence[int]]], preds: Mapping[str, Sequence[float] | None]
                        ) -> dict:
    """`HL-min-<level>-mAP` and `-Hit1` (percent) over the queries of `labels`; a query absent from `preds` (None)
    scores 0."""
    out = {}
    for name, level in SALIENCY_LEVELS.items():
        aps, hits = [], []
        for qid, clips in labels.items():
            scores = preds.get(qid)
            if scores is None:
                aps += [0.0] * 3
                hits.append(False)
                continue
            padded = fit_scores(scores, len(clips))
            aps += [saliency_ap([c[a] >= level for c in clips], padded) for a in range(3)]
            top = max(range(len(scores)), key=lambda i: (scores[i], -i)) if len(scores) else None
            hits.append(top is not None and top < len(clips) and max(clips[top]) >= level)
        out[f"HL-min-{name}-mAP"] = percent(sum(aps) / len(aps)) if aps else None
        out[f"HL-min-{name}-Hit1"] = percent(sum(hits) / len(hits)) if hits else None
    return out
