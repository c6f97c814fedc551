"""One problem of a config, named by its key path, and the error that carries them; apart from loader.py so
that code workers run (reading IP set files, lbd/config/web_acl_reading.py) and the supervisor (which has a
child process validate its config, lbd/validator.py) can word a problem without importing yaml and
pydantic."""

from __future__ import annotations

from typing import NamedTuple


class ConfigIssue(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues

    @classmethod
    def single(cls, path: str, message: str) -> ConfigError:
        return cls([ConfigIssue(path, message)])
