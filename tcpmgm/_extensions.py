"""Whether to use the compiled modules.

``TCPMGM_NO_EXTENSIONS`` set to anything but ``""``/``0`` forces the pure-Python
twins, as aio-libs packages do with their own variable.  A missing compiled
module (a source checkout that was never built) also falls back, with a log
line, so the library stays usable.
"""

import os

NO_EXTENSIONS = os.environ.get("TCPMGM_NO_EXTENSIONS", "") not in ("", "0")
