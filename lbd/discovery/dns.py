"""Targets from DNS: SRV records (RFC 2782), or A/AAAA records on a fixed port, re-resolved by their TTL.

The answer's TTL says how long it may be used (RFC 1035 section 3.2.1), so the name is asked again when it
runs out, within [min_ttl_seconds, max_ttl_seconds]: a zero TTL must not turn into a query loop, and a
day-long one must not hide a change for a day. SRV: only the records of the lowest priority value are
used (RFC 2782: a client must try those first; the others are backups a load balancer would not spread
over), their weights become target weights (0 counts as 1, the most is 1000), and each record's target
name is resolved to its addresses (the answer's additional section when the server gave it, as RFC 2782
suggests servers do). A name that does not exist, or has no such records, is an answer: no targets. A
server that does not answer, or answers SERVFAIL, is a failure: the last known targets stay.

dnspython's asyncio resolver does the DNS; nothing is cached here beyond the TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from lbd.discovery.targets import InvalidTarget, ProviderState, Targets, as_target, keyed

if TYPE_CHECKING:
    from lbd.config.schema import DnsDiscovery, TargetGroup

log = logging.getLogger("lbd.discovery")

Publish = Callable[[str, Targets], Awaitable[None]]
RETRY_FIRST = 1.0  # seconds before the first retry after a failure; doubling up to max_ttl_seconds
SRV_WEIGHT_MAX = 1000  # lbd's largest target weight


def record_type(config: DnsDiscovery) -> str:
    if config.record_type is not None:
        return config.record_type
    return "SRV" if config.name.startswith("_") else "A_AAAA"


class DnsProvider:
    def __init__(self, group: TargetGroup, config: DnsDiscovery, node_zone: str, publish: Publish) -> None:
        self.group = group.name
        self.config = config
        self.zone = config.zone or node_zone
        self.port = config.port if config.port is not None else group.port
        self.kind = record_type(config)
        self.state = ProviderState(group.name, "dns", f"{config.name} ({self.kind})")
        self._publish = publish
        resolver = dns.asyncresolver.Resolver(configure=False)
        if config.resolver is not None:
            from lbd.config.schema import parse_resolver  # the supervisor holds the schema only where needed

            host, port = parse_resolver(config.resolver)
            resolver.nameservers = [host]
            resolver.port = port
        else:
            try:
                resolver.read_resolv_conf("/etc/resolv.conf")  # the system's resolvers
            except dns.resolver.NoResolverConfiguration as exc:
                # No nameserver: every attempt fails (NoNameservers) and says so, as a dead server would.
                log.warning("target group %s: no system resolver for DNS discovery: %s", group.name, exc)
        resolver.lifetime = config.timeout_seconds
        resolver.timeout = config.timeout_seconds
        resolver.cache = None
        self.resolver = resolver

    async def run(self) -> None:
        retry = RETRY_FIRST
        while True:
            try:
                targets, ttl = await self.resolve()
            except (dns.exception.DNSException, OSError, InvalidTarget) as exc:
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.state.failed(message)
                log.warning(
                    "target group %s: DNS discovery of %s failed (%s); keeping the last %d known target(s)",
                    self.group,
                    self.config.name,
                    message,
                    self.state.targets,
                )
                delay = min(max(retry, self.config.min_ttl_seconds), self.config.max_ttl_seconds)
                retry = min(retry * 2, self.config.max_ttl_seconds)
            else:
                retry = RETRY_FIRST
                self.state.succeeded(len(targets))
                await self._publish(self.group, targets)
                delay = min(max(ttl, self.config.min_ttl_seconds), self.config.max_ttl_seconds)
            await asyncio.sleep(delay)

    async def resolve(self) -> tuple[Targets, float]:
        """The targets the name gives now, and for how long (seconds) the answer holds."""
        if self.kind == "SRV":
            return await self._srv()
        if self.port is None:  # the schema's cross-checks make this unreachable; say so if it happens
            raise InvalidTarget(f"{self.config.name}: A/AAAA discovery needs a port")
        kinds = ("A", "AAAA") if self.kind == "A_AAAA" else (self.kind,)
        addresses, ttl = await self._addresses(self.config.name, kinds)
        port = self.port
        return keyed([as_target({"id": a, "port": port}, zone=self.zone) for a in addresses]), ttl

    async def _srv(self) -> tuple[Targets, float]:
        answer = await self._ask(self.config.name, "SRV")
        if answer is None:
            return {}, self.config.min_ttl_seconds
        records = list(answer.rrset or ())
        ttl = float(answer.rrset.ttl if answer.rrset is not None else self.config.min_ttl_seconds)
        if not records:
            return {}, ttl
        best = min(r.priority for r in records)
        glue = _additional_addresses(answer.response)
        found: list[dict[str, Any]] = []
        for record in sorted(
            (r for r in records if r.priority == best), key=lambda r: (str(r.target), r.port)
        ):
            host = record.target.to_text(omit_final_dot=True)
            addresses = glue.get(host)
            if addresses is None:
                addresses, host_ttl = await self._addresses(host, ("A", "AAAA"))
                ttl = min(ttl, host_ttl)
            weight = min(max(int(record.weight), 1), SRV_WEIGHT_MAX)
            for address in addresses:
                found.append(
                    as_target({"id": address, "port": int(record.port), "weight": weight}, zone=self.zone)
                )
        return keyed(found), ttl

    async def _addresses(self, name: str, kinds: tuple[str, ...]) -> tuple[list[str], float]:
        addresses: list[str] = []
        ttl = self.config.max_ttl_seconds
        for kind in kinds:
            answer = await self._ask(name, kind)
            if answer is None or answer.rrset is None:
                continue
            ttl = min(ttl, float(answer.rrset.ttl))
            addresses += sorted(r.to_text() for r in answer.rrset)
        return addresses, ttl

    async def _ask(self, name: str, kind: str) -> dns.resolver.Answer | None:
        """The answer, or None when the name or the records do not exist (an answer, not a failure)."""
        try:
            return await self.resolver.resolve(name, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None


def _additional_addresses(response: dns.message.Message) -> dict[str, list[str]]:
    """Addresses the server sent along in the additional section, by host name."""
    glue: dict[str, list[str]] = {}
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            host = rrset.name.to_text(omit_final_dot=True)
            glue.setdefault(host, []).extend(sorted(r.to_text() for r in rrset))
    return glue
