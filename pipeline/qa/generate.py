"""`build-qa --stage 3 --generate --llm PATH`: stage-3 dialogues written by a text LLM from each feature sample's
events (the prompt, parser and validation are pipeline.qa.llm_dialogues).

A job of two parts: `DialogueLLM` is the step (loads the LLM once in `setup()`, maps a batch of prompt requests to
generations; torch/transformers, or vLLM where importable and asked for), and `generated()` is the driver that cleans
each sample's events, asks for `dialogues_per_video` generations per video, validates each and yields samples or
error records in input order. Where the step runs is the executor's business (pipeline.qa.llm_executors: in-process
or Ray actors); the step never imports ray.

Determinism: batches are fixed by input order and `llm_batch_size`; each batch seeds torch with
`batch_seed(seed, first request id)`, so the same seed, model, batch size and hardware give the same dialogues
whichever executor or actor runs a batch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from pipeline.contract.shards import Sample
from pipeline.qa import llm_dialogues as llm
from pipeline.qa.rules import clean_events

ENGINES = ("transformers", "vllm")
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Sampling:
    """The sampling settings, recorded per sample and in run_config.json."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 384

    def to_json(self) -> dict:
        return {"do_sample": self.temperature > 0, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Request:
    id: str
    """`{key}-d{i}` (or the key with one dialogue per video)."""
    prompt: str


@dataclass(frozen=True)
class Generation:
    id: str
    text: str
    finished: bool
    """The LLM stopped by itself (EOS) rather than at max_new_tokens."""
    batch_seed: int


def batch_seed(seed: int, first_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{first_id}".encode()).digest()[:4], "little")


class DialogueLLM:
    """The generation step: `setup()` loads the model (once per worker), `__call__(requests)` generates a batch."""

    resources = {"num_gpus": 1}
    """Declared for the executor; a Ray executor drops it on a cluster without GPUs."""

    def __init__(self, path: str, sampling: Sampling, seed: int, engine: str = "transformers",
                 device: str | None = None):
        self.path, self.sampling, self.seed, self.engine, self.device = str(path), sampling, seed, engine, device
        self.model = self.tokenizer = None

    def setup(self) -> None:
        if self.model is not None:
            return
        if self.engine == "vllm":
            self._setup_vllm()
            return
        import torch

        from pipeline.qa.llm_source import HubUnavailable, load_causal_lm, load_tokenizer

        try:
            self.tokenizer = load_tokenizer(self.path)
            self.model = load_causal_lm(self.path, self.seed, torch.bfloat16 if torch.cuda.is_available() else
                                        torch.float32, self.tokenizer)
        except HubUnavailable:
            raise
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot load an LLM from {self.path}: {exc}") from exc
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batches: new tokens follow every prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token

    def _setup_vllm(self) -> None:
        # Optional fast path (vllm is not a dependency): same prompts, same validation, vLLM's own seeded sampler.
        from pipeline.qa.llm_source import TINY_RANDOM, model_source

        if model_source(self.path, "--llm") == TINY_RANDOM:
            raise ValueError(f"--llm {TINY_RANDOM} is built in-process for the transformers engine, not vllm")
        try:
            import vllm
        except ImportError as exc:
            raise ValueError("--llm-engine vllm needs the vllm package (pip install vllm)") from exc
        self.model = vllm.LLM(model=self.path, seed=self.seed)
        self.tokenizer = self.model.get_tokenizer()

    def __call__(self, requests: list[Request]) -> list[Generation]:
        self.setup()
        if not requests:
            return []
        seed = batch_seed(self.seed, requests[0].id)
        if self.engine == "vllm":
            return self._vllm(requests, seed)
        import torch

        s = self.sampling
        batch = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True).to(self.device)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**batch, do_sample=s.temperature > 0, temperature=s.temperature or None,
                                      top_p=s.top_p if s.temperature > 0 else None, max_new_tokens=s.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, top_k=None)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        eos = self.tokenizer.eos_token_id
        return [Generation(r.id, self.tokenizer.decode(ids, skip_special_tokens=True), eos in ids, seed)
                for r, ids in zip(requests, new)]

    def _vllm(self, requests: list[Request], seed: int) -> list[Generation]:
        import vllm

        s = self.sampling
        params = vllm.SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, seed=seed)
        outs = self.model.generate([r.prompt for r in requests], params, use_tqdm=False)
        return [Generation(r.id, o.outputs[0].text, o.outputs[0].finish_reason == "stop", seed)
                for r, o in zip(requests, outs)]


@dataclass
class _Video:
    sample: Sample
    events: list
    prompt: str
    ids: list[str]


