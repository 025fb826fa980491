"""Sphinx configuration: API pages from the docstrings (``make docs``; built in the tests)."""

import pyro_dirmag

project = "pyro_dirmag"
author = "pyro_dirmag developers"
release = pyro_dirmag.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.intersphinx"]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
# Methods that override Lightning's hooks would otherwise show Lightning's docstrings.
autodoc_inherit_docstrings = False
# Offline: links to other projects' docs are not resolved (no inventories fetched).
intersphinx_mapping = {}
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
