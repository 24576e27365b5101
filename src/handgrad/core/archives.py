"""Archives: ``.npz`` files of plain arrays and one JSON string (``meta``, with a format
name and version), written atomically and read with ``allow_pickle=False``. Nothing is
ever unpickled."""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.errors import ModelFileError
from handgrad.core.files import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "read_archive", "write_archive"]

FORMAT = "handgrad-model"
FORMAT_VERSION = 1


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


def read_archive(
    path: str | os.PathLike, kind: str = FORMAT, what: str = "model file"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_archive` whose metadata says it is a ``kind``;
    every problem is a :class:`ModelFileError` that names the file.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from handgrad.core.archives import read_archive, write_archive
    >>> header = {"format": "notes", "version": 1}  # the kind and version are checked
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_archive(f"{folder}/notes.npz", {"w": np.ones(2)}, header)
    ...     meta, arrays = read_archive(path, kind="notes")
    >>> meta == header, arrays["w"].tolist()
    (True, [1.0, 1.0])
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{what} {str(path)!r} does not exist; train one with "
            "'handgrad train --out DIR' and pass DIR/model.npz"
            if kind == FORMAT
            else f"{what} {str(path)!r} does not exist"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        MemoryError,
    ) as err:
        reason = (
            "it holds pickled objects, which handgrad never loads"
            if "allow_pickle" in str(err)
            else f"{type(err).__name__}: {str(err).split('. ')[0]}"
        )
        raise ModelFileError(
            f"{str(path)!r} is not a readable handgrad {what} ({reason}); "
            "it may be damaged or not a model: train the model again"
        ) from None
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ModelFileError(f"{str(path)!r} has no valid handgrad metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise ModelFileError(f"{str(path)!r} is not a handgrad {what}")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is format version {version!r}, newer than this handgrad reads "
            f"({FORMAT_VERSION}); upgrade handgrad"
        )
    return meta, arrays
