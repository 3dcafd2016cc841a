"""Data stages: download, manifest, validation, split, decode."""
