"""Partner data: mappings, ingestion, the store and process capability.

``mapping`` reads a partner's mapping file, ``ingest`` validates a file and
stores its accepted rows (rejects go to quarantine), ``store`` holds step data
with provenance in DuckDB or PostgreSQL, ``capability`` computes Cp/Cpk, parts
out of spec and genealogy relations from the store. Heavy imports load lazily.

Layer: imports ``simulators`` (the process definition and the step-table
schema) and ``recovery``/``recovery.errors``/``recovery.distributed`` only;
``recovery.causal`` and every layer above import it (``recovery.LAYERS``).
"""

__all__ = ["mapping", "ingest", "store", "capability"]
