"""The seam between the registry and whoever enforces device credentials at the broker.

The registry calls a BrokerAuth inside its own transaction, before COMMIT: if the broker
refuses, the registry change rolls back. If the COMMIT itself fails, the outcome may be
unknown (the connection dropped); then the registry leaves the broker as it is and says so,
and `firegrid broker reconcile` or repeating the call (set_password recreates a missing
account) brings the two back in step. Implementations must be safe to call from several
threads (the API shares one). Implementations:

    NoBrokerAuth      mode "none" (development) and "database" (EMQX reads our tables)
    MosquittoDynsec   mode "mosquitto-dynsec": Mosquitto's dynamic-security plugin over
                      its control topic (devices/dynsec.py)
    DynsecFile        the same plugin's file, written while Mosquitto is stopped: the
                      first load of a large site (devices/dynsec.py)
"""

from __future__ import annotations

from typing import Protocol

from devices.credentials import DeviceCredentials
from runtime.settings import Settings


class BrokerAuth(Protocol):
    def add_devices(self, creds: list[DeviceCredentials]) -> None:
        """Create broker accounts with the device ACL. All or nothing: on failure, remove
        what was created and raise BrokerAuthError."""

    def set_password(self, device_id: str, password: str, kind: str | None = None) -> None:
        """Replace a device's password; the old one is refused from now on. With `kind`, a
        missing account is created instead (self-healing after an ambiguous COMMIT)."""

    def remove_devices(self, device_ids: list[str]) -> None:
        """Delete the accounts and disconnect any connected session of theirs. Ids the
        broker does not know are not an error (removal is idempotent)."""

    def close(self) -> None: ...


class NoBrokerAuth:
    """Nothing to push: the broker is open (development) or reads the database itself."""

    def add_devices(self, creds: list[DeviceCredentials]) -> None:
        pass

    def set_password(self, device_id: str, password: str, kind: str | None = None) -> None:
        pass

    def remove_devices(self, device_ids: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


def broker_auth(settings: Settings) -> BrokerAuth:
    if settings.broker_auth.mode == "mosquitto-dynsec":
        from devices.dynsec import MosquittoDynsec
        return MosquittoDynsec(settings.mqtt, settings.broker_auth)
    return NoBrokerAuth()
