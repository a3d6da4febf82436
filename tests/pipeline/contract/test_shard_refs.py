"""Locating members in shard files (pipeline.contract.shard_refs): same members as tarfile, features read back exactly."""
import io
import tarfile

import numpy as np
import pytest
from support.cli import set_tar_size_field

from pipeline.contract.shard_refs import FeatureRef, iter_sample_refs, read_features_into
from pipeline.contract.shards import FEATURES, META, Sample, ShardWriter, iter_tar_members


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype.hasobject)
    return buf.getvalue()


def _same_as_tarfile(path) -> list[dict]:
    """The located members equal iter_tar_members' bytes; features read back equal np.load's arrays."""
    want, got = list(iter_tar_members(path)), list(iter_sample_refs(path))
    assert [m["__key__"] for m in got] == [m["__key__"] for m in want]
    for w, g in zip(want, got):
        assert set(g) == set(w)
        assert all(g[k] == w[k] for k in w if k != FEATURES)
        arr = np.load(io.BytesIO(w[FEATURES]), allow_pickle=False)
        out = np.full((1, arr.shape[0] + 2, arr.shape[1]), 7, np.float16)
        read_features_into([g[FEATURES]], out)
        assert np.array_equal(out[0, :arr.shape[0]], arr.astype(np.float16)) and (out[0, arr.shape[0]:] == 7).all()
    return got


def test_our_writer_shards(tmp_path):
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path, "train", samples_per_shard=50) as w:
        for i in range(5):
            w.write(Sample(f"k{i}", rng.standard_normal((3 + i, 16)).astype(np.float16), {"key": f"k{i}"},
                           {"turns": [], "note": "é" * i}))
    got = _same_as_tarfile(tmp_path / w.shards[0].name)
    assert got[4][FEATURES].shape == (7, 16) and got[4][FEATURES].dtype == "<f2"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_dialects_long_names_and_other_dtypes(tmp_path, fmt):
    """ustar name prefixes, GNU long names, pax paths; float32 and Fortran-order arrays; a directory entry."""
    rng = np.random.default_rng(1)
    arrays = {"short": rng.standard_normal((4, 8)).astype(np.float32),
              "sub/" + "d" * 120 + "/long_key": np.asfortranarray(rng.standard_normal((5, 8)).astype(np.float16)),
              "big": rng.standard_normal((3, 8)).astype(np.float16)}
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        tar.addfile(_dir("adir"))
        for key, arr in arrays.items():
            for name, data in ((f"{key}.{FEATURES}", _npy(arr)), (f"{key}.{META}", b'{"k": 1}')):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    got = _same_as_tarfile(path)
    assert [g["__key__"] for g in got] == ["short", "sub/" + "d" * 120 + "/long_key", "big"]


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_object_dtype_is_refused_and_corruption_raises(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        data = _npy(np.array([object()], dtype=object))
        info = tarfile.TarInfo(f"k.{FEATURES}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="object dtype"):
        list(iter_sample_refs(path))

    with ShardWriter(tmp_path, "ok", samples_per_shard=4) as w:
        w.write(Sample("k0", np.zeros((2, 8), np.float16), {"key": "k0"}))
    good = (tmp_path / w.shards[0].name).read_bytes()
    bad = bytearray(good)
    bad[1024 + 130] ^= 0x01  # the size field of the first member's header: the checksum no longer matches
    (tmp_path / "bad.tar").write_bytes(bytes(bad))
    with pytest.raises(ValueError):
        list(iter_sample_refs(tmp_path / "bad.tar"))
    (tmp_path / "cut.tar").write_bytes(good[:2048 + 700])
    with pytest.raises(ValueError):
        for m in iter_sample_refs(tmp_path / "cut.tar"):
            read_features_into([m[FEATURES]], np.zeros((1, 2, 8), np.float16))


def test_a_ref_that_does_not_fit_the_batch_raises(tmp_path):
    ref = FeatureRef(str(tmp_path / "none.tar"), 0, (3, 16), "<f2", False)
    with pytest.raises(ValueError, match="do not fit"):
        read_features_into([ref], np.zeros((1, 3, 8), np.float16))


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_shards_are_refused_with_a_clear_message(tmp_path, mode):
    path = tmp_path / "train-000000.tar.x"
    with tarfile.open(path, mode) as tar:
        data = _npy(np.zeros((2, 4), np.float16))
        info = tarfile.TarInfo("k.features.npy")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=f"{mode[2:].replace('gz', 'gzip').replace('bz2', 'bzip2')}-compressed tar"):
        list(iter_sample_refs(path))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size_field", [b"-0001000", b"77777777777"], ids=["negative", "past-the-end"])
def test_a_header_declaring_an_impossible_size_raises_instead_of_hanging(tmp_path, size_field):
    with ShardWriter(tmp_path, "train", samples_per_shard=50) as w:
        for i in range(3):
            w.write(Sample(f"k{i}", np.zeros((4, 8), np.float16), {"key": f"k{i}"}))
    shard = tmp_path / w.shards[0].name
    set_tar_size_field(shard, 2, size_field)
    with pytest.raises(ValueError, match="declares"):
        list(iter_sample_refs(shard))


@pytest.mark.timeout(30)
def test_a_fifo_in_place_of_a_shard_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "train-000000.tar"
    os.mkfifo(fifo)
    for read in (iter_sample_refs, iter_tar_members):
        with pytest.raises(ValueError, match="not a regular file"):
            list(read(fifo))
