"""aiida-adit: the AiiDA plugin that trains, samples and evaluates ADiT with full provenance."""

__version__ = "0.2.0"
