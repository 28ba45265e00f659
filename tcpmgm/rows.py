"""``RowReader``: table rows to rules, compiled (``_rows.pyx``) or its pure twin."""

from typing import TYPE_CHECKING

from ._extensions import pick

__all__ = ["RowReader", "COMPILED"]

if TYPE_CHECKING:
    # The checker sees the compiled one (its stub, _rows.pyi); the pure twin has the same signature.
    from ._rows import RowReader
    COMPILED: bool
else:
    RowReader, COMPILED = pick("._rows:RowReader", "._rows_py:RowReader")
