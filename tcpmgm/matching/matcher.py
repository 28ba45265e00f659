"""``Matcher``: the classifier callers use.

The compiled classifier (``_matcher.pyx``) when it is built and
``TCPMGM_NO_EXTENSIONS`` does not forbid it; otherwise the reference matcher,
which gives the same answers, only slower.
"""

from typing import TYPE_CHECKING

from .._extensions import NO_EXTENSIONS, not_built

__all__ = ["COMPILED", "Matcher"]

COMPILED = False
if TYPE_CHECKING:
    # The checker sees the compiled class (its stub, _matcher.pyi): the one
    # documented, and the one in service unless extensions are off.
    from ._matcher import Matcher
else:
    if not NO_EXTENSIONS:
        try:
            from ._matcher import Matcher

            COMPILED = True
        except ImportError:  # pragma: no cover - only in an unbuilt source tree
            not_built("tcpmgm.matching._matcher", "the reference matcher")
    if not COMPILED:
        from .reference import ReferenceMatcher as Matcher
