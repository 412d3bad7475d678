"""CSV statistics: exact figures, strict numbers, malformed files named by line, progress by
bytes read, and memory that does not grow with the file."""

import io
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from backend.files import csvstats
from backend.files.csvstats import MalformedCSV, csv_statistics, parse_number


def stats(data: bytes | str, **options) -> dict:
    if isinstance(data, str):
        data = data.encode()
    return csv_statistics(io.BytesIO(data), size=len(data), **options)


def column(result: dict, name: str) -> dict:
    return next(c for c in result["columns"] if c["name"] == name)


ACCEPTANCE = (
    "\ufeffname,amount,note,mixed\r\n"
    '"Smith, Ann",1.5,"says ""hi""",10\r\n'
    "Bob,,plain,n/a\r\n"
    '"Lee, Jo",-2.5,,1e3\r\n'
    "Kim,4,x,\r\n"
)


def test_figures_with_bom_crlf_quoted_commas_empty_cells_and_mixed_columns():
    result = stats(ACCEPTANCE)
    assert result["rows"] == 4
    assert [c["name"] for c in result["columns"]] == ["name", "amount", "note", "mixed"]
    assert column(result, "name") == {"name": "name", "count": 4, "empty": 0, "numeric": None}
    assert column(result, "amount") == {
        "name": "amount",
        "count": 3,
        "empty": 1,
        "numeric": {"count": 3, "sum": 3.0, "mean": 1.0, "min": -2.5, "max": 4},
    }
    assert column(result, "note") == {"name": "note", "count": 3, "empty": 1, "numeric": None}
    assert column(result, "mixed") == {
        "name": "mixed",
        "count": 3,
        "empty": 1,
        "numeric": {"count": 2, "sum": 1010.0, "mean": 505.0, "min": 10, "max": 1000.0},
    }


def test_integer_columns_stay_exact():
    big = 2**70
    result = stats(f"n\n{big}\n{big}\n-1\n")
    assert column(result, "n")["numeric"] == {
        "count": 3,
        "sum": 2 * big - 1,
        "mean": (2 * big - 1) / 3,
        "min": -1,
        "max": big,
    }


def test_float_sums_are_accurate():
    rows = "\n".join(["0.1"] * 10_000)
    result = stats("x\n" + rows + "\n")
    assert column(result, "x")["numeric"]["sum"] == 1000.0


@pytest.mark.parametrize(
    ("cell", "number"),
    [
        ("1e3", 1000.0),
        ("-2.5", -2.5),
        ("+7", 7),
        (".5", 0.5),
        ("5.", 5.0),
        ("  3\t", 3),
        ("-0", 0),
        ("1.5E-2", 0.015),
        ("007", 7),
    ],
)
def test_numbers(cell, number):
    value = parse_number(cell)
    assert value == number and type(value) is type(number)


@pytest.mark.parametrize(
    "cell",
    [
        "", " ", "nan", "NaN", "inf", "-Infinity", "1_000", "\u0663", "0x10", "1e999", "1,5",
        "1.2.3", "--1", "e5", ".", "\n5", "5\n", "1 000", "\u00a05", "9" * 400,
    ],
)  # fmt: skip
def test_not_numbers(cell):
    assert parse_number(cell) is None


