"""The pure core: loading, validation, expansion, resolution and keys."""
