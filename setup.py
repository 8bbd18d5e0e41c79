"""The compiled per-packet path (agent/_hotpath.c); everything else is declared in pyproject.toml.

Optional: without a C compiler the build goes on and the Python path runs (same results, slower).
Here rather than in pyproject.toml, where setuptools still calls `ext-modules` experimental.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("agent._hotpath", ["agent/_hotpath.c"], depends=["agent/_compact.h", "agent/_capture.h"], optional=True)])
