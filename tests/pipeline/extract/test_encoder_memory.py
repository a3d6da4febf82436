"""The CPU encoder's memory: the loaded model is the image tower alone, its estimated size asks Ray for memory, and a
node whose memory holds fewer copies than it has CPU slots runs fewer in-task copies (or refuses a run that fits
nowhere) instead of running out of memory."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support.extract import TINY, assert_exact, config, good_rows, make_media, write_rows

from pipeline.extract.clip import (
    ClipConfig,
    ModelLoadError,
    cpu_memory_bytes,
    encode,
    load_model,
)
from pipeline.extract.clip_weights import tiny_clip
from pipeline.extract.job import ExtractError, run_extract
from pipeline.extract.pixels import preprocess

BATCH = 100


def _vision_params(model) -> int:
    return sum(p.numel() for p in model.visual.parameters())


def test_estimate_counts_the_vision_tower_of_both_models():
    import open_clip
    from open_clip.model import CLIP

    with torch.device("meta"):  # the real architecture's shapes, no memory
        vit_l = CLIP(**open_clip.get_model_config("ViT-L-14"))
    for cfg, model in ((TINY, tiny_clip(0)), (ClipConfig(model="ViT-L-14", pretrained="openai"), vit_l)):
        estimated = cpu_memory_bytes(cfg, 0) / 4  # float32 weights only
        assert abs(estimated / _vision_params(model) - 1) < 0.01, cfg.model
        per_frame = (cpu_memory_bytes(cfg, BATCH) - cpu_memory_bytes(cfg, 0)) / BATCH
        assert per_frame > 3 * 224 * 224 * 4  # more than the frame's own float32 pixels
    vit_l_gb = cpu_memory_bytes(ClipConfig(model="ViT-L-14", pretrained="openai"), 256) / 1e9
    assert 4.3 < vit_l_gb < 4.9  # measured: 1.22 GB of weights + ~13 MB a frame (docs/extract.md)


def test_loaded_model_is_the_image_tower_with_the_same_features():
    full = tiny_clip(0).float().eval()
    model = load_model(TINY)
    assert {k.split(".")[0] for k in model.state_dict()} == {"visual"}
    assert sum(p.numel() for p in model.parameters()) == _vision_params(full) < sum(p.numel() for p in full.parameters())
    x = preprocess(np.random.RandomState(0).randint(0, 256, (4, 240, 320, 3), dtype=np.uint8))
    with torch.inference_mode():
        expected = full.encode_image(x).numpy().astype(np.float16)
    assert np.array_equal(encode(model, x, 4), expected)


@pytest.fixture(scope="module")
def ray_one_copy():
    """Two CPU slots, but Ray memory for one in-task copy of the tiny encoder at batch 100."""
    import ray

    need = cpu_memory_bytes(TINY, BATCH)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _memory=int(need * 1.5))
    yield need
    ray.shutdown()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list:
    return good_rows(make_media(tmp_path_factory.mktemp("memory")))


@pytest.fixture(scope="module")
def manifest(rows, tmp_path_factory) -> Path:
    return write_rows(rows, tmp_path_factory.mktemp("manifest") / "manifest.parquet")


@pytest.mark.ray
def test_memory_for_one_copy_runs_one_and_says_so(ray_one_copy, rows, manifest, tmp_path):
    import ray

    free, done = [], threading.Event()

    def watch():  # the Ray memory left while tasks run: each in-task copy holds its share
        while not done.is_set():
            free.append(ray.available_resources().get("memory", 0))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run_extract(config(manifest, tmp_path / "out", executor="ray", tasks=3, batch_size=BATCH))
    finally:
        done.set()
        watcher.join()
    assert ray.cluster_resources()["memory"] - min(free) >= ray_one_copy  # the tasks asked Ray for it
    assert not summary.failed and summary.samples == 5
    assert summary.notes == [f"memory for 1 in-task encoder copies (~{ray_one_copy / 2**30:.1f} GiB each) on 2 CPU "
                             "slots: 1 slot(s) idle; lower --batch-size to use them"]
    plan = json.loads((tmp_path / "out" / "run_config.json").read_text())["encoder_plan"]
    assert plan["where"] == "in_task" and plan["actors"] == 0
    assert plan["copy_bytes"] == ray_one_copy and plan["ask_memory"] and plan["notes"] == summary.notes
    assert_exact(tmp_path / "out", rows)


@pytest.mark.ray
def test_an_encoder_no_node_can_hold_stops_before_any_work(ray_one_copy, manifest, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExtractError, match=r"one CPU copy of the encoder needs .* GiB of Ray memory on any node: "
                                           r"lower --batch-size"):
        run_extract(config(manifest, out, executor="ray", tasks=2, batch_size=20 * BATCH))
    assert not (out / "run_config.json").exists() and not list(out.glob("*.tar"))
    with pytest.raises(ExtractError, match=r"--encoders 2: Ray memory on the nodes holds 1 CPU copies"):
        run_extract(config(manifest, tmp_path / "out2", executor="ray", tasks=2, batch_size=BATCH, encoders=2))


GIB = 2**30


def test_memory_bound_counts_copies_per_node():
    from pipeline.extract.encoder_plan import memory_bound

    nodes = [{"CPU": 16, "memory": 32 * GIB}, {"CPU": 4, "memory": 64 * GIB}]
    keep, notes = memory_bound(5 * GIB, nodes, encoders=0, task_cpus=1)  # 6 on the first node, 4 on the second
    assert keep and notes == ["memory for 10 in-task encoder copies (~5.0 GiB each) on 20 CPU slots: 10 slot(s) idle; "
                              "lower --batch-size to use them"]
    assert memory_bound(1 * GIB, nodes, encoders=0, task_cpus=1) == (True, [])  # room for one copy per slot
    assert memory_bound(5 * GIB, nodes, encoders=18, task_cpus=1) == (True, [])  # 6 + 12 actors fit
    with pytest.raises(ModelLoadError, match=r"--encoders 19: Ray memory on the nodes holds 18 CPU copies"):
        memory_bound(5 * GIB, nodes, encoders=19, task_cpus=1)
    with pytest.raises(ModelLoadError, match=r"needs ~65.0 GiB .* than the 64.0 GiB of Ray memory on any node"):
        memory_bound(65 * GIB, nodes, encoders=0, task_cpus=1)


def test_nodes_without_a_memory_resource_are_not_asked_for_memory():
    from pipeline.extract.encoder_plan import memory_bound

    keep, notes = memory_bound(5 * GIB, [{"CPU": 8}], encoders=0, task_cpus=1)
    assert not keep and "report no memory resource" in notes[0]
