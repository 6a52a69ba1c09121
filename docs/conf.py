"""Sphinx configuration for the repocket documentation.

Build with ``make docs`` (warnings are errors, nitpicky references on).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

sys.path.insert(0, os.path.abspath(".."))

project = "repocket"
author = "The repocket developers"
copyright = "the repocket developers"
try:
    release = version("repocket")
except PackageNotFoundError:  # a source tree that was never installed
    release = "0+unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

# No intersphinx: the docs build must work without network access.
exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

html_theme = "alabaster"
html_theme_options = {
    "description": "A Redis-native active-record ORM",
    "fixed_sidebar": True,
}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

nitpicky = True
# Without intersphinx (no network during the build) names from the standard
# library and from third-party packages cannot be linked; they are still
# shown, just not as links. Only those are ignored here: every repocket name
# must resolve.
nitpick_ignore_regex = [
    (r"py:(class|obj|exc|data|func|meth)",
     r"(redis|pytest|_pytest|os|pathlib|datetime|decimal|uuid|collections\.abc|typing|types|contextvars|fastapi|starlette|pydantic)\..*"),
    (r"py:class", r"(Any|Callable|Iterator|Iterable|Sequence|ClassVar|Generic)(\[.*\])?"),
    (r"py:(obj|class)", r"repocket\..*\.(T|M|N)"),  # type variables of generic plans and descriptors
]
