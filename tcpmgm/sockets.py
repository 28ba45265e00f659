"""``tcpmgm.sockets``, the name the README documents: profiles and their policy applied to sockets.

The code lives in ``tcpmgm/service/sockets.py`` (options, connect, tune) and
``tcpmgm/service/blocking.py`` (the connection policy on blocking sockets; it
builds on the policy, which builds on ``apply``, so it cannot live in the same
module: docs/architecture.md).  The star imports take exactly those modules'
``__all__``, so that the facade can never list different names.
"""

from .service import blocking as _blocking
from .service import sockets as _sockets
from .service.blocking import *  # noqa: F403
from .service.sockets import *  # noqa: F403

__all__: list[str] = []
__all__ += _sockets.__all__
__all__ += _blocking.__all__
