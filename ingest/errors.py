"""Ingest's errors.

    IngestError (runtime.FiregridError)
    └── Abandoned    a batch could not be committed before shutdown; it was not
                     acknowledged, so the broker redelivers it to the next ingest run
"""

from runtime.errors import FiregridError


class IngestError(FiregridError):
    pass


class Abandoned(IngestError):
    pass
