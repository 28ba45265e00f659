"""Declares the compiled modules; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("tcpmgm.matching._addr", ["tcpmgm/matching/_addr.pyx"]),
    Extension("tcpmgm.matching._matcher", ["tcpmgm/matching/_matcher.pyx"], extra_compile_args=["-O3"]),
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
