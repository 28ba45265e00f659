"""``Matcher``: the classifier callers use.

The compiled classifier (``tcpmgm._matcher``) when it is built and
``TCPMGM_NO_EXTENSIONS`` does not forbid it; otherwise the reference matcher,
which gives the same answers, only slower.
"""

import logging

from ._extensions import NO_EXTENSIONS
from .reference import ReferenceMatcher

__all__ = ["Matcher", "COMPILED"]

COMPILED = False
Matcher = ReferenceMatcher
if not NO_EXTENSIONS:
    try:
        from ._matcher import Matcher  # type: ignore[assignment]  # noqa: F811
        COMPILED = True
    except ImportError:  # pragma: no cover - only in an unbuilt source tree
        logging.getLogger(__name__).warning("tcpmgm._matcher is not built; using the reference matcher")
