"""GPU: greedy generation through eval.generate on CUDA gives the CPU's answers, one at a time and batched."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from support.evaluation import TEXTS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_greedy_equals_cpu_greedy():
    from eval.generate import Query, generate
    from pipeline.contract.conversation import generation_prompt
    from train.model import VideoLLM, new_projector
    from train.tiny import build_tiny_random

    llm, tok = build_tiny_random(TEXTS * 10, seed=0)
    model = VideoLLM(llm, tok, new_projector(768, llm.config.hidden_size), "v1").eval()
    rng = np.random.default_rng(0)
    queries = [Query(generation_prompt([{"from": "human", "value": f"<video>\n{TEXTS[i % 3]}"}], tok, "v1"),
                     rng.standard_normal((100, 768)).astype(np.float16)) for i in range(6)]
    cpu = generate(model, queries, 1, 16)
    assert any(cpu), "the tiny model answered nothing: the comparison would prove nothing"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu_model = copy.deepcopy(model).to("cuda")
    assert generate(gpu_model, queries, 1, 16) == cpu
    assert generate(gpu_model, queries, 4, 16) == cpu
