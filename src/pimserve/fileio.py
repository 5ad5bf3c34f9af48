"""Reading user files with a size bound, so that a huge or endless file (``/dev/zero``, a FIFO)
fails at once with a one-line error instead of filling memory."""

from __future__ import annotations

import os
from pathlib import Path

#: upper bounds on what pimserve reads, bytes
MAX_SPEC_BYTES = 16 * 2**20  # a YAML or JSON spec (device, system, model, HF config)
MAX_TRACE_BYTES = 2 * 2**30  # a request trace
MAX_RESULT_BYTES = 2 * 2**30  # a run or compare result to plot


class FileTooLargeError(OSError):
    """The file holds more than the bound for its kind."""


class NotTextError(OSError):
    """A file that should be text holds a NUL byte."""


_CHUNK = 1 << 20


def _fail(cls: type[OSError], message: str) -> OSError:
    err = cls(message)
    err.strerror = message
    return err


def read_bounded(path: str | os.PathLike[str], limit_bytes: int, what: str,
                 text: bool = False) -> bytes:
    """The bytes of ``path``, at most ``limit_bytes``; :class:`FileTooLargeError` (an
    ``OSError`` whose ``strerror`` says what and the bound) when there are more. A regular
    file's size is checked before reading; other files (devices, pipes) are read in chunks, so
    an endless one stops at the bound. With ``text``, a NUL byte stops the read at once
    (:class:`NotTextError`): no text format pimserve reads contains one."""
    too_big = f"larger than {limit_bytes / 2**20:,.0f} MiB, the bound for a {what}"
    p = Path(path)
    st = p.stat()
    if p.is_file() and st.st_size > limit_bytes:
        raise _fail(FileTooLargeError, too_big)
    parts: list[bytes] = []
    total = 0
    with p.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            if text and b"\0" in chunk:
                at = total + chunk.index(b"\0")
                raise _fail(NotTextError, f"binary data (a NUL byte at offset {at}), not a "
                            f"text {what}")
            total += len(chunk)
            if total > limit_bytes:
                raise _fail(FileTooLargeError, too_big)
            parts.append(chunk)
    return b"".join(parts)


def read_bounded_text(path: str | os.PathLike[str], limit_bytes: int, what: str) -> str:
    """:func:`read_bounded` decoded as UTF-8 (``UnicodeDecodeError`` propagates)."""
    return read_bounded(path, limit_bytes, what, text=True).decode("utf-8-sig")
