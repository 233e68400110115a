"""Parsers of the aiida-adit plugin."""