@pytest.mark.parametrize(
    "cell",
    ["1" * 1_000_000 + "x", "1" * 1_000_000 + ".x", "1" * 500_000 + "e1" * 1000 + "x"],
)
def test_a_long_cell_that_only_starts_as_a_number_is_text_at_once(cell):
    """A run of digits then a letter was tried every way the number pattern could split the
    digits: 40,000 of them took 54 s, a line-long cell hours, all of it holding the worker's
    heartbeat back until the sweep ran the task a second time. Checked in a process of its
    own, given two minutes (a linear check takes milliseconds): a hang is the failure."""
    code = (
        "import sys; from backend.files.csvstats import parse_number; "
        "print(parse_number(sys.stdin.read()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=cell,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "backend.settings"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n"


@pytest.mark.parametrize(
    "cells",
    [
        ["1_000", "2_000"],
        ["nan", "inf"],
        ["\u0661", "\u0662"],
        ["1\x1c", "2\x1c"],
    ],
)
def test_whole_columns_that_only_look_numeric_are_text(cells):
    result = stats("c\n" + "\n".join(cells) + "\n")
    assert column(result, "c") == {"name": "c", "count": 2, "empty": 0, "numeric": None}


def test_a_value_too_large_for_a_float_is_text_in_a_numeric_column():
    result = stats("c\n1.5\n1e999\n2.5\n")
    assert column(result, "c")["numeric"] == {
        "count": 2,
        "sum": 4.0,
        "mean": 2.0,
        "min": 1.5,
        "max": 2.5,
    }


def test_a_sum_too_large_to_represent_fails_readably():
    """As an error of the data_processing type's own (its worker logs one line; a column
    of 1e308 and 1e308 was logged at ERROR with a traceback, as a bug)."""
    from backend.tasks import types

    with pytest.raises(types.get("data_processing").expected_errors, match="column 'c'"):
        stats("c\n1e308\n1e308\n")
    huge = int(1e308)
    # Integer sums are exact, even past the float range.
    assert column(stats(f"c\n{huge}\n{huge}\n"), "c")["numeric"]["sum"] == 2 * huge
    with pytest.raises(ValueError, match="too large"):
        stats(f"c\n{huge}\n{huge}\n1.5\n")
    assert column(stats(f"c\n{'9' * 400}\n1\n"), "c")["numeric"]["count"] == 1


def test_batches_of_blank_lines_and_empty_columns(monkeypatch):
    monkeypatch.setattr(csvstats, "MAX_BATCH_ROWS", 3)
    result = stats("a,b\n" + "\n" * 10 + "1,\n2,\n3,\n")
    assert result["rows"] == 3
    assert column(result, "b") == {"name": "b", "count": 0, "empty": 3, "numeric": None}


def test_without_header_and_other_delimiters():
    result = stats("1;2\n3;x\n", delimiter=";", has_header=False)
    assert result["rows"] == 2
    assert [c["name"] for c in result["columns"]] == ["column_1", "column_2"]
    assert column(result, "column_1")["numeric"]["sum"] == 4
    assert column(result, "column_2")["numeric"]["count"] == 1
    tabbed = stats("a\tb\n1\t2\n", delimiter="\t")
    assert column(tabbed, "b")["numeric"]["sum"] == 2


def test_empty_files_blank_lines_and_unnamed_columns():
    assert stats("") == {"rows": 0, "columns": []}
    assert stats("\n\n") == {"rows": 0, "columns": []}
    header_only = stats("a,,c\n")
    assert header_only["rows"] == 0
    assert [c["name"] for c in header_only["columns"]] == ["a", "column_2", "c"]
    assert all(c["count"] == 0 and c["numeric"] is None for c in header_only["columns"])
    spaced = stats("\na,b\n\n1,2\n\n3,4\n")
    assert spaced["rows"] == 2 and column(spaced, "b")["numeric"]["sum"] == 6


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ("a,b\n1,2\n3\n", 3),
        ("a,b\n1,2\n3,4,5\n", 3),
        ('a,b\n"multi\nline",2\n\n1,2,3\n', 5),
        ('a,b\r\n"x\r\ny\r\nz",1\r\n4\r\n', 5),
        ('a,b\n1,"unterminated\n2,3\n', 2),
        ('a,b\n1,"x"y\n', 2),
    ],
)
def test_a_malformed_file_fails_with_its_line_number(data, line):
    with pytest.raises(MalformedCSV, match=rf"^line {line}: "):
        stats(data)


def test_a_quote_never_closed_is_placed_on_the_line_that_opens_it(monkeypatch):
    """Not at the end of the file, where the csv module finds it (or where a later quote
    closes it), which names a line the fault is not on."""
    monkeypatch.setattr(csvstats, "MAX_BATCH_ROWS", 7)
    opened = "a,b\n1,2\n" * 20 + '1,"abc\n' + "3,4\n" * 1000
    with pytest.raises(
        MalformedCSV,
        match=r"^line 41: a quoted field is not closed \(the file ends at line 1041\)$",
    ):
        stats(opened)
    with pytest.raises(
        MalformedCSV, match=r"""^line 41: ',' expected after '"' at line 1042, in the row that"""
    ):
        stats(opened + '5,"x"\n')
    with pytest.raises(MalformedCSV, match=r"^line 2: a quoted field is not closed$"):
        stats('a,b\n1,"x\n')


