"""Incremental JSON for the big annotation files: the items of a top-level array, the pairs of a top-level object.

`json.load` holds a whole file and every object in it (LCS-558K: 1.15 GB). These read the file in blocks and give one
item at a time through the C decoder (`json.JSONDecoder.raw_decode`), so memory is one block plus one item. Invalid
JSON raises `json.JSONDecodeError` with the file offset, as `json.load` would (the reader's caller turns it into one
error line); the caller sees the items before it, so it must not publish anything until the end.
"""
from __future__ import annotations

import json
import os
from typing import IO, Iterator

BLOCK = 1 << 20
MAX_ANNOTATION_MB = 512
"""The largest file a reader may hold whole (a JSON document that cannot be streamed, e.g. a TimeChat-style results
object read by `vtl-eval score`); Python holds ~20× a JSON file's size as objects (500 MB took > 10 GB)."""
_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


class _Scanner:
    """A read buffer over a text stream that decodes one JSON value at a time."""

    def __init__(self, f: IO[str], block: int = BLOCK, pairs_hook=None) -> None:
        self.f, self.block, self.buf, self.pos, self.base, self.eof = f, block, "", 0, 0, False
        self.decoder = json.JSONDecoder(object_pairs_hook=pairs_hook) if pairs_hook else _DECODER

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(self.block)
        if not chunk:
            self.eof = True
            return False
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos:] + chunk, 0
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise json.JSONDecodeError(f"expected one of {chars!r}", self.buf, self.pos)
        self.pos += 1
        return c

    def value(self):
        self.peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                # An item cut by the block end decodes once more text is read; at the end of the file it is bad JSON.
                if self._more():
                    continue
                raise
            # A number at the block end may go on in the next block ("12" of "123"): read on before trusting it.
            if end == len(self.buf) and not self.eof and self._more():
                continue
            self.pos = end
            return obj

    def end(self) -> None:
        if self.peek():
            raise json.JSONDecodeError("extra data after the top-level value", self.buf, self.pos)


def iter_array(f: IO[str], block: int = BLOCK) -> Iterator[object]:
    """The items of a file holding one JSON array; ValueError when the file holds something else."""
    s = _Scanner(f, block)
    if s.peek() != "[":
        raise ValueError("expected a JSON array")
    s.pos += 1
    if s.peek() == "]":
        s.pos += 1
    else:
        while True:
            yield s.value()
            if s.expect(",]") == "]":
                break
    s.end()


def iter_object(f: IO[str], block: int = BLOCK, pairs_hook=None) -> Iterator[tuple[str, object]]:
    """The (key, value) pairs of a file holding one JSON object, in file order, repeated keys included; ValueError
    when the file holds something else. `pairs_hook` is applied to the objects inside the values."""
    s = _Scanner(f, block, pairs_hook)
    if s.peek() != "{":
        raise ValueError("expected a JSON object")
    s.pos += 1
    if s.peek() == "}":
        s.pos += 1
    else:
        while True:
            if s.peek() != '"':
                raise json.JSONDecodeError("expected a string key", s.buf, s.pos)
            key = s.value()
            s.expect(":")
            yield key, s.value()
            if s.expect(",}") == "}":
                break
    s.end()


def expect_array(f: IO[str], name: object, what: str) -> Iterator[object]:
    """`iter_array`, a file that holds something else being one ValueError `{name}: expected {what}` (bad JSON stays
    a `json.JSONDecodeError` with its offset)."""
    try:
        yield from iter_array(f)
    except json.JSONDecodeError:
        raise
    except ValueError:
        raise ValueError(f"{name}: expected {what}") from None


def check_annotation_size(path: str | os.PathLike, max_mb: float = MAX_ANNOTATION_MB) -> str | os.PathLike:
    """`path` when a whole read of it is bounded; else one ValueError naming the file, its size and the cap."""
    size = os.stat(path).st_size
    if size > max_mb * (1 << 20):
        raise ValueError(f"{path}: {size / (1 << 20):.0f} MB is over the {max_mb:g} MB a file read whole may hold "
                         f"(MAX_ANNOTATION_MB); give JSONL (read line by line) instead")
    return path
