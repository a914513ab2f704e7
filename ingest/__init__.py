"""MQTT -> PostgreSQL/TimescaleDB ingest with acknowledgement after commit.

    service.IngestService   the running service: transport -> Window -> BatchWriter -> ack
    writer.BatchWriter      one batch, one transaction: COPY, dead letters, COMMIT
    liveness                each device's newest sign of life, flushed every few seconds
    workers                 `firegrid ingest --workers N`: a supervisor of N processes

Decoding (raw message -> rows or dead letters) is protocol.decode; the MQTT session and the
bounded window are transport/. Importing this package starts nothing and registers no
metric: import the module you need.
"""
