"""Config loading: defaults, examples, and invalid configs reported with their exact key path."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbd.cli import main
from lbd.config.loader import ConfigError, parse_config
from lbd.config.schema import ForwardAction

ROOT = Path(__file__).resolve().parent.parent

BASE: dict[str, Any] = {
    "node": {"zone": "zone-a"},
    "load_balancers": [
        {
            "name": "web",
            "type": "application",
            "listeners": [
                {
                    "protocol": "HTTP",
                    "port": 8080,
                    "default_actions": [{"type": "forward", "target_group": "web"}],
                    "rules": [
                        {
                            "priority": 10,
                            "conditions": [{"field": "path-pattern", "values": ["/api/*"]}],
                            "actions": [{"type": "forward", "target_group": "web"}],
                        }
                    ],
                }
            ],
        },
        {
            "name": "tcp",
            "type": "network",
            "listeners": [
                {
                    "protocol": "TCP",
                    "port": 9000,
                    "default_actions": [{"type": "forward", "target_group": "flows"}],
                }
            ],
        },
    ],
    "target_groups": [
        {"name": "web", "protocol": "HTTP", "port": 8081, "targets": [{"id": "127.0.0.1"}]},
        {"name": "flows", "protocol": "TCP", "targets": [{"id": "127.0.0.1", "port": 9001}]},
    ],
}


def load(data: dict[str, Any]) -> Any:
    return parse_config(yaml.safe_dump(data))


def errors_of(data: dict[str, Any] | str) -> list[str]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [str(issue) for issue in info.value.issues]


def test_defaults_are_resolved_by_context() -> None:
    config = load(BASE)
    web, tcp = config.load_balancers
    assert (web.idle_timeout_seconds, web.cross_zone) == (60, True)
    assert (tcp.idle_timeout_seconds, tcp.cross_zone) == (350, False)
    http_group, tcp_group = config.target_groups
    assert http_group.algorithm == "round_robin"
    assert tcp_group.algorithm == "flow_hash"
    assert http_group.targets[0].port == 8081  # from the target group's port
    assert http_group.targets[0].zone == "zone-a"  # from node.zone
    assert (http_group.health_check.protocol, http_group.health_check.matcher) == ("HTTP", "200")
    assert (http_group.health_check.timeout_seconds, http_group.health_check.path) == (5, "/")
    assert (tcp_group.health_check.protocol, tcp_group.health_check.timeout_seconds) == ("TCP", 10)
    assert tcp_group.health_check.matcher == "200-399"
    action = web.listeners[0].default_actions[0]
    assert isinstance(action, ForwardAction)
    assert [(g.name, g.weight) for g in action.target_groups] == [("web", 1)]


def test_short_interval_lowers_the_default_timeout() -> None:
    data = copy.deepcopy(BASE)
    data["target_groups"][1]["health_check"] = {"interval_seconds": 5}
    assert load(data).target_groups[1].health_check.timeout_seconds == 4


def mutate(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of BASE with the value at ``path`` (dots and [i]) replaced, or deleted."""
    data = copy.deepcopy(BASE)
    parts = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]
    node: Any = data
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


