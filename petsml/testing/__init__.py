"""Builders of throw-away projects, generated photos and browsers: shared by the test
suite, the benchmarks and the demo, so they live in the package (run from a checkout: they
copy this repository)."""
