"""The evaluation queries (reference §6.2): the texts build-qa writes into evaluation shards and the rules
`vtl-eval` uses to read them back, defined once.

A grounding query embeds an event's sentence normalised by `normalize_sentence` (stripped, lower-cased, one final
period removed, as VTimeLLM's eval script does); `query_sentence` parses it back out of a query. The dense-captioning
query is VTimeLLM's verbatim and contains braces, so it is used as is, never through `str.format`.
"""
from __future__ import annotations

import re

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
