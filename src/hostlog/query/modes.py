"""The ``-o`` modes, on their own so the command line can list them without
importing the formatters."""

MODES = ("short", "short-full", "short-iso", "short-iso-precise", "short-precise",
         "short-unix", "json", "json-pretty", "json-sse", "json-seq", "cat",
         "verbose", "export")
