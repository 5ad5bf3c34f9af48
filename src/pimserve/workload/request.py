"""The request table: what a workload hands to the engine.

For speed the engine works on numpy arrays over requests, so a workload is a struct-of-arrays
(:class:`Requests`), not a list of objects. One row is one request: when it arrives (seconds from
the trace start), how many prompt tokens it brings and how many output tokens it generates before
EOS. :class:`Request` is the per-row view for code that wants one request at a time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from pimserve.errors import ConfigurationError

__all__ = ["Request", "Requests"]


@dataclass(frozen=True)
class Request:
    """One request.

    Attributes:
        id: identifier, unique within its :class:`Requests` table.
        arrival_s: arrival time in seconds from the trace start.
        prompt_tokens: prompt (input, context) length in tokens, >= 1.
        output_tokens: number of tokens generated up to and including EOS, >= 1.
        prefix_block_ids: hashes of the prompt's KV blocks (Mooncake ``hash_ids``), for prefix
            sharing; ``None`` when the source has none.
    """

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_block_ids: tuple[int, ...] | None = None


def _as_1d(name: str, values: Any, dtype: type) -> np.ndarray:
    """Convert ``values`` to a read-only 1-D array of ``dtype``; errors name the field."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Requests.{name}: not an array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ConfigurationError(f"Requests.{name} must be a 1-D array (got shape {arr.shape})")
    if arr.size and dtype is np.int64:
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                i = int(np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0])
                raise ConfigurationError(
                    f"Requests.{name}[{i}] must be an integer (got {arr[i]!r})"
                )
        elif arr.dtype.kind not in "iub":
            raise ConfigurationError(f"Requests.{name} must hold integers (got dtype {arr.dtype})")
    if arr.size and dtype is np.float64 and arr.dtype.kind not in "iuf":
        raise ConfigurationError(f"Requests.{name} must hold numbers (got dtype {arr.dtype})")
    out = np.array(arr, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _quantiles(x: np.ndarray) -> dict[str, float]:
    """Mean, median, p90, p99 and max of ``x`` (numpy's default linear percentiles)."""
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "mean": float(np.mean(x)),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(np.max(x)),
    }


