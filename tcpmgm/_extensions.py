"""Whether the compiled modules may be used: the one switch the twin modules read.

``TCPMGM_NO_EXTENSIONS`` set to anything but ``""``/``0`` forces the pure-Python
twins, as aio-libs packages do with their own variable.  Each choosing module
(``matching/matcher.py``, ``matching/addresses.py``, ``sql/rows.py``) imports its
compiled module statically and falls back to the pure twin, with a log line, when
that module is not built (a source checkout that was never compiled), so that the
library stays usable.
"""

import logging
import os

NO_EXTENSIONS = os.environ.get("TCPMGM_NO_EXTENSIONS", "") not in ("", "0")


def not_built(compiled: str, pure: str) -> None:
    """Log that ``compiled`` could not be imported and ``pure`` serves in its place."""
    logging.getLogger(__package__).warning("%s is not built; using %s", compiled, pure)
