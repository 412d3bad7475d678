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
import gc
import io
import itertools
import math
import operator
import re
import sys
from collections.abc import Callable

from .streams import CountingReader

# Longest physical line: bounds memory on a file without line breaks. A longer one is
# refused (MalformedCSV) rather than cut, which would end a row in the middle.
MAX_LINE_CHARS = 16 << 20
# A line longer than this has its delimiters counted before it is split (see _Rows).
LONG_LINE_CHARS = 1 << 20
MAX_COLUMNS = 10_000
# Characters of the header's names together: each name is in the result, which every read
# of the task carries (10,000 names of 1,600 characters made a 16 MB result).
MAX_HEADER_CHARS = 256 * 1024
# Cells per batch: rows per batch = this / columns, at most MAX_BATCH_ROWS.
BATCH_CELLS = 64 * 1024
MAX_BATCH_ROWS = 1024
READ_BUFFER = 64 * 1024
# Characters of text split into rows at a time while the text is plain.
BLOCK_CHARS = 64 * 1024

# One way only to match each cell: "[0-9]+\.?[0-9]*" could split a run of digits anywhere,
# and a failed match tried every split (40,000 digits then a letter: 54 s).
_NUMBER = re.compile(r"[ \t]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t]*")
# Every character a batch of numbers may hold; anything else (letters of "nan" or "inf",
# "_", non-ASCII digits, other white space) sends the batch through the exact check.
_NUMERIC_CHARS = re.compile(r"[0-9eE+\-. \t]*")
_NUMBER_START = frozenset("0123456789+-. \t")
_NUMBER_STARTS = re.compile(r"[0-9+\-. \t]")
_first_char = operator.itemgetter(0)
# A field may be as long as a line (the csv module's own default, 131,072 characters, failed
# a valid file as "field larger than field limit"; the limit is the process's, and nothing
# else here reads CSV). Plain text with a longer line goes to the csv reader to say so.
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_CHARS))
_FIELD_LIMIT = csv.field_size_limit()
# Integers beyond what a float can hold are text, like "1e999".
_LARGEST = int(sys.float_info.max)
_LINE_BREAK = re.compile(r"\r\n?|\n")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')  # a quoted field, "" inside it a quote
_LONE_CR = re.compile(rb"\r(?!\n)")


class MalformedCSV(ValueError):
    """The file is not a well-formed CSV; the message names the line."""


class ColumnTooLarge(ValueError):
    """A column's numbers add up past what a double holds (floats: an integer sum is
    exact whatever its size); the message names the column."""


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
        values, integers, low, high = _fast_numbers(cells)
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
            if not values:
                return
            integers = all(type(value) is int for value in values)
            low, high = min(values), max(values)
        self.numbers += len(values)
        if integers:
            self.int_sum += sum(values)
        else:
            self.has_floats = True
            try:
                self._add_float(math.fsum(values))
            except OverflowError:
                raise ColumnTooLarge(self._too_large) from None
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
                raise ColumnTooLarge(self._too_large)
            numeric = {
                "count": self.numbers,
                "sum": total,
                "mean": mean,
                "min": self.low,
                "max": self.high,
            }
        return {"name": self.name, "count": self.count, "empty": self.empty, "numeric": numeric}


_NOT_PLAIN = (None, False, None, None)


def _fast_numbers(cells) -> tuple:
    """``(numbers, all integers, min, max)`` of a batch's cells in a few C-level passes, or
    ``(None, ...)`` when any cell is not plainly a number (each is then checked alone)."""
    if cells[0][0] not in _NUMBER_START:
        return _NOT_PLAIN
    try:
        values, integers = list(map(int, cells)), True
    except ValueError:
        try:
            values, integers = list(map(float, cells)), False
        except ValueError:
            return _NOT_PLAIN
    if not _NUMERIC_CHARS.fullmatch("".join(cells)):
        return _NOT_PLAIN
    low, high = min(values), max(values)
    if integers:
        if low < -_LARGEST or high > _LARGEST:
            return _NOT_PLAIN
    elif not (math.isfinite(low) and math.isfinite(high)):
        return _NOT_PLAIN
    return values, integers, low, high


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


def _byte_line_breaks(data: bytes) -> int:
    """Line breaks in ``data`` as the ``csv`` module reads them: ``\\n``, ``\\r\\n`` or a
    lone ``\\r``, in C-level passes (two or three over a file with CRLF line ends)."""
    breaks = data.count(b"\n")
    if b"\r" in data and _LONE_CR.search(data):
        breaks += data.count(b"\r") - data.count(b"\r\n")
    return breaks


