"""Archives: ``.npz`` files of plain arrays and one JSON string (``meta``, with a format
name and version), written atomically.

They are read member by member, not with ``np.load``: before an array is decompressed, its
declared size is checked against what the metadata allows (a small file cannot unpack into
a huge one), its header against its declared size, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.errors import ModelFileError
from handgrad.core.files import atomic_write, format_size

__all__ = ["FORMAT", "FORMAT_VERSION", "read_archive", "write_archive"]

FORMAT = "handgrad-model"
FORMAT_VERSION = 1
_HEADER_BYTES = 10_012  # an .npy header at most: magic, version, length, then numpy's limit
_ITEM_BYTES = 16  # bytes per element at most (a float is 2 to 8, a long double 16)
_META_BYTES = 64 * 2**20
_SMALL_BYTES = 16 * 2**20  # a compressed member may unpack to this whatever its ratio ...
_MAX_RATIO = 200  # ... and to this many times its compressed size beyond (weights: ~1.1)
_READ_BYTES = 2**20
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

Limits = Callable[[dict[str, Any]], Mapping[str, int]]


def write_archive(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON ``meta`` as one ``.npz`` file, atomically.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from handgrad.core.archives import write_archive
    >>> header = {"format": "notes", "version": 1}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_archive(f"{folder}/notes.npz", {"w": np.ones(2)}, header)
    ...     with np.load(path) as archive:  # plain arrays, and the JSON as one string
    ...         print(path.name, sorted(archive.files), archive["meta"].dtype.kind)
    notes.npz ['meta', 'w'] U
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))
    return path


class _UnreadableError(Exception):
    """Why a file cannot be read as an archive (becomes a ModelFileError naming it)."""


def read_archive(
    path: str | os.PathLike,
    kind: str = FORMAT,
    what: str = "model file",
    limits: Limits | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_archive` whose metadata says it is a ``kind``;
    every problem is a :class:`ModelFileError` that names the file.

    ``limits(meta)`` gives, from the metadata, the most elements each array may hold, by
    name: an array it does not name is refused, and so is one whose declared size exceeds
    its limit, before it is decompressed. Without ``limits`` any arrays are read.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from handgrad.core.archives import read_archive, write_archive
    >>> header = {"format": "notes", "version": 1, "size": 2}  # the kind and version are checked
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_archive(f"{folder}/notes.npz", {"w": np.ones(2)}, header)
    ...     meta, arrays = read_archive(path, kind="notes", limits=lambda m: {"w": m["size"]})
    >>> meta == header, arrays["w"].tolist()
    (True, [1.0, 1.0])
    """
    path = Path(path)
    _check_regular_file(path, kind, what)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _members(archive, path.stat().st_size)
            meta = _metadata(archive, members.pop("meta", None), path)
            _check_kind(meta, path, kind, what)
            allowed = _allowed(meta, limits, path, what)
            for name, info in members.items():
                _check_declared_size(name, info, allowed, path, what)
            arrays = {name: _read_array(archive, info, name) for name, info in members.items()}
    except ModelFileError:
        raise
    except _UnreadableError as err:
        raise _not_readable(path, what, str(err)) from None
    except (
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as err:
        raise _not_readable(
            path, what, f"{type(err).__name__}: {str(err).split('. ')[0]}"
        ) from None
    except MemoryError:
        raise MemoryError(
            f"{path} ({format_size(path.stat().st_size)}) holds more than the memory that is free"
        ) from None
    return meta, arrays


def _not_readable(path: Path, what: str, reason: str) -> ModelFileError:
    return ModelFileError(
        f"{str(path)!r} is not a readable handgrad {what} ({reason}); it may be damaged or not "
        "a model: train the model again"
    )


def _check_regular_file(path: Path, kind: str, what: str) -> None:
    """A file that exists, is a plain file (not a folder, device or pipe) and is a zip."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ModelFileError(
            f"{what} {str(path)!r} does not exist; train one with "
            "'handgrad train --out DIR' and pass DIR/model.npz"
            if kind == FORMAT
            else f"{what} {str(path)!r} does not exist"
        ) from None
    except OSError as err:
        raise ModelFileError(f"cannot read {what} {str(path)!r} ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ModelFileError(f"{str(path)!r} is a folder, not a handgrad {what}")
    if not stat.S_ISREG(mode):
        raise ModelFileError(
            f"{str(path)!r} is not a plain file (a device, pipe or socket), so not a "
            f"handgrad {what}"
        )
    try:
        with open(path, "rb") as f:
            start = f.read(512)
    except OSError as err:
        raise ModelFileError(f"cannot read {what} {str(path)!r} ({err.strerror})") from None
    if start[:4] in _ZIP_MAGIC:
        return
    if not start:
        raise _not_readable(path, what, "it is empty")
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError as err:  # text, unless the bad byte is not a character cut short
        if err.start < len(start) - 3:
            raise _not_readable(path, what, "it is not a zip archive") from None
        text = start[: err.start].decode("utf-8")
    if "\0" in text or not any(separator in text.split("\n", 1)[0] for separator in ",;\t"):
        raise _not_readable(path, what, "it is text, not a zip archive")
    raise ModelFileError(
        f"{str(path)!r} is a CSV file, not a handgrad {what}; a {what} is the .npz file "
        "that 'handgrad train' writes"
    )


def _members(archive: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name, each an ``.npy`` of a method numpy writes and no
    larger than the file (or, compressed, than a plausible ratio) says it can be."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename:
            raise _UnreadableError(f"it holds {info.filename!r}, which is not an .npy array")
        if name in members:
            raise _UnreadableError(f"it holds {info.filename!r} twice")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _UnreadableError(
                f"{info.filename!r} uses compression method {info.compress_type}"
            )
        if info.flag_bits & 0x1:
            raise _UnreadableError(f"{info.filename!r} is encrypted")
        stored = info.compress_type == zipfile.ZIP_STORED
        if info.compress_size > file_size or (stored and info.file_size != info.compress_size):
            raise _UnreadableError(f"the sizes of {info.filename!r} do not fit the file")
        if not stored and info.file_size > max(_SMALL_BYTES, _MAX_RATIO * info.compress_size):
            raise _UnreadableError(
                f"{info.filename!r} would unpack {format_size(info.compress_size)} into "
                f"{format_size(info.file_size)}, which no model's numbers do: a zip bomb?"
            )
        members[name] = info
    return members


def _metadata(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None, path: Path) -> Any:
    if info is None:
        raise ModelFileError(f"{str(path)!r} has no valid handgrad metadata ('meta')")
    if info.file_size > _META_BYTES:
        raise ModelFileError(
            f"{str(path)!r} has no valid handgrad metadata (it declares "
            f"{format_size(info.file_size)}, more than the {format_size(_META_BYTES)} allowed)"
        )
    value = _read_array(archive, info, "meta")
    if value.shape != () or value.dtype.kind != "U":
        raise ModelFileError(
            f"{str(path)!r} has no valid handgrad metadata (meta is not one JSON string)"
        )
    try:
        return json.loads(str(value[()]))
    except ValueError as err:
        raise ModelFileError(f"{str(path)!r} has no valid handgrad metadata ({err})") from None


def _check_kind(meta: Any, path: Path, kind: str, what: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise ModelFileError(f"{str(path)!r} is not a handgrad {what}")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is format version {version!r}, newer than this handgrad reads "
            f"({FORMAT_VERSION}); upgrade handgrad"
        )


def _allowed(meta: dict[str, Any], limits: Limits | None, path: Path, what: str) -> Any:
    if limits is None:
        return None
    try:
        return dict(limits(meta))
    except (KeyError, ValueError, TypeError) as err:
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ModelFileError(
            f"{str(path)!r} does not describe a consistent {what.removesuffix(' file')}: {reason}"
        ) from None


def _check_declared_size(
    name: str, info: zipfile.ZipInfo, allowed: dict[str, int] | None, path: Path, what: str
) -> None:
    if allowed is None:
        return
    if name not in allowed:
        raise ModelFileError(
            f"{str(path)!r} holds an array {name!r}, which a handgrad {what} has not"
        )
    most = _HEADER_BYTES + _ITEM_BYTES * allowed[name]
    if info.file_size > most:
        raise ModelFileError(
            f"{str(path)!r} does not describe a consistent {what.removesuffix(' file')}: array "
            f"{name} declares {format_size(info.file_size)}, but its metadata allows "
            f"{allowed[name]} elements (at most {format_size(most)})"
        )


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One ``.npy`` member: its header checked against its declared size before the data
    are read; object arrays refused."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise _UnreadableError(f"array {name} is in .npy version {version}")
        if dtype.hasobject:
            raise _UnreadableError("it holds pickled objects, which handgrad never loads")
        nbytes = math.prod(shape) * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise _UnreadableError(
                f"array {name} claims shape {shape} of {dtype}, which is not what its "
                f"{format_size(info.file_size)} hold"
            )
        if nbytes == 0:
            return np.zeros(shape, dtype=dtype)
        data = bytearray(nbytes)
        view, done = memoryview(data), 0
        while done < nbytes:
            got = f.readinto(view[done : done + _READ_BYTES])
            if not got:
                raise _UnreadableError(f"array {name} ends early")
            done += got
        f.read(1)  # at the end of the member: zipfile checks its CRC
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
