"""``Matcher``: the classifier callers use.

Until the compiled classifier lands this is the reference matcher; with
``TCPMGM_NO_EXTENSIONS=1`` it is always the reference.
"""

from .reference import ReferenceMatcher

Matcher = ReferenceMatcher

__all__ = ["Matcher"]