def test_a_bad_row_deep_in_the_file_is_found_by_line(monkeypatch):
    monkeypatch.setattr(csvstats, "MAX_BATCH_ROWS", 7)
    rows = [f"{i},{i}" for i in range(100)]
    rows[60] = "1,2,3"
    with pytest.raises(MalformedCSV, match=r"^line 62: 3 field\(s\), expected 2"):
        stats("a,b\n" + "\n".join(rows) + "\n")


def test_not_utf8_fails_readably():
    data = b"a,b\n1,2\n" + b"\xff\xfe,3\n"
    with pytest.raises(MalformedCSV, match="not valid UTF-8"):
        csv_statistics(io.BytesIO(data), size=len(data))


class Trickle(io.BytesIO):
    """A source that hands over at most ``step`` bytes a read: the decoder then gets chunks
    that end anywhere, inside a character or between a "\\r" and its "\\n"."""

    def __init__(self, data: bytes, step: int):
        super().__init__(data)
        self.step = step

    def read(self, size=-1):
        return super().read(self.step if size is None or size < 0 else min(size, self.step))


def trickled(data: bytes, step: int | None, **options) -> dict:
    source = io.BytesIO(data) if step is None else Trickle(data, step)
    return csv_statistics(source, size=len(data), **options)


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7])
@pytest.mark.parametrize(
    ("data", "line"),
    [
        pytest.param(b"a,b\n1,\xff\xfe\n", 2, id="line-2"),
        pytest.param(b"a,b\n1,2\n3,4\n5,6\n7,\xff\n9,10\n", 5, id="line-5-of-6"),
        pytest.param(b"a,\xffb\n1,2\n", 1, id="header"),
        pytest.param(b"\xef\xbb\xbfa,\xff\n1,2\n", 1, id="header-after-bom"),
        pytest.param(b"\xff", 1, id="only-byte"),
        pytest.param(b"\n\na,b\n\xff,1\n", 4, id="after-blank-lines"),
        pytest.param(b"a,b\r\n1,2\r\n3,\xff\r\n", 3, id="crlf"),
        pytest.param(b"a,b\r1,2\r3,\xff\r", 3, id="lone-cr"),
        pytest.param(b'a,b\n"x\ny",1\n2,\xff\n', 4, id="after-a-quoted-line-break"),
        pytest.param(
            "a,b\n\u00e9,\u20ac\n".encode() + b"1,\xe2\x82\n", 3, id="character-cut-short"
        ),
        pytest.param(b"a,b\n1,2\n3,\xc3", 3, id="cut-short-at-the-end"),
    ],
)
def test_not_utf8_fails_with_the_line_in_error(data, line, step):
    """The line of the first byte that is not UTF-8, counted as for the other errors: from
    1, the header included, however the reads cut the bytes."""
    with pytest.raises(MalformedCSV, match=rf"^line {line}: not valid UTF-8$"):
        trickled(data, step)


@pytest.mark.parametrize("step", [None, 61])
@pytest.mark.parametrize("csv_module", [False, True])
def test_not_utf8_deep_in_a_large_file_is_found_by_line(monkeypatch, step, csv_module):
    """Many blocks of text and chunks of bytes before the bad one (8 KiB chunks as the
    decoder reads them, or 61 bytes from a trickling source)."""
    monkeypatch.setattr(csvstats, "BLOCK_CHARS", 1000)
    if csv_module:
        monkeypatch.setattr(csvstats, "_FIELD_LIMIT", -1)  # the csv module from the start
    lines = [b"a,b"] + [b"%d,r\xc3\xa9%d" % (i, i) for i in range(20_000)]
    lines[15_000] = b"14999,\xff"
    data = b"\r\n".join(lines) + b"\r\n"
    with pytest.raises(MalformedCSV, match=r"^line 15001: not valid UTF-8$"):
        trickled(data, step)


