"""Data files shipped with the SDK."""
