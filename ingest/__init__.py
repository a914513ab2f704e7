"""MQTT -> PostgreSQL/TimescaleDB ingest with acknowledgement after commit.

    IngestService   the running service (consumer -> window -> writer)
    Decoder         raw message -> rows or dead letters (pure)
    protocol        the v1 wire protocol models (docs/protocol.md)
"""

from ingest.decode import REASONS, Decoder
from ingest.service import IngestService

__all__ = ["REASONS", "Decoder", "IngestService"]
