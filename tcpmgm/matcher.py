"""``Matcher``: the classifier callers use.

The compiled classifier (``tcpmgm._matcher``) when it is built and
``TCPMGM_NO_EXTENSIONS`` does not forbid it; otherwise the reference matcher,
which gives the same answers, only slower.
"""

from typing import TYPE_CHECKING

from ._extensions import pick

__all__ = ["Matcher", "COMPILED"]

if TYPE_CHECKING:
    # The checker sees the compiled class (its stub, _matcher.pyi): the one
    # documented, and the one in service unless extensions are off.
    from ._matcher import Matcher
    COMPILED: bool
else:
    Matcher, COMPILED = pick("._matcher:Matcher", ".reference:ReferenceMatcher")
