"""Declares the compiled modules; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("tcpmgm._addr", ["tcpmgm/_addr.pyx"]),
    Extension("tcpmgm._matcher", ["tcpmgm/_matcher.pyx"], extra_compile_args=["-O3"]),
    Extension("tcpmgm._rows", ["tcpmgm/_rows.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
