"""hostlog's exceptions, one tree.

    HostlogError
    ├── ConfigError          (hostlog.config) a config file that does not validate
    ├── SpoolError           the spool cannot be used
    │   ├── SpoolLockedError another process writes this spool
    │   ├── SpoolFormatError a file that is not a hostlog segment, or of an unknown version
    │   └── KeyFileError     the key file is missing, unreadable, malformed, or lacks a key id
    │       └── WrongKeyError   the key id is there but is not the key the data was written with
    ├── SpoolFullError       retention cannot free space and on_full = "block"
    └── SinkError            the spool writer did not take a batch: the agent stops

Damage inside a spool (a torn tail, a frame that fails its CRC or AEAD tag) is
not an exception: readers return it as a value (:class:`hostlog.spool.segment.Damage`),
count it and go on. ``record.ChunkError`` stays in ``hostlog.record``, which
imports nothing from the rest of the package.
"""


class HostlogError(Exception):
    """Base of every error hostlog raises on purpose."""


class SpoolError(HostlogError):
    pass


class SpoolLockedError(SpoolError):
    pass


class SpoolFormatError(SpoolError):
    pass


class KeyFileError(SpoolError):
    pass


class WrongKeyError(KeyFileError):
    pass


class SpoolFullError(HostlogError):
    pass


class SinkError(HostlogError):
    """A batch could not be handed to the spool writer.

    Raised by the agent's guarded sink after it has counted the failure and
    asked the agent to stop with a failure (exit 1, so ``Restart=on-failure``
    brings it back and replayable sources replay from their checkpoints).
    A collector that catches it stops handling that input and lets the agent
    stop; it never goes on as if the batch had been written.
    """
