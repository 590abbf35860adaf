"""One Markdown table renderer for every table the pipeline writes as text (Table 1, the
reproduction report, the reference tables in results/reference/embedded.md), so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterable


def markdown_table(header: Iterable[object], rows: Iterable[Iterable[object]]) -> list[str]:
    """The lines of a GitHub-style Markdown table; cells are written with ``str``."""
    header = [str(c) for c in header]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]
