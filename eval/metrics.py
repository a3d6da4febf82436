"""Evaluation metrics as pure functions: temporal IoU, grounding recall/mIoU, dense-captioning scores and SODA_c.

Protocols follow the scorers VTimeLLM reports with (reference §6.1–6.2):
- grounding: IoU per query rounded to 2 decimals, R1@m = share of queries with IoU ≥ m, mIoU = mean IoU, both ×100;
  an unparsable answer is a miss (IoU 0) and is counted;
- dense captioning (ActivityNet Captions protocol): at each tIoU in {0.3, 0.5, 0.7, 0.9} every predicted event is
  paired with every ground-truth event it overlaps by ≥ tIoU (a prediction that overlaps none is paired with a random
  string); CIDEr / METEOR / BLEU-4 over a video's pairs, averaged over videos, then over tIoUs;
- SODA_c: per video, the optimal order-preserving assignment of predictions to ground-truth events maximising
  Σ IoU·METEOR (dynamic programming), F-measure of precision = total / #predictions and recall = total / #events,
  averaged over videos.

The language scorers come from pycocoevalcap (METEOR and the PTB tokenizer run Java); `CaptionScorer` wraps them so a
run starts the METEOR process once. Everything else here is plain Python on plain values.
"""
from __future__ import annotations

import functools
import random
import string
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Span = tuple[float, float]
Event = tuple[Span, str]
"""A dense-captioning event: ((start_s, end_s), sentence)."""

GROUNDING_THRESHOLDS = (0.3, 0.5, 0.7)
DVC_TIOUS = (0.3, 0.5, 0.7, 0.9)
MAX_PROPOSALS = 1000
"""Predictions per video kept by the dense-captioning scorer (ActivityNet Captions protocol)."""


def temporal_iou(a: Span, b: Span) -> float:
    """Intersection over union of two time spans; 0 for disjoint, empty or reversed spans (intersection is clamped)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def vtimellm_iou(pred: Span, gt: Span) -> float:
    """VTimeLLM's grounding IoU (its eval.py): both spans as fractions of the video (answer positions / 100, ground
    truth seconds / duration), rounded to 2 decimals. Fractions, not seconds, because the float at an edge decides
    the rounding: positions 2–40 against 3–15 s of 30 s give 0.6250000000000001 → 0.63 here, 0.625 → 0.62 in seconds.
    """
    return round(temporal_iou(pred, gt), 2)


def grounding_metrics(ious: Sequence[float | None], decimals: int | None = 2) -> dict:
    """R1@{0.3,0.5,0.7} and mIoU in percent from per-query IoUs; None marks an unparsable answer (a miss, IoU 0).

    Each IoU is rounded to `decimals` first (2, as VTimeLLM's scorer does, so 0.495 counts at R1@0.5 there and here;
    None = not rounded). `unparsed` is the percentage of queries whose answer could not be parsed.
    """
    n = len(ious)
    if n == 0:
        raise ValueError("no grounding queries to score")
    vals = [(x if decimals is None else round(x, decimals)) if x is not None else 0.0 for x in ious]
    out = {f"R1@{m}": 100.0 * sum(v >= m for v in vals) / n for m in GROUNDING_THRESHOLDS}
    out["mIoU"] = 100.0 * sum(vals) / n
    out["n"] = n
    out["unparsed"] = 100.0 * sum(x is None for x in ious) / n
    return out


def densevid_iou(a: Span, b: Span) -> float:
    """IoU as the ActivityNet Captions and SODA scorers compute it: union capped at the summed lengths, +1e-8."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), (a[1] - a[0]) + (b[1] - b[0]))
    return inter / (union + 1e-8)


