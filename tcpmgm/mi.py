"""``tcpmgm.mi``, the name the README documents: the admin (MI) endpoint and its client.

The code lives in ``tcpmgm/service/mi.py`` (docs/architecture.md).  The star import takes
exactly that module's ``__all__``, so that the two can never list different names.
"""

from .service.mi import *  # noqa: F403
from .service.mi import __all__ as __all__
