"""The agent's TOML configuration: schema, defaults and validation.

The schema is declared with pydantic models, one class per TOML section, and
read with :mod:`tomllib`. Every problem in a file is reported with its TOML key
path (``source[1].listen[0]``, ``spool.max_bytes``) and a message that says what
is accepted, so ``hostlog config check FILE`` can explain a mistake without the
user reading code. Unknown keys are errors everywhere: a typo never passes
silently. The full reference is ``docs/config.md``; keep the two in step.

Public entry points: :func:`load_config`, :func:`parse_config`,
:func:`default_config`, :func:`default_config_toml`, :func:`parse_size`,
:func:`parse_duration` and :class:`ConfigError`.

Modules, one concern each (import from ``hostlog.config``, not from them):

* :mod:`~hostlog.config.errors`: :class:`ConfigError`
* :mod:`~hostlog.config.units`: sizes and durations
* :mod:`~hostlog.config.endpoints`: socket URLs and ``HOST:PORT``
* :mod:`~hostlog.config.fields`: field types and checks shared by the models
* :mod:`~hostlog.config.sources`, :mod:`~hostlog.config.apps`,
  :mod:`~hostlog.config.schema`: the section models and :class:`Config`
* :mod:`~hostlog.config.keypaths`: pydantic's errors as TOML key paths
* :mod:`~hostlog.config.loader`: reading and validating a file
* :mod:`~hostlog.config.defaults`: the built-in default and the example file
"""

from hostlog.config.apps import App

# Also importable from hostlog.config, though not in __all__.
from hostlog.config.defaults import DEFAULT_SYSLOG_LISTEN as DEFAULT_SYSLOG_LISTEN
from hostlog.config.defaults import JOURNAL_DIRS as JOURNAL_DIRS
from hostlog.config.defaults import default_config, default_config_toml, journal_readable
from hostlog.config.endpoints import INET_SCHEMES as INET_SCHEMES
from hostlog.config.endpoints import UNIX_SCHEMES as UNIX_SCHEMES
from hostlog.config.endpoints import Endpoint, parse_endpoint, parse_host_port
from hostlog.config.errors import ConfigError
from hostlog.config.fields import AbsPath as AbsPath
from hostlog.config.fields import Duration as Duration
from hostlog.config.fields import LineSize as LineSize
from hostlog.config.fields import Name as Name
from hostlog.config.fields import PositiveDuration as PositiveDuration
from hostlog.config.fields import Size as Size
from hostlog.config.loader import load_config, parse_config
from hostlog.config.schema import Agent, Config, Control, Forward, Http, Receiver, Spool, Tls, default_state_dir
from hostlog.config.schema import Patterns as Patterns
from hostlog.config.schema import SpoolArchive as SpoolArchive
from hostlog.config.sources import (
    FileSource,
    FluentSource,
    JournaldSource,
    NatsSource,
    RateLimit,
    Source,
    SyslogSource,
)
from hostlog.config.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "App",
    "Agent",
    "Config",
    "ConfigError",
    "Control",
    "Endpoint",
    "FileSource",
    "FluentSource",
    "Forward",
    "Http",
    "JournaldSource",
    "NatsSource",
    "RateLimit",
    "Receiver",
    "Source",
    "Spool",
    "SyslogSource",
    "Tls",
    "default_config",
    "default_config_toml",
    "default_state_dir",
    "format_duration",
    "format_size",
    "journal_readable",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_endpoint",
    "parse_host_port",
    "parse_size",
]
