"""Atomic file writing: a reader never sees a half-written output file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """A closed temporary file beside ``path`` (``.<name>.<random><suffix>``) to write to by
    name; on success it is renamed over ``path``.

    Keep ``path``'s suffix (``suffix=path.suffix``) for writers that pick the format from
    the file name. On an exception the temporary file is removed and ``path`` is left
    untouched. The file gets the permissions a plain ``open`` would give it (0666 minus
    the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w"):
    """Open a temporary file beside ``path``; on success rename it over ``path``
    (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            yield handle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
