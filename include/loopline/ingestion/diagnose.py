"""Why a batch failed, in one line a person can act on: encoding and shape problems named as such.

The suite sees the consequence of a problem, not the problem: a trailing NUL byte reads as one
more row whose every field is null (17 not-null failures); ``"61,900"`` is text in a numeric
column (a type failure and a range check that cannot run); a space after a column name makes
one column missing and another extra. ``diagnose`` looks at the bytes and at the frame as read,
before the suite, and names the cause; the report puts it in its first line and folds the
failures it explains into one count (they stay in ``validation.json``).

The class covered: control bytes, byte-order marks (UTF-16/32 files, a UTF-8 mark inside a
file), bytes that are not UTF-8, a delimiter other than ``,``, a header repeated inside the
file, whitespace or case in column names, missing and extra columns, and numbers written as
text (thousands separators, decimal commas, units, anything else). Nothing here names a model
or a column: the expected columns and which of them are numeric come from the spec and suite.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import pandas as pd

ALL = "*"  # a cause that explains every failure (the file as a whole is wrong)
SHOWN = 8  # names listed before "+N more"

_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAMES = {0: "NUL", 7: "BEL", 8: "BS", 0x0B: "VT", 0x0C: "FF", 0x1A: "SUB", 0x1B: "ESC", 0x7F: "DEL"}
_BOMS = (  # longest first: UTF-32 LE starts with UTF-16 LE's mark
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
_DOT_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$")  # 1.234.567 or 1.234,5
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$", re.IGNORECASE)


@dataclass
class Cause:
    """One named problem: what a person reads, and which columns' failures it explains."""

    kind: str
    text: str
    columns: list[str] = field(default_factory=list)  # ALL: every failure

    def to_dict(self) -> dict:
        return asdict(self)


