"""Atomic writes: a reader sees the old complete file or the new complete one, never half."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Write failures that say something about the disk or folder rather than about the data.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _explain_write_error(err: OSError, target: Path, kept: str) -> OSError:
    """The same OSError type and errno, with a message naming the target and what was kept."""
    reason = err.strerror or str(err)
    return type(err)(err.errno, f"cannot write {target}: {reason}; {kept}")


def _kept_note(target: Path) -> str:
    return f"the previous {target.name} is unchanged" if target.exists() else f"{target.name} was not created"


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    A failing write (disk full, read-only folder) leaves ``target`` as it was and raises
    an ``OSError`` whose message names ``target`` and says so.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise _explain_write_error(err, target, _kept_note(target)) from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except OSError as err:
        if err.errno in _DISK_ERRNOS:
            raise _explain_write_error(err, target, _kept_note(target)) from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def json_ready(obj: Any) -> Any:
    """Plain JSON values: numpy scalars to Python numbers, arrays and tensors to lists, NaN to null.

    >>> import numpy as np
    >>> json_ready({"a": np.float32(0.5), "b": [float("nan"), np.arange(2)], 3: (1,)})
    {'a': 0.5, 'b': [None, [0, 1]], '3': [1]}
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars, torch tensors
        obj = obj.tolist()
        if isinstance(obj, list):
            return json_ready(obj)
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the OS or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def recover_dir(target: str | os.PathLike) -> None:
    """Put back a folder that a crash left moved aside (only where the two-step swap was used)."""
    target = Path(target)
    old = _aside(target)
    if not target.exists() and old.is_dir():
        os.replace(old, target)


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``target`` as a whole.

    On Linux the new folder and the old one are exchanged in one ``renameat2`` call, so
    ``target`` always names a complete folder, old or new. Elsewhere the old folder is
    moved aside first; if a crash falls between the two renames, the next ``atomic_dir``
    on the same target (or :func:`recover_dir`) puts the old folder back.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise _explain_write_error(err, target, _kept_note(target)) from err
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            pass  # tmp now holds the old folder; removed below
        else:
            old = _aside(target)
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except OSError as err:
        if err.errno in _DISK_ERRNOS:
            raise _explain_write_error(err, target, _kept_note(target)) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_free_space(folder: str | os.PathLike, need_bytes: int, *, what: str) -> None:
    """Before long work: raise ``OSError`` when ``folder`` cannot be written or its disk lacks ``need_bytes``.

    ``folder`` need not exist yet; its nearest existing parent is probed with a real
    temporary file (so read-only mounts and permissions are caught, not guessed).
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create {folder}: {probe} is a file, not a folder; choose another output folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise type(err)(err.errno, f"cannot write into {probe}: {err.strerror or err}; choose another output folder") from err
    free = shutil.disk_usage(probe).free
    if free < need_bytes:
        raise OSError(
            errno.ENOSPC,
            f"{what} needs about {_human(need_bytes)} but the disk holding {probe} has {_human(free)} free; "
            "free some space or choose another output folder",
        )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"
