"""One small table type behind every hub result's renderings: text (the CLI, ``str()``),
compact HTML (``_repr_html_`` in Jupyter) and a pandas DataFrame (pandas imported only when
:meth:`Table.dataframe` is called, so it stays optional)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import attrs

__all__ = ["Table", "Tabular"]

_STYLE = "border-collapse:collapse;font-size:90%"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:left"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@attrs.frozen
class Table:
    """A titled table of rows."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]

    def text(self) -> str:
        """Aligned plain text, a title line first."""
        cells = [list(self.columns), *([_text(v) for v in r] for r in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title] if self.title else []
        for n, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        if not self.rows:
            lines.append("(none)")
        return "\n".join(lines)

    def html(self) -> str:
        """A compact HTML table (every value escaped)."""
        head = "".join(f'<th style="{_CELL}">{html.escape(c)}</th>' for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(f'<td style="{_CELL}">{html.escape(_text(v))}</td>' for v in r)
            + "</tr>"
            for r in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f'<table style="{_STYLE}">{caption}<tr>{head}</tr>{body}</table>'

    def dataframe(self) -> Any:
        """A pandas DataFrame of the rows (needs pandas: ``pip install pandas``)."""
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        return pd.DataFrame([list(r) for r in self.rows], columns=list(self.columns))


class Tabular:
    """A result shown as one :class:`Table` (its :meth:`table`): ``str()`` is the text,
    ``_repr_html_`` the HTML (Jupyter), :meth:`to_dataframe` the rows for pandas."""

    __slots__ = ()  # the results are slotted attrs classes and lists: add no __dict__

    def table(self) -> Table:
        """The result as a table (each result says what its rows are)."""
        raise NotImplementedError  # pragma: no cover

    def __str__(self) -> str:
        return self.table().text()

    def _repr_html_(self) -> str:
        return self.table().html()

    def to_dataframe(self) -> Any:
        """:meth:`table`'s rows as a pandas DataFrame (pandas is imported only now)."""
        return self.table().dataframe()
