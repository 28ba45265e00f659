"""``tcpmgm.sockets``, the name the README documents: profiles applied to sockets.

The code lives in ``tcpmgm/service/sockets.py`` (docs/architecture.md).  The star import takes
exactly that module's ``__all__``, so that the two can never list different names.
"""

from .service.sockets import *  # noqa: F403
from .service.sockets import __all__ as __all__
