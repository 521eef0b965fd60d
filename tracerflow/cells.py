"""How every table tracerflow shows writes a value: the command line's text tables, the Prefect
UI's markdown, the HTML report and the viewer's index all read the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def cell_text(value: Any, *, signed: bool = False) -> str:
    """``value`` as a table shows it: nothing for None, a float to four decimals (``signed``:
    with its sign, for a change), a time to the second, anything else as its ``str``. Four
    decimals are what a person compares; the database keeps full precision."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
