"""`vtl-chat --web` against one hostile visitor, through real HTTP: the page (eval.web.launch) runs on 127.0.0.1 with
the real model loading and extraction (tiny-random checkpoint and CLIP, generated videos), and the visitor is
gradio_client (Gradio's own HTTP client) or plain httpx. Checked: an upload over max_upload_mb is refused, an 8K video
is refused from its header, an over-long question is one message naming no path, generations never overlap, a
visitor's upload is deleted when they leave, and everything is deleted when the page stops."""
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

gradio = pytest.importorskip("gradio", reason="the [web] extra (gradio) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(message: dict) -> str:
    """A chat message's text: Gradio's Chatbot gives it as a string or as a list of parts."""
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def _files(folder: str) -> set[str]:
    return {p.name for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    import torch
    from support.evaluation import tiny_checkpoint

    from eval.chat import ChatSession, open_session, video_features
    from eval.config import ChatConfig
    from eval.web import launch
    from pipeline.synth.media import write_video

    tmp = tmp_path_factory.mktemp("web")
    torch.set_num_threads(1)
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    class CountingSession(ChatSession):  # the model really answers; the overlap of answers is counted
        def ask(self, question: str) -> str:
            with lock:
                busy["now"] += 1
                busy["most"] = max(busy["most"], busy["now"])
            try:
                time.sleep(0.3)
                return super().ask(question)
            finally:
                with lock:
                    busy["now"] -= 1

    frames = np.zeros((20, 48, 64, 3), dtype=np.uint8)
    video = write_video(tmp / "clip.mp4", frames, fps=10.0)
    cfg = ChatConfig(video=video, checkpoint=tiny_checkpoint(tmp / "ckpt"), clip_model="tiny-random",
                     max_new_tokens=2, device="cpu", web=True, port=_free_port(), max_upload_mb=1,
                     max_question_chars=500)
    session = open_session(cfg)
    served = launch(cfg, CountingSession(session.model, session.features, session.duration, cfg.max_new_tokens),
                    lambda path: video_features(path, cfg, "cpu"), block=False)
    yield cfg, served, busy, tmp, session
    served.close()


@pytest.mark.slow  # the page fixture: model, CLIP and server, ~60 s for the four at load 4
def test_an_upload_over_max_upload_mb_is_refused(page):
    import httpx

    cfg, served, _, tmp, _ = page
    before = _files(served.folder)
    big = tmp / "big.mp4"
    big.write_bytes(b"\0" * 1_500_000)
    reply = httpx.post(f"http://127.0.0.1:{cfg.port}/gradio_api/upload", files={"files": ("big.mp4", big.read_bytes())})
    assert reply.status_code == 413, reply.text
    assert str(served.folder) not in reply.text
    assert _files(served.folder) == before  # nothing of it kept


@pytest.mark.slow  # the page fixture: model, CLIP and server, ~60 s for the four at load 4
def test_an_8k_video_and_an_over_long_question_are_one_message_without_a_path(page):
    from gradio_client import Client, handle_file

    from pipeline.synth.media import write_video

    cfg, served, _, tmp, _ = page
    huge = write_video(tmp / "huge.mp4", np.zeros((2, 4320, 7680, 3), np.uint8), fps=2.0)  # 8.6 kB, 8K frames
    client = Client(f"http://127.0.0.1:{cfg.port}/", verbose=False)
    try:
        status, *_ = client.predict(handle_file(str(huge)), api_name="/upload")
        assert "too_large" in status and "7680x4320" in status and "huge.mp4" in status
        assert "/" not in status.replace("huge.mp4", ""), status  # no server path, not even the upload folder
        assert "huge.mp4" not in _files(served.folder)  # a refused upload is deleted at once
        question, messages, _ = client.predict("when " * 120, api_name="/ask")
        assert question == "when " * 120  # kept in the box, the conversation unchanged
        assert len(messages) == 1 and _text(messages[0]).startswith("error: the question is 599 characters")
        assert "at most 500" in _text(messages[0]) and "/" not in _text(messages[0])
    finally:
        client.close()


@pytest.mark.slow  # the page fixture: model, CLIP and server, ~60 s for the four at load 4
def test_generations_wait_their_turn_and_a_visitors_upload_goes_when_they_leave(page):
    from gradio_client import Client, handle_file

    from pipeline.synth.media import write_video

    cfg, served, busy, tmp, _ = page
    other = write_video(tmp / "other.mp4", np.full((30, 48, 64, 3), 90, np.uint8), fps=10.0)
    visitor = Client(f"http://127.0.0.1:{cfg.port}/", verbose=False)
    status, *_ = visitor.predict(handle_file(str(other)), api_name="/upload")
    assert "other.mp4" in status and "3.0 s" in status
    assert "other.mp4" in _files(served.folder)
    clients = [Client(f"http://127.0.0.1:{cfg.port}/", verbose=False) for _ in range(2)]
    jobs = [c.submit(f"When does it happen, {i}?", api_name="/ask") for i, c in enumerate([visitor, *clients])]
    answers = [job.result(timeout=120) for job in jobs]
    assert all(messages[-1]["role"] == "assistant" for _, messages, _ in answers)
    assert busy["most"] == 1  # three visitors, one generation at a time
    for c in clients:
        c.close()
    visitor.close()  # the visitor leaves: the page's unload event deletes their upload
    deadline = time.monotonic() + 30
    while "other.mp4" in _files(served.folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "other.mp4" not in _files(served.folder)


@pytest.mark.slow  # the page fixture: model, CLIP and server, ~60 s for the four at load 4
def test_a_question_past_the_models_context_is_refused(page):
    from eval.chat import ChatSession, QuestionRefused

    session = page[-1]
    chat = ChatSession(session.model, session.features, session.duration, 2)  # no character bound: the context's
    with pytest.raises(QuestionRefused, match="more than the model's context of 4096") as err:
        chat.ask("when does the square move " * 800)
    assert "/" not in str(err.value) and chat.turns == []


def test_stopping_the_page_deletes_every_upload(tmp_path):
    from eval.chat import ChatSession
    from eval.config import ChatConfig
    from eval.web import launch
    from pipeline.synth.media import write_video

    video = write_video(tmp_path / "v.mp4", np.zeros((4, 48, 64, 3), np.uint8), fps=4.0)
    (tmp_path / "ckpt").mkdir()
    cfg = ChatConfig(video=video, checkpoint=tmp_path / "ckpt", web=True, port=_free_port())
    served = launch(cfg, ChatSession(None, np.zeros((100, 8)), 1.0), lambda path: (None, 1.0), block=False)
    assert _files(served.folder)  # Gradio's copy of the given video
    served.close()
    assert not Path(served.folder).exists()
