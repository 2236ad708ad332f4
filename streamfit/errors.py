"""Errors shared by every plane."""


class StreamfitError(Exception):
    """Base class of streamfit's own errors."""


class ConfigError(StreamfitError):
    """A configuration value is missing, unknown or of the wrong type (message names the field path)."""


class ModelIntegrityError(StreamfitError):
    """A stored model's bytes do not match the sha256 recorded when it was registered."""


class RegistryError(StreamfitError):
    """A registry read or write failed (unknown version, unknown alias, storage error)."""
