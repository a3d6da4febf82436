"""`vtl-pipeline synth`: the annotated spans match the pixels, the output is deterministic, the split is by video,
and the files read back through the project's own manifest readers."""
import hashlib
import json
import re

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.synth.dataset import SynthConfig, generate
from pipeline.synth.media import BACKGROUND, COLOURS

TOLERANCE = 40          # max per-channel difference after H.264 (yuv420p) round trip
MIN_SHARE = {"background": 0.9, "square": 0.45, "ball": 0.25, "stripes": 0.4}   # of pixels showing the colour


def small_config(out, **kw) -> SynthConfig:
    base = dict(out=out, videos=6, seed=11, images=6, min_duration=4.0, max_duration=12.0)
    return SynthConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    info = generate(small_config(out))
    return out, info


def load(out, name):
    return json.loads((out / "annotations" / name).read_text())


def decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate)
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)]), fps


def parse_caption(sentence: str) -> tuple[str, tuple[int, int, int]]:
    """Which colour and which kind of event a caption names (independently of how the generator words it)."""
    colour = next(c for c in COLOURS if re.search(rf"\b{c}\b", sentence.lower()))
    kind = next(k for k in ("square", "ball", "stripes", "background") if k in sentence.lower())
    return kind, COLOURS[colour]


def share_close(frame: np.ndarray, rgb) -> float:
    return float(np.mean(np.all(np.abs(frame.astype(int) - np.array(rgb)) <= TOLERANCE, axis=-1)))


def test_annotated_spans_match_the_pixels(dataset):
    out, _ = dataset
    annotations = {**load(out, "train.json"), **load(out, "test.json")}
    checked_in = checked_out = 0
    for vid, ann in annotations.items():
        frames, fps = decode(out / "videos" / f"{vid}.mp4")
        assert len(frames) / fps == pytest.approx(ann["duration"], abs=1e-3)
        assert frames.shape[1:] == (64, 64, 3)
        spans = ann["timestamps"]
        assert 2 <= len(spans) <= 4 and all(0 <= s < e <= ann["duration"] for s, e in spans)
        for (s, e), sentence in zip(spans, ann["sentences"]):
            kind, rgb = parse_caption(sentence)
            for t in (s + 0.25 * (e - s), (s + e) / 2, s + 0.75 * (e - s)):
                share = share_close(frames[int(t * fps)], rgb)
                assert share >= MIN_SHARE[kind], (vid, sentence, t, share)
                checked_in += 1
        edges = [0.0, *(t for span in spans for t in span), ann["duration"]]
        gaps = list(zip(edges[0::2], edges[1::2]))      # before, between and after the events
        for a, b in gaps:
            if b - a >= 3 / fps:      # one clear frame in the middle of the gap
                frame = frames[int((a + b) / 2 * fps)]
                assert share_close(frame, BACKGROUND) >= 0.97, (vid, a, b)
                checked_out += 1
    assert checked_in >= 36 and checked_out >= 6


def test_events_do_not_overlap_and_leave_gaps(dataset):
    out, _ = dataset
    for ann in {**load(out, "train.json"), **load(out, "test.json")}.values():
        spans = ann["timestamps"]
        assert all(b[0] - a[1] >= 0.5 - 1e-9 for a, b in zip(spans, spans[1:]))
        assert len(set(ann["sentences"])) == len(ann["sentences"])


def test_split_is_by_video_and_counts_add_up(dataset):
    out, info = dataset
    train, test = load(out, "train.json"), load(out, "test.json")
    assert train and test and not set(train) & set(test)
    assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) == sorted({*train, *test})
    c = info["counts"]
    assert (c["videos"], c["train"], c["test"]) == (6, len(train), len(test))
    assert c["events"] == sum(len(a["timestamps"]) for a in {**train, **test}.values())
    assert json.loads((out / "synth_info.json").read_text())["seed"] == 11
    assert info["generator"]["version"] >= 1 and info["producer"]["name"] == "vtl"


def test_stage1_images_in_llava_format(dataset):
    out, _ = dataset
    records = load(out, "blip_laion_cc_sbu_558k.json")
    assert len(records) == 6
    from PIL import Image
    for rec in records:
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and "<image>" in human["value"] and gpt["from"] == "gpt"
        kind, rgb = parse_caption(gpt["value"])
        image = np.asarray(Image.open(out / "images" / rec["image"]).convert("RGB"))
        assert share_close(image, rgb) >= MIN_SHARE[kind] and image.shape == (64, 64, 3)   # PNG is lossless


