"""The firegrid error tree shared by the CLI and the services.

    FiregridError               anything firegrid raises on purpose
    ├── ConfigError             a setting is missing or invalid (exit code 2)
    ├── UnavailableError        a broker or database cannot be reached (exit code 3)
    └── MigrationError          the schema cannot be brought up to date (exit code 1)

Library errors (psycopg, paho, pydantic) are translated into this tree in one place per
package, so the CLI maps each class to one exit code and one readable message.
"""


class FiregridError(Exception):
    exit_code = 1


class ConfigError(FiregridError):
    exit_code = 2


class UnavailableError(FiregridError):
    exit_code = 3


class MigrationError(FiregridError):
    exit_code = 1
