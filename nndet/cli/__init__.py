"""Command-line entry points: thin wrappers that parse, call and report."""
