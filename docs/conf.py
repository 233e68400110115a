"""Sphinx configuration of the aiida-adit documentation site.

Build (warnings are errors)::

    sphinx-build -W -b html docs docs/_build/html

Markdown pages are read by MyST; the tutorials (``docs/tutorials``, MyST markdown notebooks) are
executed by MyST-NB at every build, and a cell that raises fails the build; the API reference
comes from the docstrings (autodoc with Google-style sections); CalcJobs and WorkChains are
rendered from their specs by aiida-core's Sphinx extension; the command line from the ``adit``
argument parser (``_ext/adit_cli.py``).
"""

from __future__ import annotations

import pathlib
import sys
import warnings

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

from adit_torch import __version__  # noqa: E402


def _load_temporary_profile() -> None:
    """aiida-core's process directives build each spec inside a loaded profile: an in-memory one
    here (no configuration, no database, nothing written), unless one is loaded already."""
    from aiida.manage import get_manager
    from aiida.storage.sqlite_temp import SqliteTempBackend

    manager = get_manager()
    if manager.get_profile() is None:
        manager.load_profile(SqliteTempBackend.create_profile("adit-docs"), allow_switch=True)


_load_temporary_profile()
# autodoc reads every class attribute to find the documented ones; on aiida-core's Node classes that
# includes the deprecated `objects` and `Model`, which warn on access. Nothing of ours is deprecated.
warnings.filterwarnings(
    "ignore",
    message=r".*(`objects` property|is deprecated, use `(aiida\.orm\.nodes\.node\.NodeCollection|\w+\.ReadModel))",
    module=r"aiida\..*|sphinx\..*",
)

project = "aiida-adit"
author = "The aiida-adit developers"
copyright = "2026, the aiida-adit developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "aiida.sphinxext",
    "adit_cli",
    "adit_exit_codes",
]
# MyST-NB reads every .md (a page with a `file_format: mystnb` header is a notebook, run in a kernel)
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# each object once, on the page of the module that defines it (not again where a package re-exports it)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# a missing optional import (RDKit, PoseBusters) must not end the build
autodoc_mock_imports: list[str] = []
suppress_warnings = ["myst.header"]

# the tutorials run at every build, each in a fresh kernel, from its own folder; an error ends the build
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 900
nb_merge_streams = True

html_theme = "furo"
html_title = f"aiida-adit {release}"
html_static_path: list[str] = []