def _names(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:SHOWN])
    return shown + (f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _byte_name(byte: int) -> str:
    return f"0x{byte:02X}" + (f" ({_NAMES[byte]})" if byte in _NAMES else "")


def _bytes_causes(data: bytes) -> list[Cause]:
    """What the raw bytes of a text batch say (a Parquet file is binary: not looked at here)."""
    causes: list[Cause] = []
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            mark_hex = mark.hex(" ").upper()
            text = f"the file is {encoding} (it starts with the byte-order mark {mark_hex}); batches must be UTF-8"
            return [Cause("encoding", text, [ALL])]
    if data.count(b"\x00") > max(8, len(data) // 8):
        return [Cause("encoding", "the file looks like UTF-16 (every other byte is NUL); batches must be UTF-8", [ALL])]
    inner_bom = data.find(_UTF8_BOM, 1)
    if inner_bom > 0:
        line = _line_of(data, inner_bom)
        text = f"a UTF-8 byte-order mark inside the file, at line {line} (files joined together?)"
        causes.append(Cause("bom", text, [ALL]))
    controls = list(_CONTROL.finditer(data))
    if controls:
        first: dict[int, int] = {}
        for m in controls:
            first.setdefault(m.group()[0], m.start())
        last_line = _line_of(data, len(data.rstrip(b"\r\n")))
        parts = []
        for byte, offset in list(first.items())[:3]:
            line = _line_of(data, offset)
            where = f"line {line}" + (" (the last line)" if line == last_line else "")
            parts.append(f"{_byte_name(byte)} first at {where}")
        text = f"{len(controls)} control byte(s) in the file: " + "; ".join(parts)
        causes.append(Cause("control_bytes", text, [ALL]))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data[err.start]
        line = _line_of(data, err.start)
        text = f"not UTF-8: byte 0x{byte:02X} at line {line} (Latin-1 or Windows-1252?); batches must be UTF-8"
        causes.append(Cause("encoding", text, [ALL]))
    return causes


def _delimiter_cause(frame: pd.DataFrame, expected: list[str]) -> list[Cause]:
    if len(frame.columns) != 1 or len(expected) < 2:
        return []
    header = str(frame.columns[0])
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        if sep in header:
            return [Cause("delimiter", f"fields are separated by {name} ({sep!r}), not commas", [ALL])]
    return []


def _repeated_header(frame: pd.DataFrame) -> pd.Series:
    """Rows that repeat the header (files joined together)."""
    if frame.empty or len(frame.columns) < 2:
        return pd.Series(False, index=frame.index)
    header = [str(c).strip().lstrip("\ufeff") for c in frame.columns]
    text = frame.astype("string").apply(lambda col: col.str.strip().str.lstrip("\ufeff"))
    return (text == header).fillna(False).all(axis=1)


def _control_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose values hold control characters; every column if such a value sits on a stray line."""
    hits = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
            hits[name] = values.astype("string").str.contains(_CONTROL_TEXT.pattern, regex=True).fillna(False)
    rows = hits.any(axis=1)
    if not rows.any() or (frame[rows].isna().mean(axis=1) >= 0.5).any():
        return [ALL]
    return [str(c) for c in frame.columns if hits[c].any()]


def _column_causes(frame: pd.DataFrame, expected: list[str], exact: bool) -> list[Cause]:
    present = [str(c) for c in frame.columns]
    wanted = set(expected)
    causes: list[Cause] = []
    explained: set[str] = set()
    spaced = [(c, c.strip()) for c in present if c != c.strip() and c.strip() in wanted and c.strip() not in present]
    if spaced:
        shown = ", ".join(f"{c!r} (expected {s!r})" for c, s in spaced[:SHOWN])
        more = f" (+{len(spaced) - SHOWN} more)" if len(spaced) > SHOWN else ""
        text = f"{len(spaced)} column name(s) with surrounding whitespace: {shown}{more}"
        causes.append(Cause("column_whitespace", text, [s for _, s in spaced]))
        explained |= {c for c, _ in spaced} | {s for _, s in spaced}
    lower = {w.lower(): w for w in wanted}
    cased = [
        (c, lower[c.strip().lower()])
        for c in present
        if c not in explained
        and c not in wanted
        and c.strip().lower() in lower
        and lower[c.strip().lower()] not in present
    ]
    if cased:
        shown = ", ".join(f"{c!r} (expected {w!r})" for c, w in cased[:SHOWN])
        causes.append(
            Cause("column_case", f"{len(cased)} column name(s) in another case: {shown}", [w for _, w in cased])
        )
        explained |= {c for c, _ in cased} | {w for _, w in cased}
    missing = [c for c in expected if c not in present and c not in explained]
    if missing:
        causes.append(Cause("missing_columns", f"{len(missing)} missing column(s): {_names(missing)}", missing))
    extra = [c for c in present if c not in wanted and c not in explained]
    if extra and exact:
        text = f"{len(extra)} extra column(s) the suite does not allow: {_names(extra)}"
        causes.append(Cause("extra_columns", text, []))
    return causes


def _text_cells_causes(frame: pd.DataFrame) -> list[Cause]:
    """Control characters and byte-order marks inside text values (a Parquet file's strings)."""
    causes = []
    for name in frame.columns:
        values = frame[name]
        if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype)):
            continue
        text = values.dropna().astype(str)
        bad = text[text.str.contains(_CONTROL_TEXT.pattern, regex=True) | text.str.contains("\ufeff", regex=False)]
        if len(bad):
            chars = sorted({ord(ch) for v in bad.head(50) for ch in v if _CONTROL_TEXT.match(ch) or ch == "\ufeff"})
            shown = ", ".join("U+FEFF (byte-order mark)" if c == 0xFEFF else _byte_name(c) for c in chars[:3])
            causes.append(
                Cause(
                    "control_bytes",
                    f"column {name!r}: {len(bad)} value(s) hold control characters ({shown})",
                    [str(name)],
                )
            )
    return causes


def _number_causes(frame: pd.DataFrame, numeric: list[str], hide: set[str]) -> list[Cause]:
    """Numeric columns that arrived as text: say how the numbers are written."""
    causes = []
    for name in numeric:
        if name not in frame.columns or pd.api.types.is_numeric_dtype(frame[name].dtype):
            continue
        text = frame[name].dropna().astype(str).str.strip()
        text = text[text != ""]
        if text.empty:
            continue
        thousands = text.str.match(_THOUSANDS.pattern)
        decimal = text.str.match(_DECIMAL_COMMA.pattern) & ~thousands
        dotted = text.str.match(_DOT_THOUSANDS.pattern)
        plain = text.str.match(_NUMBER.pattern, flags=re.IGNORECASE)
        dotted &= ~plain
        other = ~(thousands | decimal | dotted | plain)
        total = len(frame)
        if decimal.any() or dotted.any():
            comma = decimal | dotted | (thousands & decimal.any())
            example = text[comma].iloc[0]
            text_ = (
                f"column {name!r}: {int(comma.sum())} of {total} values written with a decimal comma"
                f" (e.g. {example!r}); numbers must use a point and no thousands separator"
            )
            causes.append(Cause("decimal_comma", text_, [name]))
        elif thousands.any():
            example = text[thousands].iloc[0]
            text_ = (
                f"column {name!r}: {int(thousands.sum())} of {total} values written with ',' as a thousands"
                f" separator (e.g. {example!r}, to be written {example.replace(',', '')})"
            )
            causes.append(Cause("thousands_separator", text_, [name]))
        if other.any():
            examples = [v for v in dict.fromkeys(text[other].head(50)) if v not in hide][:3]  # never an entity id
            causes.append(
                Cause(
                    "not_numbers",
                    f"column {name!r}: {int(other.sum())} of {total} values are not numbers, e.g. {examples}",
                    [name],
                )
            )
    return causes


def diagnose(
    data: bytes | None,
    frame: pd.DataFrame | None,
    expected: list[str],
    numeric: list[str],
    exact: bool = True,
    entity_id: str | None = None,
) -> list[Cause]:
    """The causes of a failed batch, most basic first; empty when none of the class applies.

    ``data``: the file's bytes (None for a frame from elsewhere); ``frame``: the batch as read
    (None if it could not be read); ``expected``: the columns the suite expects; ``numeric``:
    those that must hold numbers; ``exact``: whether columns beyond ``expected`` are refused;
    ``entity_id``: a column whose values never appear in a cause (reports leave no id in clear).
    """
    causes: list[Cause] = []
    text_file = data is not None and not data.startswith(b"PAR1")
    if text_file:
        causes += _bytes_causes(data)
    if frame is None or any(c.kind == "encoding" for c in causes):
        return causes
    for cause in causes:  # control bytes in a read file explain the columns they sit in, or all: a stray line
        if cause.kind == "control_bytes":
            cause.columns = _control_columns(frame)
    delimiter = _delimiter_cause(frame, expected)
    if delimiter:
        return causes + delimiter
    headers = _repeated_header(frame)
    if headers.any():
        line = int(headers[headers].index[0]) + 2  # the header is line 1
        text = f"the header is repeated inside the file, at line {line} (files joined together?)"
        causes.append(Cause("repeated_header", text, [ALL]))
        frame = frame[~headers]  # what else is wrong, the header rows aside
    if not text_file:
        causes += _text_cells_causes(frame)
    causes += _column_causes(frame, expected, exact)
    hide = set(frame[entity_id].dropna().astype(str).str.strip()) if entity_id in frame.columns else set()
    causes += _number_causes(frame, numeric, hide)
    return causes


def explained_by(causes: list[dict], failure: dict) -> bool:
    """Does a named cause explain this failed expectation (so the summary folds it)?"""
    column = failure.get("column")
    for cause in causes:
        columns = cause.get("columns") or []
        if ALL in columns:
            return True
        if column is not None and column in columns:
            return True
        if column is None and failure.get("expectation") == "expect_table_columns_to_match_set":
            if cause["kind"] in ("column_whitespace", "column_case", "missing_columns", "extra_columns"):
                return True
    return False
