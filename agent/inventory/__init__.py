"""inventory stage of the pipeline (see shared STYLE.md)."""
