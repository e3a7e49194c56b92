"""The journald collector: the reader, the mapping of entries to records, the compiled reader."""
