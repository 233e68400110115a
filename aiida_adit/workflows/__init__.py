"""Workflows of the aiida-adit plugin."""
