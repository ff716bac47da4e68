"""The package version, importable from the bottom layer without importing the package's facade."""
__version__ = "0.1.0"
