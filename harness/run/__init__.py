"""One run's stages: baseline, preflight checks, budget, pipeline, measurement, accounting."""
