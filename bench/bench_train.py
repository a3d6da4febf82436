"""Trainer token-efficiency benchmark: how much of a stage-2 step is padding, and what that costs, per batching mode.

Data: real-shaped stage-2 samples. The ActivityNet Captions sample in `shared/data/real/` (300 videos; resolved as
tests/support/real_data.py does: `$VTL_REAL_DATA`, else `shared/data/real` beside the checkout, else
`/work/shared/data/real`) becomes conversations through our own rules (`pipeline.qa.rules.clean_events` and
`stage2_conversation`: VTimeLLM's templates, 20 % dense captioning / 80 % multi-turn), `--copies` per video with
different sample keys, hence different draws; features are (100, 768) float16 (random: their values do not change
the lengths). Tokenized with the real LLaMA-2 tokenizer (`shared/data/tokenizers/llama2-vicuna/`) in the `v1` format.

Modes, micro-batch 8, the same samples:
- `vtl random`: our loader with `--no-group-by-length` (shuffled stream, each micro-batch padded to its longest);
- `vtl grouped`: our default (length-grouped within shuffled windows of 50 micro-batches, train.data.grouping);
- `vtl packed`: grouped and `--pack` (one sequence per micro-batch, no padding, train.packing);
- `VTimeLLM-style`: a map-style dataset (JSON list in memory, one `.npy` per sample, tokenized in `__getitem__`),
  `DataLoader(shuffle=True)`, padded to the longest, as VTimeLLM's LLaVA-derived trainer does without
  `group_by_modality_length`.

Useful-token fraction: over one whole epoch of each loader, positions the LLM computes that belong to a sample
(text tokens + feature rows) over all positions computed. Samples/s: training the tiny LLaMA (train.model.TINY_SIZE,
random weights, fp32, every weight trained with AdamW, one optimizer step per micro-batch) on CPU for `--batches`
micro-batches of each loader after one warm-up batch, loader included; the modes take turns for `--repeat` rounds
and the median is reported, with `--threads` torch threads (1: on a shared 2-core machine two OpenMP threads made
the tiny model's steps 10-20× slower, spinning against each other and the loader's workers). The tiny model's vocabulary is `--vocab` (512) and token ids are folded into it
(id mod vocab): with LLaMA's 32,000 words a 64-wide model spends ~96 % of its compute in the output layer (a 7B
model ~2 %), and the lengths, hence the padding, are the real tokenizer's either way. The last line is `ratio=X.XX`: useful tokens per second
of vtl's default (grouped) over the VTimeLLM-style loader.

    .venv/bin/python bench/bench_train.py --workdir /tmp/vtl-bench-train
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS, DIM, MICRO, WORKERS, PER_SHARD, MAX_TOKENS = 100, 768, 8, 2, 300, 2048


def real_data() -> Path:
    for c in (os.environ.get("VTL_REAL_DATA"), ROOT.parent / "shared" / "data" / "real", "/work/shared/data/real"):
        if c and Path(c).is_dir():
            return Path(c)
    raise FileNotFoundError("real data samples not found: set VTL_REAL_DATA to the folder of shared/data/real")


def conversations(copies: int, seed: int = 0) -> list[tuple[str, dict]]:
    """(key, stage-2 conversation) for every ActivityNet video of the sample, `copies` draws each."""
    from manifests.activitynet import read_activitynet
    from pipeline.qa.rules import clean_events, stage2_conversation

    out = []
    for row in read_activitynet(real_data() / "activitynet_captions_train_sample.json").rows:
        raw = [{"start": e.start, "end": e.end, "caption": e.caption} for e in row.events]
        kept = clean_events(raw, row.duration).kept
        for c in range(copies if kept else 0):
            key = f"{row.key}-c{c}"
            out.append((key, stage2_conversation(kept, row.duration, seed, key)))
    return out


def generate(workdir: Path, copies: int) -> None:
    """Both layouts of the same samples: shards/ (our writer) and train.json + npy/ (VTimeLLM's)."""
    from pipeline.contract.shards import Sample, ShardWriter, write_index

    done = workdir / "done"
    if done.exists() and json.loads(done.read_text()) == {"copies": copies}:
        return
    gen = np.random.default_rng(0)
    pool = [gen.standard_normal((ROWS, DIM)).astype(np.float16) for _ in range(16)]
    (workdir / "npy").mkdir(parents=True, exist_ok=True)
    records = []
    with ShardWriter(workdir / "shards", "train", samples_per_shard=PER_SHARD) as writer:
        for i, (key, conv) in enumerate(conversations(copies)):
            feats = pool[i % len(pool)]
            writer.write(Sample(key, feats, {"key": key, "duration": 60.0}, conv))
            np.save(workdir / "npy" / f"{key}.npy", feats, allow_pickle=False)
            records.append({"id": key, "conversations": conv["turns"]})
    write_index(workdir / "shards", writer.shards, encoder="random", num_frames=ROWS, dim=DIM, manifest_hash=None)
    (workdir / "train.json").write_text(json.dumps(records))
    done.write_text(json.dumps({"copies": copies}))


def tokenizer(path: Path):
    from transformers import AutoTokenizer

    from train.model import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))


class JsonListDataset:
    """VTimeLLM's layout: the whole JSON list in memory, `{id}.npy` opened and the sample tokenized per item."""

    def __init__(self, workdir: Path, tok):
        self.records = json.loads((workdir / "train.json").read_text())
        self.npy, self.tok = workdir / "npy", tok

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from pipeline.contract.conversation import encode

        rec = self.records[i]
        enc = encode(rec["conversations"], self.tok, "v1")
        feats = np.load(self.npy / f"{rec['id']}.npy", allow_pickle=False)
        return {"input_ids": enc.input_ids, "labels": enc.labels, "features": feats}