L0 = "load_balancers[0].listeners[0]"

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "port out of range",
        mutate("load_balancers.0.listeners.0.port", 70000),
        f"{L0}.port",
        "less than or equal to 65535",
    ),
    (
        "unknown key",
        mutate("load_balancers.0.listeners.0.protocl", "HTTP"),
        f"{L0}.protocl",
        "did you mean 'protocol'?",
    ),
    (
        "bad lb type",
        mutate("load_balancers.0.type", "gateway"),
        "load_balancers[0].type",
        "'application', 'network' or 'classic'",
    ),
    (
        "bad lb name",
        mutate("load_balancers.0.name", "-web"),
        "load_balancers[0].name",
        "must be 1-32 letters (A-Z, a-z), digits and hyphens, not starting or ending with a hyphen, "
        "got '-web'",
    ),
    (
        "forward to missing group",
        mutate("load_balancers.0.listeners.0.default_actions.0.target_group", "nope"),
        f"{L0}.default_actions[0].target_group",
        "target group 'nope' does not exist",
    ),
    (
        "duplicate priority",
        mutate(
            "load_balancers.0.listeners.0.rules",
            [
                {
                    "priority": 5,
                    "conditions": [{"field": "path-pattern", "values": ["/a"]}],
                    "actions": [{"type": "forward", "target_group": "web"}],
                },
                {
                    "priority": 5,
                    "conditions": [{"field": "path-pattern", "values": ["/b"]}],
                    "actions": [{"type": "forward", "target_group": "web"}],
                },
            ],
        ),
        f"{L0}.rules[1].priority",
        "already used by rules[0]",
    ),
    (
        "priority range",
        mutate("load_balancers.0.listeners.0.rules.0.priority", 50001),
        f"{L0}.rules[0].priority",
        "less than or equal to 50000",
    ),
    (
        "port used twice",
        mutate("load_balancers.1.listeners.0.port", 8080),
        "load_balancers[1].listeners[0].port",
        "0.0.0.0:8080/tcp is already used by load_balancers[0].listeners[0]",
    ),
    (
        "tcp group behind http listener",
        mutate("load_balancers.0.listeners.0.default_actions.0.target_group", "flows"),
        f"{L0}.default_actions[0].target_group",
        "has protocol TCP, which a HTTP listener cannot forward to",
    ),
    (
        "http group behind tcp listener",
        mutate("load_balancers.1.listeners.0.default_actions.0.target_group", "web"),
        "load_balancers[1].listeners[0].default_actions[0].target_group",
        "allowed: TCP, TCP_UDP",
    ),
    (
        "listener protocol for lb type",
        mutate("load_balancers.1.listeners.0.protocol", "HTTP"),
        "load_balancers[1].listeners[0].protocol",
        "HTTP is not a network load balancer protocol",
    ),
    (
        "https without certificate",
        mutate("load_balancers.0.listeners.0.protocol", "HTTPS"),
        f"{L0}.certificates",
        "needs at least one certificate",
    ),
    (
        "rules on a network listener",
        mutate(
            "load_balancers.1.listeners.0.rules",
            [
                {
                    "priority": 1,
                    "conditions": [{"field": "path-pattern", "values": ["/"]}],
                    "actions": [{"type": "forward", "target_group": "flows"}],
                }
            ],
        ),
        "load_balancers[1].listeners[0].rules",
        "network load balancer listeners have no rules",
    ),
    (
        "condition value charset",
        mutate("load_balancers.0.listeners.0.rules.0.conditions.0.values", ["/a<b"]),
        f"{L0}.rules[0].conditions[0].values[0]",
        "has characters outside",
    ),
    (
        "too many condition values",
        mutate("load_balancers.0.listeners.0.rules.0.conditions.0.values", ["/a", "/b", "/c", "/d"]),
        f"{L0}.rules[0].conditions[0].values",
        "at most 3 values",
    ),
    (
        "two path conditions",
        mutate(
            "load_balancers.0.listeners.0.rules.0.conditions",
            [{"field": "path-pattern", "values": ["/a"]}, {"field": "path-pattern", "values": ["/b"]}],
        ),
        f"{L0}.rules[0].conditions",
        "at most one path-pattern condition",
    ),
    (
        "bad cidr",
        mutate(
            "load_balancers.0.listeners.0.rules.0.conditions",
            [{"field": "source-ip", "values": ["10.0.0.0/33"]}],
        ),
        f"{L0}.rules[0].conditions[0].values[0]",
        "must be a CIDR block",
    ),
    (
        "header condition without name",
        mutate(
            "load_balancers.0.listeners.0.rules.0.conditions", [{"field": "http-header", "values": ["x"]}]
        ),
        f"{L0}.rules[0].conditions[0].http_header_name",
        "required",
    ),
    (
        "method charset",
        mutate(
            "load_balancers.0.listeners.0.rules.0.conditions",
            [{"field": "http-request-method", "values": ["get"]}],
        ),
        f"{L0}.rules[0].conditions[0].values[0]",
        "A-Z - _",
    ),
    (
        "fixed response status",
        mutate(
            "load_balancers.0.listeners.0.default_actions", [{"type": "fixed-response", "status_code": 302}]
        ),
        f"{L0}.default_actions[0].status_code",
        "2XX, 4XX or 5XX",
    ),
    (
        "fixed response body too long",
        mutate(
            "load_balancers.0.listeners.0.default_actions",
            [{"type": "fixed-response", "status_code": 200, "message_body": "x" * 1025}],
        ),
        f"{L0}.default_actions[0].message_body",
        "at most 1024 characters",
    ),
    (
        "redirect that changes nothing",
        mutate(
            "load_balancers.0.listeners.0.default_actions", [{"type": "redirect", "status_code": "HTTP_301"}]
        ),
        f"{L0}.default_actions[0]",
        "must change at least one",
    ),
    (
        "redirect status",
        mutate(
            "load_balancers.0.listeners.0.default_actions",
            [{"type": "redirect", "status_code": "HTTP_307", "protocol": "HTTPS"}],
        ),
        f"{L0}.default_actions[0].status_code",
        "'HTTP_301' or 'HTTP_302'",
    ),
    (
        "unknown action type",
        mutate("load_balancers.0.listeners.0.default_actions", [{"type": "authenticate-oidc"}]),
        f"{L0}.default_actions[0]",
        "unknown action type 'authenticate-oidc'",
    ),
    (
        "weighted forward over five",
        mutate(
            "load_balancers.0.listeners.0.default_actions",
            [{"type": "forward", "target_groups": [{"name": f"g{i}"} for i in range(6)]}],
        ),
        f"{L0}.default_actions[0].target_groups",
        "at most 5 target groups",
    ),
    (
        "weight range",
        mutate(
            "load_balancers.0.listeners.0.default_actions",
            [{"type": "forward", "target_groups": [{"name": "web", "weight": 1000}]}],
        ),
        f"{L0}.default_actions[0].target_groups[0].weight",
        "less than or equal to 999",
    ),
    (
        "target without port",
        mutate("target_groups.1.targets", [{"id": "127.0.0.1"}]),
        "target_groups[1].targets[0].port",
        "required key is missing",
    ),
    (
        "health timeout not below interval",
        mutate("target_groups.0.health_check", {"interval_seconds": 5, "timeout_seconds": 5}),
        "target_groups[0].health_check.timeout_seconds",
        "smaller than interval_seconds",
    ),
    (
        "bad matcher",
        mutate("target_groups.0.health_check", {"matcher": "ok"}),
        "target_groups[0].health_check.matcher",
        'codes like "200"',
    ),
    (
        "app cookie name reserved",
        mutate(
            "target_groups.0.stickiness", {"enabled": True, "type": "app_cookie", "cookie_name": "AWSALBX"}
        ),
        "target_groups[0].stickiness.cookie_name",
        "must not start with AWSALB",
    ),
    (
        "duplicate target group",
        mutate("target_groups.1.name", "web"),
        "target_groups[1].name",
        "'web' is already used by target_groups[0]",
    ),
    (
        "admin on a public address without token",
        mutate("admin", {"listen": "0.0.0.0:9900"}),
        "admin.token_file",
        "required when admin.listen",
    ),
    (
        "idle timeout range",
        mutate("load_balancers.0.idle_timeout_seconds", 5000),
        "load_balancers[0].idle_timeout_seconds",
        "at most 4000 for application",
    ),
    ("workers", mutate("node.workers", 0), "node.workers", "greater than or equal to 1"),
    (
        "slow start with least outstanding",
        mutate("target_groups.0.algorithm", "least_outstanding_requests") | {},
        "",
        "",
    ),
]
# The last entry needs two changes; build it properly.
_lor = mutate("target_groups.0.algorithm", "least_outstanding_requests")
_lor["target_groups"][0]["slow_start_seconds"] = 30
INVALID[-1] = (
    "slow start with least outstanding",
    _lor,
    "target_groups[0].slow_start_seconds",
    "cannot be combined with least_outstanding_requests",
)


