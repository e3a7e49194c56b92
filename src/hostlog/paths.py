"""Where the built-in default keeps its state. No third-party imports: the
query command uses it to find the default agent's spool without loading the
config schema (which costs ~100 ms of start-up)."""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """The state directory when none is configured: /var/lib/hostlog for root,
    else ``$XDG_STATE_HOME/hostlog`` (``~/.local/state/hostlog`` when unset)."""
    if os.geteuid() == 0:
        return Path("/var/lib/hostlog")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "hostlog"


def builtin_state_dir() -> tuple[Path, bool]:
    """The built-in default's state directory, and whether ``HOSTLOG_STATE_DIR``
    chose it (it overrides the default only, never a config file's)."""
    override = os.environ.get("HOSTLOG_STATE_DIR", "")
    if override:
        return Path(os.path.abspath(override)), True
    return default_state_dir(), False
