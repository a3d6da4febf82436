"""`vtl-chat` end to end: a generated video, the tiny-random CLIP, a tiny random checkpoint from the trainer's API."""
import numpy as np
import pytest
from typer.testing import CliRunner

from eval.chat import render
from eval.chat_cli import app
from pipeline.synth.media import write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = np.zeros((40, 48, 64, 3), dtype=np.uint8)
    for i in range(40):  # a bright square moving left to right
        frames[i, 16:32, i:i + 16] = 255
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=10.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_chat_one_shot(video, ckpt):
    res = CliRunner().invoke(app, [str(video), "--checkpoint", str(ckpt), "--clip-model", "tiny-random",
                                   "--question", "During which frames can we see a square moving?",
                                   "--max-new-tokens", "10"])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if x.startswith((str(video), "model> "))]
    assert lines[0] == f"{video}: 4.0 s"  # 40 frames at 10 fps
    assert lines[1].startswith("model> ") and len(lines[1]) > len("model> ")


def test_chat_loop_keeps_the_conversation(video, ckpt):
    from eval.chat import run_chat
    from eval.config import ChatConfig

    said = []
    questions = iter(["What happens in the video?", "And after that?", ""])
    turns = run_chat(ChatConfig(video=video, checkpoint=ckpt, clip_model="tiny-random", max_new_tokens=6),
                     ask=lambda _: next(questions), say=said.append)
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
    assert turns[0]["value"].startswith("<video>\n") and "<video>" not in turns[2]["value"]
    assert sum(s.startswith("model> ") for s in said) == 2


def test_bad_video_is_a_clear_error(tmp_path, ckpt):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)
    res = CliRunner().invoke(app, [str(bad), "--checkpoint", str(ckpt), "--clip-model", "tiny-random", "-q", "hi"])
    assert res.exit_code == 2 and "cannot use this video" in res.output


def test_render_adds_seconds():
    assert render("It happens from 25 to 50.", 40.0) == ("It happens from 25 to 50.\n"
                                                         "  (in seconds: It happens from 25 to 50 (10.0–20.0 s).)")
    assert render("A man walks.", 40.0) == "A man walks."