class _LineCountingReader(io.BufferedReader):
    """The bytes under the text decoder, counting the line breaks in each chunk handed to
    it, so that a decoding error can be placed on its line (``TextIOWrapper`` reads
    through ``read1`` and decodes each chunk as soon as it has it)."""

    def __init__(self, raw, buffer_size: int):
        super().__init__(raw, buffer_size)
        self._breaks = 0
        # Line breaks before the last chunk handed over, and whether the chunk before that
        # one ended in "\r".
        self._breaks_before = 0
        self._after_cr = False
        self._ends_cr = False

    def read1(self, size: int = -1) -> bytes:
        chunk = super().read1(size)
        self._breaks_before = self._breaks
        self._after_cr = self._ends_cr
        # A "\r\n" cut between two chunks is one line break, counted twice otherwise.
        split = self._after_cr and chunk.startswith(b"\n")
        self._breaks += _byte_line_breaks(chunk) - split
        self._ends_cr = chunk.endswith(b"\r")
        return chunk

    def line_of(self, error: UnicodeDecodeError) -> int:
        """The line (1-based) of the bytes ``error`` names in the last chunk.

        ``error.object`` is that chunk, after the first bytes of a character cut at the end
        of the chunks before (or, at the start, without the BOM): no line break is added or
        lost, so the line breaks before it and those in its head make the line."""
        head = error.object[: error.start]
        split = self._after_cr and head.startswith(b"\n")
        return self._breaks_before + _byte_line_breaks(head) - split + 1


class _Rows:
    """The rows of a CSV text in batches, and the number of lines read so far.

    Plain text (no quote character, no lone carriage return, no field longer than the csv
    module's limit) is split into rows with ``str.split`` a block at a time, which is what
    the ``csv`` module would make of it, only faster. From the first block that is not
    plain on, the ``csv`` module reads the rest of the file line by line. ``text`` reads from
    a ``_LineCountingReader``, which places a decoding error on its line.
    """

    def __init__(self, text, delimiter: str):
        self._text = text
        self._delimiter = delimiter
        self._pending = ""
        self._reader = None
        self._base = 0
        # Lines consumed by the rows returned so far.
        self.line = 0

    def next_batch(self, max_rows: int) -> list[list[str]]:
        """The next rows (blank lines as empty rows); an empty list at the end."""
        try:
            while self._reader is None:
                block = self._text.read(BLOCK_CHARS)
                data = self._pending + block
                cut = data.rfind("\n") + 1 if block else len(data)
                region = data[:cut]
                if "\r" in region:
                    region = region.replace("\r\n", "\n")
                lines = region.split("\n")
                if lines[-1] == "":
                    lines.pop()
                plain = '"' not in region and "\r" not in region
                longest = max(map(len, lines)) if lines else 0
                if not plain or longest > _FIELD_LIMIT:
                    self._use_csv(data)
                    break
                self._pending = data[cut:]
                if len(self._pending) > MAX_LINE_CHARS:
                    self._use_csv(self._pending)
                    break
                if lines:
                    split = self._delimiter
                    if longest > LONG_LINE_CHARS:
                        self._count_fields(lines)
                    self.line += len(lines)
                    return [line.split(split) if line else [] for line in lines]
                if not block:
                    return []
            return self._csv_batch(max_rows)
        except csv.Error as exc:
            raise MalformedCSV(f"line {self._base + self._reader.line_num}: {exc}") from None
        except UnicodeDecodeError as exc:
            # The text read ahead of the rows returned is lost with the error: the line is
            # counted in the bytes under it.
            line = self._text.buffer.line_of(exc)
            raise MalformedCSV(f"line {line}: not valid UTF-8") from None

    def _count_fields(self, lines: list[str]) -> None:
        """Plain lines (no quotes) have their delimiters counted before they are split, as
        the csv reader's are (``_check_long_line``): a 16 MiB line of one-character fields
        took half a gigabyte to split."""
        for number, line in enumerate(lines, self.line + 1):
            if len(line) > LONG_LINE_CHARS and line.count(self._delimiter) >= MAX_COLUMNS:
                raise MalformedCSV(f"line {number}: more than {MAX_COLUMNS:,} columns")

    def _csv_batch(self, max_rows: int) -> list[list[str]]:
        """The csv module's next rows. Its error is placed on the line where the row it
        reads starts, naming the line it reached: a quote never closed is only found at the
        end of the file (or where a later quote closes it), thousands of lines on."""
        reader = self._reader
        self.line = self._base + reader.line_num
        rows = []
        append = rows.append
        ended = reader.line_num
        try:
            for row in itertools.islice(reader, max_rows):
                append(row)
                ended = reader.line_num
        except csv.Error as exc:
            start, reached = self._base + ended + 1, self._base + reader.line_num
            if str(exc) == "unexpected end of data":
                exc = "a quoted field is not closed"
                if reached > start:
                    exc += f" (the file ends at line {reached})"
            elif reached > start:
                exc = f"{exc} at line {reached}, in the row that starts here"
            raise MalformedCSV(f"line {start}: {exc}") from None
        self.line = self._base + reader.line_num
        return rows

    def _use_csv(self, data: str) -> None:
        # ``data`` starts a line; complete its last line (a CR at its end may be the first
        # half of a CRLF).
        data += self._text.readline(MAX_LINE_CHARS + 1)
        self._reader = csv.reader(self._lines(data), delimiter=self._delimiter, strict=True)
        self._base = self.line
        self._pending = ""

    def _lines(self, data: str):
        """Whole physical lines, ``data``'s then the rest of the text's: the csv reader ends
        a row at the end of what it is given outside quotes, so it is never given part of a
        line. One longer than MAX_LINE_CHARS is refused. (``data``'s last line is complete:
        a line read without its break is the file's last, or longer than the limit.)"""
        limit = MAX_LINE_CHARS + 1
        checked_from = min(LONG_LINE_CHARS, MAX_LINE_CHARS)
        for source in (io.StringIO(data, newline=""), self._text):
            readline = source.readline
            while line := readline(limit):
                if len(line) > checked_from:
                    self._check_long_line(line)
                yield line

    def _check_long_line(self, line: str) -> None:
        """A line too long to read whole, or one whose fields would be too many to hold: a
        row's fields are each an object (about 50 bytes), so a 16 MiB line of one-character
        fields would take half a gigabyte. The delimiters are counted outside quoted fields
        (a line whose quotes do not pair up, part of a field spanning lines, is not counted),
        which only a line beyond LONG_LINE_CHARS pays for."""
        number = self._base + self._reader.line_num + 1
        if len(line) > MAX_LINE_CHARS:
            raise MalformedCSV(f"line {number}: longer than {MAX_LINE_CHARS:,} characters")
        if line.count(self._delimiter) >= MAX_COLUMNS and self._fields_reach(line, MAX_COLUMNS + 1):
            raise MalformedCSV(f"line {number}: more than {MAX_COLUMNS:,} columns")

    def _fields_reach(self, line: str, most: int) -> bool:
        """Whether ``line`` holds at least ``most`` fields, read as the csv reader reads
        them: a quote opens a quoted field only at the start of a field (elsewhere it is
        text), and a delimiter inside a quoted field is text. Stops at ``most``: at most
        MAX_COLUMNS steps, each a search in C. A quoted field still open at the end of the
        line (it goes on over the next) ends the count there."""
        delimiter, position, end = self._delimiter, 0, len(line)
        for _ in range(1, most):
            if position < end and line[position] == '"':
                quoted = _QUOTED.match(line, position)
                if quoted is None:
                    return False
                position = quoted.end()
            following = line.find(delimiter, position)
            if following < 0:
                return False
            position = following + 1
        return True


