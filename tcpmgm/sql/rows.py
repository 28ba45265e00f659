"""``RowReader``: table rows to rules, compiled (``_rows.pyx``) or its pure twin."""

from typing import TYPE_CHECKING

from .._extensions import NO_EXTENSIONS, not_built

__all__ = ["COMPILED", "RowReader"]

COMPILED = False
if TYPE_CHECKING:
    # The checker sees the compiled one (its stub, _rows.pyi); the pure twin has the same signature.
    from ._rows import RowReader
else:
    if not NO_EXTENSIONS:
        try:
            from ._rows import RowReader

            COMPILED = True
        except ImportError:  # pragma: no cover - only in an unbuilt source tree
            not_built("tcpmgm.sql._rows", "tcpmgm.sql._rows_py")
    if not COMPILED:
        from ._rows_py import RowReader