def test_stage3_dialogues_use_train_videos_and_their_spans(dataset):
    out, _ = dataset
    train = load(out, "train.json")
    dialogues = load(out, "stage3.json")
    assert len(dialogues) == 2 * len(train)
    for rec in dialogues:
        assert rec["id"] in train
        ann, meta = train[rec["id"]], rec["meta"]
        assert meta["duration"] == ann["duration"]
        assert [[meta["token"][f"<s{i}>"], meta["token"][f"<e{i}>"]] for i in range(1, len(ann["timestamps"]) + 1)] \
            == ann["timestamps"]
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2) and len(turns) >= 4
        assert turns[0]["value"].startswith("<video>\n")
        assert sum(t["value"].count("<video>") for t in turns) == 1
        for t in turns:
            assert set(re.findall(r"<[se]\d+>", t["value"])) <= set(meta["token"])


def test_same_seed_same_dataset_other_seed_differs(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    generate(small_config(again))
    for rel in ("annotations/train.json", "annotations/test.json", "annotations/stage3.json",
                "annotations/blip_laion_cc_sbu_558k.json", "videos/synth_0000.mp4", "images/000000003.png"):
        digest = [hashlib.sha256((root / rel).read_bytes()).hexdigest() for root in (out, again)]
        assert digest[0] == digest[1], rel
    other = tmp_path / "other"
    generate(small_config(other, seed=12, videos=2, images=0))
    ours = {**load(out, "train.json"), **load(out, "test.json")}
    theirs = {**load(other, "train.json"), **load(other, "test.json")}
    assert theirs["synth_0000"] != ours["synth_0000"] and theirs["synth_0001"] != ours["synth_0001"]
    fewer = tmp_path / "fewer"      # video i depends on (seed, i) only, not on how many videos are drawn
    generate(small_config(fewer, videos=2, images=0))
    assert {**load(fewer, "train.json"), **load(fewer, "test.json")} == {k: ours[k] for k in ("synth_0000", "synth_0001")}


def test_files_read_back_through_the_manifest_readers(dataset):
    from manifests.activitynet import read_activitynet
    from manifests.lcc import read_lcc

    out, _ = dataset
    result = read_activitynet(out / "annotations" / "train.json", media_root=out / "videos")
    assert len(result.rows) == len(load(out, "train.json")) and not result.rejected
    assert all(row.media.endswith(".mp4") and (out / "videos" / f"{row.source_id}.mp4").exists() for row in result.rows)
    images = read_lcc(out / "annotations" / "blip_laion_cc_sbu_558k.json", media_root=out / "images")
    assert len(images.rows) == 6 and all(row.caption for row in images.rows)


def test_config_is_validated(tmp_path):
    for bad in (dict(videos=1), dict(test_fraction=1.0), dict(min_duration=10.0, max_duration=5.0), dict(size=63),
                dict(fps=(0.0,))):
        with pytest.raises(ValueError):
            small_config(tmp_path / "x", **bad)


def test_cli(tmp_path):
    from pipeline.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--videos", "2", "--seed", "5", "--images", "2", "--max-duration", "5",
            "--fps", "10"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 videos (1 train, 1 test" in res.output and "stage3" in res.output
    assert all(a["duration"] * 10 == pytest.approx(round(a["duration"] * 10)) for a in load(out, "train.json").values())
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_gap_scale_makes_events_a_smaller_share_of_the_video():
    import numpy as np

    from pipeline.synth.media import random_video

    def share(scale):
        total = []
        for i in range(200):
            fps, n, events = random_video(np.random.default_rng([3, i]), 10.0, 30.0, (10.0,), scale)
            total.append(np.mean([(e.end - e.start) / (n / fps) for e in events]))
        return float(np.mean(total))

    assert share(4.0) < 0.75 * share(1.0)


def test_events_option_sets_the_count_per_video(tmp_path):
    from pipeline.cli import app

    out = tmp_path / "one"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--videos", "8", "--seed", "2", "--images", "0",
                                   "--events", "1", "--min-duration", "8", "--max-duration", "12"])
    assert res.exit_code == 0, res.output
    videos = {**load(out, "train.json"), **load(out, "test.json")}
    assert len(videos) == 8 and all(len(v["timestamps"]) == len(v["sentences"]) == 1 for v in videos.values())
    dialogues = load(out, "stage3.json")
    assert dialogues and all(set(d["meta"]["token"]) == {"<s1>", "<e1>"} for d in dialogues)

    from pipeline.synth.media import random_video

    counts = {len(random_video(np.random.default_rng([4, i]), 10.0, 30.0, (10.0,), 1.0, (2, 3))[2])
              for i in range(60)}
    assert counts == {2, 3}


def test_events_option_is_validated(tmp_path):
    from pipeline.cli import app

    for bad in ("x", "0", "3-1", "1-9"):
        res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / bad), "--videos", "2", "--events", bad])
        assert res.exit_code == 2 and "--events" in res.output, (bad, res.output)
    with pytest.raises(ValueError, match="--events"):
        small_config(tmp_path / "y", events=(2, 1))
