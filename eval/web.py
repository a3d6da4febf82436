"""`vtl-chat VIDEO --checkpoint DIR --web`: the chat as a web page (Gradio) with answers' spans on a timeline.

VTimeLLM ships a Gradio demo; this one adds what a temporal answer needs: every span an answer names is drawn on a
timeline under the video (click a span and the video seeks to its start), and a dense-captioning answer is drawn as
its list of events. The model, the feature extraction and the answers are those of the terminal chat
(`eval.chat.open_session`, `ChatSession.ask`); an uploaded video gets its features from the same CLIP config.

Which spans an answer names (`answer_spans`), read with `eval.parse`:
  - a dense-captioning answer (rules D1–D4 parse events, the answer is JSON events or starts with "From ss to ee",
    and at least one caption has a letter in it) is drawn as its events, in seconds by rule D5 ((s/100·D,
    (e+1)/100·D)); so "From 12 to 45, he opens the door." is one event, but "From 12 to 45." and "He opens it
    from 12 to 45 and again from 60 to 70." are grounding answers;
  - otherwise every "aa to bb" / "aa and bb" of the answer (the grounding regex, all matches, not only G1's first)
    is drawn by rule G2 (a/100·D, b/100·D). A reversed span is drawn between its two ends, dashed.
The drawing (`timeline_html`) is a pure function of the spans and the duration.

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
from eval.parse import GROUNDING_RE, PLAIN_EVENT_RE, dense_caption_events, grounding_regex
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat, grounding_span

COLOURS = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2")
WIDTH, ROW, AXIS = 1000, 36, 30  # SVG user units: width, height of one span's row, height of the time axis
# Seeks the page's video when a span of the timeline is clicked (runs once per timeline component; the listener
# survives re-renders because it sits on the component's root element).
SEEK_JS = """
element.addEventListener('click', (event) => {
  const span = event.target.closest('[data-start]');
  const video = document.querySelector('#vtl-video video');
  if (span && video) { video.currentTime = parseFloat(span.dataset.start); }
});
"""


class Span(NamedTuple):
    """One span of an answer, in seconds of the video, with its text (an event's caption or the "aa to bb")."""

    start: float
    end: float
    label: str


def answer_spans(answer: str, duration: float, time: TimeFormat = DEFAULT_TIME_FORMAT) -> list[Span]:
    """The spans an answer names, in seconds (module docstring: dense events, else every "aa to bb"), its times
    read in the checkpoint's format (`time`: "12.5s" for seconds; VTimeLLM's two-digit positions by default)."""
    events = dense_caption_events(answer, duration, fmt=time)
    plain = PLAIN_EVENT_RE if time == DEFAULT_TIME_FORMAT else re.compile(
        rf"from {time.pattern} to {time.pattern}", re.IGNORECASE)
    listed = '"timestamps"' in answer or plain.match(answer.lstrip())  # JSON, or "From ss to ee, …" first
    if events and listed and any(any(ch.isalpha() for ch in text) for _, text in events):
        return [Span(s, e, text) for (s, e), text in events]
    out = []
    for m in (GROUNDING_RE if time == DEFAULT_TIME_FORMAT else grounding_regex(time)).finditer(answer):
        if time == DEFAULT_TIME_FORMAT:  # VTimeLLM's rule G2, its float operations as they are
            s, e = grounding_span(int(m.group(1)), int(m.group(3)), duration)
        else:
            s, e = time.grounding_span(m.group(1), m.group(3), duration)
        out.append(Span(s, e, m.group(0)))
    return out


def _x(t: float, duration: float) -> float:
    return round(WIDTH * min(max(t / duration, 0.0), 1.0), 1)


def timeline_html(spans: list[Span], duration: float) -> str:
    """An SVG timeline of `duration` seconds, one row per span (bar, label, seconds); each row carries `data-start`
    and `data-end` in seconds so a click can seek. No spans: a one-line note instead."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    if not spans:
        return '<div class="vtl-timeline vtl-empty">No time span in this answer.</div>'
    height = AXIS + ROW * len(spans)
    parts = [f'<div class="vtl-timeline" data-duration="{duration:g}">',
             f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
             f'font-family="sans-serif" font-size="17">',
             f'<rect x="0" y="{AXIS - 6}" width="{WIDTH}" height="2" fill="#9ca3af"/>']
    for k in range(5):  # ticks at 0, ¼, ½, ¾ and the whole duration
        t = duration * k / 4
        x = _x(t, duration)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(f'<line x1="{x}" y1="{AXIS - 12}" x2="{x}" y2="{height}" stroke="#e5e7eb"/>'
                     f'<text x="{x}" y="{AXIS - 14}" text-anchor="{anchor}" fill="#6b7280">{t:.1f} s</text>')
    for i, span in enumerate(spans):
        parts.append(_row(i, span, duration))
    parts.append("</svg></div>")
    return "".join(parts)


def _row(i: int, span: Span, duration: float) -> str:
    lo, hi = sorted((span.start, span.end))
    x0, x1 = _x(lo, duration), _x(hi, duration)
    y = AXIS + ROW * i
    colour = COLOURS[i % len(COLOURS)]
    reversed_ = span.end < span.start
    seconds = f"{span.start:.1f}–{span.end:.1f} s"
    text = html.escape(f"{span.label} ({seconds})" if span.label else seconds)
    anchor, tx = ("start", x0) if x0 < WIDTH * 0.6 else ("end", x1)
    bar_style = f'fill="none" stroke="{colour}" stroke-dasharray="4 3"' if reversed_ else f'fill="{colour}"'
    return (f'<g class="vtl-span{" vtl-reversed" if reversed_ else ""}" data-start="{span.start:.3f}" '
            f'data-end="{span.end:.3f}" style="cursor:pointer">'
            f'<title>{text}: click to seek</title>'
            f'<rect x="{x0}" y="{y + 20}" width="{max(x1 - x0, 2):.1f}" height="12" rx="3" {bar_style}/>'
            f'<text x="{tx}" y="{y + 16}" text-anchor="{anchor}" fill="#111827">{text}</text></g>')


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


def build_demo(cfg: ChatConfig, session: ChatSession, extract: Callable[[str], tuple[object, float]],
               uploads: Uploads | None = None):
    """The page for `session` (the model and the given video's features); `extract(path)` gives an uploaded video's
    (features, duration). Each browser tab keeps its own conversation; `session.ask` answers on a copy of `session`
    (`dataclasses.replace`, so a subclass of ChatSession keeps its own `ask`)."""
    import gradio as gr

    uploads = uploads or Uploads()
    given = {"video": str(cfg.video), "features": session.features, "duration": session.duration, "turns": []}

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
    ttl = cfg.web_upload_ttl
    with gr.Blocks(title="vtl-chat", analytics_enabled=False, delete_cache=(min(ttl, 300), ttl)) as demo:
        state = gr.State(dict(given))
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
        # one model: every generation and extraction of every visitor waits its turn in one concurrency group
        for trigger in (question.submit, send.click):
            trigger(ask, [question, chat, state], [question, chat, timeline, state], api_name="ask",
                    concurrency_id="model", concurrency_limit=1)
        video.upload(upload, [video, state], [status, chat, timeline, state], api_name="upload",
                     concurrency_id="model", concurrency_limit=1)
        back.click(use_given, None, [video, status, chat, timeline, state])
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
