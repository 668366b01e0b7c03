"""`rbmflow train`: not implemented yet."""

from __future__ import annotations

import argparse

from rbmflow.errors import RbmflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> None:
    raise RbmflowError("the train stage is not implemented yet")
