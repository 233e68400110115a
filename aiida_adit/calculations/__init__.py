"""Calculations of the aiida-adit plugin."""
