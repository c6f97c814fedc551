"""Names that lbd turns into file names or connects to, checked in one place: certificate names (the
config's listener certificates, ``lbd cert``), host names (target ids) and certificate domain names.

Each checker returns None for a good name, else a message saying what is wrong, so that the config
schema, the certificate store and the admin API word their refusals alike.
"""

from __future__ import annotations

import ipaddress
import re

# A certificate name is a file name in the store (``<store>/<name>.pem``): one path component, not a
# dot file, no separators or NUL. fullmatch, because ``$`` also matches before a trailing newline.
CERTIFICATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CERTIFICATE_NAME_RULE = "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1123: 1-63, no edge hyphen
MAX_HOST_NAME = 253  # octets in a DNS name, written without the trailing dot


def certificate_name_error(name: str) -> str | None:
    if CERTIFICATE_NAME.fullmatch(name) and name not in (".", ".."):
        return None
    return f"name {name!r}: {CERTIFICATE_NAME_RULE}"


def host_name_error(name: str) -> str | None:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 at most.

    The last label must not be all digits, so that a mistyped address (``10.0.0.300``) is refused
    rather than looked up as a name.
    """
    bare = name[:-1] if name.endswith(".") else name
    if not bare or len(bare) > MAX_HOST_NAME:
        return f"{name!r} is not a host name: 1-{MAX_HOST_NAME} characters"
    labels = bare.split(".")
    bad = next((label for label in labels if not LABEL.fullmatch(label)), None)
    if bad is not None:
        return (
            f"{name!r} is not a host name: label {bad!r} must be 1-63 letters, digits or hyphens, "
            "not starting or ending with a hyphen"
        )
    if labels[-1].isdigit():
        return f"{name!r} is neither an IP address nor a host name"
    return None


def domain_name_error(name: str) -> str | None:
    """A DNS name for a certificate: a host name, optionally with a leading ``*.`` wildcard label."""
    if name.endswith("."):
        return f"domain {name!r}: write it without the trailing dot"
    bare = name[2:] if name.startswith("*.") else name
    if "*" in bare:
        return f"domain {name!r}: a wildcard is allowed only as the whole first label ('*.example.com')"
    problem = host_name_error(bare)
    return None if problem is None else f"domain {problem}"


def target_id_error(target_id: str) -> str | None:
    """A target id is an IP address (IPv6 without brackets) or a host name lbd resolves when it connects."""
    try:
        ipaddress.ip_address(target_id)
    except ValueError:
        pass
    else:
        return None
    if target_id.startswith("[") and target_id.endswith("]"):
        return f"{target_id!r}: write an IPv6 address without brackets"
    return host_name_error(target_id)


# ``lbd cert request``: at least a day; at most ten years, for internal certificates (lbd/tls/store.py). Here,
# with the other rules the store applies, so the command line can show them without loading cryptography.
MIN_DAYS, MAX_DAYS = 1, 3650
