"""Packed micro-batches: the samples of a micro-batch as one sequence, with no padding and no attention across samples.

`VideoLLM.forward` builds each sample's `inputs_embeds` (text with the video sentinel replaced by its feature rows);
with `--pack` they are concatenated into one row of sum(lengths) positions instead of being right-padded to the
longest. What keeps the samples apart:

- **position ids** restart at 0 for every sample, so RoPE sees each sample as it would alone;
- **attention**: with `flash_attention_2`, the varlen kernel over `cu_seq_lens` (passed as transformers'
  `FlashAttentionKwargs`, so no mask is built); with SDPA, an exact block-diagonal causal mask (4D boolean,
  True = attend; transformers uses a 4D mask as given); with `eager`, the same mask as additive floats (eager adds
  the mask to the scores);
- **labels**: each sample's first label becomes IGNORE_INDEX. The causal-LM loss shifts labels by one, so the last
  position of a sample would otherwise be trained to predict the next sample's first token; unpacked, that position
  predicts padding (ignored) and the first label is never a target.

The loss is the mean over the same label tokens as the padded batch, so it equals the unpacked loss up to float
summation order (tests/train/test_packing.py checks loss and gradients on the tiny model). Checked against
transformers 5.24's LLaMA (`masking_utils._preprocess_mask_arguments` returns a 4D mask as-is; the flash path takes
`cu_seq_lens_q/k` and `max_length_q/k`); other architectures must route masks through `create_causal_mask` too.
"""
from __future__ import annotations

import torch

from pipeline.contract.conversation import IGNORE_INDEX, VIDEO_TOKEN_INDEX


def sequence_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_features: torch.Tensor) -> torch.Tensor:
    """(B,) positions each sample takes in the LLM: its text tokens, the video sentinel replaced by its feature rows."""
    has_video = (input_ids == VIDEO_TOKEN_INDEX).any(dim=1).long()
    return attention_mask.sum(dim=1) + has_video * (num_features - 1)


def useful_and_padded(batch: dict, packed: bool) -> tuple[int, int]:
    """(useful positions, padding positions) the LLM computes for a collated micro-batch, packed or padded."""
    lengths = sequence_lengths(batch["input_ids"], batch["attention_mask"], batch["num_features"])
    useful = int(lengths.sum())
    return useful, 0 if packed else int(lengths.max()) * len(lengths) - useful


def block_causal_mask(lengths: list[int], device=None) -> torch.Tensor:
    """(1, 1, L, L) boolean: position q attends to k iff both lie in the same sample and k <= q."""
    sample = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    causal = torch.ones(len(sample), len(sample), dtype=torch.bool, device=device).tril()
    return (causal & (sample[:, None] == sample[None, :]))[None, None]


def attention_inputs(lengths: list[int], implementation: str, dtype: torch.dtype, device) -> dict:
    """The LLM keyword arguments that isolate the packed samples for the given attention implementation."""
    if implementation.startswith("flash_attention"):
        cu = torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)
        longest = max(lengths)
        return {"attention_mask": None, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                "max_length_q": longest, "max_length_k": longest}
    mask = block_causal_mask(lengths, device)
    if implementation == "sdpa":
        return {"attention_mask": mask}
    additive = torch.zeros(mask.shape, dtype=dtype, device=device)
    return {"attention_mask": additive.masked_fill_(~mask, torch.finfo(dtype).min)}


def packed_inputs(embs: list[torch.Tensor], labels: list[torch.Tensor] | None, implementation: str) -> dict:
    """One (1, sum(lengths), hidden) sequence of the samples' embeddings, with position ids, labels and attention
    arguments, ready for the LLM's forward."""
    lengths = [e.shape[0] for e in embs]
    inputs = torch.cat(embs)[None]
    device = inputs.device
    out = {"inputs_embeds": inputs, "use_cache": False,
           "position_ids": torch.cat([torch.arange(n, device=device) for n in lengths])[None],
           **attention_inputs(lengths, implementation, inputs.dtype, device)}
    if labels is not None:
        firsts = [lab.clone() for lab in labels]
        for lab in firsts:
            lab[0] = IGNORE_INDEX
        out["labels"] = torch.cat(firsts)[None]
    return out
