"""Errors that the CLI reports as one clear line (no traceback) and a non-zero exit."""


class RbmflowError(Exception):
    """A problem with the user's input or environment; the message names the file and record."""


class InputError(RbmflowError, ValueError):
    """Malformed or unusable input data."""


class FetchError(RbmflowError):
    """A remote alignment could not be fetched."""
