"""Atomic writes: a file or folder appears whole under its name, or not at all.

An OSError raised while writing names the target path the caller gave, never the hidden
temporary one beside it, so a user reads `out.mp4: No space left on device`."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# mkstemp/mkdtemp make private files (0600/0700); what we publish should get the usual
# permissions, as open() would give them under the process's umask
_UMASK = os.umask(0)
os.umask(_UMASK)


def _naming(err: OSError, path: Path, tmp: Path | None = None) -> OSError | None:
    """`err` again naming `path` where it named the temporary `tmp` (or a file inside it);
    with `tmp` None (the temporary's creation failed) whatever it named. None when `err`
    names something else, e.g. an input file the block was reading: it stays as it is."""
    if err.errno is None or not isinstance(err.filename, str):
        return None
    if tmp is None:
        filename = os.fspath(path)
    elif err.filename == str(tmp) or err.filename.startswith(str(tmp) + os.sep):
        filename = os.fspath(path) + err.filename[len(str(tmp)) :]
    else:
        return None
    return OSError(err.errno, err.strerror, filename)  # OSError picks the subclass from errno


@contextmanager
def _naming_target(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Re-raise an OSError from the block naming `path` where it named the temporary `tmp`
    (with `tmp` None: whatever it named; see `_naming`)."""
    try:
        yield
    except OSError as err:
        named = _naming(err, path, tmp)
        if named is None:
            raise
        raise named from err


def _make_parent(path: Path) -> None:
    """Create `path`'s parent folders; a file in the way is NotADirectoryError naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path)) from None


def _remove(path: Path) -> None:
    """Remove a folder, or the link that stood in for one."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the target's extension (or `suffix`), so writers that pick a
    format from the extension (PyAV, PIL) behave as they would on the real name."""
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    with _naming_target(path):
        _make_parent(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming_target(path, tmp_path):
            yield tmp_path
            if tmp_path.exists():
                os.chmod(tmp_path, 0o666 & ~_UMASK)
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` only if the block succeeds.

    An existing folder at `path` is renamed to `.{name}.old` beside it, the new one renamed
    into place, then the old one removed: a crash between those two renames leaves no folder
    under `path` and the old one whole at `.{name}.old`; at any other point `path` holds
    the old folder or the new one, never a mix. A file at `path` is refused
    (NotADirectoryError) before anything is written: it is not a folder to replace."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(path))
    with _naming_target(path):
        _make_parent(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _naming_target(path, tmp):
            yield tmp
            os.chmod(tmp, 0o777 & ~_UMASK)
            if path.exists() or path.is_symlink():
                old = path.with_name(f".{path.name}.old")
                if old.exists() or old.is_symlink():
                    _remove(old)
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
