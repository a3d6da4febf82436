"""Issue 32 items 7 and 16 at the edges of extract and storage: a manifest with a repeated key or no rows is refused
before any work, and an object-store URL with `..` segments writes nothing."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import storage
from infra.preflight import preflight
from manifests.schema import arrow_schema


def _parquet(path, keys: list[str]):
    rows = [{"key": k, "dataset": "files", "kind": "video", "media": "/x.mp4", "window": None, "duration": 1.0,
             "events": [], "caption": None, "source_id": k, "flags": []} for k in keys]
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), path)  # not write_manifest: it would refuse
    return str(path)


@pytest.mark.parametrize("keys, says", [(["a", "b", "a"], r"repeats the keys \['a'\]"), ([], "holds no rows")])
def test_a_manifest_extract_cannot_use_is_refused_before_any_work(tmp_path, keys, says):
    from support.extract import config

    from pipeline.extract.job import ExtractError, run_extract

    out = tmp_path / "out"
    with pytest.raises(ExtractError, match=says):
        run_extract(config(_parquet(tmp_path / "m.parquet", keys), out, executor="local", tasks=1))
    assert not out.exists()


def test_dot_dot_in_an_object_store_url_is_refused(s3):
    with pytest.raises(storage.StorageError, match="'..' are not folders"):
        preflight(f"{s3}/../../x", write=True, what="output folder")
    with pytest.raises(storage.StorageError):
        storage.write_bytes_atomic(f"{s3}/a/../b/file", b"x")
    fs, path = storage.filesystem(s3)
    assert fs.find(path) == []  # nothing written anywhere in the bucket
