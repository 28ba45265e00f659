"""``Matcher``: the classifier callers use.

The compiled classifier (``tcpmgm._matcher``) when it is built and
``TCPMGM_NO_EXTENSIONS`` does not forbid it; otherwise the reference matcher,
which gives the same answers, only slower.
"""

from ._extensions import pick

__all__ = ["Matcher", "COMPILED"]

Matcher, COMPILED = pick("._matcher:Matcher", ".reference:ReferenceMatcher")
