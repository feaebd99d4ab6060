"""Adopting the previous-generation database: introspection, batched copy, verification."""
