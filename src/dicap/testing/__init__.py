"""Tiny stand-ins for tests and benchmarks: random models a few thousand parameters in size,
written in the real on-disk layouts the pipeline's loaders read (``tiny_models``).

Nothing in the pipeline imports this package; the test suite (``tests/``) and the benchmarks'
``--tiny`` smoke runs (``benchmarks/``) do, so both share one definition of each stand-in.
"""
