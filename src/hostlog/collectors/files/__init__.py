"""The file collector: tailing, rotation, offsets, and the line framer."""
