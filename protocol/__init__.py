"""The device wire protocol v1 (docs/protocol.md), shared by ingest, the alert core, the
registry and the simulators. Pure: no I/O, no metrics.

    models   the pydantic models of every message: the definitive statement of v1
    decode   raw MQTT message -> typed Reading / Event rows, or DeadLetters with a reason
    schema   the JSON Schemas published in docs/schemas/, generated from the models
"""
