"""``RowReader``: table rows to rules and into a matcher's records, compiled (``_rows.pyx``) or its
pure twin; :func:`row_reader` makes the one every reader of the table uses."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._extensions import NO_EXTENSIONS, not_built
from ..model.profile import Profile
from .schema import NULLABLE_COLUMNS

__all__ = ["COMPILED", "RowReader", "row_reader"]

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


def row_reader(
    columns: Sequence[str], *, listeners: Mapping[str, Any] | None = None, defaults: Profile | None = None
) -> RowReader:
    """The reader of rows of ``columns`` (canonical names, in the order of each row's values) as a
    reload reads them: a NULL in a column that OpenSIPS declares NOT NULL is read as the column's
    default, with a warning."""
    return RowReader(
        columns,
        listeners=listeners,
        defaults=defaults,
        not_null=[c for c in columns if c not in NULLABLE_COLUMNS],
    )
