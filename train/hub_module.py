"""The one small module a `vtl-export` folder ships as `vtl_video_llm.py`: load the folder with transformers and
answer a question about a video's features, with nothing of vtl installed.

    import sys; sys.path.insert(0, "exported")
    from vtl_video_llm import VideoLLM
    model = VideoLLM.from_pretrained("exported")
    model.answer(features, "When does the man open the door?")   # features: (100, D) rows of the recorded encoder

Standard library, torch, safetensors and transformers only. The folder holds the LLM with its LoRA merged
(`config.json`, weights, tokenizer), `projector.safetensors` (Linear: features → the LLM's hidden size) and
`vtl_model.json`: the chat format and its single-question prompt as pieces (literal ids, or text holding `<video>` and
the question marker), the stop tokens, and the features the model was trained on (encoder id, frames, width). The
prompt pieces were cut by vtl's own conversation module, so the ids equal vtl-chat's for the same question.
"""
from __future__ import annotations

import json
from pathlib import Path

SPEC_FILE = "vtl_model.json"
PROJECTOR_FILE = "projector.safetensors"
QUESTION = "<<QUESTION>>"
VIDEO = "<video>"
VIDEO_ROWS = -200  # where the projected feature rows go in a prompt's ids


class VideoLLM:
    """A causal LM, a projector and the prompt recipe of one exported folder."""

    def __init__(self, llm, tokenizer, projector, spec: dict):
        self.llm, self.tokenizer, self.projector, self.spec = llm, tokenizer, projector, spec

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu", dtype=None) -> VideoLLM:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
        spec = json.loads((folder / SPEC_FILE).read_text())
        llm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        state = load_file(str(folder / PROJECTOR_FILE))
        projector = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        projector.load_state_dict(state)
        projector = projector.to(device=device, dtype=llm.dtype).eval()
        return cls(llm, AutoTokenizer.from_pretrained(folder), projector, spec)

    def _text_ids(self, text: str) -> list[int]:
        if self.spec["strip_leading_space"] and text.startswith(" ") and len(text) > 1:
            text = text[1:]  # a legacy SentencePiece tokenizer would add a second word prefix
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, question: str) -> list[int]:
        """The generation prompt for one question about the video (VIDEO_ROWS marks the video)."""
        ids: list[int] = []
        for piece in self.spec["prompt"]:
            if "ids" in piece:
                ids += piece["ids"]
                continue
            for j, chunk in enumerate(piece["text"].replace(QUESTION, question.strip()).split(VIDEO)):
                if j:
                    ids.append(VIDEO_ROWS)
                if chunk:
                    ids += self._text_ids(chunk)
        return ids

    def answer(self, features, question: str, max_new_tokens: int = 256) -> str:
        """Greedy answer to `question` about a video given as its (frames, D) feature rows."""
        import torch

        ids = self.prompt_ids(question)
        cut = ids.index(VIDEO_ROWS)
        device = self.projector.weight.device
        embed = self.llm.get_input_embeddings()
        with torch.inference_mode():
            rows = self.projector(torch.as_tensor(features, dtype=torch.float32).to(device, self.projector.weight.dtype))
            before, after = (embed(torch.tensor(part, device=device)) for part in (ids[:cut], ids[cut + 1:]))
            inputs = torch.cat([before, rows.to(before.dtype), after])[None]
            stops = self.spec["stop_ids"]
            out = self.llm.generate(inputs_embeds=inputs, attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long,
                                    device=device), max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                    pad_token_id=self.tokenizer.pad_token_id,
                                    eos_token_id=stops if len(stops) > 1 else stops[0])[0].tolist()
        end = next((i for i, t in enumerate(out) if t in stops), len(out))
        return self.tokenizer.decode(out[:end], skip_special_tokens=True).strip()
