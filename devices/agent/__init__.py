"""The speaker-node agent (`thanthien speaker`)."""
