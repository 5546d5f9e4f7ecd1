"""The library's version (also the package version in pyproject.toml)."""
VERSION = "0.1.0"