class PadCollate:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items):
        from train.data.loader import collate

        return collate(items, self.pad_id)


def batches(mode: str, workdir: Path, tok, seed: int):
    """An endless iterator of collated micro-batches of one mode."""
    import torch

    from train.data.loader import TrainLoader

    if mode == "vtimellm":
        ds = JsonListDataset(workdir, tok)
        gen = torch.Generator().manual_seed(seed)
        while True:
            yield from torch.utils.data.DataLoader(ds, batch_size=MICRO, shuffle=True, drop_last=True,
                                                   num_workers=WORKERS, collate_fn=PadCollate(tok.pad_token_id),
                                                   generator=gen)
    ld = TrainLoader(workdir / "shards", tokenizer=tok, conv_format="v1", micro_batch=MICRO, max_tokens=MAX_TOKENS,
                     num_workers=WORKERS, seed=seed, token_cache=workdir / "token-cache",
                     group_by_length=mode != "random")
    for batch, _ in ld:
        yield batch


def useful_fraction(mode: str, workdir: Path, tok, epoch_batches: int) -> tuple[float, list[int]]:
    """Useful share of computed positions over one epoch, and every sample's length in the LLM."""
    from train.packing import sequence_lengths, useful_and_padded

    useful = padded = 0
    lengths: list[int] = []
    it = batches(mode, workdir, tok, seed=1)
    for _ in range(epoch_batches):
        b = next(it)
        u, p = useful_and_padded(b, packed=mode == "packed")
        useful, padded = useful + u, padded + p
        lengths += sequence_lengths(b["input_ids"], b["attention_mask"], b["num_features"]).tolist()
    return useful / (useful + padded), lengths


def tiny_model(tok, pack: bool, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from train.model import VideoLLM, new_projector
    from train.tiny import TINY_SIZE

    cfg = LlamaConfig(**TINY_SIZE, vocab_size=vocab, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = VideoLLM(LlamaForCausalLM(cfg), tok, new_projector(DIM, cfg.hidden_size)).train()
    model.pack = pack
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def folded(batch: dict, vocab: int) -> dict:
    """Token ids and labels mod `vocab` (the video sentinel and ignored labels, both negative, kept); fp32 features."""
    import torch

    out = dict(batch, features=batch["features"].float())
    for name in ("input_ids", "labels"):
        out[name] = torch.where(batch[name] >= 0, batch[name] % vocab, batch[name])
    return out


def train_rate(mode: str, workdir: Path, tok, n: int, seed: int, vocab: int) -> tuple[float, float]:
    """(samples/s, useful tokens/s) training the tiny model on `n` micro-batches after one warm-up batch."""

    from train.packing import useful_and_padded

    model, opt = tiny_model(tok, pack=mode == "packed", vocab=vocab)
    it = batches(mode, workdir, tok, seed)
    useful = 0
    for i in range(n + 1):
        if i == 1:
            t0 = time.perf_counter()
        b = next(it)
        useful += useful_and_padded(b, packed=True)[0] if i else 0
        loss = model(**folded(b, vocab)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    it.close()
    return n * MICRO / seconds, useful / seconds


MODES = {"random": "vtl random (--no-group-by-length)", "grouped": "vtl grouped (default)",
         "packed": "vtl packed (--pack)", "vtimellm": "VTimeLLM-style (random, pad to longest)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/vtl-bench-train"))
    p.add_argument("--tokenizer", type=Path, default=None, help="default: shared/data/tokenizers/llama2-vicuna")
    p.add_argument("--copies", type=int, default=8, help="conversations drawn per ActivityNet video")
    p.add_argument("--batches", type=int, default=30, help="timed micro-batches per mode and round")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--vocab", type=int, default=512, help="the tiny model's vocabulary (token ids folded into it)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the tiny model (see docs/train.md)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    generate(args.workdir, args.copies)
    tok = tokenizer(args.tokenizer or real_data().parent / "tokenizers" / "llama2-vicuna")
    samples = len(json.loads((args.workdir / "train.json").read_text()))
    print(f"{samples} stage-2 samples from {real_data() / 'activitynet_captions_train_sample.json'}, micro-batch "
          f"{MICRO}, {WORKERS} workers, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    fractions = {}
    for mode in MODES:
        fractions[mode], lengths = useful_fraction(mode, args.workdir, tok, samples // MICRO)
    q = np.percentile(lengths, [50, 90])
    print(f"sample length (text tokens + 100 feature rows): mean {np.mean(lengths):.0f}, median {q[0]:.0f}, "
          f"p90 {q[1]:.0f}, max {max(lengths)}")
    rates: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for r in range(args.repeat):
        for mode in MODES:
            rates[mode].append(train_rate(mode, args.workdir, tok, args.batches, seed=r, vocab=args.vocab))
    print(f"{'mode':44s} {'useful fraction':>15s} {'samples/s':>10s} {'useful tokens/s':>16s}")
    medians = {}
    for mode, label in MODES.items():
        sps = statistics.median(s for s, _ in rates[mode])
        tps = statistics.median(t for _, t in rates[mode])
        medians[mode] = tps
        print(f"{label:44s} {fractions[mode]:15.3f} {sps:10.1f} {tps:16.0f}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ratio={medians['grouped'] / medians['vtimellm']:.2f}")


if __name__ == "__main__":
    main()
