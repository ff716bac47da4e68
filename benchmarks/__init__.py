"""modelkeep benchmarks: ``python -m benchmarks`` (see benchmarks/README.md).

Not part of the installed package; run from the repository root.
"""
