"""Result tables that a person can read in 80 columns: a few columns by default, every column with ``--wide``,
and no cell ever cut short (``--json`` and the records keep every field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Table

Shown = Literal["always", "wide", "narrow"]


@dataclass(frozen=True, slots=True)
class Col:
    """One column: its header, when it is shown (``always``, only with ``--wide``, or only without it, for a
    short form such as a file name that ``--wide`` replaces with the full path), and how cells line up."""

    header: str
    shown: Shown = "always"
    justify: Literal["left", "right"] = "right"

    def visible(self, wide: bool) -> bool:
        return self.shown == "always" or self.shown == ("wide" if wide else "narrow")


def left(header: str, shown: Shown = "always") -> Col:
    """A text column (names, statuses, paths): left-aligned."""
    return Col(header, shown, "left")


def fitted_table(columns: Sequence[Col], rows: Iterable[Sequence[str]], *, wide: bool,
                 title: str | None = None) -> Table:
    """A rich Table of ``rows`` (one cell per column in ``columns``) showing the columns ``wide`` selects."""
    keep = [i for i, c in enumerate(columns) if c.visible(wide)]
    table = Table(title=title)
    for i in keep:
        # fold, not rich's default ellipsis: a value too long for the terminal goes on whole on the next line
        # ("op…" or "1.…" told a person nothing).
        table.add_column(columns[i].header, justify=columns[i].justify, overflow="fold")
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells for {len(columns)} columns: {list(row)!r}")
        table.add_row(*(row[i] for i in keep))
    return table


def print_table(console: Console, table: Table, *, wide: bool) -> None:
    """Print ``table`` fitted to the console; with ``wide`` at its natural width instead, each cell whole on one
    line even past the terminal's edge (squeezed into 80 columns, 14 columns fold into stacks of 3-letter
    pieces; a wide terminal, ``less -S`` or a file shows them whole)."""
    if not wide:
        console.print(table)
        return
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    options = console.options.update_width(max(natural, console.width))
    lines = console.render_lines(table, options, pad=False)
    segments = [segment for line in lines for segment in (*line, Segment.line())]
    console.print(Segments(segments), soft_wrap=True)  # soft_wrap: neither wrapped nor cropped at the edge


def notes(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """``label: text`` lines for what does not fit a cell (why a runtime failed), each said once."""
    return [f"{label}: {text}" for label, text in dict.fromkeys((lab, txt) for lab, txt in pairs if txt)]


def breakable(name: str) -> str:
    """``onnx-baseline(opset12,default-session)`` with a space before '(' and after ',' so that a narrow column
    wraps it there rather than in the middle of a word."""
    return name.replace("(", " (").replace(",", ", ")


def mb(value: float | None) -> str:
    """A size in MB (``bench_record.size_mb``) for a table cell; '-' when unknown or absent."""
    return f"{value:.1f}" if value else "-"