def _statistics(source, size, delimiter, has_header, progress) -> dict:
    counter = CountingReader(source)
    text = io.TextIOWrapper(
        _LineCountingReader(counter, READ_BUFFER), encoding="utf-8-sig", newline=""
    )
    reader = _Rows(text, delimiter)

    # The first row that is not blank: the header, or the first data row.
    while True:
        line_before = reader.line
        batch = reader.next_batch(MAX_BATCH_ROWS)
        if not batch:
            return {"rows": 0, "columns": []}
        index = next((i for i, row in enumerate(batch) if row), None)
        if index is not None:
            break
    first = batch[index]
    first_line = _line_of(batch, index, line_before)
    width = len(first)
    if width > MAX_COLUMNS:
        raise MalformedCSV(f"line {first_line}: {width} columns, at most {MAX_COLUMNS}")
    if has_header:
        names = [name or f"column_{i}" for i, name in enumerate(first, 1)]
        if sum(map(len, names)) > MAX_HEADER_CHARS:
            raise MalformedCSV(
                f"line {first_line}: the header's names are longer than "
                f"{MAX_HEADER_CHARS:,} characters together"
            )
        index += 1
    else:
        names = [f"column_{i}" for i in range(1, width + 1)]
    origin = "the header" if has_header else "the first row"
    columns = [ColumnStats(name) for name in names]
    batch_rows = max(1, min(MAX_BATCH_ROWS, BATCH_CELLS // width))
    rows = 0
    reported = 0
    line_before = _line_of(batch, index, line_before) - 1
    batch = batch[index:]
    while True:
        if set(map(len, batch)) != {width}:
            batch = _checked(batch, width, line_before, origin)
        if batch:
            # Every row of the batch has ``width`` cells (checked above).
            for column, cells in zip(columns, zip(*batch, strict=False), strict=True):
                column.add(cells)
            rows += len(batch)
        if progress is not None and size > 0:
            percent = min(99, counter.bytes_read * 100 // size)
            if percent > reported:
                reported = percent
                progress(percent)
        line_before = reader.line
        batch = reader.next_batch(batch_rows)
        if not batch:
            break
    return {"rows": rows, "columns": [column.result() for column in columns]}


def _line_of(batch: list[list[str]], index: int, line_before: int) -> int:
    """The line on which row ``index`` of a batch starts."""
    return line_before + 1 + sum(1 + _line_breaks(row) for row in batch[:index])


def _checked(batch: list[list[str]], width: int, line_before: int, origin: str):
    """The batch without blank lines; MalformedCSV at the first row of another width."""
    line = line_before + 1
    for row in batch:
        if row and len(row) != width:
            raise MalformedCSV(f"line {line}: {len(row)} field(s), expected {width} as in {origin}")
        line += 1 + _line_breaks(row)
    return [row for row in batch if row]
