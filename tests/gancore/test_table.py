"""`gancore.cli.format_table`: the metrics' text tables."""

from __future__ import annotations

from gancore.cli import format_table


def test_long_column_names_never_run_together():
    table = format_table(["precision", "recall", "a-very-long-name"], [("GEN vs REAL", [0.5, 0.25, 1.0])], 4)
    header, row = table.splitlines()
    assert header.split() == ["precision", "recall", "a-very-long-name"]
    assert row.split() == ["GEN", "vs", "REAL", "0.5000", "0.2500", "1.0000"]
    assert len(header) == len(row)  # values right-aligned under their names
