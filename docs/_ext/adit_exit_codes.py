"""The ``adit-exit-codes`` directive: the exit codes of a process, read from its spec.

aiida-core's ``aiida-calcjob`` / ``aiida-workchain`` directives render inputs and outputs;
this adds the exit codes (status, label, message, whether the failure invalidates the cache)::

    ```{adit-exit-codes} aiida_adit.calculations.train.AditTrainCalculation
    ```
"""

from __future__ import annotations

import importlib

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _row(*cells: str) -> nodes.row:
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=text)
        row += entry
    return row


class ExitCodesDirective(SphinxDirective):
    """A table of ``Process.spec().exit_codes``, sorted by status."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        module, _, name = path.rpartition(".")
        process = getattr(importlib.import_module(module), name)
        codes = sorted(process.spec().exit_codes.items(), key=lambda item: item[1].status)
        headers = ("status", "label", "message", "invalidates cache")
        table = nodes.table()
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in (8, 30, 52, 10):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row(*headers)
        group += head
        body = nodes.tbody()
        for label, code in codes:
            body += _row(str(code.status), label, code.message, "yes" if code.invalidates_cache else "no")
        group += body
        title = nodes.paragraph()
        title += nodes.strong(text="Exit codes:")
        return [title, table]


def setup(app):
    """Register the directive."""
    app.add_directive("adit-exit-codes", ExitCodesDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
