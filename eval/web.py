"""`vtl-chat VIDEO --checkpoint DIR --web`: the chat as a web page (Gradio) with answers' spans on a timeline.

VTimeLLM ships a Gradio demo; this one adds what a temporal answer needs: every span an answer names is drawn on a
timeline under the video (click a span and the video seeks to its start), and a dense-captioning answer is drawn as
its list of events. The model, the feature extraction and the answers are those of the terminal chat
(`eval.chat.open_session`, `ChatSession.ask`); an uploaded video gets its features from the same CLIP config.

Which spans an answer names and how they are drawn: eval.web_timeline.

Safe to expose on a LAN (ChatConfig's bounds, docs/reliability.md): uploads are capped (`max_upload_mb`, Gradio's
max_file_size) and land in a private folder removed when the server stops; a visitor's upload is deleted when they
leave (the page's unload event), upload another, or after `web_upload_ttl`; a video over `max_video_pixels` or
`max_video_seconds` is refused from its header; a question over `max_question_chars` or the model's context is
refused in one message; generations and extractions run one at a time (one concurrency group on Gradio's queue, at
most `web_queue_size` waiting); messages name a file by its name, never a server path, and an unexpected error shows
as Gradio's plain "Error" (show_error off).
"""
from __future__ import annotations

import contextlib
import dataclasses
import html
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, NamedTuple

from eval.chat import ChatSession, QuestionRefused, render
from eval.config import ChatConfig
from eval.web_timeline import SEEK_JS, answer_spans, timeline_html
from pipeline.contract.timing import TimeFormat

_DIRS = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"():,]+[/\\])+")


def public_message(text: str, path: str | Path | None = None) -> str:
    """`text` with every server path cut to its file name (an error shown to a visitor names no folder)."""
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    return _DIRS.sub("", text)


class Uploads:
    """The files each visitor (Gradio session) uploaded: deleted when they leave, upload another, or at `close`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_session: dict[str, set[str]] = {}

    def keep(self, session: str, path: str) -> None:
        """`path` is this session's video now; its earlier uploads go."""
        with self._lock:
            old = self._by_session.get(session, set()) - {path}
            self._by_session[session] = {path}
        for item in old:
            remove_upload(item)

    def drop(self, session: str) -> None:
        with self._lock:
            paths = self._by_session.pop(session, set())
        for item in paths:
            remove_upload(item)

    def close(self) -> None:
        for session in list(self._by_session):
            self.drop(session)


def remove_upload(path: str | Path) -> None:
    """Delete an upload and the folder Gradio made for it (one per uploaded file), when left empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _video_time(session: ChatSession, features) -> TimeFormat:
    """The time format answers about a video are read in: the checkpoint's; `frame` times count this video's own
    sampled frames (the fps rule gives each video its count)."""
    spec = session.spec
    if spec is None or getattr(spec, "time_format", None) != "frame" or features is session.features:
        return session.time
    return spec.sample_time(None, int(features.shape[0]))


def _status(video: str | Path, duration: float) -> str:
    return f"**{html.escape(Path(video).name)}**: {duration:.1f} s. Ask about it below."


def _ask_handler(cfg: ChatConfig, session: ChatSession):
    """The question handler: `session.ask` on a copy of `session` holding the tab's video and turns."""
    import gradio as gr

    def ask(question: str, messages: list, state: dict):
        if not question.strip():
            return "", messages, gr.skip(), state
        turn = dataclasses.replace(session, features=state["features"], duration=state["duration"],
                                   turns=list(state["turns"]), max_question_chars=cfg.max_question_chars,
                                   time=_video_time(session, state["features"]))
        try:
            answer = turn.ask(question)
        except QuestionRefused as exc:  # nothing asked: the conversation stays as it was
            return question, [*messages, {"role": "assistant", "content": f"error: {public_message(str(exc))}"}], \
                gr.skip(), state
        messages = [*messages, {"role": "user", "content": question},
                    {"role": "assistant", "content": render(answer, turn.duration, turn.time)}]
        timeline = timeline_html(answer_spans(answer, turn.duration, turn.time), turn.duration)
        return "", messages, timeline, {**state, "turns": turn.turns}

    return ask


def _video_handlers(given: dict, extract: Callable[[str], tuple[object, float]], uploads: Uploads, video):
    """(upload, use_given, leave): a visitor's upload replaces the given video in their tab until they go back to it
    or leave; `video` is the page's video component."""
    import gradio as gr

    def upload(path: str | None, state: dict, request: gr.Request):
        if not path:
            return gr.skip(), gr.skip(), gr.skip(), state
        try:
            features, duration = extract(path)
        except ValueError as exc:
            remove_upload(path)  # refused: nothing of it stays on the server
            return f"error: {html.escape(public_message(str(exc), path))}", gr.skip(), gr.skip(), state
        uploads.keep(request.session_hash, path)
        return _status(path, duration), [], "", {"video": path, "features": features, "duration": duration,
                                                 "turns": []}

    def use_given(request: gr.Request):  # the copy Gradio made at start: served without opening the video's folder
        uploads.drop(request.session_hash)
        return video.value["path"], _status(given["video"], given["duration"]), [], "", dict(given)

    def leave(request: gr.Request):
        uploads.drop(request.session_hash)

    for fn in (upload, use_given, leave):  # this module's annotations are strings: Gradio needs the class itself
        fn.__annotations__["request"] = gr.Request
    return upload, use_given, leave


