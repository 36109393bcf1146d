"""Only the optional C accelerator lives here; everything else is in setup.cfg.

``optional=True``: without a C compiler (or Python headers) the build of ``syncpool._speedups`` is skipped with a
warning and syncpool installs as pure Python, whose monitored call path is slower but behaves the same.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("syncpool._speedups", sources=["syncpool/_speedups.c"], optional=True),
    ],
)
