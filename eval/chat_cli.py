"""`vtl-chat VIDEO --checkpoint DIR [--web]`: ask a trained model about a video in the terminal or a web page
(options generated from `eval.config.ChatConfig`, with the CLIP and LLM option groups shared with extract and eval)."""
from __future__ import annotations

import typer

from eval.config import LLM_OPTIONS, ChatConfig
from infra.options import flag, options
from infra.usage import fail, strict_command_class
from pipeline.extract.clip import CLIP_OPTIONS

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=strict_command_class())
@options(ChatConfig, groups=(CLIP_OPTIONS, LLM_OPTIONS),
         flags={"video": flag(argument=True), "question": flag("--question", "-q")})
def chat(given: dict) -> None:
    """Answer questions about VIDEO with a trained checkpoint; timestamps in answers are also shown in seconds."""
    from eval.chat import run_chat

    try:
        cfg = ChatConfig(**given)
        if cfg.web:
            from eval.web import serve

            serve(cfg, say=typer.echo)
        else:
            run_chat(cfg, ask=input, say=typer.echo)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
