"""Printing results: tables for people, JSON with stable keys for scripts.

Every string a guest or tenant wrote (names, reasons, faults, a console
log) passes through :func:`printable` before it reaches the operator's
terminal: an escape sequence or a newline in it is shown, not obeyed, so it
can neither drive the terminal nor fake table rows. JSON output needs no
help: ``json.dumps`` escapes control characters itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

#: The columns of a server table (``server list``, the demo); here, below the
#: commands, so that ``main`` and ``demo`` need not import each other for it.
SERVER_COLUMNS = [
    "name",
    "uuid",
    "project",
    "flavor",
    "host",
    "vm_state",
    "task_state",
    "power_state",
]


class RawText(str):
    """Text :func:`emit` writes exactly as it is (``console-log --raw``)."""


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def printable(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character but those in ``keep`` escaped.

    Non-printable is Python's ``str.isprintable``: C0 and C1 controls
    (ESC, CSI, BEL, CR, LF...), DEL, format characters such as the bidi
    overrides, line and paragraph separators, and spaces other than " ".
    """
    if text.isprintable() and not keep:
        return text
    return "".join(c if c.isprintable() or c in keep else _escape(c) for c in text)


def printable_lines(text: str) -> str:
    """Multi-line ``text`` (a console log) for a terminal: newlines and tabs stay.

    NOTE: a serial console ends lines with CR LF; a lone CR, which would
    let a later line overwrite an earlier one, is escaped like the rest.
    """
    return printable(text.replace("\r\n", "\n"), keep="\n\t")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join("%s=%s" % (k, _cell(v)) for k, v in sorted(value.items()))
    return str(value)


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], out: TextIO | None = None
) -> None:
    """A plain-text table of ``columns`` of each row, every cell on one line."""
    out = out or sys.stdout
    cells = [[printable(_cell(row.get(col))) for col in columns] for row in rows]
    headers = [printable(str(col)) for col in columns]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(line, file=out)
    print(
        "| " + " | ".join(c.ljust(w) for c, w in zip(headers, widths, strict=True)) + " |", file=out
    )
    print(line, file=out)
    for row in cells:
        print(
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |", file=out
        )
    print(line, file=out)


def record(item: dict[str, Any], out: TextIO | None = None) -> None:
    """One record as a two-column Field/Value table."""
    out = out or sys.stdout
    table([{"Field": k, "Value": v} for k, v in item.items()], ["Field", "Value"], out)


def emit(
    result: Any, fmt: str, columns: Sequence[str] | None = None, out: TextIO | None = None
) -> None:
    """Print ``result`` (a list of rows, one record, a string or None) in ``fmt``."""
    out = out or sys.stdout
    if isinstance(result, RawText):
        out.write(result)
        return
    if fmt == "json":
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
        return
    if result is None:
        return
    if isinstance(result, str):
        print(printable_lines(result), file=out)
    elif isinstance(result, list):
        table(result, columns or (sorted(result[0]) if result else ["(none)"]), out)
    else:
        record(result, out)


class Progress:
    """A one-line status that rewrites itself on a terminal and stays silent when piped."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.enabled = self.out.isatty()
        self._shown = False

    def update(self, text: str) -> None:
        if self.enabled:
            self.out.write("\r\033[K" + printable(text))
            self.out.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self._shown = False