@pytest.mark.parametrize("step", range(1, 8))
def test_a_character_cut_between_reads_is_decoded_whole(step):
    data = "\ufeffname,note\nJos\u00e9,\u20ac5\r\n\U0001d11e,\u00fc\nx,\u00e9\n".encode()
    result = trickled(data, step)
    assert result == stats(data)
    assert result["rows"] == 3
    assert column(result, "name")["count"] == 3


@pytest.mark.parametrize("quote", ["", '"'])
def test_a_field_longer_than_the_csv_modules_default_limit_is_read(quote):
    """A valid 200 KB field, plain or quoted, failed the task: "field larger than field limit
    (131072)", the csv module's default, though a line may hold 16 MB."""
    field = "x" * 200_000
    result = stats(f"a,b\n{quote}{field}{quote},1\nshort,2\n")
    assert result["rows"] == 2
    assert column(result, "a") == {"name": "a", "count": 2, "empty": 0, "numeric": None}
    assert column(result, "b")["numeric"]["sum"] == 3


def test_too_many_columns_or_too_long_a_line(monkeypatch):
    monkeypatch.setattr(csvstats, "MAX_COLUMNS", 3)
    with pytest.raises(MalformedCSV, match="4 columns, at most 3"):
        stats("a,b,c,d\n")
    # A line longer than MAX_LINE_CHARS is never read whole: it is refused, by its number.
    monkeypatch.setattr(csvstats, "MAX_LINE_CHARS", 20)
    monkeypatch.setattr(csvstats, "BLOCK_CHARS", 16)
    for quote in ("", '"'):
        line = ",".join([f"{quote}{'x' * 30}{quote}"] * 3)
        with pytest.raises(MalformedCSV, match=r"^line 2: longer than 20 characters$"):
            stats("a,b,c\n" + line + "\n")


