"""build-qa's rule for samples whose annotated duration disagrees with the decoded length of their media.

extract flags them in meta.json (`duration_mismatch`, pipeline.contract.timing.duration_mismatch): a window past the
end of the file, an ActivityNet duration of 148 s on a 5 s file. Their timestamps would be rendered against a time
base the frames do not cover. `--on-duration-mismatch`:
- `skip` (default): each is an error record `duration_mismatch` (counted; in = out + errors), the rest is built;
- `flag`: kept as they are, counted in index.json's `qa.notes.duration_mismatch_kept`; the flag stays in meta.json
  and timestamps are rendered against the annotated duration, VTimeLLM's rule (pipeline.contract.timing.quantize);
- `refuse`: the run stops before writing anything, with one line giving the count and the first samples.
"""
from __future__ import annotations

from typing import Iterator

from pipeline.contract.checked import BadSample, iter_checked
from pipeline.contract.shards import DURATION_MISMATCH, Sample, duration_mismatch_of

RULES = ("skip", "flag", "refuse")


def describe(flag: dict) -> str:
    return f"annotated {flag.get('annotated')} s, decoded {flag.get('decoded')} s"


def refuse_if_flagged(features: str, index: dict, shown: int = 3) -> None:
    """`refuse`: read the input once and raise ValueError (one line) when any sample is flagged."""
    flagged, total = [], 0
    for sample in iter_checked(features, index):
        if isinstance(sample, BadSample):
            continue
        total += 1
        flag = duration_mismatch_of(sample.meta)
        if flag is not None:
            flagged.append(f"{sample.key} ({describe(flag)})")
    if flagged:
        more = f", and {len(flagged) - shown} more" if len(flagged) > shown else ""
        raise ValueError(f"{len(flagged)} of {total} samples have an annotated duration that disagrees with the decoded "
                         f"length of their media ({DURATION_MISMATCH}: {', '.join(flagged[:shown])}{more}); "
                         "--on-duration-mismatch skip leaves them out as error records, flag keeps them")


def apply(samples: Iterator[Sample], rule: str, out) -> Iterator[Sample]:
    """`skip`: flagged samples become error records; `flag`: they pass and are counted. `out` is the QaOutput."""
    for sample in samples:
        flag = duration_mismatch_of(sample.meta)
        if flag is None:
            yield sample
        elif rule == "skip":
            out.stats.inputs["feature_samples"] += 1
            out.error(sample.key, DURATION_MISMATCH, describe(flag), sample.meta.get("source_id"))
        else:
            out.stats.notes[f"{DURATION_MISMATCH}_kept"] += 1
            yield sample