@pytest.mark.parametrize(("case", "data", "path", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_names_the_exact_place(
    case: str, data: dict[str, Any], path: str, message: str
) -> None:
    errors = errors_of(data)
    assert any(e.startswith(f"{path}: ") and message in e for e in errors), errors


def test_yaml_line_numbers_are_given() -> None:
    text = yaml.safe_dump(mutate("load_balancers.0.listeners.0.port", 0), sort_keys=False)
    (error,) = errors_of(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "port: 0" in row)
    assert error.endswith(f"(line {line})")


def test_all_errors_are_reported_together() -> None:
    data = mutate("load_balancers.0.listeners.0.port", 0)
    data["target_groups"][0]["protocol"] = "SMTP"
    data["node"]["workrs"] = 2
    errors = errors_of(data)
    assert {e.split(":")[0] for e in errors} >= {f"{L0}.port", "target_groups[0].protocol", "node.workrs"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("node: {zone: [\n", "invalid YAML at line"),
    ],
)
def test_unusable_files(text: str, message: str) -> None:
    (error,) = errors_of(text)
    assert message in error


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=12,
    )
)
def test_garbage_only_ever_raises_config_error(garbage: Any) -> None:
    # Anything but a ConfigError (a TypeError from a validator, say) fails the test.
    with contextlib.suppress(ConfigError):
        parse_config(yaml.safe_dump({"load_balancers": garbage, "target_groups": garbage}))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=65535), st.integers(min_value=1, max_value=50000))
