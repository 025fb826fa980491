"""
The build backend: setuptools', with the scratch folders it leaves in the source tree
(``build/``, ``*.egg-info``) removed afterwards, so that ``pip install .`` leaves the
tree as it found it. Folders that existed before a build are kept.
"""

import glob
import os
import shutil

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the PEP 517/660 hooks not wrapped here)

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _scratch():
    return {os.path.join(_ROOT, "build"), *glob.glob(os.path.join(_ROOT, "*.egg-info"))}


def _clean_after(hook):
    def wrapped(*args, **kwargs):
        before = {p for p in _scratch() if os.path.exists(p)}
        try:
            return hook(*args, **kwargs)
        finally:
            for path in _scratch() - before:
                shutil.rmtree(path, ignore_errors=True)

    wrapped.__name__ = hook.__name__
    return wrapped


build_wheel = _clean_after(_setuptools.build_wheel)
build_sdist = _clean_after(_setuptools.build_sdist)
build_editable = _clean_after(_setuptools.build_editable)
prepare_metadata_for_build_wheel = _clean_after(_setuptools.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _clean_after(_setuptools.prepare_metadata_for_build_editable)
