"""The ``adit-cli`` directive: the help of every ``adit`` sub-command, from the real argument parser.

Usage in a page (MyST)::

    ```{adit-cli}
    ```

Each sub-command becomes a section with its ``--help`` text as a literal block, so the page
cannot drift from the command line.
"""

from __future__ import annotations

import argparse

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices.items())
    return []


class AditCliDirective(SphinxDirective):
    """Render ``adit --help`` and ``adit <command> --help`` for every command."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from adit_torch.cli import build_parser

        parser = build_parser()
        parser.prog = "adit"
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_help())]
        for name, sub in _subcommands(parser):
            sub.prog = f"adit {name}"
            section = nodes.section(ids=[f"adit-{name}"])
            section += nodes.title(text=f"adit {name}")
            section += nodes.literal_block(text=sub.format_help())
            out.append(section)
        return out


def setup(app):
    """Register the directive."""
    app.add_directive("adit-cli", AditCliDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
