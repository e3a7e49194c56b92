"""The compiled part of hostlog; everything else is in pyproject.toml.

``hostlog.collectors._syslog5424`` reads RFC 5424 batches into columns (the
syslog collector's hot path). It is optional: without a C compiler the
package still installs and the Python parsers read every batch, slower. The
packages (packaging/common/stage.sh) and the test suite in CI require it.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("hostlog.collectors._syslog5424", ["src/hostlog/collectors/_syslog5424.c"],
              extra_compile_args=["-O2", "-Wall", "-Wextra"],
              optional=True),
])
