"""Declares the compiled modules; all metadata lives in pyproject.toml."""

import os
import shlex
from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("tcpmgm.matching._addr", ["tcpmgm/matching/_addr.pyx"]),
    Extension(
        "tcpmgm.matching._matcher",
        ["tcpmgm/matching/_matcher.pyx"],
        # Its parts (_matcher.pyx includes and cimports them): a change to one rebuilds it,
        # and the sdist carries them.
        depends=sorted(glob("tcpmgm/matching/_*.pxi") + glob("tcpmgm/matching/_*.pxd")),
        extra_compile_args=["-O3"],
    ),
    Extension("tcpmgm.sql._rows", ["tcpmgm/sql/_rows.pyx"]),
    # The benchmarks' baseline (benchmarks/README.md#baselines), beside the harness that runs it.
    Extension("tcpmgm_bench._linear_scan", ["benchmarks/tcpmgm_bench/_linear_scan.pyx"]),
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
