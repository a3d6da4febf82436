"""Run-time refusals of `vtl-train`: an input or a state the run cannot start or continue from.

They are not bugs, so the CLI prints them as one `error: ...` line and exits 2 (infra.usage), without a
traceback. Each also subclasses the builtin a caller would expect (`FileExistsError` for an occupied `--out`, ...).
Anything else raised during a run is a broken system and keeps its traceback.
"""
from __future__ import annotations


class Refused(Exception):
    """vtl-train will not start or continue: the message says why and what to do.

    Raised in a DataLoader worker, torch re-raises it in the trainer as `Refused("Caught X in DataLoader worker
    process N.\nOriginal Traceback ...: message")`; the message is cut back to its own last line, so it stays one line.
    """

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if "\nOriginal Traceback" in text:
            text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(text)


class RefusedValue(Refused, ValueError):
    """A wrong input: shards < ranks, changed options on --resume, a missing --llm, an unsafe engine checkpoint."""


class OutExists(Refused, FileExistsError):
    """`--out` already holds a run and --resume was not given."""


class OutBusy(Refused, OSError):
    """Another vtl-train run is writing `--out` (its run lock is held)."""


class NothingToResume(Refused, FileNotFoundError):
    """--resume on a folder with no saved engine state."""


class NonFiniteLoss(Refused, FloatingPointError):
    """A step's loss was NaN or infinite; the message names the samples (and those with non-finite features)."""


class DiskFull(Refused, OSError):
    """No space left while saving; the partial save was removed and the last complete one is named."""
