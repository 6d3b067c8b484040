"""Sphinx configuration for the skh2t documentation.

Build (warnings are errors, no network needed)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re

import skh2t

# -- Project information -------------------------------------------------------------

project = "skh2t"
author = "The skh2t developers"
copyright = author  # no year: the build output does not depend on the date
version = skh2t.__version__
release = skh2t.__version__

# -- General configuration -----------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax shipped with the HTML: formulas render offline
    "numpydoc",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "literal"

# -- autodoc / autosummary -----------------------------------------------------------

# Stubs are generated at build time into docs/generated/ (gitignored), so a clean
# clone builds without committed stubs.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections already give the types

# -- numpydoc ------------------------------------------------------------------------

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False  # cross-references would need intersphinx (network)

# -- Math: rendered in the browser by MathJax, nothing fetched at build time. ---------


# -- Intersphinx is deliberately not configured: the build must work offline. -------
# Opt in with SKH2T_DOCS_INTERSPHINX=1 when online.
if os.environ.get("SKH2T_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
    }

# -- HTML output ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skh2t {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_context = {"default_mode": "light"}


# -- Docstring clean-up --------------------------------------------------------------

# In a numpydoc type such as ``ndarray of shape (n_features_in_,)`` a bare name ending
# in "_" is a reST hyperlink reference ("Unknown target name"). Quote such names as
# literals before numpydoc parses the docstring (numpydoc runs at priority 500).
_BARE_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?=[,)])")


def _quote_trailing_underscore_names(app, what, name, obj, options, lines):
    for index, line in enumerate(lines):
        if "shape (" in line:
            lines[index] = _BARE_TRAILING_UNDERSCORE.sub(r"``\1``", line)


# -- The API reference stays complete --------------------------------------------------

#: Modules whose ``__all__`` must be listed in api.rst (the CLI only once it exists).
PUBLIC_MODULES = ("skh2t", "skh2t.features", "skh2t.datasets", "skh2t.finetune")
# Autosummary entries ("   name", "   ~module.name") and data directives (".. py:data:: NAME").
_API_ENTRY = re.compile(r"^(?: {3}~?|\.\. py:data:: )([A-Za-z_][\w.]*)\s*$", re.MULTILINE)


def _check_api_reference(app):
    """Warn when a public name (``__all__``) is missing from api.rst, or a listed one is gone."""
    import importlib
    import inspect

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    api = os.path.join(app.srcdir, "api.rst")
    with open(api, encoding="utf-8") as handle:
        text = handle.read()
    listed = set()
    for entry in _API_ENTRY.findall(text):
        listed.update({entry, entry.rpartition(".")[2]})
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            if name.startswith("__") or inspect.ismodule(getattr(module, name, None)):
                continue
            if name not in listed:
                logger.warning(
                    "public name %s.%s is not in docs/api.rst", module_name, name, location="api"
                )


def setup(app):
    app.connect("autodoc-process-docstring", _quote_trailing_underscore_names, priority=400)
    app.connect("builder-inited", _check_api_reference)
