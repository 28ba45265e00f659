"""``tcpmgm.aio``, the name the README documents: asyncio servers and connections with profiles applied.

The code lives in ``tcpmgm/service/aio.py`` (docs/architecture.md).  The star import takes
exactly that module's ``__all__``, so that the two can never list different names.
"""

from .service.aio import *  # noqa: F403
from .service.aio import __all__ as __all__
