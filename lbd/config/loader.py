"""Load a YAML config into frozen schema objects, or fail with every problem named by its key path.

Errors read like ``load_balancers[0].listeners[1].port: must be 1-65535, got 70000 (line 12)``: the exact
place, what was wrong with the value found there, and what is allowed. Unknown keys are errors (a typo
must not be silently ignored) with the nearest allowed key suggested.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lbd.config.issues import ConfigError as ConfigError  # defined there; imported from here too
from lbd.config.issues import ConfigIssue
from lbd.config.schema import Config
from lbd.config.source import read_source

L4_PROTOCOLS = ("TCP", "TLS", "UDP", "TCP_UDP")
ACTION_TAGS = frozenset({"forward", "redirect", "fixed-response"})
DISCOVERY_TAGS = frozenset({"dns", "etcd"})  # target_groups[].discovery.type


def load_config(path: str | Path) -> Config:
    text, absolute, _ = read_source(path)  # a file, or an etcd key
    config = parse_config(text, source=str(path))
    return config.model_copy(update={"config_path": absolute})


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate YAML text. ``source`` is accepted for callers' logs; messages never repeat it (whoever
    prints them names the file once)."""
    raw = _load_yaml(text)
    if "config_path" in raw:
        raise ConfigError([with_line(ConfigIssue("config_path", CONFIG_PATH_SET), text)])
    resolve_defaults(raw)
    try:
        # Strict JSON-mode validation: the types in the file are exactly the ones `lbd schema` publishes
        # (no "8080" for 8080, no "yes" for true), while lists still become tuples.
        config = Config.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, text)) from None
    from lbd.config.validate import cross_check

    issues = cross_check(config)
    if issues:
        raise ConfigError([with_line(issue, text) for issue in issues])
    return config


CONFIG_PATH_SET = "set by lbd to the file's own location; remove it from the file"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with two changes for config files.

    Dates stay strings (as in YAML 1.2 and JSON Schema), so ``zone: 2024-01-01`` is the string the
    schema says it is, and a key given twice in one mapping is an error instead of the last one silently
    winning: ``duplicates`` collects each repeat with its key path and line while mappings are built.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[ConfigIssue] = []

    def check_duplicates(self, node: yaml.Node, path: str = "") -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                child = f"{path}.{key}" if path else str(key)
                line = key_node.start_mark.line + 1
                if key is not None and key in seen:
                    self.duplicates.append(
                        ConfigIssue(child, f"duplicate key; first given on line {seen[key]} (line {line})")
                    )
                elif key is not None:
                    seen[key] = line
                self.check_duplicates(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.check_duplicates(item, f"{path}[{index}]")


# Without the timestamp resolver PyYAML leaves dates as plain strings.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(text: str) -> dict[str, Any]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            loader.check_duplicates(node)
            if loader.duplicates:
                raise ConfigError(loader.duplicates)
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError.single("", f"invalid YAML{where}: {problem}") from exc
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError.single("", "the file is empty; see conf/ for examples")
    if not isinstance(raw, dict):
        raise ConfigError.single("", f"the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


# -- context-dependent defaults ------------------------------------------------------------------------------


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _forwarded_groups(listener: dict[str, Any]) -> list[str]:
    actions = _dicts(listener.get("default_actions"))
    for rule in _dicts(listener.get("rules")):
        actions += _dicts(rule.get("actions"))
    names: list[str] = []
    for action in actions:
        if isinstance(action.get("target_group"), str):
            names.append(action["target_group"])
        names += [g["name"] for g in _dicts(action.get("target_groups")) if isinstance(g.get("name"), str)]
    return names


def resolve_defaults(raw: dict[str, Any]) -> None:
    """Fill in defaults that depend on other parts of the file, in place, before validation.

    Only well-shaped parts are touched; anything else is left for validation to report.
    """
    node = raw.get("node") if isinstance(raw.get("node"), dict) else {}
    zone = node.get("zone", "zone-a") if isinstance(node, dict) else "zone-a"
    used_by: dict[str, set[str]] = {}
    for lb in _dicts(raw.get("load_balancers")):
        kind = lb.get("type")
        lb.setdefault("cross_zone", kind == "application")
        lb.setdefault("idle_timeout_seconds", 350 if kind == "network" else 60)
        for listener in _dicts(lb.get("listeners")):
            for name in _forwarded_groups(listener):
                used_by.setdefault(name, set()).add(str(kind))
        for instance in _dicts(lb.get("instances")):
            instance.setdefault("zone", zone)
            ports = [
                lst.get("instance_port") for lst in _dicts(lb.get("listeners")) if lst.get("instance_port")
            ]
            if ports:
                instance.setdefault("port", ports[0])
    for group in _dicts(raw.get("target_groups")):
        protocol = group.get("protocol")
        version = group.get("protocol_version", "HTTP1")
        group.setdefault("algorithm", "flow_hash" if protocol in L4_PROTOCOLS else "round_robin")
        for target in _dicts(group.get("targets")):
            target.setdefault("zone", zone)
            if group.get("port") is not None:
                target.setdefault("port", group["port"])
        check = group.setdefault("health_check", {})
        if not isinstance(check, dict):
            continue
        network = used_by.get(str(group.get("name")), set()) == {"network"} or protocol in L4_PROTOCOLS
        if version == "GRPC":
            check.setdefault("protocol", "GRPC")
        else:
            check.setdefault("protocol", protocol if protocol in ("HTTP", "HTTPS") else "TCP")
        check.setdefault("path", "/AWS.ALB/healthcheck" if check["protocol"] == "GRPC" else "/")
        # ELB's defaults: NLB 10 s for TCP checks and 6 s for HTTP(S); ALB 5 s.
        timeout = (10 if check["protocol"] == "TCP" else 6) if network else 5
        interval = check.get("interval_seconds", 30)
        if isinstance(interval, int) and interval > 1:
            timeout = min(timeout, interval - 1)
        check.setdefault("timeout_seconds", timeout)
        if check["protocol"] == "GRPC":
            check.setdefault("matcher", "12")
        else:
            check.setdefault("matcher", "200-399" if network else "200")


# -- error translation -------------------------------------------------------------------------------------


# pydantic names the branch of a union it tried ("literal['auto']", "constrained-int" ...) inside the error
# location; those are not keys of the file.
_UNION_TAG = re.compile(
    r"^(literal\[.*\]|constrained-\w+|int|str|bool|float|function-.*|tuple\[.*\]|list\[.*\])$"
)


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (
        part in ACTION_TAGS or part in DISCOVERY_TAGS or bool(_UNION_TAG.match(part))
    )


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_tag(part):
            out += f".{part}" if out else str(part)
    return out


_PATH_PREFIX = re.compile(r"^((?:\[\d+\])?(?:\.?[A-Za-z_]\w*(?:\[\d+\])*)*): (.*)$", re.S)


def _issues(exc: ValidationError, text: str, prefix: tuple[Any, ...] = ()) -> list[ConfigIssue]:
    """``prefix``: where the validated value sits in a config file (a web ACL sent to the admin API)."""
    errors = exc.errors(include_url=False)
    locs = [(*prefix, *error["loc"]) for error in errors]
    # A misspelt key is reported once, as unknown with its suggestion, not again as the key it should
    # have been being missing.
    suggested = {
        (*loc[:-1], hint)
        for error, loc in zip(errors, locs, strict=True)
        if error["type"] == "extra_forbidden"
        for hint in difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), n=1)
    }
    by_path: dict[str, list[str]] = {}
    for error, loc in zip(errors, locs, strict=True):
        if error["type"] == "missing" and loc in suggested:
            continue
        if error["type"] == "too_short" and any(other[: len(loc)] == loc and other != loc for other in locs):
            continue  # "needs at least 1 item" only because an item inside was invalid: the item says why
        path = format_path(loc)
        message = _message(error, loc)
        # Model-level validators name the field they refer to as "field: message".
        match = _PATH_PREFIX.match(message)
        if match and error["type"] == "value_error":
            sub, message = match.groups()
            path = f"{path}{sub}" if sub.startswith("[") else (f"{path}.{sub}" if path else sub)
        messages = by_path.setdefault(path, [])
        if message not in messages:
            messages.append(message)
    # Several errors at one place come from the branches of a union: any one of them would do.
    return [with_line(ConfigIssue(path, " or: ".join(msgs)), text) for path, msgs in by_path.items()]


