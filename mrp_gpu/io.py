"""Atomic file output: a reader sees the old file or the new one, never half of one.

Files are written to a temporary name in the same directory, flushed to disk, then
renamed over the target (``os.replace`` is atomic on POSIX and Windows). A whole
output directory is built under a temporary name and swapped in the same way, so a
run killed mid-write leaves the previous outputs intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import MRPError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_output_dir", "check_output_dir"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_leftovers(path: Path) -> None:
    """Remove temporary directories that killed runs left beside ``path``."""
    for p in path.parent.glob(f".{path.name}.tmp-*-*"):
        pid = p.name[len(f".{path.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def check_output_dir(path: str | Path, *, force: bool = False) -> Path:
    """Refuse an output directory that is a file, or not empty without ``force``.

    Commands call it before any work, so a wrong ``--out`` fails in a second, not
    after the plan; :func:`atomic_output_dir` checks again when it writes.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MRPError(f"--out {str(path)!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise MRPError(f"--out {str(path)!r} already exists and is not empty; pass --force to replace it")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` when the block succeeds.

    An existing non-empty ``path`` is refused unless ``force``; on any error the
    temporary directory is removed and ``path`` is left as it was. A run killed
    outright leaves ``path`` as it was too, plus a temporary directory named after
    its process id, which the next run beside it removes.
    """
    path = check_output_dir(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
