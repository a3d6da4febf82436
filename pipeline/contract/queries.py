"""The evaluation queries (reference §6.2): the texts build-qa writes into evaluation shards and the rules
`vtl-eval` uses to read them back, defined once.

A grounding query embeds an event's sentence normalised by `normalize_sentence` (stripped, lower-cased, one final
period removed, as VTimeLLM's eval script does); `query_sentence` parses it back out of a query. The dense-captioning
query is VTimeLLM's verbatim and contains braces, so it is used as is, never through `str.format`.
"""
from __future__ import annotations

import re

from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat

BENCHMARKS = ("grounding", "dvc")
"""The two evaluations: temporal grounding and dense video captioning (DESIGN: benchmarks, never "tasks")."""

GROUNDING_QUERY = "During which frames can we see {sentence}?"
"""VTimeLLM's grounding evaluation query; `{sentence}` is the normalised sentence."""

DVC_QUERY = (
    "Could you please describe the events in the video in detail? Be specific about the activities of individuals, "
    "their surroundings, and interactions with others. The output should be in JSON format, structured as follows: "
    '{"event": "xx", "timestamps": "from xx to xx"}.'
)
"""VTimeLLM's dense-captioning evaluation query, verbatim."""

GROUNDING_QUERY_RE = re.compile("^" + re.escape(GROUNDING_QUERY).replace(re.escape("{sentence}"), "(.+)") + "$",
                                re.DOTALL)
"""`GROUNDING_QUERY` with its sentence as group 1."""


def normalize_sentence(sentence: str) -> str:
    """VTimeLLM's eval rule for the query sentence: stripped, lower-cased, one final period removed; stripped again
    after that, because ActivityNet writes "... a race ." and a kept trailing space would not survive the query's
    round trip (`query_sentence` strips what it parses)."""
    text = sentence.strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def grounding_query(sentence: str) -> str:
    """The grounding query that asks for `sentence`."""
    return GROUNDING_QUERY.format(sentence=normalize_sentence(sentence))


def query_sentence(query: str) -> str:
    """The normalised sentence a grounding query asks about (the whole text when it is not one of ours)."""
    query = query.strip()
    m = GROUNDING_QUERY_RE.match(query)
    return normalize_sentence(m.group(1) if m else query)


QVHIGHLIGHTS = "qvhighlights"
SHARD_BENCHMARKS = (*BENCHMARKS, QVHIGHLIGHTS)
"""What `build-qa --benchmark` builds: the two evaluations, and QVHighlights' moment retrieval + highlight detection."""

MOMENT_QUERY = ('During which frames can we see {sentence}? Give every moment that shows it, most relevant first, as '
                '"from xx to xx", separated by commas.')
"""QVHighlights moment retrieval: one query, one or more spans, in VTimeLLM's 00–99 positions over the video."""

HIGHLIGHT_QUERY = ('Which frames of the video are highlights for the query "{sentence}"? Rate each on a scale from 1 '
                   'to 5. Answer in this format: "The highlight frames are at 10, 12, 14. Their saliency scores are '
                   '3.0, 4.5, 2.0."')
"""QVHighlights highlight detection, in the answer format TimeChat and VTG-LLM ask for (timestamps, then one saliency
score each, 1–5), with VTimeLLM's 00–99 positions in place of seconds."""

QVH_TASKS = {"mr": MOMENT_QUERY, "hd": HIGHLIGHT_QUERY}
"""Query-id suffix → query text: an evaluation sample asks both of every QVHighlights query."""


def qvh_query(task: str, sentence: str) -> str:
    """The moment-retrieval (`mr`) or highlight-detection (`hd`) query that asks about `sentence`."""
    return QVH_TASKS[task].format(sentence=normalize_sentence(sentence))


def dvc_query(fmt: TimeFormat = DEFAULT_TIME_FORMAT) -> str:
    """The dense-captioning query for a time format: VTimeLLM's verbatim for the default ("from xx to xx"), with the
    format's look ("from xx.xs to xx.xs") otherwise."""
    if fmt.example == "xx":
        return DVC_QUERY
    return DVC_QUERY.replace('"from xx to xx"', f'"from {fmt.example} to {fmt.example}"')
