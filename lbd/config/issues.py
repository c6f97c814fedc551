"""One problem of a config, named by its key path; apart from loader.py so that code workers run (reading
IP set files, lbd/config/web_acl_reading.py) can word a problem without importing yaml and pydantic."""

from __future__ import annotations

from typing import NamedTuple


class ConfigIssue(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message
