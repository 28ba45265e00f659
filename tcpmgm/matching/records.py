"""``RuleRecords``: a matcher's build input, compiled (``_matcher.pyx``) or its pure twin
(``_records_py.py``), chosen as ``matcher.py`` chooses the ``Matcher``, so that the records
and the matcher that takes them are of the same side."""

from typing import TYPE_CHECKING

from .._extensions import NO_EXTENSIONS, not_built

__all__ = ["COMPILED", "RuleRecords"]

COMPILED = False
if TYPE_CHECKING:
    # The checker sees the compiled class (its stub, _matcher.pyi); the pure twin has the same API.
    from ._matcher import RuleRecords
else:
    if not NO_EXTENSIONS:
        try:
            from ._matcher import RuleRecords

            COMPILED = True
        except ImportError:  # pragma: no cover - only in an unbuilt source tree
            not_built("tcpmgm.matching._matcher", "tcpmgm.matching._records_py")
    if not COMPILED:
        from ._records_py import RuleRecords