def _videos(samples: Iterable[Sample], per_video: int, stats, errors: list) -> Iterator[_Video | Sample]:
    """Each sample as a `_Video` to prompt for, or the bare sample when it has no usable event (then `errors` gets
    its error tuple)."""
    for sample in samples:
        stats.inputs["feature_samples"] += 1
        d = sample.meta.get("duration")
        duration = float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0 else None
        if duration is None:
            errors.append((sample.key, "bad_duration", f"duration {d!r}"))
            yield sample
            continue
        clean = clean_events(sample.meta.get("events") or [], duration, "keep")
        stats.events_kept += len(clean.kept)
        stats.events_dropped.update(clean.dropped)
        if not clean.kept:
            errors.append((sample.key, "no_usable_events", ", ".join(f"{k}: {v}" for k, v in clean.dropped.items())
                           or "no events"))
            yield sample
            continue
        events = llm.event_order(clean.kept)
        ids = [sample.key] if per_video == 1 else [f"{sample.key}-d{i}" for i in range(per_video)]
        stats.inputs["dialogues_requested"] += per_video
        yield _Video(sample, events, llm.build_prompt(events), ids)


Made = Iterator[tuple[Sample, str, dict | None, str, str]]


def generated(samples: Iterable[Sample], cfg, stats, run: Callable[[list[list[Request]]], Iterator[list]],
              positions: Callable[[list[dict], int], int] | None, generation: dict) -> Made:
    """(sample, key, conversation or None, reason, detail) for every requested dialogue and every sample without
    events, in input order. `run` maps a list of request batches to their generations (the executor), in order;
    `positions` counts a sample's tokens as the trainer does (None: no budget check)."""
    errors: list[tuple] = []
    # enough videos per round for every actor to get batches; batch boundaries still follow input order only
    per_round = cfg.llm_batch_size * cfg.llm_actors
    for pending in _chunks(_videos(samples, cfg.dialogues_per_video, stats, errors), per_round):
        requests = [Request(i, v.prompt) for v in pending if isinstance(v, _Video) for i in v.ids]
        batches = [requests[i:i + cfg.llm_batch_size] for i in range(0, len(requests), cfg.llm_batch_size)]
        outs = {g.id: g for batch in run(batches) for g in batch}
        for item in pending:
            if not isinstance(item, _Video):
                key, reason, detail = errors.pop(0)
                yield item, key, None, reason, detail
                continue
            for rid in item.ids:
                yield (item.sample, rid, *_judge(item, outs[rid], cfg, positions, generation))


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    group: list = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def _judge(video: _Video, gen: Generation, cfg, positions, generation: dict) -> tuple[dict | None, str, str]:
    """One generation → (conversation, "", "") or (None, reason, detail with the start of the text)."""
    try:
        if not gen.finished:
            raise llm.Rejected("truncated", f"no end of text within {cfg.max_new_tokens} new tokens")
        raw = llm.parse_dialogue(gen.text)
        llm.check_dialogue(raw, video.events, video.prompt)
        turns = llm.rendered_turns(raw, video.events, float(video.sample.meta["duration"]))
        if positions is not None:
            n = positions(turns, int(video.sample.features.shape[0]))
            if n > cfg.max_tokens:
                raise llm.Rejected("over_budget", f"{n} positions > --max-tokens {cfg.max_tokens}")
    except llm.Rejected as exc:
        return None, f"llm_{exc.reason}", f"{exc.detail} | text: {gen.text[:160]!r}"
    meta = {**generation, "prompt": video.prompt, "batch_seed": gen.batch_seed, "request": gen.id}
    return llm.generated_record(turns, raw, video.events, cfg.seed, meta), "", ""


def check_options(cfg) -> None:
    """The --generate options of BuildQaConfig (called from its __post_init__)."""
    if not cfg.generate:
        if cfg.llm is not None:
            raise ValueError("--llm is only used with --generate")
        return
    if cfg.stage != "3" or cfg.dialogues is not None or cfg.llm is None:
        raise ValueError("--generate needs --stage 3 and --llm PATH, and replaces --dialogues")
    if cfg.llm_engine not in ENGINES or cfg.executor not in EXECUTORS:
        raise ValueError(f"--llm-engine must be one of {ENGINES} and --executor one of {EXECUTORS}")
    if min(cfg.dialogues_per_video, cfg.llm_batch_size, cfg.max_new_tokens, cfg.llm_actors) < 1:
        raise ValueError("--dialogues-per-video, --llm-batch-size, --max-new-tokens and --llm-actors must be ≥ 1")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise ValueError("--temperature must be ≥ 0 and --top-p within (0, 1]")


def settings(cfg) -> dict:
    """What every generated sample and run_config.json record about the generator."""
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    from pipeline.qa.llm_source import recorded_name

    return {"model": recorded_name(str(cfg.llm)), "engine": cfg.llm_engine, "sampling": sampling.to_json(),
            "seed": cfg.seed, "batch_size": cfg.llm_batch_size, "dialogues_per_video": cfg.dialogues_per_video}
