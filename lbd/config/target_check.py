"""Targets checked with the schema's Target model, as the config file's are, into plain JSON answers: what
the validating child (``python -m lbd.validator --targets``) runs for the admin API's registrations and
the state file's targets, so that the supervisor needs no pydantic to check them (issue 11, footprint)."""

from __future__ import annotations

from typing import Any


def checked_targets(items: list[Any]) -> list[dict[str, Any]]:
    """Each item as {"target": the target with its defaults filled in} or {"errors": [[key path,
    message], ...], "text": pydantic's whole message}."""
    from pydantic import ValidationError

    from lbd.config.schema import Target

    answers: list[dict[str, Any]] = []
    for item in items:
        try:
            answers.append({"target": Target.model_validate(item).model_dump()})
        except ValidationError as exc:
            errors = [
                # Without the "Value error, " pydantic puts before our own validators' words.
                [".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, ")]
                for e in exc.errors()
            ]
            answers.append({"errors": errors, "text": str(exc)})
    return answers