def test_any_valid_port_and_priority_load(port: int, priority: int) -> None:
    data = mutate("load_balancers.0.listeners.0.port", port)
    data["load_balancers"][0]["listeners"][0]["rules"][0]["priority"] = priority
    data["load_balancers"][1]["listeners"][0]["port"] = 1 if port != 1 else 2
    config = load(data)
    assert config.load_balancers[0].listeners[0].port == port
    assert config.load_balancers[0].listeners[0].rules[0].priority == priority


@pytest.mark.parametrize("path", sorted(ROOT.glob("conf/*.yaml")), ids=lambda p: p.name)
def test_every_example_config_passes_lbd_check(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(path)]) == 0
    assert ": OK (" in capsys.readouterr().out


def test_lbd_check_lists_errors_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    data = mutate("load_balancers.0.listeners.0.port", 0)
    data["target_groups"][0]["protocol"] = "SMTP"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "-c", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # errors go to stderr
    err = captured.err.splitlines()
    assert err[-1] == f"{path}: 2 errors"
    assert any(f"{L0}.port" in line for line in err)


def test_lbd_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"load_balancers", "target_groups", "node", "admin"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


# -- duplicate keys, one error per mistake, the file named once ----------------------------------------------


def test_duplicate_keys_are_errors_with_path_and_line() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False)
    # A second `port:` in the first listener and a second `node:` at the top: last-one-wins no more.
    text = text.replace("    port: 8080\n", "    port: 8080\n    port: 8081\n", 1)
    text += "node:\n  zone: zone-b\n"
    errors = errors_of(text)
    lines = text.splitlines()
    first_port = next(i for i, row in enumerate(lines, 1) if "port: 8080" in row)
    second_node = max(i for i, row in enumerate(lines, 1) if row == "node:")
    assert errors == [
        f"{L0}.port: duplicate key; first given on line {first_port} (line {first_port + 1})",
        f"node: duplicate key; first given on line 1 (line {second_node})",
    ]


def test_a_misspelt_key_is_one_error_with_its_suggestion() -> None:
    data = mutate(f"{L0}.protocol".replace("[", ".").replace("]", ""), None, delete=True)
    data["load_balancers"][0]["listeners"][0]["protocl"] = "HTTP"
    (error,) = errors_of(data)  # not also "protocol: required key is missing"
    assert error.startswith(f"{L0}.protocl: unknown key; did you mean 'protocol'?")


def test_values_have_the_types_the_schema_says() -> None:
    # Strict: a quoted number is not a number (and the JSON Schema says integer).
    (error,) = errors_of(mutate("load_balancers.0.listeners.0.port", "8080"))
    assert error.startswith(f"{L0}.port: Input should be a valid integer, got '8080'")
    # Dates stay strings, as in YAML 1.2: a zone named like a date is a zone.
    assert load(mutate("node.zone", "2024-01-01") | {}).node.zone == "2024-01-01"
    text = yaml.safe_dump(BASE, sort_keys=False).replace("zone: zone-a", "zone: 2024-01-01", 1)
    assert parse_config(text).node.zone == "2024-01-01"


def test_config_path_is_not_a_key_of_the_file() -> None:
    (error,) = errors_of(BASE | {"config_path": "/elsewhere.yaml"})
    assert error.startswith("config_path: set by lbd")


def test_health_check_interval_leaves_room_for_a_timeout() -> None:
    (error,) = errors_of(mutate("target_groups.0.health_check", {"interval_seconds": 1}))
    assert error.startswith("target_groups[0].health_check.interval_seconds: must be at least 2")
    config = load(mutate("target_groups.0.health_check", {"interval_seconds": 2}))
    assert config.target_groups[0].health_check.timeout_seconds == 1  # default lowered to fit


