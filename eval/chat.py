"""`vtl-chat`: ask a trained model about one video (VTimeLLM's offline demo, in the terminal).

The video goes through the same extract steps as the training data (`pipeline.extract.single.extract_one`: 100 frames,
CLIP features), the checkpoint is loaded with its LoRA chain merged, and each question is answered greedily with the
whole conversation so far as the prompt. Timestamps in answers ("12 to 45", positions on the 0–99 scale) are also
shown in seconds of this video.

Bounds (ChatConfig): a video whose header gives frames over `max_video_pixels` or a length over `max_video_seconds`
is refused before anything is decoded; a question over `max_question_chars`, or whose prompt with the video's
frames and `max_new_tokens` would not fit the LLM's context, is refused in one line (`QuestionRefused`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from eval.config import ChatConfig, resolve_device
from eval.parse import grounding_regex, seconds_note
from pipeline.contract.timing import DEFAULT_TIME_FORMAT, TimeFormat


class QuestionRefused(ValueError):
    """A question the session will not answer (too long for the bounds or the LLM's context); nothing changed."""


def context_length(model) -> int | None:
    """Tokens the LLM attends to (its config's max_position_embeddings, or ChatGLM's seq_length); None if unknown."""
    config = getattr(getattr(model, "llm", None), "config", None)
    for name in ("max_position_embeddings", "seq_length", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class ChatSession:
    """A loaded model, one video's features and duration, and the turns so far."""

    model: object
    features: object
    duration: float
    max_new_tokens: int = 256
    turns: list[dict] = field(default_factory=list)
    max_question_chars: int | None = None
    time: TimeFormat = DEFAULT_TIME_FORMAT
    """The time format the checkpoint was trained to answer in (its feature_spec; VTimeLLM's by default)."""
    spec: object = None
    """The checkpoint's FeatureSpec: how an uploaded video is sampled and its times read (`--web`)."""

    def ask(self, question: str) -> str:
        """Answer one question; the first one carries the `<video>` placeholder, later ones continue the dialogue."""
        from eval.generate import Query, generate_batch
        from pipeline.contract.conversation import generation_prompt, video_turn

        question = question.strip()
        if self.max_question_chars and len(question) > self.max_question_chars:
            raise QuestionRefused(f"the question is {len(question)} characters long; at most "
                                  f"{self.max_question_chars} are taken (--max-question-chars)")
        turn = {"from": "human", "value": question} if self.turns else video_turn(question)
        turns = [*self.turns, turn]
        ids = generation_prompt(turns, self.model.tokenizer, self.model.conv_format)
        self._check_context(len(ids))
        answer = generate_batch(self.model, [Query(ids, self.features)], self.max_new_tokens)[0]
        self.turns = [*turns, {"from": "gpt", "value": answer}]
        return answer

    def _check_context(self, prompt_tokens: int) -> None:
        """The prompt, the video's frames (one token each, for the placeholder) and the answer must fit the context:
        past it the cost grows faster than the text and the answer is garbage."""
        limit = context_length(self.model)
        needed = prompt_tokens + len(self.features) + self.max_new_tokens
        if limit is not None and needed > limit:
            what = "the conversation so far and this question" if self.turns else "this question"
            raise QuestionRefused(f"{what} take {prompt_tokens} tokens; with the video's {len(self.features)} frames "
                                  f"and {self.max_new_tokens} for the answer that is {needed}, more than the model's "
                                  f"context of {limit}: ask a shorter question, or start over")


def video_features(video, cfg: ChatConfig, device: str, spec=None):
    """(features (frames × tokens, D), duration s) of one video with the configured encoder and the frame rule and
    tokens per frame of `spec` (the checkpoint's FeatureSpec; VTimeLLM's 100 × 1 without one), as extract does."""
    features, meta = _extract(video, cfg, device, spec)
    return features, meta["duration"]


def _sampling(spec) -> dict:
    """ClipConfig's frame rule and tokens per frame from a checkpoint's spec (fields it does not know: the defaults)."""
    if spec is None:
        return {}
    out = {"tokens_per_frame": spec.tokens_per_frame} if spec.tokens_per_frame else {}
    if spec.sampling == "fps":
        return {**out, "fps": spec.fps, "max_frames": spec.frames}
    return {**out, "frames": spec.frames} if spec.sampling == "uniform" and spec.frames else out


def _clip(cfg: ChatConfig, device: str, spec=None):
    from pipeline.extract.clip import ClipConfig

    return ClipConfig(model=cfg.clip_model, weights=cfg.clip_weights, pretrained=cfg.clip_pretrained,
                      device="cuda" if device.startswith("cuda") else "cpu", **_sampling(spec))


def _extract(video, cfg: ChatConfig, device: str, spec=None):
    """(features, meta) of one video; meta carries the float `duration` and the `encoder` id."""
    from pipeline.extract.decode import MediaError, check_video_bounds
    from pipeline.extract.single import extract_one

    clip = _clip(cfg, device, spec)
    try:
        check_video_bounds(str(video), cfg.max_video_pixels, cfg.max_video_seconds)
        features, meta = extract_one(video, clip)
    except MediaError as exc:  # bad media is the user's data: say what is wrong with it, no traceback
        raise ValueError(f"{video}: cannot use this video ({exc})") from None
    duration = meta.get("duration")
    if not duration:
        raise ValueError(f"{video}: no duration could be read, so answers cannot be placed in seconds")
    if cfg.max_video_seconds and duration > cfg.max_video_seconds:  # the header can understate the length
        raise ValueError(f"{video}: cannot use this video (too_large: it lasts {duration:.0f} s, more than the "
                         f"{cfg.max_video_seconds:g} s allowed)")
    return features, {**meta, "duration": float(duration)}


def open_session(cfg: ChatConfig) -> ChatSession:
    """Extract the video's features with the configured CLIP and load the checkpoint."""
    from train.llm_source import check_checkpoint_llm

    check_checkpoint_llm(cfg.checkpoint, cfg.llm)  # before torch and the video: an LLM no hub can give, in seconds
    from transformers.utils import logging as hf_logging

    from pipeline.contract.feature_spec import from_checkpoint
    from train.checkpoint import check_spec, load_for_inference, read_checkpoint

    hf_logging.disable_progress_bar()  # a terminal chat: no weight-loading bars between the prompts
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    trained = read_checkpoint(cfg.checkpoint)
    spec = from_checkpoint(trained)  # the video is sampled as the checkpoint's features were
    features, meta = _extract(cfg.video, cfg, device, spec)
    duration = meta["duration"]
    from pipeline.extract.spec import feature_spec

    # the spec extract would record for these options (the sampling is the checkpoint's, so the encoder decides)
    found = {"feature_spec": feature_spec(_clip(cfg, device, spec)).to_json()}
    check_spec(trained, found, "this chat's video features (its --clip-* options)", time=False)
    model = load_for_inference(cfg.checkpoint, llm=cfg.llm, device=device, dtype=dtype)
    if model.feature_dim != features.shape[1]:
        raise ValueError(f"the checkpoint's projector takes {model.feature_dim}-d features but the CLIP gives "
                         f"{features.shape[1]}-d ones")
    time = spec.sample_time(meta, int(features.shape[0]))
    return ChatSession(model, features, duration, cfg.max_new_tokens, max_question_chars=cfg.max_question_chars,
                       time=time, spec=spec)


def frames_note(session: ChatSession) -> str:
    """"100 frames" (VTimeLLM), "6 frames × 4 tokens": what the model sees of the video."""
    k = getattr(session.spec, "tokens_per_frame", None) or 1
    rows = int(getattr(session.features, "shape", (0,))[0])
    return f"{rows // k} frames" + (f" × {k} tokens" if k > 1 else "")


def render(answer: str, duration: float, time: TimeFormat = DEFAULT_TIME_FORMAT) -> str:
    """The answer, plus the same text with every "aa to bb" followed by its seconds when there are any."""
    if grounding_regex(time).search(answer):
        return f"{answer}\n  (in seconds: {seconds_note(answer, duration, time)})"
    return answer


def run_chat(cfg: ChatConfig, ask: Callable[[str], str] = input, say: Callable[[str], None] = print) -> list[dict]:
    """One-shot (`cfg.question`) or a loop until an empty question or end of input; returns the conversation."""
    session = open_session(cfg)
    say(f"{cfg.video}: {session.duration:.1f} s, {frames_note(session)}; ask about it (empty line or Ctrl-D to stop)"
        if cfg.question is None else f"{cfg.video}: {session.duration:.1f} s")
    questions = [cfg.question] if cfg.question is not None else None
    while True:
        if questions is not None:
            if not questions:
                break
            question = questions.pop(0)
        else:
            try:
                question = ask("you> ")
            except EOFError:
                break
            if not question.strip():
                break
        try:
            answer = session.ask(question)
        except QuestionRefused as exc:
            if questions is not None:  # one-shot: the question is the command's input, refused in one line
                raise
            say(f"error: {exc}")  # the conversation goes on: nothing was added to it
            continue
        say("model> " + render(answer, session.duration, session.time))
    return session.turns