@dataclass(frozen=True, eq=False)
class Requests:
    """A table of requests as parallel numpy arrays (struct-of-arrays), sorted by arrival.

    Attributes:
        id: ``int64[n]`` request identifiers.
        arrival_s: ``float64[n]`` arrival times in seconds from the trace start, non-decreasing,
            finite and >= 0.
        prompt_tokens: ``int64[n]`` prompt lengths in tokens, each >= 1.
        output_tokens: ``int64[n]`` output lengths in tokens (including EOS), each >= 1.
        prefix_block_ids: optional list of ``n`` tuples of KV-block hashes (Mooncake
            ``hash_ids``); ``None`` when the source has none.
        source: a one-line description of where the table came from (file, preset, seed).

    The arrays are stored as read-only copies, so a table cannot change under the engine.
    Construction validates every field and raises :class:`ConfigurationError` naming the field
    and the first offending index. An empty table is allowed in memory (for example
    ``head(0)``); loaders refuse empty files with a :class:`~pimserve.errors.TraceError`.
    """

    id: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_block_ids: list[tuple[int, ...]] | None = None
    source: str = "in-memory"

    def __post_init__(self) -> None:
        ids = _as_1d("id", self.id, np.int64)
        arr = _as_1d("arrival_s", self.arrival_s, np.float64)
        pin = _as_1d("prompt_tokens", self.prompt_tokens, np.int64)
        pout = _as_1d("output_tokens", self.output_tokens, np.int64)
        n = ids.size
        for name, a in (("arrival_s", arr), ("prompt_tokens", pin), ("output_tokens", pout)):
            if a.size != n:
                raise ConfigurationError(
                    f"Requests.{name} has {a.size} entries but Requests.id has {n}"
                )
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            i = int(bad[0])
            raise ConfigurationError(
                f"Requests.arrival_s[{i}] must be a finite number >= 0 s (got {arr[i]!r})"
            )
        if n > 1:
            back = np.flatnonzero(np.diff(arr) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise ConfigurationError(
                    f"Requests.arrival_s must be non-decreasing: arrival_s[{i}] = {arr[i]!r} s "
                    f"< arrival_s[{i - 1}] = {arr[i - 1]!r} s"
                )
        for name, a in (("prompt_tokens", pin), ("output_tokens", pout)):
            bad = np.flatnonzero(a < 1)
            if bad.size:
                i = int(bad[0])
                raise ConfigurationError(f"Requests.{name}[{i}] must be >= 1 (got {int(a[i])})")
        prefix = self.prefix_block_ids
        if prefix is not None:
            if len(prefix) != n:
                raise ConfigurationError(
                    f"Requests.prefix_block_ids has {len(prefix)} entries but Requests.id has {n}"
                )
            try:
                prefix = [tuple(operator.index(h) for h in p) for p in prefix]
            except TypeError:
                raise ConfigurationError(
                    "Requests.prefix_block_ids must be a list of tuples of integers"
                ) from None
        if not isinstance(self.source, str):
            raise ConfigurationError(
                f"Requests.source must be a string (got {type(self.source).__name__})"
            )
        object.__setattr__(self, "id", ids)
        object.__setattr__(self, "arrival_s", arr)
        object.__setattr__(self, "prompt_tokens", pin)
        object.__setattr__(self, "output_tokens", pout)
        object.__setattr__(self, "prefix_block_ids", prefix)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        arrival_s: npt.ArrayLike,
        prompt_tokens: npt.ArrayLike,
        output_tokens: npt.ArrayLike,
        *,
        id: npt.ArrayLike | None = None,
        prefix_block_ids: Sequence[Sequence[int]] | None = None,
        source: str = "in-memory",
    ) -> Requests:
        """Build a table from arrays; ``id`` defaults to ``0 .. n-1``."""
        n = int(np.size(prompt_tokens))
        ids = np.arange(n, dtype=np.int64) if id is None else id
        prefix = None if prefix_block_ids is None else [tuple(p) for p in prefix_block_ids]
        return cls(ids, arrival_s, prompt_tokens, output_tokens, prefix, source)  # type: ignore[arg-type]

    @classmethod
    def from_records(
        cls, records: Iterable[Request | Mapping[str, Any]], source: str = "records"
    ) -> Requests:
        """Build a table from :class:`Request` objects or mappings with the same keys.

        A mapping needs ``arrival_s``, ``prompt_tokens`` and ``output_tokens``; ``id`` defaults
        to the record's position and ``prefix_block_ids`` to absent. If any record has prefix
        block ids, records without them get an empty tuple (no shared blocks).
        """
        ids: list[int] = []
        arr: list[float] = []
        pin: list[int] = []
        pout: list[int] = []
        prefix: list[tuple[int, ...] | None] = []
        for i, rec in enumerate(records):
            if isinstance(rec, Request):
                d: Mapping[str, Any] = {
                    "id": rec.id,
                    "arrival_s": rec.arrival_s,
                    "prompt_tokens": rec.prompt_tokens,
                    "output_tokens": rec.output_tokens,
                    "prefix_block_ids": rec.prefix_block_ids,
                }
            elif isinstance(rec, Mapping):
                d = rec
            else:
                raise ConfigurationError(
                    f"record {i} must be a Request or a mapping (got {type(rec).__name__})"
                )
            for key in ("arrival_s", "prompt_tokens", "output_tokens"):
                if key not in d:
                    raise ConfigurationError(
                        f"record {i} has no '{key}' (needs arrival_s, prompt_tokens, "
                        "output_tokens; optional id, prefix_block_ids)"
                    )
            ids.append(d.get("id", i))
            arr.append(d["arrival_s"])
            pin.append(d["prompt_tokens"])
            pout.append(d["output_tokens"])
            p = d.get("prefix_block_ids")
            prefix.append(None if p is None else tuple(p))
        blocks = None
        if any(p is not None for p in prefix):
            blocks = [p if p is not None else () for p in prefix]
        return cls(
            np.asarray(ids, dtype=np.int64),
            np.asarray(arr, dtype=np.float64),
            np.asarray(pin, dtype=np.int64) if pin else np.zeros(0, np.int64),
            np.asarray(pout, dtype=np.int64) if pout else np.zeros(0, np.int64),
            blocks,
            source,
        )

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.id.size)

    @overload
    def __getitem__(self, index: int) -> Request: ...

    @overload
    def __getitem__(self, index: slice) -> Requests: ...

    def __getitem__(self, index: int | slice) -> Request | Requests:
        """``table[i]`` is the i-th :class:`Request`; ``table[a:b]`` is a sub-table."""
        if isinstance(index, slice):
            if index.step not in (None, 1):
                raise ConfigurationError("Requests slices must have step 1 (arrivals stay sorted)")
            return self.slice(index.start, index.stop)
        try:
            i = operator.index(index)
        except TypeError:
            raise ConfigurationError(
                f"Requests index must be an integer or a slice (got {type(index).__name__})"
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"request index {i} out of range for {n} requests")
        i %= n
        return Request(
            id=int(self.id[i]),
            arrival_s=float(self.arrival_s[i]),
            prompt_tokens=int(self.prompt_tokens[i]),
            output_tokens=int(self.output_tokens[i]),
            prefix_block_ids=None if self.prefix_block_ids is None else self.prefix_block_ids[i],
        )

    def __iter__(self) -> Iterator[Request]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Requests):
            return NotImplemented
        return (
            np.array_equal(self.id, other.id)
            and np.array_equal(self.arrival_s, other.arrival_s)
            and np.array_equal(self.prompt_tokens, other.prompt_tokens)
            and np.array_equal(self.output_tokens, other.output_tokens)
            and self.prefix_block_ids == other.prefix_block_ids
            and self.source == other.source
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: not hashable

    def __repr__(self) -> str:
        return f"Requests(n={len(self)}, source={self.source!r})"

    def slice(self, start: int | None = None, stop: int | None = None) -> Requests:
        """Rows ``start:stop`` (Python slice semantics) as a new table; arrivals unchanged."""
        sl = slice(start, stop)
        return Requests(
            self.id[sl],
            self.arrival_s[sl],
            self.prompt_tokens[sl],
            self.output_tokens[sl],
            None if self.prefix_block_ids is None else self.prefix_block_ids[sl],
            self.source,
        )

    def head(self, n: int) -> Requests:
        """The first ``n`` requests (all of them if the table is shorter); ``n`` >= 0."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ConfigurationError(f"head: n must be an integer >= 0 (got {n!r})")
        return self.slice(0, int(n))

    def with_arrivals(self, arrival_s: npt.ArrayLike, source: str | None = None) -> Requests:
        """The same requests with new arrival times (seconds, non-decreasing, one per request).

        Use it to apply an arrival process (``synthetic.poisson``/``gamma``/``fixed_batch``) to a
        trace without timestamps. ``source`` replaces the description if given.
        """
        arr = np.asarray(arrival_s, dtype=np.float64)
        if arr.shape != (len(self),):
            raise ConfigurationError(
                f"with_arrivals: arrival_s must have one entry per request "
                f"({len(self)}), got shape {arr.shape}"
            )
        return Requests(
            self.id,
            arr,
            self.prompt_tokens,
            self.output_tokens,
            self.prefix_block_ids,
            self.source if source is None else source,
        )

    # -- summaries --------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last arrival (0 for a static batch or one request)."""
        if len(self) == 0:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    def stats(self) -> dict[str, float | None]:
        """Summary statistics, flat so they print as a table row or JSON object.

        Keys: ``n``; ``input_mean/p50/p90/p99/max`` and ``output_...`` in tokens (numpy's linear
        percentiles); ``duration_s`` (first to last arrival); ``rate_per_s`` = n / duration
        (``None`` when the duration is 0); ``interarrival_cv`` = std / mean of the gaps between
        consecutive arrivals (population std; ``None`` with fewer than 2 gaps or zero mean gap).
        Raises ConfigurationError on an empty table.
        """
        n = len(self)
        if n == 0:
            raise ConfigurationError("stats: the request table is empty")
        out: dict[str, float | None] = {"n": float(n)}
        for prefix, arr in (("input", self.prompt_tokens), ("output", self.output_tokens)):
            for k, v in _quantiles(arr).items():
                out[f"{prefix}_{k}"] = v
        dur = self.duration_s
        out["duration_s"] = dur
        out["rate_per_s"] = n / dur if dur > 0 else None
        gaps = np.diff(self.arrival_s)
        cv: float | None = None
        if gaps.size >= 2 and gaps.mean() > 0:
            cv = float(gaps.std() / gaps.mean())
            cv = cv if math.isfinite(cv) else None
        out["interarrival_cv"] = cv
        return out
