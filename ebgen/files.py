"""Atomic file and folder writes: the one way ebgen puts a finished file where a reader looks.

Everything goes to a temporary name beside its target (`.NAME.<random>.tmp`, so it is on the
same filesystem and hidden from globs of the target's name), gets the permissions a plain
`open()` would give it (the umask's), and is moved into place by `os.replace`. A reader thus
sees the old file or the new one, never half of one. `durable=True` also flushes the file and
the rename to disk, for state a crash must not lose (checkpoints); plots and samples skip it.

    atomic_write_text(run / "metrics.jsonl", text)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    with atomic_directory(out) as tmp: ...   # fill tmp; it replaces `out` when the block ends

Checkpoints add a commit protocol on top (several files switched at once): `ebgen.checkpoint`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

#: The suffix of every temporary file or folder written here.
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path: str | os.PathLike) -> None:
    """Flush `path`'s contents to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make the renames in `directory` durable (a rename lives in the directory's entry)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary file beside `path` (its folder is created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; ours are not
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 durable: bool = False) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), durable)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), durable)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, tag: str = "") -> Iterator[Path]:
    """A temporary folder beside `out` to fill; when the block ends it replaces `out` (an old
    `out` is moved aside, then removed). On an exception the temporary folder is removed and
    `out` is left as it was. `tag` goes into the temporary name (e.g. the writer's pid)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{tag}{'.' if tag else ''}",
                                suffix=TMP_SUFFIX, dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; ours are shared
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tag or os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
