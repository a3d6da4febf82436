"""The CLIP side of extract: DESIGN.md's pixels → features path, weight loading, encoder ids, --fast-resize cosine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.extract.clip import ClipConfig, ModelLoadError, encode, encoder_id, load_model
from pipeline.extract.clip_weights import tiny_clip
from pipeline.extract.pixels import CLIP_MEAN, CLIP_STD, preprocess, short_side_size


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
    m = tiny_clip(5).eval()
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
    narrow = tiny_clip(0)
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


def _old_float32_pixels(frames: np.ndarray, resize: bool) -> torch.Tensor:
    """The pre-change decode side, op for op: every path shipped float32 pixels (60 MB per 100-frame video)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if resize:
        x = TF.resize(x, [224], interpolation=InterpolationMode.BICUBIC, antialias=False)
    return TF.normalize(TF.center_crop(x, [224, 224]), CLIP_MEAN, CLIP_STD).contiguous()  # it shipped contiguous


def test_smaller_payloads_give_bit_identical_features(tmp_path):
    """What the decode side now ships to the encoder (fp16 pixels for an fp16 encoder; uint8 crops on the fast path)
    gives exactly the features of the float32 pixels it shipped before, on generated videos."""
    from pipeline.contract import timing
    from pipeline.extract.decode import open_video
    from pipeline.extract.pixels import center_crop_uint8
    from pipeline.extract.steps import Item, Preprocess
    from pipeline.synth.media import frame_counter_video

    model = load_model(ClipConfig(model="tiny-random"))
    half = load_model(ClipConfig(model="tiny-random")).half()  # what a GPU encoder runs (fp16), here on the CPU
    for size in ((64, 48), (320, 240)):
        src = open_video(str(frame_counter_video(tmp_path / f"v{size[0]}.mp4", 90, 15.0, size=size)))
        idx = timing.frame_indices(src.num_frames, src.fps)[::5]  # 20 of the 100 sampled frames: fp16 on CPU is slow
        full, small = src.read(idx), src.read(idx, short_side_size(size[1], size[0]))
        old = _old_float32_pixels(full, resize=True).numpy()
        assert np.array_equal(encode(model, old, 8), encode(model, preprocess(full).numpy(), 8))
        fp16 = Preprocess(dtype="float16")([Item(row={"key": "k"}, frames=full)])[0].pixels
        assert fp16.dtype == np.float16 and fp16.nbytes * 2 == old.nbytes == 20 * 3 * 224 * 224 * 4
        assert np.array_equal(encode(half, old, 8), encode(half, fp16, 8))
        crops = Preprocess(fast_resize=True)([Item(row={"key": "k"}, frames=small)])[0].pixels
        assert crops.dtype == np.uint8 and crops.nbytes * 4 == old.nbytes
        assert np.array_equal(crops, center_crop_uint8(small))
        old_fast = _old_float32_pixels(small, resize=False).numpy()
        assert np.array_equal(encode(model, old_fast, 50), encode(model, crops, 50))
        assert np.array_equal(encode(half, old_fast, 50), encode(half, crops, 50))
    with pytest.raises(RuntimeError, match="features would differ"):
        encode(model, fp16, 50)  # fp16 pixels into a float32 encoder would be a silent change


@pytest.mark.parametrize("hw", [(360, 640), (481, 641), (225, 1000), (1000, 225), (224, 224), (300, 224), (226, 227)])
def test_preprocess_equals_torchvision_op_for_op(hw):
    """The decode side runs resize / crop / normalise in torch alone (no torchvision import in decode workers); on
    odd sizes (crop offsets rounded half to even, no-op resizes) it gives torchvision's pixels bit for bit, and the
    uint8 crop of the fast path is torchvision's crop."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    from pipeline.extract.pixels import center_crop_uint8, normalise

    frames = np.random.RandomState(hw[0] + hw[1]).randint(0, 256, (3, *hw, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    want = TF.normalize(TF.center_crop(TF.resize(x.float() / 255.0, [224], interpolation=InterpolationMode.BICUBIC,
                                                 antialias=False), [224, 224]), CLIP_MEAN, CLIP_STD)
    assert torch.equal(preprocess(frames), want)
    if min(hw) == 224:  # what the decoder hands the fast path: short side already 224
        crop = TF.center_crop(x, [224, 224])
        assert np.array_equal(center_crop_uint8(frames), crop.numpy())
        assert torch.equal(normalise(torch.from_numpy(center_crop_uint8(frames))),
                           TF.normalize(crop.float() / 255.0, CLIP_MEAN, CLIP_STD))
        assert torch.equal(preprocess(frames, resize=False), want)


def test_decode_workers_do_not_import_torchvision():
    """Preprocess (setup and a call) in a fresh interpreter leaves torchvision unimported."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\nfrom pipeline.extract.steps import Item, Preprocess\n"
            "p = Preprocess(); p.setup()\nit = Item(row={'key': 'k'}); it.frames = np.zeros((2, 360, 640, 3), np.uint8)\n"
            "p([it]); assert it.pixels.shape == (2, 3, 224, 224)\nprint('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_frame_chunks_cut_like_the_concatenation():
    """Chunks across items equal slices of their concatenation; a chunk inside one item is a view, not a copy."""
    from pipeline.extract.clip import frame_chunks

    arrays = [np.arange(n * 2).reshape(n, 2) + 100 * i for i, n in enumerate((5, 1, 7, 3))]
    whole = np.concatenate(arrays)
    for size in (1, 2, 3, 5, 16, 100):
        got = list(frame_chunks(arrays, size))
        want = [whole[i:i + size] for i in range(0, len(whole), size)]
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
    first = next(frame_chunks(arrays, 5))
    assert np.shares_memory(first, arrays[0])
    assert list(frame_chunks([], 4)) == [] and list(frame_chunks([np.zeros((0, 2))], 4)) == []
    model = load_model(ClipConfig(model="tiny-random"))
    x = preprocess(np.random.RandomState(6).randint(0, 256, (9, 240, 320, 3), dtype=np.uint8)).numpy()
    assert np.array_equal(encode(model, [x[:4], x[4:5], x[5:]], 3), encode(model, x, 3))
