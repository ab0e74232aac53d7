"Thin shim: the package metadata lives in pyproject.toml (nbdev 3)."
from setuptools import setup

setup()
