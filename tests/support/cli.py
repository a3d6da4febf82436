"""Running our typer apps in-process, as the chain tests do, and the tar damage the hardened readers are tested on."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner


def invoke(app, *args: str) -> str:
    """Run one command of `app`; it must exit 0. Returns its output."""
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, (args[0], res.output, res.exception)
    return res.output


@pytest.fixture
def dist_env(monkeypatch):
    """An in-process vtl-train sets RANK etc. for its one-process group: put them back afterwards."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def set_tar_size_field(path: Path, member: int, size_field: bytes) -> None:
    """Rewrite the size field of the `member`-th header of a tar in place, with a valid checksum."""
    data = bytearray(Path(path).read_bytes())
    pos = 0
    for _ in range(member):
        size = int(data[pos + 124:pos + 136].split(b"\0")[0] or b"0", 8)
        pos += 512 + (size + 511) // 512 * 512
    block = data[pos:pos + 512]
    block[124:136] = size_field.ljust(12, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    data[pos:pos + 512] = block
    Path(path).write_bytes(bytes(data))