def ordered_assignment(scores: Sequence[Sequence[float]]) -> tuple[float, list[tuple[int, int]]]:
    """Maximum total score of pairs (i, j) increasing in both i and j (no crossings, each row/column once).

    `scores[i][j]` ≥ 0 for ground-truth event i and prediction j, both sorted by start time. Dynamic programming:
    best[i][j] = max(best[i-1][j], best[i][j-1], best[i-1][j-1] + scores[i-1][j-1]) over prefixes (SODA, §3).
    Returns the total and the chosen pairs.
    """
    m = len(scores)
    n = len(scores[0]) if m else 0
    best = [[0.0] * (n + 1) for _ in range(m + 1)]
    for i in range(1, m + 1):
        row, prev = best[i], best[i - 1]
        for j in range(1, n + 1):
            row[j] = max(prev[j], row[j - 1], prev[j - 1] + scores[i - 1][j - 1])
    pairs: list[tuple[int, int]] = []
    i, j = m, n
    while i > 0 and j > 0:  # walk back; a diagonal step that explains the value is a chosen pair
        if best[i][j] == best[i - 1][j]:
            i -= 1
        elif best[i][j] == best[i][j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return best[m][n], pairs[::-1]


def f_measure(total: float, n_pred: int, n_gt: int) -> float:
    """F1 of precision total/n_pred and recall total/n_gt (0 when either side is empty or nothing matched)."""
    if n_pred == 0 or n_gt == 0 or total <= 0:
        return 0.0
    p, r = total / n_pred, total / n_gt
    return 2 * p * r / (p + r)


SentenceMatrix = Callable[[Sequence[str], Sequence[str]], list[list[float]]]
"""(ground-truth sentences, predicted sentences) → score[i][j] in [0, 1]."""


def soda_c(preds: Mapping[str, Sequence[Event]], gts: Mapping[str, Sequence[Event]],
           sentence_matrix: SentenceMatrix) -> float:
    """SODA_c (fraction, not percent) over the videos of `preds`; a video with no predicted events scores 0.

    Both sides are sorted by start time; the pair score is IoU × sentence score with no IoU threshold (SODA's
    default for type c, which VTimeLLM's scorer uses).
    """
    if not preds:
        raise ValueError("no videos to score")
    per_video = []
    for vid, events in preds.items():
        p = sorted(events, key=lambda e: e[0][0])
        g = sorted(gts[vid], key=lambda e: e[0][0])
        if not p or not g:
            per_video.append(0.0)
            continue
        sent = sentence_matrix([s for _, s in g], [s for _, s in p])
        matrix = [[densevid_iou(ps, gs) * sent[i][j] for j, (ps, _) in enumerate(p)] for i, (gs, _) in enumerate(g)]
        total, _ = ordered_assignment(matrix)
        per_video.append(f_measure(total, len(p), len(g)))
    return sum(per_video) / len(per_video)


def random_caption(rng: random.Random) -> str:
    """A 10–20 letter string: the ActivityNet protocol scores an unmatched prediction against such garbage."""
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(10, 20)))


def match_pairs(pred: Sequence[Event], gt: Sequence[Event], tiou: float,
                rng: random.Random) -> list[tuple[str, str]]:
    """(prediction sentence, reference sentence) pairs of one video at one tIoU threshold (ActivityNet protocol)."""
    pairs = []
    for span, sentence in pred[:MAX_PROPOSALS]:
        hits = [(sentence, ref) for gspan, ref in gt if densevid_iou(span, gspan) >= tiou]
        pairs.extend(hits or [(sentence, random_caption(rng))])
    return pairs


