"""What every config model builds on: the strict frozen ``Model``, resource names, ELB's security policies
and certificate names. Apart from schema.py so that lbd/config/gateway.py and gateway_auth.py, whose models
schema.py's Config includes, can be imported first without an import cycle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from lbd.config.names import certificate_name_error

NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$"  # ELB: 32 chars, alphanumerics and hyphens
# What each pattern allows, in words: error messages say this, never the regular expression.
PATTERN_WORDS = {
    NAME: "1-32 letters (A-Z, a-z), digits and hyphens, not starting or ending with a hyphen",
}
ELB_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
    "ELBSecurityPolicy-TLS-1-2-2017-01",
    "ELBSecurityPolicy-TLS-1-0-2015-04",
    "ELBSecurityPolicy-2016-08",
    "ELBSecurityPolicy-2015-05",
)


def _certificate_name(name: str) -> str:
    # The store's own rule: a name becomes <store>/<name>.pem and must not reach outside the store.
    problem = certificate_name_error(name)
    if problem is not None:
        raise ValueError(problem)
    return name


CertificateName = Annotated[str, AfterValidator(_certificate_name)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
