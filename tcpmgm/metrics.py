"""``tcpmgm.metrics``, the name the README documents: Prometheus metrics of a manager (extra ``metrics``).

The code lives in ``tcpmgm/service/metrics.py`` (docs/architecture.md).  The star import takes
exactly that module's ``__all__``, so that the two can never list different names.
"""

from .service.metrics import *  # noqa: F403
from .service.metrics import __all__ as __all__
