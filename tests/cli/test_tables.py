"""The shared plain-text table renderer (cli/tables.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cli.tables import Column, cell_text, format_bytes, format_number, format_time, render_pairs, render_table


def test_columns_line_up_numbers_right_and_text_left():
    table = render_table([Column("name"), Column("count", "right")], [["a", 5], ["longer", 12345]])
    assert table.splitlines() == [
        "name    count",
        "------  -----",
        "a           5",
        "longer  12345",
    ]


def test_every_cell_of_a_column_starts_at_the_same_offset():
    rows = [["x" * n, 10**n, None] for n in range(1, 9)]
    lines = render_table(["text", Column("n", "right"), "maybe"], rows, indent=3).splitlines()
    assert all(line.startswith("   ") for line in lines)
    # right-aligned numbers end at the same column, and the last column starts at the same offset
    number_ends = {line.index(str(10**n)) + len(str(10**n)) for n, line in enumerate(lines[2:], start=1)}
    assert len(number_ends) == 1
    assert {line.rindex("-") for line in lines[2:]} == {lines[0].index("maybe")}


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        render_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="at least one column"):
        render_table([], [])
    with pytest.raises(ValueError, match="alignment"):
        Column("a", "centre")


def test_cells_are_one_line_and_values_have_fixed_spellings():
    assert cell_text("two\nlines") == "two lines"
    assert cell_text(None) == cell_text(math.nan) == "-"
    assert (cell_text(True), cell_text(False)) == ("yes", "no")
    assert cell_text(0.1234567891) == "0.123457"
    assert cell_text(("skellam", "gaussian")) == "skellam,gaussian"
    assert cell_text(frozenset({"b", "a"})) == "a,b"
    assert cell_text([]) == "-"


def test_times_are_shown_in_utc():
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2025, 1, 2, 13, 4, 5, tzinfo=paris)) == "2025-01-02 12:04:05"
    assert cell_text(datetime(2025, 1, 2, 12, 4, 5, 999, tzinfo=UTC)) == "2025-01-02 12:04:05"


def test_byte_counts_use_binary_units():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**40, 2**52)] == [
        "0 B", "1023 B", "1.00 KiB", "1.50 KiB", "5.00 MiB", "3.00 TiB", "4096.00 TiB"]
    assert format_bytes(None) == "-"
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            format_bytes(bad)


def test_numbers_and_pairs():
    assert (format_number(0.5), format_number(2.0, 1), format_number(None), format_number(math.nan)) == (
        "0.5000", "2.0", "-", "-")
    assert render_pairs({"a": 1, "longer": None}).splitlines() == ["a       1", "longer  -"]
    assert render_pairs([("k", "v")], indent=2) == "  k  v"
    assert render_pairs({}) == ""
