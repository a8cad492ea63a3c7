"""nbstep's version, readable by every layer without importing the package's front door."""

__version__ = "0.1.0"
