"""The package version, in a leaf module so that any layer may read it without importing
the `voxid` facade (which imports the recogniser)."""

__version__ = "0.1.0"
