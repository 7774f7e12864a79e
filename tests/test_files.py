"""ebgen.files: atomic writes leave the old file or the new one, never a part, and no litter."""
from __future__ import annotations

import os
import stat

import pytest

from ebgen.files import atomic_directory, atomic_write, atomic_write_bytes, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "metrics.jsonl"
    atomic_write_text(target, "one\n")
    atomic_write_text(target, "two\n", durable=True)
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.jsonl"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "grid.png"
    atomic_write_bytes(target, b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "model.json").write_text("{}")
    finally:
        os.umask(old)
    assert _mode(path) == 0o640  # not mkstemp's private 0o600
    assert _mode(tmp_path / "model") == 0o750


def test_directory_replaces_an_old_one_whole(tmp_path):
    out = tmp_path / "model"
    with atomic_directory(out, tag="1") as tmp:
        (tmp / "old.onnx").write_text("old")
    with atomic_directory(out, tag="2") as tmp:
        assert not (tmp / "old.onnx").exists()
        (tmp / "new.onnx").write_text("new")
        assert (out / "old.onnx").exists()  # readers see the old folder until the end
    assert [p.name for p in out.iterdir()] == ["new.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_directory_leaves_the_old_one(tmp_path):
    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "a").write_text("a")
    with pytest.raises(ValueError):
        with atomic_directory(out) as tmp:
            (tmp / "b").write_text("b")
            raise ValueError("parity check failed")
    assert [p.name for p in out.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
