"""Where a config comes from: a file, or an etcd key (``-c etcd://host:2379/lbd/config``).

A ``-c`` value that starts with ``etcd://`` or ``etcds://`` names a key of an etcd cluster whose value is
the YAML a file would hold; anything else is a file path, read exactly as before (a file named
``etcd:`` is still reachable as ``./etcd:...``). The form is a URL (RFC 3986):

- ``etcd://`` speaks HTTP to etcd's v3 JSON gateway, ``etcds://`` HTTPS (the server's certificate checked
  against the system's CAs, or ``$SSL_CERT_FILE``);
- the authority lists the members, ``host[:port]`` separated by commas (port 2379 when left out, IPv6
  addresses in brackets), tried in turn;
- the path is the key, percent-decoded, leading slash included: ``etcd://h1,h2/lbd/config`` reads the key
  ``/lbd/config``. No query, fragment or user information: nothing is ignored silently.

``read_source`` reads either; reading and watching a key is lbd/discovery/config_key.py's (aiohttp, loaded
only for an etcd source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from lbd.config.issues import ConfigError

SCHEMES = {"etcd": "http", "etcds": "https"}
DEFAULT_PORT = 2379
_MEMBER = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?$")


class SourceUnavailable(ConfigError):
    """The config source did not answer (no etcd member reachable): not the config's fault, so ``lbd run``
    exits with its own status (5), which a supervisor such as systemd restarts."""


@dataclass(frozen=True)
class EtcdKey:
    name: str  # as the operator wrote it: how messages name the source
    endpoints: tuple[str, ...]  # base URLs, http://host:port
    key: str


def is_etcd(source: str) -> bool:
    return source.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


def etcd_key(source: str) -> EtcdKey:
    """The members and the key that ``source`` (an ``etcd://`` or ``etcds://`` URL) names; else ConfigError
    saying what is wrong with it."""
    scheme, _, rest = source.partition("://")
    if scheme not in SCHEMES:
        raise _bad("must start with etcd:// or etcds://")
    authority, slash, path = rest.partition("/")
    if any(mark in rest for mark in "?#"):
        raise _bad("takes no query or fragment: etcd://HOST[:PORT][,HOST[:PORT]...]/KEY")
    if "@" in authority:
        raise _bad("takes no user information (etcd authentication is not supported)")
    key = unquote(slash + path)
    if len(key) < 2:
        raise _bad("names no key: etcd://HOST[:PORT][,HOST[:PORT]...]/KEY")
    endpoints = []
    for member in authority.split(","):
        match = _MEMBER.match(member)
        port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
        if match is None or not 1 <= port <= 65535:
            raise _bad(f"member {member!r} is not HOST[:PORT] (IPv6 addresses in brackets)")
        host = f"[{match['v6']}]" if match["v6"] else match["host"]
        endpoints.append(f"{SCHEMES[scheme]}://{host}:{port}")
    return EtcdKey(source, tuple(endpoints), key)


def _bad(reason: str) -> ConfigError:
    return ConfigError.single("", f"not an etcd key URL: it {reason}")  # (the caller names it)


def read_source(source: str | Path) -> tuple[str, str, int]:
    """The config's text, the name it goes by (a file's absolute path, an etcd URL as given) and the
    key's mod_revision (0 for a file); ConfigError when it cannot be read."""
    name = str(source)
    if is_etcd(name):
        from lbd.discovery.config_key import read_config

        text, revision = read_config(name)
        return text, name, revision
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError.single("", f"cannot read the file: {exc.strerror or exc}") from exc
    return text, str(Path(source).resolve()), 0
