"""rbmflow: Potts Restricted Boltzmann Machines for protein families, from alignment to report."""

__version__ = "0.1.0"

ALPHABET = "-ACDEFGHIKLMNPQRSTVWY"
"""Gap-first protein alphabet (q = 21), the convention of `rbms` and adabmDCA."""
