"""`rbmflow fetch`: not implemented yet."""

from __future__ import annotations

import argparse

from rbmflow.errors import RbmflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    raise RbmflowError("the fetch stage is not implemented yet")
