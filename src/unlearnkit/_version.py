"""The package version (a leaf module: reading it imports nothing else of unlearnkit)."""

__version__ = "0.1.0"
