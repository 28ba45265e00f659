"""``RowReader``: table rows to rules, compiled (``_rows.pyx``) or its pure twin."""

from ._extensions import pick

__all__ = ["RowReader", "COMPILED"]

RowReader, COMPILED = pick("._rows:RowReader", "._rows_py:RowReader")
