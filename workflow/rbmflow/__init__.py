"""rbmflow: Potts Restricted Boltzmann Machines for protein families, from alignment to report."""

from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    """The installed distribution's version; "unknown" when run from a checkout not installed."""
    try:
        return version("rbmflow")
    except PackageNotFoundError:
        return "unknown"


__version__ = _version()

ALPHABET = "-ACDEFGHIKLMNPQRSTVWY"
"""Gap-first protein alphabet (q = 21), the convention of `rbms` and adabmDCA."""
