"""Files: atomic writes that honour the umask, the removal of what a killed writer left
behind, a lock on a folder that a run writes, and sizes in words."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: byte-range locks instead
    fcntl = None  # type: ignore[assignment]
    import msvcrt

__all__ = ["LOCK_NAME", "atomic_write", "format_size", "locked_folder", "remove_stale_temporaries"]

LOCK_NAME = ".handgrad-lock"
# this machine, in the names of temporary files: only this machine's are cleaned up here
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def format_size(size: int | float) -> str:
    """A number of bytes in words: ``"512 bytes"``, ``"1.5 KiB"`` ... ``"3.0 TiB"``.

    Examples
    --------
    >>> from handgrad.core.files import format_size
    >>> format_size(512), format_size(1536), format_size(7.5 * 2**30), format_size(2**43)
    ('512 bytes', '1.5 KiB', '7.5 GiB', '8.0 TiB')
    """
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            break
    return f"{size:.1f} {unit}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if os.name == "nt":  # os.kill would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` when its
    process was killed (only this machine's, of processes no longer running); only those
    for the file ``name`` when given. Returns what was removed.

    Examples
    --------
    >>> import subprocess, sys, tempfile
    >>> from pathlib import Path
    >>> from handgrad.core.files import remove_stale_temporaries
    >>> from handgrad.core import files
    >>> ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
    ...                        capture_output=True, text=True).stdout.strip()  # a dead process
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     left = Path(folder) / f".model.npz.{files._HOST}-{ended}.0123abcd.tmp"
    ...     _ = left.write_bytes(b"half a file")
    ...     print([p.name == left.name for p in remove_stale_temporaries(folder)], left.exists())
    [True] False
    """
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            found = _TEMPORARY.fullmatch(entry.name)
            if (
                found is None
                or (name is not None and found["name"] != name)
                or found["host"] != _HOST
                or int(found["pid"]) == os.getpid()
                or _alive(int(found["pid"]))
            ):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _create_temporary(target: Path) -> tuple[int, Path]:
    """A new file beside ``target``, created with mode 0o666 less the umask (as ``open``
    does), or with ``target``'s own mode when it exists."""
    folder = target.parent
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give the path of a file to write")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"there is no folder {folder} to write {target} in; create it first"
        )
    remove_stale_temporaries(folder, target.name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{target.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            raise type(err)(f"cannot write {target}: {err.strerror}") from None
        break
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))  # an existing file keeps its mode
    return fd, tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over
    ``path``. On an exception the temporary file is removed and ``path`` is untouched; a
    temporary file that a killed process left for ``path`` is removed by the next write.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` (text, UTF-8, newline as written). A new file
    gets the permissions that ``open`` would give it (0o666 less the umask); a file that
    exists keeps its own.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.core.files import atomic_write
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "notes.txt"
    ...     with atomic_write(path, "w") as f:
    ...         _ = f.write("hello")
    ...     print(path.read_text(), [p.name for p in Path(folder).iterdir()])  # no temporary left
    hello ['notes.txt']
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    fd, tmp = _create_temporary(target)
    try:
        with os.fdopen(
            fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})
        ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _try_lock(fd: int) -> bool:
    """Take the lock of ``fd`` without waiting; the system drops it when the process ends,
    however it ends."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about the process that holds (or held) it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        found = json.loads(os.read(fd, 65536).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    said = [
        f"{key} {holder[key]}" for key in ("pid", "run", "started") if holder.get(key) is not None
    ]
    return f" ({', '.join(said)})" if said else ""


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike, holder: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Hold the lock of ``folder`` (the file ``.handgrad-lock`` in it) while the block runs;
    ``holder`` (JSON-ready, e.g. the run's id) is written into it for others to read.

    A second process that asks for the lock meanwhile gets a ``RuntimeError`` naming the
    holder. A lock left by a process that was killed is taken over: the block receives what
    that process had written (an empty dict when the lock was free). The lock file is
    removed when the block ends.

    Examples
    --------
    >>> import tempfile
    >>> from handgrad.core.files import locked_folder
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with locked_folder(folder, {"run": "a1"}) as previous:
    ...         try:
    ...             with locked_folder(folder, {"run": "b2"}):
    ...                 pass
    ...         except RuntimeError as err:
    ...             print(previous, str(err).partition(" is in use by ")[2])  # doctest: +ELLIPSIS
    {} another handgrad run (pid ..., run a1); wait for it to end, or write elsewhere
    """
    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        if not _try_lock(fd):
            found = _holder(fd)
            os.close(fd)
            raise RuntimeError(
                f"{folder} is in use by another handgrad run{_describe(found)}; wait for it to "
                "end, or write elsewhere"
            )
        try:  # the holder before may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        previous = _holder(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), **holder}).encode("utf-8"))
        yield previous
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
