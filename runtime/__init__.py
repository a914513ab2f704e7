"""What every firegrid service needs at run time: settings, database access and migrations,
local services (private Mosquitto/PostgreSQL), the error tree and the one backoff.

Public surface::

    Settings, load_settings      typed configuration (FIREGRID_* env + optional TOML)
    connect, migrate             database access and versioned migrations
    FiregridError and subclasses the error tree (see runtime.errors)
"""

from runtime.errors import ConfigError, FiregridError, UnavailableError
from runtime.settings import Settings, load_settings

__all__ = ["ConfigError", "FiregridError", "Settings", "UnavailableError", "load_settings"]
