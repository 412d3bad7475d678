"""Per-column statistics of a CSV file, streamed in constant memory.

The file is read through a byte counter (for progress), decoded as UTF-8 (a BOM is
tolerated) and parsed by the ``csv`` module in batches of rows. Each batch is turned into
columns and each column is summarised with a few C-level passes (``map(int)``,
``map(float)``, ``min``, ``max``...), so the cost per cell stays small. Nothing but the
current batch and one running summary per column is held in memory.

A number is, strictly: optional spaces or tabs, an optional sign, digits with an optional
decimal point (or a point and digits), an optional exponent, optional spaces or tabs
(``42``, ``-2.5``, ``.5``, ``1e3``). ``nan``, ``inf``, ``1_000``, non-ASCII digits and values
too large for a float are text; an empty cell is counted as ``empty``.
"""

from __future__ import annotations

import csv
import functools
import gc
import io
import itertools
import math
import operator
import re
import sys
from collections.abc import Callable

from .streams import CountingReader

# Longest physical line read at once: bounds memory on a file without line breaks.
MAX_LINE_CHARS = 1 << 20
MAX_COLUMNS = 10_000
# Cells per batch: rows per batch = this / columns, at most MAX_BATCH_ROWS.
BATCH_CELLS = 64 * 1024
MAX_BATCH_ROWS = 1024
READ_BUFFER = 64 * 1024

_NUMBER = re.compile(r"[ \t]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")
# Every character a batch of numbers may hold; anything else (letters of "nan" or "inf",
# "_", non-ASCII digits, other white space) sends the batch through the exact check.
_NUMERIC_CHARS = re.compile(r"[0-9eE+\-. \t]*")
_NUMBER_START = frozenset("0123456789+-. \t")
_NUMBER_STARTS = re.compile(r"[0-9+\-. \t]")
_first_char = operator.itemgetter(0)
# Integers beyond what a float can hold are text, like "1e999".
_LARGEST = int(sys.float_info.max)
_LINE_BREAK = re.compile(r"\r\n?|\n")


class MalformedCSV(ValueError):
    """The file is not a well-formed CSV; the message names the line."""


def parse_number(cell: str) -> int | float | None:
    """The number a cell holds, or None when it is not one (see the module docstring)."""
    if not _NUMBER.fullmatch(cell):
        return None
    try:
        value = int(cell)
    except ValueError:
        value = float(cell)
        return value if math.isfinite(value) else None
    return value if -_LARGEST <= value <= _LARGEST else None


class ColumnStats:
    __slots__ = (
        "count",
        "empty",
        "float_err",
        "float_sum",
        "has_floats",
        "high",
        "int_sum",
        "low",
        "name",
        "numbers",
    )

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self.empty = 0
        self.numbers = 0
        self.int_sum = 0
        self.has_floats = False
        # Float sum with Neumaier compensation across batches (each batch uses fsum).
        self.float_sum = 0.0
        self.float_err = 0.0
        self.low: int | float | None = None
        self.high: int | float | None = None

    def add(self, cells) -> None:
        empty = cells.count("")
        if empty:
            self.empty += empty
            cells = [cell for cell in cells if cell]
            if not cells:
                return
        self.count += len(cells)
        values, integers = _fast_numbers(cells)
        if values is None:
            # Only cells that start like a number are parsed one by one.
            firsts = "".join(map(_first_char, cells))
            if not _NUMBER_STARTS.search(firsts):
                return
            values = [
                value
                for value in map(parse_number, [c for c in cells if c[0] in _NUMBER_START])
                if value is not None
            ]
            integers = all(type(value) is int for value in values)
            if not values:
                return
        self.numbers += len(values)
        if integers:
            self.int_sum += sum(values)
        else:
            self.has_floats = True
            try:
                self._add_float(math.fsum(values))
            except OverflowError:
                raise ValueError(self._too_large) from None
        low, high = min(values), max(values)
        if self.low is None or low < self.low:
            self.low = low
        if self.high is None or high > self.high:
            self.high = high

    def _add_float(self, value: float) -> None:
        total = self.float_sum + value
        if abs(self.float_sum) >= abs(value):
            self.float_err += (self.float_sum - total) + value
        else:
            self.float_err += (value - total) + self.float_sum
        self.float_sum = total

    @property
    def _too_large(self) -> str:
        return f"the sum of column {self.name!r} is too large to represent"

    def result(self) -> dict:
        numeric = None
        if self.numbers:
            try:
                total = self.int_sum
                if self.has_floats:
                    total = float(total) + (self.float_sum + self.float_err)
                mean = total / self.numbers
            except OverflowError:
                total = mean = math.inf
            # An integer sum is exact whatever its size; a float one must be finite.
            if not math.isfinite(mean) or (isinstance(total, float) and not math.isfinite(total)):
                raise ValueError(self._too_large)
            numeric = {
                "count": self.numbers,
                "sum": total,
                "mean": mean,
                "min": self.low,
                "max": self.high,
            }
        return {"name": self.name, "count": self.count, "empty": self.empty, "numeric": numeric}


