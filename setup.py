"""Declares the compiled modules; all metadata lives in pyproject.toml."""

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

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