@pytest.mark.parametrize(
    ("text", "message"),
    [("node: {zone: [\n", "invalid YAML at line 2, column 1"), ("", "the file is empty")],
)
def test_lbd_check_names_the_file_once(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert main(["check", "-c", str(path)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{path}: {message}")
    assert first.count(str(path)) == 1


# -- lbd schema ----------------------------------------------------------------------------------------------


def schema_validator() -> Any:
    import jsonschema

    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def config_schema() -> dict[str, Any]:
    from lbd.config.schema import json_schema

    return json_schema()


def test_lbd_schema_prints_draft_2020_12(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "config_path" not in printed["properties"]
    # Keys the loader fills in are not required of the file.
    assert "required" not in printed["$defs"]["HealthCheck"]
    assert printed["$defs"]["TargetGroup"]["required"] == ["name", "protocol"]


@pytest.mark.parametrize("path", sorted(ROOT.glob("conf/*.yaml")), ids=lambda p: p.name)
def test_every_example_validates_against_the_schema(path: Path) -> None:
    validator = schema_validator()
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert errors == []


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    validator = schema_validator()
    for data in (
        mutate("load_balancers.0.listeners.0.protocl", "HTTP"),
        mutate("load_balancers.0.listeners.0.port", 70000),
        mutate("load_balancers.0.name", "-web"),
        mutate("target_groups.0.health_check", {"interval_seconds": 1}),
    ):
        assert not validator.is_valid(data)


# Values of every JSON type, for the leaves of BASE and the optional keys below.
ANY_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-2, 70000)
    | st.floats(-1, 100, allow_nan=False)
    | st.sampled_from(["", "x", "8080", "HTTP", "TCP", "auto", "inherit", "zone-a", "0.0.0.0", "/", "200"])
)
# Optional keys with mostly valid values (a config the loader accepts is what this test needs).
OPTIONAL: dict[str, list[tuple[str, Any]]] = {
    "node": [
        ("workers", st.sampled_from(["auto", 1, 2, 256])),
        ("shutdown_timeout_seconds", st.integers(0, 3600) | st.floats(0, 3600)),
    ],
    "lb": [
        ("cross_zone", st.booleans()),
        ("idle_timeout_seconds", st.integers(1, 4000)),
        ("desync_mitigation_mode", st.sampled_from(["monitor", "defensive", "strictest"])),
        ("xff_client_port", st.booleans()),
        ("access_log", st.just({"path": "-"}) | st.just({"path": "/tmp/x.log", "format": "json"})),
    ],
    "group": [
        ("cross_zone", st.sampled_from(["inherit", True, False])),
        ("slow_start_seconds", st.integers(0, 900)),
        ("connect_timeout_seconds", st.integers(1, 60) | st.floats(0.1, 60)),
        ("stickiness", st.just({"enabled": True}) | st.just({"enabled": True, "type": "source_ip"})),
        ("outlier_detection", st.just({"consecutive_failures": 3})),
        ("minimum_healthy_targets", st.just({"count": 2}) | st.just({"percentage": 50})),
        (
            "health_check",
            st.fixed_dictionaries(
                {},
                optional={
                    "enabled": st.booleans(),
                    "interval_seconds": st.integers(2, 300),
                    "healthy_threshold": st.integers(2, 10),
                    "matcher": st.sampled_from(["200", 200, "200-299", "200,302"]),
                    "path": st.sampled_from(["/", "/health"]),
                    "port": st.sampled_from(["traffic-port", 80]),
                },
            ),
        ),
    ],
}


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(node, list):
        return [leaf for index, value in enumerate(node) for leaf in _leaves(value, (*path, index))]
    return [path]


@st.composite
def loader_inputs(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for key, values in OPTIONAL["node"]:
        if draw(st.booleans()):
            data["node"][key] = draw(values)
    for lb in data["load_balancers"]:
        for key, values in OPTIONAL["lb"]:
            if draw(st.booleans()):
                lb[key] = draw(values)
    for group in data["target_groups"]:
        for key, values in OPTIONAL["group"]:
            if draw(st.booleans()):
                group[key] = draw(values)
    # And perhaps one leaf of any kind replaced by a value of any type.
    if draw(st.integers(0, 2)) == 0:
        *parents, last = draw(st.sampled_from(_leaves(data)))
        node: Any = data
        for part in parents:
            node = node[part]
        node[last] = draw(ANY_VALUE)
    return data


@settings(max_examples=150, deadline=None)
@given(loader_inputs())
def test_configs_the_loader_accepts_validate_against_the_schema(data: dict[str, Any]) -> None:
    try:
        load(data)
    except ConfigError:
        return  # the schema may refuse it too, or not: it cannot see across keys
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in SCHEMA_VALIDATOR.iter_errors(data)]
    assert errors == []


SCHEMA_VALIDATOR = schema_validator()