def _message(error: Any, loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        key = str(loc[-1])
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = f"did you mean '{hint[0]}'? " if hint else ""
        return f"unknown key; {suggestion}allowed: {', '.join(sorted(allowed))}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc and loc[-1] == "discovery":
        tag = error.get("ctx", {}).get("tag")
        return (
            f"unknown discovery type {tag!r}; allowed: dns, etcd"
            if tag
            else "discovery needs a type: dns or etcd"
        )
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"unknown action type {tag!r}; allowed: forward, redirect, fixed-response"
    if kind == "union_tag_not_found":
        return "an action needs a type: forward, redirect or fixed-response"
    if kind == "string_pattern_mismatch":
        from lbd.config.base import PATTERN_WORDS

        pattern = str(error.get("ctx", {}).get("pattern", ""))
        return f"must be {PATTERN_WORDS.get(pattern, f'a string matching {pattern}')}, got {value!r}"
    if kind == "literal_error":
        return f"{message}, got {value!r}"
    if isinstance(value, dict | list):
        return f"{message}, got a {type(value).__name__}"
    return f"{message}, got {value!r}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys of the model found at ``loc`` (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int) or (part in ACTION_TAGS and model is None):
            continue
        if part in ACTION_TAGS or part in DISCOVERY_TAGS:
            from lbd.config import schema

            model = {
                "forward": schema.ForwardAction,
                "redirect": schema.RedirectAction,
                "fixed-response": schema.FixedResponseAction,
                "dns": schema.DnsDiscovery,
                "etcd": schema.EtcdDiscovery,
            }[part]
            continue
        field = (
            model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        )
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [name for name, f in model.model_fields.items() if not f.exclude]
    return []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    for meta in getattr(annotation, "__metadata__", ()):
        del meta
    origin = getattr(annotation, "__origin__", None)
    if origin is not None:
        return _model_of(origin)
    return None


def with_line(issue: ConfigIssue, text: str) -> ConfigIssue:
    line = _line_of(issue.path, text)
    return issue._replace(message=f"{issue.message} (line {line})") if line else issue


def _line_of(path: str, text: str) -> int | None:
    """The 1-based line of the deepest node of ``path`` present in the YAML text."""
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            break
    return line
