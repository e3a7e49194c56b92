"""hostlog's exceptions, one tree.

    HostlogError
    ├── ConfigError          (hostlog.config) a config file that does not validate
    ├── SpoolError           the spool cannot be used
    │   ├── SpoolLockedError another process writes this spool
    │   ├── SpoolFormatError a file that is not a hostlog segment, or of an unknown version
    │   ├── KeyFileError     the key file is missing, unreadable, malformed, or lacks a key id
    │   │   └── WrongKeyError   the key id is there but is not the key the data was written with
    │   └── SpoolSyncError   an fsync/fdatasync of a segment failed: never retried, the agent stops
    ├── SpoolFullError       retention cannot free space and on_full = "block"
    ├── SinkError            the spool writer did not take a batch: the agent stops
    ├── ChunkError (ValueError)   a chunk that does not decode (hostlog.chunk)
    ├── FrameError (ValueError)   a frame that cannot be read (reported as damage)
    │   ├── FrameHeaderError      no intact frame header, or one that does not match the index
    │   ├── FrameAuthError        the frame does not authenticate (damaged or moved)
    │   └── FramePayloadError     it authenticates but does not decompress
    ├── ControlError         a control request that cannot be done (its text goes to the client)
    ├── AppError             a request about a supervised app that cannot be done
    ├── TimeSpecError (ValueError)     a --since/--until value journalctl rejects too
    ├── PriorityError (ValueError)     a -p value journalctl rejects
    ├── ExportFormatError (ValueError) bytes that are not the Journal Export Format
    ├── ProtocolError        (hostlog.forward.protocol) the peer protocol was broken
    │   ├── LocalProtocolError   this side tried to send what the protocol does not allow now
    │   └── RemoteProtocolError  the peer sent garbage, a wrong version, an oversized or
    │                            out-of-order frame: disconnect it with the reason
    └── PeerRefusedError     a peer's TLS certificate or token is not accepted (the reason says why)

    QueryWorkerError (RuntimeError)  (hostlog.query.parallel) a query worker's error, as text

Damage inside a spool (a torn tail, a frame that fails its CRC or AEAD tag) is
not an exception for the callers of the readers: they return it as a value
(:class:`hostlog.spool.segment.Damage`), count it and go on; the Frame errors
are how the frame codec tells the reader what it found. Errors that are also
``ValueError`` stay so, for callers that catch bad input as ``ValueError``.
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


class SpoolSyncError(SpoolError):
    """An fsync or fdatasync of a segment failed (EIO, ...). Never retried:
    after a failed sync the kernel may have dropped the pages, so a later
    sync that succeeds would vouch for data that is not on the disk."""


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


class FrameError(HostlogError, ValueError):
    """A frame that cannot be read; its message says why, as damage reports
    show it. The libraries' own errors (cryptography's InvalidTag, lz4's
    LZ4BlockError) are mapped to these by the frame codec, once."""


class FrameHeaderError(FrameError):
    pass


class FrameAuthError(FrameError):
    """The payload, its header or its place does not authenticate."""


class FramePayloadError(FrameError):
    """The payload authenticated but does not decompress to its chunk."""


class ControlError(HostlogError):
    """A control request that cannot be done; its text goes back to the client."""


class AppError(HostlogError):
    """A request about an app that cannot be done (unknown name, not running, bad user)."""


class TimeSpecError(HostlogError, ValueError):
    """A --since/--until value journalctl would not accept either.

    The message is journalctl's own: ``Failed to parse timestamp: <spec>``.
    """

    def __init__(self, spec: str) -> None:
        super().__init__(f"Failed to parse timestamp: {spec}")
        self.spec = spec


class PriorityError(HostlogError, ValueError):
    """A -p value journalctl rejects; the message is journalctl's wording."""


class ExportFormatError(HostlogError, ValueError):
    """Bytes that are not the Journal Export Format (truncated or malformed)."""


class ChunkError(HostlogError, ValueError):
    """A chunk that does not decode: wrong version, wrong shape, bad msgpack."""


class ProtocolError(HostlogError):
    """The peer protocol (docs/protocol.md) was broken; the message says how."""


class LocalProtocolError(ProtocolError):
    """This side tried to send what the protocol does not allow in its state: a bug here."""


class RemoteProtocolError(ProtocolError):
    """The peer sent garbage, a wrong version, an oversized or out-of-order frame."""


class PeerRefusedError(HostlogError):
    """A peer whose certificate or token is not accepted; refused before any record is read."""
