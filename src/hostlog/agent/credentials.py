"""systemd credentials: the spool key handed to the service by systemd.

With ``LoadCredential=spool.key:/path`` or, sealed with the machine's TPM or
host key, ``LoadCredentialEncrypted=spool.key:/path.cred``, systemd places
the (decrypted) key in a private, read-only, non-swappable directory and
names it in ``$CREDENTIALS_DIRECTORY`` (systemd.exec(5), "Credentials"). When
a credential ``spool.key`` is there, the agent uses it instead of the key file
of its config; the file format is the same (docs/format.md, "Keys").

Such a key is never created or rotated by the agent: the directory is
read-only, and its content is whatever the operator encrypted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SPOOL_KEY_CREDENTIAL = "spool.key"


def credential_key_file(environ: Mapping[str, str] | None = None,
                        name: str = SPOOL_KEY_CREDENTIAL) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/spool.key`` when systemd passed that credential.

    None when the variable is unset, empty or not an absolute path, or when
    the directory holds no regular file of that name: the caller then uses
    the key file of its config. A file that exists but cannot be read is
    still returned, so that loading it reports the real problem instead of
    silently falling back to another key (and writing a spool no one can
    read with the intended key).
    """
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory or not os.path.isabs(directory):
        return None
    path = Path(directory) / name
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. the directory itself is not searchable
        return None
