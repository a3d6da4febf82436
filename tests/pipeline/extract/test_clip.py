"""The CLIP side of extract: DESIGN.md's pixels → features path, weight loading, encoder ids, --fast-resize cosine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extract.clip import (
    CLIP_MEAN,
    CLIP_STD,
    ClipConfig,
    ModelLoadError,
    _tiny_model,
    encode,
    encoder_id,
    load_model,
    preprocess,
    short_side_size,
)


def test_preprocess_by_hand_when_no_resize_is_needed():
    """A 224×320 frame: the resize is the identity, so crop and normalise can be computed by hand."""
    rng = np.random.RandomState(1)
    frames = rng.randint(0, 256, (2, 224, 320, 3), dtype=np.uint8)
    got = preprocess(frames).numpy()
    crop = frames[:, :, 48:272].astype(np.float32) / 255.0
    want = ((crop - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)).transpose(0, 3, 1, 2)
    assert got.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_preprocess_downscale_is_bicubic_without_antialias():
    frames = np.random.RandomState(2).randint(0, 256, (1, 480, 640, 3), dtype=np.uint8)
    assert short_side_size(480, 640) == (224, 298)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    resized = torch.nn.functional.interpolate(x, size=(224, 298), mode="bicubic", align_corners=False)
    crop = resized[..., 37:261]
    want = (crop - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert torch.equal(preprocess(frames), want)
    whole = torch.from_numpy(np.concatenate([frames] * 13))  # the chunked path equals one call on all frames
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    one_call = TF.normalize(TF.center_crop(TF.resize(whole.permute(0, 3, 1, 2).float() / 255.0, [224],
                                                     interpolation=InterpolationMode.BICUBIC, antialias=False),
                                           [224, 224]), CLIP_MEAN, CLIP_STD)
    assert torch.equal(preprocess(whole.numpy()), one_call)
    aa = torch.nn.functional.interpolate(x, size=(224, 298), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.allclose(aa[..., 37:261], crop, atol=1e-3)  # the antialiased path would give other pixels


def test_tiny_random_is_seeded_and_768_wide():
    a, b = load_model(ClipConfig(model="tiny-random")), load_model(ClipConfig(model="tiny-random"))
    c = load_model(ClipConfig(model="tiny-random", seed=1))
    x = preprocess(np.random.RandomState(3).randint(0, 256, (3, 240, 320, 3), dtype=np.uint8))
    fa, fb, fc = encode(a, x, 2), encode(b, x, 2), encode(c, x, 2)
    assert fa.shape == (3, 768) and fa.dtype == np.float16
    assert np.array_equal(fa, fb) and not np.array_equal(fa, fc)
    np.testing.assert_allclose(encode(a, x, 1).astype(np.float32), fa.astype(np.float32), atol=2e-3)  # chunking
    assert encoder_id(ClipConfig(model="tiny-random")) != encoder_id(ClipConfig(model="tiny-random", seed=1))
    assert "decoder-resize" in encoder_id(ClipConfig(model="tiny-random", fast_resize=True))


@pytest.fixture(scope="module")
def source_model():
    m = _tiny_model(5).eval()
    for p in m.parameters():  # OpenAI checkpoints hold fp16 weights: make ours exactly representable in fp16
        p.data = p.data.half().float()
    return m


def _features(model, x):
    with torch.inference_mode():
        return model.encode_image(x)


def test_openai_torchscript_archive_loads_with_jit(tmp_path, source_model):
    x = torch.randn(2, 3, 224, 224)
    torch.jit.save(torch.jit.trace_module(source_model, {"encode_image": (x,)}), tmp_path / "ViT-L-14.pt")
    cfg = ClipConfig(model="tiny-random", weights=str(tmp_path / "ViT-L-14.pt"))
    assert torch.equal(_features(load_model(cfg), x), _features(source_model, x))
    assert "sha256:" in encoder_id(cfg)


def test_state_dicts_load_with_weights_only(tmp_path, source_model):
    x = torch.randn(2, 3, 224, 224)
    openai_sd = {**source_model.state_dict(), "input_resolution": torch.tensor(224)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in openai_sd.items()}}, tmp_path / "openai.pt")
    torch.save(source_model.state_dict(), tmp_path / "open_clip.pt")
    for name in ("openai.pt", "open_clip.pt"):
        model = load_model(ClipConfig(model="tiny-random", weights=str(tmp_path / name)))
        assert torch.equal(_features(model, x), _features(source_model, x)), name


class _NotTensors:
    pass


def test_unloadable_weights_raise_a_clear_error(tmp_path):
    torch.save({"obj": _NotTensors()}, tmp_path / "pickled.pt")  # weights_only=True refuses arbitrary objects
    with pytest.raises(ModelLoadError, match="cannot read CLIP weights"):
        load_model(ClipConfig(model="tiny-random", weights=str(tmp_path / "pickled.pt")))
    narrow = _tiny_model(0)
    torch.save({k: v for k, v in narrow.state_dict().items() if not k.startswith("visual.proj")},
               tmp_path / "partial.pt")
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(ClipConfig(model="tiny-random", weights=str(tmp_path / "partial.pt")))
    with pytest.raises(ValueError, match="needs weights"):
        ClipConfig(model="ViT-L-14")
    with pytest.raises(ValueError, match="no such file"):
        ClipConfig(model="ViT-L-14", weights=str(tmp_path / "absent.pt"))


def test_fast_resize_cosine_is_measured(tmp_path):
    """--fast-resize (decoder-side resize) vs the default path on the same frames; the figure is printed."""
    from pipeline.contract import timing
    from pipeline.extract.decode import open_video
    from pipeline.synth.media import write_video

    t = np.linspace(0, 1, 40)[:, None, None, None]
    yy, xx = np.mgrid[0:240, 0:320]
    frames = np.stack([(128 + 100 * np.sin(xx / 17 + 6 * t[i, 0, 0, 0]) * np.cos(yy / 23))[..., None]
                       * np.array([1.0, 0.8, 0.6]) for i in range(40)]).clip(0, 255).astype(np.uint8)
    path = write_video(tmp_path / "wave.mp4", frames, 10.0)
    src = open_video(str(path))
    idx = timing.frame_indices(src.num_frames, src.fps)
    model = load_model(ClipConfig(model="tiny-random"))
    default = encode(model, preprocess(src.read(idx)), 100).astype(np.float32)
    fast = encode(model, preprocess(src.read(idx, short_side_size(240, 320)), resize=False), 100).astype(np.float32)
    cos = (default * fast).sum(1) / np.linalg.norm(default, axis=1) / np.linalg.norm(fast, axis=1)
    print(f"\n--fast-resize vs default (tiny-random CLIP, 320x240 video): cosine mean {cos.mean():.5f} "
          f"min {cos.min():.5f}")
    assert cos.min() > 0.9 and cos.mean() < 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_encoder_runs_fp16_close_to_cpu():
    x = preprocess(np.random.RandomState(4).randint(0, 256, (8, 240, 320, 3), dtype=np.uint8))
    cpu = encode(load_model(ClipConfig(model="tiny-random", device="cpu")), x, 4).astype(np.float32)
    gpu_model = load_model(ClipConfig(model="tiny-random", device="cuda"))
    assert next(gpu_model.parameters()).dtype == torch.float16
    gpu = encode(gpu_model, x, 4).astype(np.float32)
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.999
