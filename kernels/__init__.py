"""numba kernels: pure functions over numpy arrays, one module per model family.

No protobuf, no logging, no files here: arrays and scalars in, results written
into caller-given `out` arrays.
"""
