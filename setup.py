"""Declares the compiled modules; all metadata lives in pyproject.toml."""

import os
import shlex

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("tcpmgm.matching._addr", ["tcpmgm/matching/_addr.pyx"]),
    Extension("tcpmgm.matching._matcher", ["tcpmgm/matching/_matcher.pyx"], extra_compile_args=["-O3"]),
    Extension("tcpmgm.sql._rows", ["tcpmgm/sql/_rows.pyx"]),
]


def debug_info_requested() -> bool:
    """Whether the builder's CFLAGS ask for debug info: the last -g option decides, as it does for gcc."""
    debug = [flag for flag in shlex.split(os.environ.get("CFLAGS", "")) if flag.startswith("-g")]
    debug = [flag for flag in debug if not flag.startswith("-gno-")]
    return bool(debug) and debug[-1] != "-g0"


# Python's own CFLAGS carry -g, so every wheel's modules would ship their debug info (five times
# the size of the modules without it). extra_compile_args come after all CFLAGS on the command
# line, so a -g0 here would also undo a builder's own -g (the sanitizer build of .ci/run passes
# one): it is added only when the builder's CFLAGS ask for no debug info.
if not debug_info_requested():
    for extension in EXTENSIONS:
        extension.extra_compile_args.append("-g0")

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
