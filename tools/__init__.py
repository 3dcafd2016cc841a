"""Developer tools run from the project root (``make deps``); never installed with the package."""
