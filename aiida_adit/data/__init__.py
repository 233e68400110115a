"""Data of the aiida-adit plugin."""
