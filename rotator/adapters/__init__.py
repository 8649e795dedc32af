"""Adapters: one module per external system, each turning its exceptions into ours."""
