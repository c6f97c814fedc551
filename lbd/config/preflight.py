"""Everything ``lbd run`` checks before it binds a socket, as one function that ``lbd check`` calls too.

``load_for_run(path)`` is the only way the supervisor reads a config (at start and on every reload) and
the only thing ``lbd check`` runs, so the two cannot drift apart: a file ``lbd check`` passes does not
fail at start for a reason ``lbd check`` could have seen. Beyond the schema and the cross-references
(``parse_config``) it refuses what a valid file asks for but this build cannot do:

- features that validate but are not served yet (none today; the lists below say what is served):
  binding a port and serving nothing on it would be worse;
- a stickiness key file that exists but does not hold keys;
- certificates the listeners name that the store does not hold, or that do not load;
- an ``admin.token_file`` that cannot be read or is empty;
- web ACLs associated with APIs or distributions (not served yet), and IP set files that do not parse.

Ports that collide inside the file (two listeners, or a listener and the admin API) are refused by
``parse_config`` already. Whether another process holds a port is not checked here: ``lbd check`` runs
beside a running lbd (``systemctl reload``), whose own ports are taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The schema first: it and lbd/config/edge.py import each other, and only the schema can go first (a
# process whose first config import is this one: the validating child, lbd/validator.py; lbd check).
from lbd.config.loader import ConfigError, parse_config, with_line
from lbd.config.schema import Config

# isort: split
from lbd.classic import expand
from lbd.config.edge import edge_startup_issues
from lbd.config.gateway_checks import gateway_startup_issues
from lbd.config.issues import ConfigIssue
from lbd.config.source import read_source

# What this build serves, by load balancer type; everything else in LISTENER_PROTOCOLS only validates.
SERVED_LISTENERS = {
    "network": ("TCP", "TLS", "UDP", "TCP_UDP"),
    "application": ("HTTP", "HTTPS"),
    "classic": ("HTTP", "HTTPS", "TCP", "SSL"),
}
SERVED_HEALTH_CHECKS = ("TCP", "HTTP", "HTTPS", "GRPC")
SERVED_PROTOCOL_VERSIONS = ("HTTP1", "HTTP2", "GRPC")


@dataclass
class LoadedConfig:
    config: Config
    text: str
    path: str  # absolute, or an etcd key's URL
    revision: int = 0  # an etcd key's mod_revision


def load_for_run(path: str | Path) -> LoadedConfig:
    """Read and validate ``path`` and check that this build can start on it; else raise ConfigError."""
    # A file, or an etcd key (lbd/config/source.py): the same text, the same checks.
    text, absolute, revision = read_source(path)
    config = parse_config(text, source=str(path)).model_copy(update={"config_path": absolute})
    issues = startup_issues(config)
    if issues:
        raise ConfigError([with_line(issue, text) for issue in issues])
    # Classic listeners become listeners forwarding to target groups of their instances (lbd/classic.py),
    # after the checks, so that every error names a key of the file.
    return LoadedConfig(expand(config), text, absolute, revision)


def startup_issues(config: Config) -> list[ConfigIssue]:
    return [
        *_unsupported(config),
        *_certificates(config),
        *_token_file(config),
        *_key_file(config),
        *edge_startup_issues(config),
        *gateway_startup_issues(config),
        *_web_acls(config),
    ]


def _unsupported(config: Config) -> Iterator[ConfigIssue]:
    for i, lb in enumerate(config.load_balancers):
        served = SERVED_LISTENERS.get(lb.type, ())
        if not served:
            yield ConfigIssue(
                f"load_balancers[{i}].type",
                f"{lb.type} load balancers are not served by this version of lbd yet "
                "(served: application, network, classic)",
            )
            continue
        for j, listener in enumerate(lb.listeners):
            where = f"load_balancers[{i}].listeners[{j}]"
            if listener.protocol not in served:
                yield ConfigIssue(
                    f"{where}.protocol",
                    f"{lb.type} listeners with protocol {listener.protocol} are not served by this version "
                    f"of lbd yet (served: network TCP, TLS, UDP and TCP_UDP, application HTTP and HTTPS)",
                )
    for i, group in enumerate(config.target_groups):
        if group.protocol_version not in SERVED_PROTOCOL_VERSIONS:
            yield ConfigIssue(
                f"target_groups[{i}].protocol_version",
                f"{group.protocol_version} target groups are not served by this version of lbd yet "
                "(served: HTTP1)",
            )
        check = group.health_check
        if check.enabled and check.protocol not in SERVED_HEALTH_CHECKS:
            yield ConfigIssue(
                f"target_groups[{i}].health_check.protocol",
                f"{check.protocol} health checks are not served by this version of lbd yet "
                f"(served: {', '.join(SERVED_HEALTH_CHECKS)})",
            )


def _certificates(config: Config) -> Iterator[ConfigIssue]:
    if not any(
        listener.protocol in ("HTTPS", "TLS", "SSL") and listener.certificates
        for lb in config.load_balancers
        for listener in lb.listeners
    ):
        return  # no certificate to load: the certificate tooling (cryptography) stays unloaded
    # The listener's own loader, so a certificate that passes here is one the worker can load.
    from lbd.tls.server import ALPN, ListenerTls, TlsConfigError
    from lbd.tls.store import CertificateStore

    store = CertificateStore(config.certificates.store)
    for i, lb in enumerate(config.load_balancers):
        for j, listener in enumerate(lb.listeners):
            if listener.protocol not in ("HTTPS", "TLS", "SSL") or not listener.certificates:
                continue
            where = f"load_balancers[{i}].listeners[{j}]"
            try:
                ListenerTls(
                    store, listener.certificates, listener.ssl_policy, ALPN[listener.alpn_policy], where
                )
            except TlsConfigError as exc:
                path, _, message = str(exc).partition(": ")
                yield ConfigIssue(path, message)


def _token_file(config: Config) -> Iterator[ConfigIssue]:
    name = config.admin.token_file
    if not name:
        return
    try:
        token = Path(name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield ConfigIssue("admin.token_file", f"cannot read {name}: {reason}")
        return
    if not token:
        yield ConfigIssue("admin.token_file", f"{name} is empty")


def _key_file(config: Config) -> Iterator[ConfigIssue]:
    # Only a file that exists is read: an absent one is created by the first lbd run (lbd check writes
    # nothing).
    from lbd.routing.stickiness import KeyFileError, read_key_file
    from lbd.runtime import stickiness_key_file

    name = stickiness_key_file(config)
    if not name or not Path(name).exists():
        return
    try:
        read_key_file(name)
    except (OSError, UnicodeDecodeError, KeyFileError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        yield ConfigIssue("node.stickiness_key_file", reason)


def _web_acls(config: Config) -> Iterator[ConfigIssue]:
    # IP set files must read and parse, as the workers will read them.
    from lbd.config.web_acl_reading import read_ip_set_files

    yield from read_ip_set_files(config.web_acls)[1]
