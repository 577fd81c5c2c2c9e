"""Example PruneBench plug-in (see examples/plugin/pyproject.toml for its entry points)."""
