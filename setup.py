"""The compiled part of the package: the CPU resampler (mivl/edge/csrc/resample.c).

Optional: where it cannot be compiled, the package installs without it and resizes with PIL."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("mivl.edge._resample", ["mivl/edge/csrc/resample.c"],
                             extra_compile_args=["-O3", "-std=c11", "-Wall"], optional=True)])