@dataclass
class CaptionScorer:
    """pycocoevalcap scorers with one PTB tokenizer pass per call and one METEOR (Java) process per instance."""

    def __post_init__(self) -> None:
        import shutil

        if shutil.which("java") is None:
            raise FileNotFoundError("java not found: METEOR and the PTB tokenizer (dense-captioning scores) run Java; "
                                    "install a JRE (make setup installs default-jre-headless)")
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        self.tokenizer, self.meteor, self.cider, self.bleu = PTBTokenizer(), Meteor(), Cider(), Bleu(4)

    def tokenize(self, sentences: Sequence[str]) -> list[str]:
        """PTB-tokenised, lower-cased, punctuation removed; non-ASCII characters become spaces (as the scorers do)."""
        if not sentences:
            return []
        toks = self.tokenizer.tokenize({i: [{"caption": _ascii(s)}] for i, s in enumerate(sentences)})
        return [toks[i][0] for i in range(len(sentences))]

    def corpus(self, pairs: Sequence[tuple[str, str]]) -> dict:
        """CIDEr, METEOR and BLEU-4 (fractions) of already tokenised (hypothesis, reference) pairs."""
        res = {i: [h] for i, (h, _) in enumerate(pairs)}
        gts = {i: [r] for i, (_, r) in enumerate(pairs)}
        return {"CIDEr": float(self.cider.compute_score(gts, res)[0]),
                "METEOR": float(self.meteor.compute_score(gts, res)[0]),
                "BLEU4": float(self.bleu.compute_score(gts, res, verbose=0)[0][3])}

    def meteor_matrix(self, gt_sentences: Sequence[str], pred_sentences: Sequence[str]) -> list[list[float]]:
        """Tokenised sentences → METEOR[i][j]. Argument order as in the SODA scorer: the ground-truth sentence is
        the hypothesis and the prediction the reference (METEOR is not symmetric; this keeps SODA_c comparable)."""
        cells = [(i, j) for i in range(len(gt_sentences)) for j in range(len(pred_sentences))]
        refs = {k: [pred_sentences[j]] for k, (_, j) in enumerate(cells)}
        hyps = {k: [gt_sentences[i]] for k, (i, _) in enumerate(cells)}
        _, scores = self.meteor.compute_score(refs, hyps)
        out = [[0.0] * len(pred_sentences) for _ in gt_sentences]
        for k, (i, j) in enumerate(cells):
            out[i][j] = float(scores[k])
        return out


def _ascii(text: str) -> str:
    return "".join(c if ord(c) < 128 else " " for c in text)


@functools.lru_cache(maxsize=1)
def shared_scorer() -> CaptionScorer:
    """One CaptionScorer per process: starting METEOR (Java, paraphrase tables) costs seconds each time."""
    return CaptionScorer()


def tokenize_events(scorer: CaptionScorer, *groups: Mapping[str, Sequence[Event]]) -> list[dict[str, list[Event]]]:
    """The same events with PTB-tokenised sentences, for several groups at once (one Java call in all)."""
    flat = [(g, vid, span, s) for g, events in enumerate(groups) for vid, evs in events.items() for span, s in evs]
    toks = scorer.tokenize([s for *_, s in flat])
    out: list[dict[str, list[Event]]] = [{vid: [] for vid in events} for events in groups]
    for (g, vid, span, _), t in zip(flat, toks):
        out[g][vid].append((span, t))
    return out


def dvc_metrics(preds: Mapping[str, Sequence[Event]], gts: Mapping[str, Sequence[Event]],
                scorer: CaptionScorer | None = None, tious: Sequence[float] = DVC_TIOUS, seed: int = 0,
                unparsed: int = 0, details: dict | None = None) -> dict:
    """SODA_c, CIDEr, METEOR, BLEU4 (percent), `n` videos and `unparsed` (percent of videos whose answer was
    unparsable; their empty prediction scores 0). Videos are those of `preds`; each must be in `gts`.

    The random strings paired with unmatched predictions come from `random.Random(seed)`, so results repeat
    (the reference scorer draws them unseeded; they match nothing either way). `details`, when given, receives the
    per-tIoU scores (percent) for plotting.
    """
    missing = [v for v in preds if v not in gts]
    if missing:
        raise ValueError(f"{len(missing)} predicted videos have no ground truth, e.g. {missing[:3]}")
    scorer = scorer or shared_scorer()
    tp, tg = tokenize_events(scorer, {v: list(e)[:MAX_PROPOSALS] for v, e in preds.items()},
                             {v: gts[v] for v in preds})
    rng = random.Random(seed)
    per_tiou: dict[str, list[float]] = {"CIDEr": [], "METEOR": [], "BLEU4": []}
    for tiou in tious:
        per_video = [scorer.corpus(pairs) if (pairs := match_pairs(tp[v], tg[v], tiou, rng)) else None for v in tp]
        for key, values in per_tiou.items():  # a video without predictions scores 0 at every tIoU
            values.append(100.0 * sum(s[key] for s in per_video if s) / len(per_video))
    out = {"SODA_c": 100.0 * soda_c(tp, tg, scorer.meteor_matrix)}
    out.update({k: sum(v) / len(tious) for k, v in per_tiou.items()})
    if details is not None:
        details.update(per_tiou, tious=list(tious))
    out["n"] = len(preds)
    out["unparsed"] = 100.0 * unparsed / len(preds) if preds else 0.0
    return out
