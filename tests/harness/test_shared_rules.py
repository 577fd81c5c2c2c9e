"""The rules that live in one place: atomic writes, stream seeds."""

from __future__ import annotations

import zlib

import pytest

from harness.runtime.atomic import atomic_write, atomic_write_text
from harness.runtime.seeds import derive_seed


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "table.md"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_write_text(path, "old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_concurrent_writers_of_one_path_never_share_a_temporary(tmp_path):
    path = tmp_path / "ckpt.pt"
    temps = []

    def outer(tmp):
        temps.append(tmp)
        tmp.write_text("outer")
        atomic_write(path, inner)  # a second writer of the same path, mid-write
        assert tmp.read_text() == "outer"  # untouched by the other writer

    def inner(tmp):
        temps.append(tmp)
        tmp.write_text("inner")

    atomic_write(path, outer)
    assert temps[0] != temps[1]
    assert path.read_text() == "outer"  # the last rename wins with a whole file


def test_stream_seeds_keep_their_formula():
    # the batch order of every recorded run depends on it: changing it changes every result
    assert derive_seed(0, "finetune") == zlib.crc32(b"finetune")
    assert derive_seed(3, "conv1") == 3 * 1_000_003 + zlib.crc32(b"conv1")
    assert derive_seed(1, "a") != derive_seed(1, "b") != derive_seed(2, "a")
