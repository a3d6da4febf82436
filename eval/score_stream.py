"""The streaming parts of `eval.score`: one video's ground truth (`Truth`), the matcher that pairs grounding
predictions with ground-truth events as they come, and the running sums that give `grounding_metrics`' figures
without holding the IoUs. Nothing per query is kept."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from eval.metrics import GROUNDING_THRESHOLDS, Event
from pipeline.contract.queries import normalize_sentence, query_sentence
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat


def line_sentence(line: dict) -> str:
    """The sentence a grounding prediction asks about (its `sentence`, else parsed out of `query`)."""
    if line.get("sentence"):
        return normalize_sentence(line["sentence"])
    return query_sentence(str(line.get("query", "")))


@dataclass(frozen=True)
class Truth:
    """One video's ground truth: its duration (time base of the answers), events in seconds, and the time format its
    answers are read in (the evaluation shards' feature_spec; VTimeLLM's two-digit positions by default)."""

    duration: float
    events: tuple[Event, ...]
    time: TimeFormat = DEFAULT_TIME_FORMAT


def video_truth(truth: dict[str, Truth], line: dict) -> Truth:
    vid = str(line["video"])
    if vid not in truth:
        raise ValueError(f"prediction for video {vid!r}, which the annotations do not have")
    return truth[vid]


class Matcher:
    """Pairs grounding predictions with ground-truth events: per predicted video id, a bit mask of the events already
    matched (repeated sentences of one video are matched in file order); nothing per query is kept."""

    def __init__(self, truth: dict[str, Truth]):
        self.truth = truth
        self.used: dict[str, int] = {}
        self.norm: dict[int, tuple[str, ...]] = {}
        """Normalised sentences by id(Truth), for the predicted videos."""

    def sentences(self, t: Truth) -> tuple[str, ...]:
        if id(t) not in self.norm:
            self.norm[id(t)] = tuple(normalize_sentence(sentence) for _, sentence in t.events)
        return self.norm[id(t)]

    def match(self, line: dict) -> tuple[str, str, Truth, tuple[float, float]]:
        """(video, sentence, its Truth, ground-truth span) of one prediction."""
        t, vid, sent = video_truth(self.truth, line), str(line["video"]), line_sentence(line)
        mask = self.used.get(vid, 0)
        for i, norm in enumerate(self.sentences(t)):
            if not mask >> i & 1 and norm == sent:
                self.used[vid] = mask | 1 << i
                return vid, sent, t, t.events[i][0]
        raise ValueError(f"video {vid!r} has no (further) event with the sentence {sent!r}")

    def missing(self) -> list[list[str]]:
        matched: Counter = Counter()
        for vid, mask in self.used.items():
            t = self.truth[vid]
            matched.update((id(t), s) for i, s in enumerate(self.sentences(t)) if mask >> i & 1)
        return missing_from(matched, self.truth)


class RunningGrounding:
    """`eval.metrics.grounding_metrics` over IoUs that arrive one at a time: the same roundings, counts and sum in the
    same order (Python's float `sum` adds left to right), so the same figures to the last bit."""

    def __init__(self, decimals: int | None = 2):
        self.decimals, self.n, self.total, self.unparsed = decimals, 0, 0.0, 0
        self.hits = [0] * len(GROUNDING_THRESHOLDS)

    def add(self, iou: float | None) -> None:
        v = (iou if self.decimals is None else round(iou, self.decimals)) if iou is not None else 0.0
        self.n += 1
        self.total += v
        self.unparsed += iou is None
        for k, m in enumerate(GROUNDING_THRESHOLDS):
            self.hits[k] += v >= m

    def metrics(self) -> dict:
        if self.n == 0:
            raise ValueError("no grounding queries to score")
        out = {f"R1@{m}": 100.0 * h / self.n for m, h in zip(GROUNDING_THRESHOLDS, self.hits)}
        return {**out, "mIoU": 100.0 * self.total / self.n, "n": self.n, "unparsed": 100.0 * self.unparsed / self.n}


def unique_videos(truth: dict[str, Truth]) -> dict[int, tuple[str, Truth]]:
    """Each video once (truth holds it under its source id and its manifest key), named by its first id."""
    out: dict[int, tuple[str, Truth]] = {}
    for vid, t in truth.items():
        out.setdefault(id(t), (vid, t))
    return out


def missing_from(matched: Counter, truth: dict[str, Truth]) -> list[list[str]]:
    """[video, sentence] of every ground-truth event beyond the `matched` count of its (id(Truth), sentence)."""
    out = []
    for key, (vid, t) in unique_videos(truth).items():
        for _, sentence in t.events:
            sent = normalize_sentence(sentence)
            if matched[(key, sent)] > 0:
                matched[(key, sent)] -= 1
            else:
                out.append([vid, sent])
    return out
