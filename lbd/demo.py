"""Placeholder: replaced by the module's owner."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's sub-commands to the ``lbd`` parser."""
