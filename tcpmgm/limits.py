"""``tcpmgm.limits``, the name the README documents: the ranges of a rule's columns.

The code lives in ``tcpmgm/model/limits.py`` (docs/architecture.md).  The star import takes
exactly that module's ``__all__``, so that the two can never list different names.
"""

from .model.limits import *  # noqa: F403
from .model.limits import __all__ as __all__