def test_a_header_of_too_long_names_is_refused():
    """Every name is in the result, which every read of the task carries: 10,000 names of
    1,600 characters made a 16 MB result. Their total length is bounded."""
    width = 64  # names of 4,096 characters: exactly the most allowed
    name = "n" * (csvstats.MAX_HEADER_CHARS // width)
    assert len(name) * width == csvstats.MAX_HEADER_CHARS
    header = ",".join(f"{name[:-4]}{i:04}" for i in range(width))
    result = stats(header + "\n" + ",".join(["1"] * width) + "\n")
    assert len(result["columns"]) == width
    assert sum(len(c["name"]) for c in result["columns"]) == csvstats.MAX_HEADER_CHARS
    with pytest.raises(MalformedCSV, match=r"^line 2: the header's names are longer than 262,144"):
        stats("\n" + header + ",x\n" + ",".join(["1"] * (width + 1)) + "\n")
    # Without a header the names are the module's own, short: the same line is data.
    assert stats(header + ",x\n", has_header=False)["rows"] == 1


def test_a_long_line_of_too_many_fields_is_refused_before_it_is_split(monkeypatch):
    """A 15 MiB line of one-character fields took 578 MB to split: beyond LONG_LINE_CHARS
    a line's delimiters are counted first."""
    monkeypatch.setattr(csvstats, "LONG_LINE_CHARS", 100)
    monkeypatch.setattr(csvstats, "BLOCK_CHARS", 16)
    monkeypatch.setattr(csvstats, "MAX_COLUMNS", 50)
    line = ",".join(["1"] * 60)
    with pytest.raises(MalformedCSV, match=r"^line 2: more than 50 columns$"):
        stats('"a",b\n' + line + "\n")
    # At most MAX_COLUMNS fields, a long line is read as usual, delimiters in quotes aside.
    assert stats('"a",b\n' + "x" * 150 + ",1\n")["rows"] == 1
    quoted = '"' + ", x" * 60 + '","y ""quoted"", z"'
    result = stats('"a",b\n' + quoted + "\n")
    assert result["rows"] == 1 and [c["count"] for c in result["columns"]] == [1, 1]
    # A quote inside an unquoted field is text: it opens nothing, and hides no delimiter.
    for stray in ('a"b,' + line, 'a"b,' + line + ',c"d'):
        with pytest.raises(MalformedCSV, match=r"^line 2: more than 50 columns$"):
            stats('"a",b\n' + stray + "\n")
    # Plain text, split without the csv module (no quote anywhere), is counted the same:
    # a 16 MiB line of one-character fields took half a gigabyte to split there.
    monkeypatch.setattr(csvstats, "BLOCK_CHARS", 1 << 16)
    with pytest.raises(MalformedCSV, match=r"^line 3: more than 50 columns$"):
        stats("a,b\n1,2\n" + line + "\n")
    with pytest.raises(MalformedCSV, match=r"^line 1: more than 50 columns$"):
        stats(line + "\n1,2\n")
    assert stats("a,b\n" + "x" * 150 + ",1\n")["rows"] == 1


@pytest.mark.parametrize("quote", ["", '"'])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("last", ["", "ending"])
def test_a_row_longer_than_a_megabyte_is_one_row(quote, ending, last):
    """The csv reader was given such a line in pieces of 1 MiB and ended a row at each cut
    outside quotes: 13 fields of 96 KB (each within the csv module's field limit) were
    refused as "12 field(s), expected 13"."""
    fields = [quote + chr(ord("a") + i) * 96_000 + quote for i in range(13)]
    header = ",".join(f"c{i}" for i in range(13))
    lines = [header, ",".join(fields), "1" + ",2" * 12]
    result = stats(ending.join(lines) + (ending if last else ""))
    assert result["rows"] == 2
    assert [c["count"] for c in result["columns"]] == [2] * 13


def _big_csv(rows: int) -> bytes:
    return ("id,label,value\n" + "".join(f"{i},row{i},{i * 0.5}\n" for i in range(rows))).encode()


def test_progress_rises_by_bytes_read():
    data = _big_csv(200_000)
    seen = []
    result = csv_statistics(io.BytesIO(data), size=len(data), progress=seen.append)
    assert result["rows"] == 200_000
    assert len(seen) >= 50, seen
    assert seen == sorted(set(seen)) and seen[0] > 0 and seen[-1] <= 99


def test_the_file_is_never_read_whole():
    data = _big_csv(50_000)
    reads = []

    class Source(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    csv_statistics(Source(data), size=len(data))
    assert reads and all(0 < size <= csvstats.READ_BUFFER for size in reads)


def test_memory_does_not_grow_with_the_file():
    def peak(rows: int) -> int:
        data = _big_csv(rows)
        source = io.BytesIO(data)
        tracemalloc.start()
        try:
            csv_statistics(source, size=len(data))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(20_000), peak(200_000)  # about 0.5 MB and 5 MB of CSV
    assert large < 3 * 1024 * 1024, large
    assert large < small * 1.5 + 256 * 1024, (small, large)


def _outcome(data: bytes):
    try:
        return stats(data)
    except (MalformedCSV, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


PIECES = ["1", "-2.5", "x", "", " 3 ", '"q,1"', '"a""b"', '"multi\nline"', "1e3", "é", "\x00"]
ENDINGS = ["\n", "\r\n", "\r", "\n\n"]


@pytest.mark.parametrize("block", [5, 13, 64, 64 * 1024])
def test_plain_splitting_and_the_csv_module_agree(monkeypatch, block):
    """Rows split with str.split while the text is plain must be exactly what the csv
    module makes of it: same figures, same errors on the same lines."""
    rng = random.Random(block)
    monkeypatch.setattr(csvstats, "BLOCK_CHARS", block)
    for _ in range(150):
        width = rng.randint(1, 4)
        lines = []
        for _ in range(rng.randint(0, 30)):
            cells = width if rng.random() > 0.05 else rng.randint(1, 5)
            pieces = PIECES if rng.random() < 0.3 else PIECES[:5] + PIECES[8:]
            lines.append(",".join(rng.choice(pieces) for _ in range(cells)))
        ending = rng.choice(ENDINGS)
        text = ending.join(lines) + (ending if rng.random() < 0.8 else "")
        data = text.encode()
        fast = _outcome(data)
        monkeypatch.setattr(csvstats, "_FIELD_LIMIT", -1)  # the csv module from the start
        slow = _outcome(data)
        monkeypatch.setattr(csvstats, "_FIELD_LIMIT", csvstats.csv.field_size_limit())
        assert fast == slow, repr(text)