def _fast_numbers(cells) -> tuple[list | None, bool]:
    """All cells of a batch as numbers in a few C-level passes, or (None, _) when any cell
    is not plainly a number (then each cell is checked on its own)."""
    if cells[0][0] not in _NUMBER_START:
        return None, False
    try:
        values, integers = list(map(int, cells)), True
    except ValueError:
        try:
            values, integers = list(map(float, cells)), False
        except ValueError:
            return None, False
    if not _NUMERIC_CHARS.fullmatch("".join(cells)):
        return None, False
    low, high = min(values), max(values)
    if integers:
        if low < -_LARGEST or high > _LARGEST:
            return None, False
    elif not (math.isfinite(low) and math.isfinite(high)):
        return None, False
    return values, integers


def _line_breaks(row: list[str]) -> int:
    return sum(len(_LINE_BREAK.findall(cell)) for cell in row if "\n" in cell or "\r" in cell)


def csv_statistics(
    source,
    *,
    size: int,
    delimiter: str = ",",
    has_header: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Statistics of the CSV in the binary file-like ``source`` (``size`` bytes, for
    progress): ``{"rows", "columns": [{"name", "count", "empty", "numeric"}]}``.
    ``progress(percent)`` is called each time another percent of the bytes has been read.
    Raises ``MalformedCSV`` naming the line of the first malformed row."""
    # Parsing allocates millions of short-lived lists and tuples, none in a reference
    # cycle: pausing the cyclic collector meanwhile saves about a third of the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _statistics(source, size, delimiter, has_header, progress)
    finally:
        if collecting:
            gc.enable()


def _statistics(source, size, delimiter, has_header, progress) -> dict:
    counter = CountingReader(source)
    text = io.TextIOWrapper(
        io.BufferedReader(counter, READ_BUFFER), encoding="utf-8-sig", newline=""
    )
    lines = iter(functools.partial(text.readline, MAX_LINE_CHARS), "")
    reader = csv.reader(lines, delimiter=delimiter, strict=True)

    def read(count: int) -> list[list[str]]:
        try:
            return list(itertools.islice(reader, count))
        except csv.Error as exc:
            raise MalformedCSV(f"line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise MalformedCSV(f"not valid UTF-8 after line {reader.line_num}") from None

    first: list[str] = []
    while not first:
        head = read(1)
        if not head:
            return {"rows": 0, "columns": []}
        first = head[0]
    width = len(first)
    if width > MAX_COLUMNS:
        raise MalformedCSV(f"line {reader.line_num}: {width} columns, at most {MAX_COLUMNS}")
    if has_header:
        names = [name or f"column_{i}" for i, name in enumerate(first, 1)]
        pending: list[list[str]] = []
    else:
        names = [f"column_{i}" for i in range(1, width + 1)]
        pending = [first]
    columns = [ColumnStats(name) for name in names]
    batch_rows = max(1, min(MAX_BATCH_ROWS, BATCH_CELLS // width))
    rows = 0
    reported = 0

    def summarise(batch: list[list[str]]) -> None:
        for column, cells in zip(columns, zip(*batch, strict=True), strict=True):
            column.add(cells)

    if pending:
        summarise(pending)
        rows += 1
    while True:
        line_before = reader.line_num
        batch = read(batch_rows)
        if not batch:
            break
        if set(map(len, batch)) != {width}:
            batch = _checked(batch, width, line_before, has_header)
            if not batch:
                continue
        summarise(batch)
        rows += len(batch)
        if progress is not None and size > 0:
            percent = min(99, counter.bytes_read * 100 // size)
            if percent > reported:
                reported = percent
                progress(percent)
    return {"rows": rows, "columns": [column.result() for column in columns]}


def _checked(batch: list[list[str]], width: int, line_before: int, has_header: bool):
    """The batch without blank lines; MalformedCSV at the first row of another width."""
    line = line_before + 1
    for row in batch:
        if row and len(row) != width:
            origin = "the header" if has_header else "the first row"
            raise MalformedCSV(f"line {line}: {len(row)} field(s), expected {width} as in {origin}")
        line += 1 + _line_breaks(row)
    return [row for row in batch if row]
