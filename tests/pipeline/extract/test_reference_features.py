"""The default extract path stays bit-identical: features and frame choices of tiny-random encodings equal the ones
in tests/data/extract_reference, written by the extract code of commit ea24d40 (before encoders, frame rules and
tokens per frame became options). Regenerating them with new code would defeat the test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.extract import make_media

from pipeline.extract.clip import ClipConfig
from pipeline.extract.single import extract_one

REF = Path(__file__).resolve().parents[2] / "data" / "extract_reference"
CASES = [("v150_window", "v150", (1.5, 4.2), False), ("v37_fast", "v37", None, True), ("image", "im", None, False)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.mark.parametrize("name,medium,window,fast", CASES)
def test_default_features_equal_the_reference(media, name, medium, window, fast):
    feats, meta = extract_one(media[medium], ClipConfig(model="tiny-random", fast_resize=fast, device="cpu"), window)
    ref = np.load(REF / f"{name}.npy", allow_pickle=False)
    assert feats.dtype == ref.dtype and feats.shape == ref.shape
    assert feats.tobytes() == ref.tobytes()
    want = json.loads((REF / "meta.json").read_text())[name]
    assert {k: meta[k] for k in want} == want
