"""journald's field model and export format, used by collectors, query and http."""
