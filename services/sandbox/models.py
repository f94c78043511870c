"""sandbox's tables."""

from shared.db import new_metadata

metadata = new_metadata()
outbox = metadata.tables["outbox"]
inbox = metadata.tables["inbox"]
