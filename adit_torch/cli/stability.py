"""`adit` sub-commands of this module (placeholder until its issue lands)."""


def register(subparsers):
    """Add this module's sub-commands to the ``adit`` parser."""
