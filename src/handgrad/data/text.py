"""Text for character-level language models: a corpus (a file of one's own, or the Python
standard library's own source files, present wherever Python is), its characters as a
vocabulary, a train/validation split and random windows as batches."""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.errors import DataError
from handgrad.core.random import make_rng
from handgrad.core.validation import FRACTION, check_positive_int

__all__ = [
    "CharVocabulary",
    "default_corpus",
    "random_windows",
    "read_text",
    "split_tokens",
    "unigram_loss",
]

DEFAULT_CORPUS_CHARS = 1_000_000


def default_corpus(max_chars: int = DEFAULT_CORPUS_CHARS) -> tuple[str, str]:
    """The Python standard library's own source: its top-level ``.py`` files that are plain
    ASCII, in name order, joined until ``max_chars`` characters. Returns the text and a
    description of where it came from. No download: these files come with Python.

    Examples
    --------
    >>> from handgrad.data.text import default_corpus
    >>> text, source = default_corpus(2000)
    >>> len(text), source.startswith("Python's standard library")
    (2000, True)
    """
    max_chars = check_positive_int(max_chars, "max_chars")
    folder = Path(sysconfig.get_paths()["stdlib"])
    parts, total, used = [], 0, 0
    for path in sorted(folder.glob("*.py")):
        data = path.read_bytes()
        if not data.isascii():
            continue
        text = data.decode("ascii").replace("\r\n", "\n")
        parts.append(text)
        total += len(text)
        used += 1
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"found no ASCII .py files in {folder}; pass a text file with --text")
    text = "".join(parts)[:max_chars]
    return text, f"Python's standard library ({used} files from {folder}, {len(text):,} chars)"


def read_text(path: str | os.PathLike, max_chars: int | None = None) -> str:
    """The UTF-8 text of ``path`` (at most ``max_chars`` characters), refused with a
    :class:`DataError` that names the file if it is missing, not UTF-8 or too short.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.text import read_text
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "poem.txt"
    ...     _ = path.write_text("roses are red\\n" * 10, encoding="utf-8")
    ...     print(len(read_text(path)), len(read_text(path, max_chars=100)))
    140 100
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no text file at {str(path)!r}; check the path")
    try:
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{str(path)!r} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from None
    if max_chars is not None:
        text = text[: check_positive_int(max_chars, "max_chars")]
    if len(text) < 100:
        raise DataError(
            f"{str(path)!r} holds {len(text)} characters; a language model needs at least 100"
        )
    return text


@dataclass(frozen=True)
class CharVocabulary:
    """The characters of a text, in code-point order; a character's index is its token.

    Examples
    --------
    >>> from handgrad.data.text import CharVocabulary
    >>> vocab = CharVocabulary.from_text("hello world")
    >>> vocab.chars, len(vocab)
    (' dehlorw', 8)
    >>> tokens = vocab.encode("hold")
    >>> tokens.tolist(), vocab.decode(tokens)
    ([3, 5, 4, 1], 'hold')
    """

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharVocabulary:
        """The vocabulary of the distinct characters of ``text``."""
        if not text:
            raise DataError("the text is empty: a vocabulary needs at least one character")
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """The tokens of ``text``, int64; a character outside the vocabulary is refused."""
        table = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(table))
        if unknown:
            raise ValueError(
                f"text holds characters the vocabulary has not: {''.join(unknown)!r}; the "
                f"model knows {len(self.chars)} characters"
            )
        return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, tokens: Any) -> str:
        """The text of ``tokens`` (integers below ``len(self)``)."""
        return "".join(self.chars[int(t)] for t in np.asarray(tokens).reshape(-1))


def split_tokens(tokens: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first ``1 - val_fraction`` of ``tokens`` for training, the rest for validation
    (a contiguous split: windows never straddle the two).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.text import split_tokens
    >>> train, val = split_tokens(np.arange(10), 0.2)
    >>> train.tolist(), val.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    val_fraction = FRACTION.check(val_fraction, "val_fraction")
    cut = len(tokens) - round(len(tokens) * val_fraction)
    return tokens[:cut], tokens[cut:]


def random_windows(
    tokens: np.ndarray, block_size: int, batch_size: int, rng: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` windows of ``block_size`` tokens at random starts, and the same windows
    one token later (the next-token targets): two int64 arrays (batch, block_size).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.text import random_windows
    >>> x, y = random_windows(np.arange(100), 8, 4, rng=0)
    >>> x.shape, bool(np.array_equal(x + 1, y))
    ((4, 8), True)
    """
    block_size = check_positive_int(block_size, "block_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    if len(tokens) <= block_size:
        raise DataError(
            f"the text has {len(tokens)} tokens here, too few for windows of {block_size} and "
            "their next tokens; use a longer text or a smaller --block-size"
        )
    starts = make_rng(rng).integers(0, len(tokens) - block_size, size=batch_size)
    offsets = starts[:, None] + np.arange(block_size)
    return tokens[offsets], tokens[offsets + 1]


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """The validation cross-entropy (nats per token) of the unigram model: each token's
    frequency in ``train`` (plus one, so that none is 0), whatever came before. A language
    model that learnt anything beats it.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.text import unigram_loss
    >>> round(unigram_loss(np.array([0, 1, 0, 1]), np.array([0, 1]), 2), 4)  # log 2
    0.6931
    """
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[val].mean())
