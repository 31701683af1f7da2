"""The model registry: lineage, shutdown dates, alerts, cut-offs, re-training elsewhere."""
