"""hostlog: a host log agent for Linux."""

__version__ = "0.1.0"
