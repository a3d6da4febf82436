"""`vtl-chat VIDEO --checkpoint DIR [--web]`: ask a trained model about a video in the terminal or a web page
(options map 1:1 to `eval.config.ChatConfig`; None means "not set")."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from infra.usage import fail, given

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def chat(
    video: Path = typer.Argument(..., help="A video file."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="vtl checkpoint folder."),
    question: Optional[str] = typer.Option(None, "--question", "-q", help="Ask one question and exit."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Override the checkpoint's LLM (local path or hub name)."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="ViT-L-14 (default), or tiny-random (tests)."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="ViT-L-14.pt (local CLIP weights)."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip hub tag, e.g. openai."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Generation limit per answer "
                                                 "(default 256)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu, cuda."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (default; bf16 on GPU, fp32 on CPU), float32, "
                                        "bfloat16, float16."),
    web: Optional[bool] = typer.Option(None, "--web", help="Serve a web page instead (needs Gradio: the web extra)."),
    host: Optional[str] = typer.Option(None, "--host", help="Address of the web page (--web; default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port of the web page (--web; default 7860)."),
) -> None:
    """Answer questions about VIDEO with a trained checkpoint; timestamps in answers are also shown in seconds."""
    from eval.chat import run_chat
    from eval.config import ChatConfig

    try:
        cfg = ChatConfig(**given(video=video, checkpoint=checkpoint, question=question, llm=llm, clip_model=clip_model,
                                 clip_weights=str(clip_weights) if clip_weights else None,
                                 clip_pretrained=clip_pretrained, max_new_tokens=max_new_tokens,
                                 device=device, dtype=dtype, web=web, host=host, port=port))
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
