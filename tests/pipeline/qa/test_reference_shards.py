"""With the defaults, build-qa's training shards stay bit-identical: every member of every sample (conversation.json,
features.npy, meta.json) of stage 1, 2 and 3 equals the one in tests/data/build_qa_reference, written by the build-qa
of commit 914e736 (before the feature spec and time formats) from the same fixed inputs. index.json is not compared:
it gained the `feature_spec` key on purpose. Regenerating the reference with new code would defeat the test; it was
made by running this file as a script with the old tree first on the import path:

    git archive 914e736 | tar -x -C /tmp/ref
    PYTHONPATH=/tmp/ref:tests python tests/pipeline/qa/test_reference_shards.py tests/data/build_qa_reference

One event sentence ends in " .": `normalize_sentence` changed on purpose since 914e736, but it shapes evaluation
queries (`pipeline/contract/queries.py`), not training text, so the training shards keep such a sentence as given,
then and now."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from support.qa import video_meta, write_feature_shards

from pipeline.contract.shards import iter_samples
from pipeline.qa.build import BuildQaConfig, run_build_qa

REF = Path(__file__).resolve().parents[2] / "data" / "build_qa_reference"
EVENTS = [{"start": 1.0, "end": 12.5, "caption": "A man opens a door."},
          {"start": 12.5, "end": 29.0, "caption": "He sits down on a chair ."},
          {"start": 20.0, "end": 31.5, "caption": "a dog runs past"}]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """Feature shards (8-d, seeded) of five videos with captions and events, and a stage3.json for three of them."""
    metas = [video_meta(f"v{i}", 30.0 + 7 * i, EVENTS[: 1 + i % 3], caption=f"Clip number {i} of a kitchen.")
             for i in range(5)]
    write_feature_shards(folder / "feat", metas, dim=8, samples_per_shard=2)
    dialogues = [{"source": "anet", "id": f"v{i}", "meta": {"duration": 30.0 + 7 * i,
                                                            "token": {"<s0>": 1.0, "<e0>": 12.5 + i}},
                  "conversations": [{"from": "human", "value": "<video>\nWhen does the man open the door?"},
                                    {"from": "gpt", "value": "From <s0> to <e0>."},
                                    {"from": "human", "value": "What happens then?"},
                                    {"from": "gpt", "value": "He sits down, at <e0>."}]} for i in (0, 2, 4)]
    (folder / "stage3.json").write_text(json.dumps(dialogues))
    return folder / "feat", folder / "stage3.json"


def build(folder: Path) -> dict[str, dict[str, dict[str, str]]]:
    """stage → key → member → sha256, building each stage with the defaults; conversation.json files kept."""
    feat, dialogues = write_inputs(folder)
    out = {}
    for stage in ("1", "2", "3"):
        run_build_qa(BuildQaConfig(features=feat, out=folder / f"s{stage}", stage=stage, progress=False,
                                   dialogues=dialogues if stage == "3" else None))
        out[stage] = {}
        for sample in iter_samples(folder / f"s{stage}"):
            files = sample_files(folder / f"s{stage}", sample.key)
            out[stage][sample.key] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return out


def sample_files(shards: Path, key: str) -> dict[str, bytes]:
    """The member bytes of one sample (`<key>.<name>` in the shard tars), as written."""
    import tarfile

    files = {}
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.split(".", 1)[0] == key:
                    files[member.name.split(".", 1)[1]] = tar.extractfile(member).read()
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qa")
    return folder, build(folder)


@pytest.mark.parametrize("stage", ["1", "2", "3"])
def test_default_training_shards_equal_the_reference(built, stage):
    folder, digests = built
    want = json.loads((REF / "members.json").read_text())[stage]
    assert sorted(digests[stage]) == sorted(want) and want  # the same samples
    for key, members in want.items():
        got = sample_files(folder / f"s{stage}", key)
        # the conversation is compared as text first, so a difference shows what changed
        assert got["conversation.json"].decode() == (REF / f"s{stage}" / f"{key}.conversation.json").read_text()
        assert digests[stage][key] == members, (stage, key)


if __name__ == "__main__":  # writes the reference (see the module docstring)
    import tempfile

    target = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        digests = build(Path(tmp))
        for stage, samples in digests.items():
            (target / f"s{stage}").mkdir(parents=True, exist_ok=True)
            for key in samples:
                data = sample_files(Path(tmp) / f"s{stage}", key)["conversation.json"]
                (target / f"s{stage}" / f"{key}.conversation.json").write_bytes(data)
    (target / "members.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
