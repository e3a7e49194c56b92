"""The compiled part of hostlog; everything else is in pyproject.toml.

``hostlog.collectors.syslog._syslog5424`` reads RFC 5424 batches into columns (the
syslog collector's hot path). It is optional: without a C compiler the
package still installs and the Python parsers read every batch, slower. The
packages (packaging/common/stage.sh) and the test suite in CI require it.

``hostlog.collectors.journald._journald_read`` reads journal entries into columns with
libsystemd's own calls (the journald collector's hot path; libsystemd-dev).
Optional the same way: without it the collector maps entries in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("hostlog.collectors.syslog._syslog5424", ["src/hostlog/collectors/syslog/_syslog5424.c"],
              extra_compile_args=["-O2", "-Wall", "-Wextra"],
              optional=True),
    # the journald collector's reader (journald_map.py reads without it, slower)
    Extension("hostlog.collectors.journald._journald_read", ["src/hostlog/collectors/journald/_journald_read.c"],
              libraries=["systemd"], extra_compile_args=["-O2", "-Wall", "-Wextra"],
              optional=True),
])
