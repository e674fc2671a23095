"""Writes that are all-or-nothing: a reader never sees a half-written file or directory."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, suffix: str = ""):
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    The temporary name starts with a dot, so tools that scan the directory (TF Serving looks for
    integer-named versions) never pick it up, and it is removed on failure. Whatever is at
    ``final`` is replaced (an old directory is moved aside and deleted); to claim a name that
    another process may be claiming too, build elsewhere and use ``rename_exclusive``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            # A directory cannot be renamed onto a non-empty one: move the old one aside first.
            old = tmp.with_name(tmp.name + ".old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def rename_exclusive(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` to ``dst`` without ever replacing anything there: ``FileExistsError`` if ``dst`` exists.

    Of several processes renaming onto one ``dst`` at once, exactly one succeeds, so it can
    claim a name (``export_saved_model`` claims version numbers this way).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isdir(src):
        os.link(src, dst)  # a hard link never replaces an existing name
        os.unlink(src)
        return
    # rename(2) refuses a non-empty target directory but silently replaces an empty one. So an
    # existing empty directory counts as taken, and an empty one is never placed (the next
    # claimant's rename would replace it); only an empty directory made by someone else in the
    # instant between this check and the rename could still be replaced.
    if not os.listdir(src):
        raise ValueError(f"{src!r} is an empty directory; an exclusive rename needs content.")
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        raise


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a ``.keras`` file, atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