class _Page(NamedTuple):
    video: object
    timeline: object
    status: object
    back: object
    chat: object
    question: object
    send: object


def _page(cfg: ChatConfig, session: ChatSession) -> _Page:
    """The page's components, made inside the open `gr.Blocks`: video, timeline and status left, the chat right."""
    import gradio as gr

    gr.Markdown("## vtl-chat: ask when things happen in the video")
    with gr.Row():
        with gr.Column(scale=3):
            video = gr.Video(value=str(cfg.video), sources=["upload"], elem_id="vtl-video", label="video")
            timeline = gr.HTML("", elem_id="vtl-timeline", js_on_load=SEEK_JS)
            status = gr.Markdown(_status(cfg.video, session.duration), elem_id="vtl-status")
            back = gr.Button(f"Use {Path(cfg.video).name} again", size="sm", elem_id="vtl-given")
        with gr.Column(scale=2):
            chat = gr.Chatbot(elem_id="vtl-chatbot", label="conversation", height=420)
            question = gr.Textbox(elem_id="vtl-question", label="question", lines=1,
                                  max_length=cfg.max_question_chars,
                                  placeholder="During which frames can we see ...? (Enter to ask)")
            send = gr.Button("Ask", variant="primary", elem_id="vtl-ask")
    return _Page(video, timeline, status, back, chat, question, send)


def build_demo(cfg: ChatConfig, session: ChatSession, extract: Callable[[str], tuple[object, float]],
               uploads: Uploads | None = None):
    """The page for `session` (the model and the given video's features); `extract(path)` gives an uploaded video's
    (features, duration). Each browser tab keeps its own conversation; `session.ask` answers on a copy of `session`
    (`dataclasses.replace`, so a subclass of ChatSession keeps its own `ask`)."""
    import gradio as gr

    uploads = uploads or Uploads()
    given = {"video": str(cfg.video), "features": session.features, "duration": session.duration, "turns": []}
    ttl = cfg.web_upload_ttl
    with gr.Blocks(title="vtl-chat", analytics_enabled=False, delete_cache=(min(ttl, 300), ttl)) as demo:
        state = gr.State(dict(given))
        page = _page(cfg, session)
        ask = _ask_handler(cfg, session)
        upload, use_given, leave = _video_handlers(given, extract, uploads, page.video)
        # one model: every generation and extraction of every visitor waits its turn in one concurrency group
        for trigger in (page.question.submit, page.send.click):
            trigger(ask, [page.question, page.chat, state], [page.question, page.chat, page.timeline, state],
                    api_name="ask", concurrency_id="model", concurrency_limit=1)
        page.video.upload(upload, [page.video, state], [page.status, page.chat, page.timeline, state],
                          api_name="upload", concurrency_id="model", concurrency_limit=1)
        page.back.click(use_given, None, [page.video, page.status, page.chat, page.timeline, state])
        demo.unload(leave)
    return demo


class Served(NamedTuple):
    """A page started with block=False: `close()` stops it and deletes every upload and its private folder."""

    demo: object
    folder: str
    uploads: Uploads

    def close(self) -> None:
        try:
            self.demo.close()
        finally:
            self.uploads.close()
            shutil.rmtree(self.folder, ignore_errors=True)


def launch(cfg: ChatConfig, session: ChatSession, extract: Callable[[str], tuple[object, float]], *,
           block: bool = True) -> Served:
    """Start the page on cfg.host:cfg.port; returns a `Served` (call `.close()`) when `block` is False. Uploads go
    to a private folder (GRADIO_TEMP_DIR for this process), removed when the page stops."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # an offline demo: no telemetry, no version check
    folder = tempfile.mkdtemp(prefix="vtl-chat-web-")  # mode 0700: other users of the host cannot read uploads
    os.environ["GRADIO_TEMP_DIR"] = folder  # read by Gradio when the page is built and at each upload
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web-font download
                              font_mono=["ui-monospace", "monospace"])
    served = Served(build_demo(cfg, session, extract, uploads := Uploads()), folder, uploads)
    served.demo.queue(default_concurrency_limit=1, max_size=cfg.web_queue_size)
    try:
        served.demo.launch(server_name=cfg.host, server_port=cfg.port, prevent_thread_lock=not block, share=False,
                           ssr_mode=False, quiet=True, show_error=False, theme=theme, footer_links=[],
                           max_file_size=cfg.max_upload_mb * 1_000_000)
    except BaseException:
        served.close()
        raise
    if block:
        served.close()  # launch returned: the server was stopped (Ctrl-C)
    return served


def serve(cfg: ChatConfig, say: Callable[[str], None] = print) -> None:
    """`vtl-chat --web`: load like the terminal chat, then serve the page until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("vtl-chat --web needs Gradio: pip install -c constraints.txt -e '.[web]'") from None
    from eval.chat import open_session, video_features
    from eval.config import resolve_device

    session = open_session(cfg)
    device, _ = resolve_device(cfg.device, cfg.dtype)
    say(f"{cfg.video}: {session.duration:.1f} s; open http://{cfg.host}:{cfg.port} (Ctrl-C to stop)")
    launch(cfg, session, lambda path: video_features(path, cfg, device, session.spec), block=True)
