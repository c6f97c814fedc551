"""The Prometheus exporter (``GET /metrics`` on the admin listener), built on prometheus-client.

Workers count with plain integers (lbd/observe/stats.py). When /metrics is scraped the supervisor asks
every worker for its counters over the control channel, sums them into node totals (counters and gauges
such as active connections summed, histogram buckets summed, target health from the node's single
checker) and renders them here through a custom collector, so there is no second copy of any counter.
docs/metrics.md maps each metric to its CloudWatch twin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from lbd.observe.stats import LATENCY_BUCKETS

LISTENER = ["load_balancer", "listener"]
# The text format generate_latest writes (what Prometheus and promtool read everywhere).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class NodeStats:
    """Node totals: every worker's counters added up, plus the checker's view of target health."""

    listeners: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    listener_types: dict[tuple[str, str], str] = field(default_factory=dict)
    targets: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    target_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)  # target_group, zone, state per target
    workers: int = 0
    workers_answering: int = 0
    generation: int = 0
    apis: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (api, stage, route)
    discovery: list[dict[str, Any]] = field(default_factory=list)  # one per provider (lbd/discovery/)
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)  # lbd/edge/store.py reports
    # web ACL -> "allowed" | "blocked" | "counted" -> rule -> requests (lbd/waf/acl.py WafStats)
    web_acls: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def add_worker(self, reply: dict[str, Any]) -> None:
        self.workers_answering += 1
        for entry in reply.get("distributions", []):
            total = self.distributions.setdefault(entry["distribution"], {})
            for name, value in entry.items():
                if name != "distribution":
                    total[name] = _add(total.get(name), value)
        for entry in reply.get("listeners", []):
            key = (entry["load_balancer"], entry["listener"])
            self.listener_types[key] = entry.get("type", "application")
            total = self.listeners.setdefault(key, {})
            for name, value in entry.items():
                if name in ("load_balancer", "listener", "type"):
                    continue
                total[name] = _add(total.get(name), value)
        for entry in reply.get("targets", []):
            key = (entry["target_group"], entry["target"])
            counts = self.targets.setdefault(key, {})
            for name, value in entry.items():
                if isinstance(value, int):
                    counts[name] = counts.get(name, 0) + value
        for entry in reply.get("apis", []):
            total = self.apis.setdefault((entry["api"], entry["stage"], entry["route"]), {})
            for name, value in entry.items():
                if name not in ("api", "stage", "route"):
                    total[name] = _add(total.get(name), value)
        for report in reply.get("target_groups", []):
            merged = self.target_groups.setdefault(report["target_group"], {})
            for name, value in report.items():
                if isinstance(value, bool):  # fail_open, zonal_failover: true in any worker
                    merged[name] = bool(merged.get(name)) or value
                elif isinstance(value, int) and name in ("healthy_targets", "unhealthy_targets"):
                    merged[name] = value  # the checker's verdicts, the same in every worker
                elif isinstance(value, int):
                    merged[name] = merged.get(name, 0) + value
        for report in reply.get("web_acls", []):
            acl = self.web_acls.setdefault(report["web_acl"], {})
            for outcome in ("allowed", "blocked", "counted"):
                rules = acl.setdefault(outcome, {})
                for rule, count in report.get(outcome, {}).items():
                    rules[rule] = rules.get(rule, 0) + count


def _add(total: Any, value: Any) -> Any:
    if total is None:
        return _copy(value)
    if isinstance(value, dict) and "counts" in value:  # a histogram
        return {
            "counts": [a + b for a, b in zip(total["counts"], value["counts"], strict=True)],
            "sum": total["sum"] + value["sum"],
        }
    if isinstance(value, dict):  # status -> count
        merged = dict(total)
        for key, count in value.items():
            merged[key] = merged.get(key, 0) + count
        return merged
    if isinstance(value, int | float):
        return total + value
    return total


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


class NodeCollector(Collector):
    def __init__(self, stats: NodeStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from self._listener_metrics()
        yield from self._target_metrics()
        yield from self._process_metrics()
        yield from self._discovery_metrics()
        yield from self._edge_metrics()
        yield from self._api_metrics()
        yield from self._websocket_metrics()

    def _api_metrics(self) -> Iterator[Metric]:
        """API Gateway's CloudWatch metrics (docs/metrics.md), by api, stage and route."""
        labels = ["api", "stage", "route"]
        requests = CounterMetricFamily("lbd_api_requests", "API requests (Count).", labels=labels)
        responses = CounterMetricFamily(
            "lbd_api_responses",
            "API responses by error class (4XXError, 5XXError).",
            labels=[*labels, "code"],
        )
        hits = CounterMetricFamily(
            "lbd_api_cache_hits", "Served from the stage cache (CacheHitCount).", labels=labels
        )
        misses = CounterMetricFamily(
            "lbd_api_cache_misses",
            "Cacheable requests the stage cache missed (CacheMissCount).",
            labels=labels,
        )
        throttled = CounterMetricFamily(
            "lbd_api_throttled", "Requests refused by a throttle or quota (429).", labels=labels
        )
        latency = HistogramMetricFamily(
            "lbd_api_latency_seconds",
            "From the request to the response, integration included (Latency).",
            labels=labels,
        )
        integration = HistogramMetricFamily(
            "lbd_api_integration_latency_seconds",
            "From sending the request to the integration to its response (IntegrationLatency).",
            labels=labels,
        )
        for key, values in sorted(self.stats.apis.items()):
            names = list(key)
            requests.add_metric(names, values.get("requests", 0))
            responses.add_metric([*names, "4xx"], values.get("errors_4xx", 0))
            responses.add_metric([*names, "5xx"], values.get("errors_5xx", 0))
            hits.add_metric(names, values.get("cache_hits", 0))
            misses.add_metric(names, values.get("cache_misses", 0))
            throttled.add_metric(names, values.get("throttled", 0))
            _histogram(latency, names, values.get("latency"))
            _histogram(integration, names, values.get("integration_latency"))
        yield from (requests, responses, hits, misses, throttled, latency, integration)
        yield from self._waf_metrics()

    def _websocket_metrics(self) -> Iterator[Metric]:
        """API Gateway's WebSocket metrics (docs/metrics.md), by api, stage and route; IntegrationLatency
        is lbd_api_integration_latency_seconds above."""
        labels = ["api", "stage", "route"]
        connects = CounterMetricFamily(
            "lbd_api_websocket_connects", "$connect requests accepted (ConnectCount).", labels=labels
        )
        messages = CounterMetricFamily(
            "lbd_api_websocket_messages",
            "Messages from and to clients, pushes included (MessageCount).",
            labels=[*labels, "direction"],
        )
        integration = CounterMetricFamily(
            "lbd_api_websocket_integration_errors",
            "Integration answers of 4xx or 5xx (IntegrationError).",
            labels=labels,
        )
        client = CounterMetricFamily(
            "lbd_api_websocket_client_errors",
            "Refused before the integration: no route, authorizer, API key, throttle (ClientError).",
            labels=labels,
        )
        execution = CounterMetricFamily(
            "lbd_api_websocket_execution_errors",
            "The integration could not be called: unreachable, timed out (ExecutionError).",
            labels=labels,
        )
        open_now = GaugeMetricFamily(
            "lbd_api_websocket_connections", "Open WebSocket connections.", labels=["api", "stage"]
        )
        for (api, stage, route), values in sorted(self.stats.apis.items()):
            if "connects" not in values:
                continue  # a REST or HTTP route
            names = [api, stage, route]
            connects.add_metric(names, values.get("connects", 0))
            messages.add_metric([*names, "in"], values.get("messages_in", 0))
            messages.add_metric([*names, "out"], values.get("messages_out", 0))
            integration.add_metric(names, values.get("integration_errors", 0))
            client.add_metric(names, values.get("client_errors", 0))
            execution.add_metric(names, values.get("execution_errors", 0))
            if route == "$connect":
                open_now.add_metric([api, stage], values.get("connections", 0))
        yield from (connects, messages, integration, client, execution, open_now)

    def _listener_metrics(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily(
            "lbd_requests", "Requests a target was chosen for (RequestCount).", labels=LISTENER
        )
        responses = CounterMetricFamily(
            "lbd_http_responses",
            "HTTP responses by status class, generated by lbd (source=lb) or by a target (source=target).",
            labels=[*LISTENER, "source", "code"],
        )
        lb_statuses = CounterMetricFamily(
            "lbd_http_lb_responses",
            "Responses lbd generated itself, by exact status (HTTPCode_ELB_502_Count ...).",
            labels=[*LISTENER, "status"],
        )
        active_connections = GaugeMetricFamily(
            "lbd_active_connections", "Open client connections (application listeners).", labels=LISTENER
        )
        new_connections = CounterMetricFamily(
            "lbd_new_connections", "Client connections accepted (application listeners).", labels=LISTENER
        )
        active_flows = GaugeMetricFamily(
            "lbd_active_flows", "Open flows (network listeners).", labels=LISTENER
        )
        new_flows = CounterMetricFamily(
            "lbd_new_flows", "Flows accepted (network listeners).", labels=LISTENER
        )
        # NLB's UDP metrics: ActiveFlowCount_UDP, NewFlowCount_UDP, ProcessedBytes_UDP, ProcessedPackets.
        active_udp = GaugeMetricFamily(
            "lbd_active_flows_udp", "Open UDP flows (ActiveFlowCount_UDP).", labels=LISTENER
        )
        new_udp = CounterMetricFamily(
            "lbd_new_flows_udp", "UDP flows started (NewFlowCount_UDP).", labels=LISTENER
        )
        bytes_udp = CounterMetricFamily(
            "lbd_processed_bytes_udp",
            "UDP payload bytes, both directions (ProcessedBytes_UDP).",
            labels=LISTENER,
        )
        packets = CounterMetricFamily(
            "lbd_processed_packets",
            "UDP datagrams relayed or dropped, both directions (ProcessedPackets).",
            labels=LISTENER,
        )
        dropped_udp = CounterMetricFamily(
            "lbd_dropped_packets_udp",
            "UDP datagrams dropped: no routable target, or the socket could not take them.",
            labels=LISTENER,
        )
        proxy_errors = CounterMetricFamily(
            "lbd_proxy_protocol_errors",
            "Connections closed because their PROXY protocol header was malformed, late or truncated.",
            labels=LISTENER,
        )
        rejected = CounterMetricFamily(
            "lbd_rejected_connections",
            "Connections closed because no target could take them.",
            labels=LISTENER,
        )
        processed = CounterMetricFamily(
            "lbd_processed_bytes", "Bytes received from and sent to clients.", labels=LISTENER
        )
        connection_errors = CounterMetricFamily(
            "lbd_target_connection_errors",
            "Connections to targets that could not be opened (refused or timed out).",
            labels=LISTENER,
        )
        tls_errors = CounterMetricFamily(
            "lbd_client_tls_negotiation_errors", "TLS handshakes with clients that failed.", labels=LISTENER
        )
        non_compliant = CounterMetricFamily(
            "lbd_non_compliant_requests",
            "Requests desync mitigation classified as not compliant with RFC 7230.",
            labels=LISTENER,
        )
        resets = CounterMetricFamily(
            "lbd_tcp_resets",
            "TCP resets passed on, by the side that sent them.",
            labels=[*LISTENER, "source"],
        )
        redirects = CounterMetricFamily("lbd_redirects", "Redirect actions answered.", labels=LISTENER)
        fixed = CounterMetricFamily(
            "lbd_fixed_responses", "Fixed-response actions answered.", labels=LISTENER
        )
        grpc_requests = CounterMetricFamily(
            "lbd_grpc_requests", "gRPC requests received (GrpcRequestCount).", labels=LISTENER
        )
        idle = CounterMetricFamily(
            "lbd_idle_timeouts", "Connections closed after the idle timeout.", labels=LISTENER
        )
        surge = GaugeMetricFamily(
            "lbd_surge_queue_length",
            "Requests or connections waiting for an instance below max_connections_per_instance "
            "(classic listeners; SurgeQueueLength).",
            labels=LISTENER,
        )
        spillover = CounterMetricFamily(
            "lbd_spillover",
            "Requests or connections refused because the surge queue was full (SpilloverCount).",
            labels=LISTENER,
        )
        target_time = HistogramMetricFamily(
            "lbd_target_response_seconds",
            "From sending the request to a target to receiving its response headers (TargetResponseTime).",
            labels=LISTENER,
        )
        duration = HistogramMetricFamily(
            "lbd_request_duration_seconds",
            "From the first byte of a request to the last byte of its response, as the client sees it.",
            labels=LISTENER,
        )
        for key, values in sorted(stats.listeners.items()):
            labels = list(key)
            network = stats.listener_types.get(key) == "network"
            if network:
                active_flows.add_metric(labels, values.get("active_connections", 0))
                new_flows.add_metric(labels, values.get("new_connections", 0))
                resets.add_metric([*labels, "client"], values.get("client_resets", 0))
                resets.add_metric([*labels, "target"], values.get("target_resets", 0))
                active_udp.add_metric(labels, values.get("udp_active_flows", 0))
                new_udp.add_metric(labels, values.get("udp_new_flows", 0))
                bytes_udp.add_metric(labels, values.get("udp_processed_bytes", 0))
                packets.add_metric(labels, values.get("processed_packets", 0))
                dropped_udp.add_metric(labels, values.get("udp_dropped_packets", 0))
            else:
                active_connections.add_metric(labels, values.get("active_connections", 0))
                new_connections.add_metric(labels, values.get("new_connections", 0))
                requests.add_metric(labels, values.get("requests", 0))
                for source, prefix in (("lb", "elb_responses"), ("target", "target_responses")):
                    for status_class in range(1, 6):
                        count = values.get(f"{prefix}_{status_class}xx", 0)
                        responses.add_metric([*labels, source, f"{status_class}xx"], count)
                for status, count in sorted(values.get("elb_statuses", {}).items()):
                    lb_statuses.add_metric([*labels, str(status)], count)
                non_compliant.add_metric(labels, values.get("non_compliant_requests", 0))
                redirects.add_metric(labels, values.get("redirects", 0))
                fixed.add_metric(labels, values.get("fixed_responses", 0))
                grpc_requests.add_metric(labels, values.get("grpc_requests", 0))
                _histogram(target_time, labels, values.get("target_response_time"))
                _histogram(duration, labels, values.get("request_duration"))
            rejected.add_metric(labels, values.get("rejected_connections", 0))
            processed.add_metric(labels, values.get("processed_bytes", 0))
            connection_errors.add_metric(labels, values.get("target_connection_errors", 0))
            tls_errors.add_metric(labels, values.get("client_tls_negotiation_errors", 0))
            idle.add_metric(labels, values.get("idle_timeouts", 0))
            proxy_errors.add_metric(labels, values.get("proxy_protocol_errors", 0))
            surge.add_metric(labels, values.get("surge_queue_length", 0))
            spillover.add_metric(labels, values.get("spillover_count", 0))
        yield from (
            surge,
            spillover,
            requests,
            responses,
            lb_statuses,
            active_connections,
            new_connections,
            active_flows,
            new_flows,
            active_udp,
            new_udp,
            bytes_udp,
            packets,
            dropped_udp,
            proxy_errors,
            rejected,
            processed,
            connection_errors,
            tls_errors,
            non_compliant,
            resets,
            redirects,
            fixed,
            grpc_requests,
            idle,
            target_time,
            duration,
        )

    def _target_metrics(self) -> Iterator[Metric]:
        stats = self.stats
        per_target = CounterMetricFamily(
            "lbd_target_requests",
            "Requests (or flows) sent to each target (RequestCountPerTarget).",
            labels=["target_group", "target"],
        )
        per_target_errors = CounterMetricFamily(
            "lbd_target_connect_errors",
            "Failed connection attempts to each target.",
            labels=["target_group", "target"],
        )
        for (group, target), numbers in sorted(stats.targets.items()):
            per_target.add_metric([group, target], numbers.get("requests", 0))
            per_target_errors.add_metric([group, target], numbers.get("connection_errors", 0))
        healthy = GaugeMetricFamily(
            "lbd_healthy_targets",
            "Targets that take traffic, by zone (HealthyHostCount).",
            labels=["target_group", "zone"],
        )
        unhealthy = GaugeMetricFamily(
            "lbd_unhealthy_targets",
            "Targets failing their health checks, by zone (UnHealthyHostCount).",
            labels=["target_group", "zone"],
        )
        by_zone: dict[tuple[str, str], list[int]] = {}
        for described in stats.health:
            pair = by_zone.setdefault((described["target_group"], described["zone"]), [0, 0])
            if described["state"] in ("healthy", "unavailable"):
                pair[0] += 1
            elif described["state"] == "unhealthy":
                pair[1] += 1
        for (group, zone), (ok, bad) in sorted(by_zone.items()):
            healthy.add_metric([group, zone], ok)
            unhealthy.add_metric([group, zone], bad)
        fail_open = GaugeMetricFamily(
            "lbd_target_group_fail_open",
            "1 while too few targets are healthy and every target takes traffic.",
            labels=["target_group"],
        )
        failover = GaugeMetricFamily(
            "lbd_target_group_zonal_failover",
            "1 while this node's zone has no healthy target and other zones take its traffic.",
            labels=["target_group"],
        )
        ejections = CounterMetricFamily(
            "lbd_outlier_ejections", "Targets ejected by passive outlier detection.", labels=["target_group"]
        )
        for group, report in sorted(stats.target_groups.items()):
            fail_open.add_metric([group], int(bool(report.get("fail_open"))))
            failover.add_metric([group], int(bool(report.get("zonal_failover"))))
            ejections.add_metric([group], report.get("ejections", 0))
        yield from (per_target, per_target_errors, healthy, unhealthy, fail_open, failover, ejections)

    def _process_metrics(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "lbd_workers", "Worker processes, and how many answered this scrape.", labels=["state"]
        )
        workers.add_metric(["configured"], self.stats.workers)
        workers.add_metric(["answering"], self.stats.workers_answering)
        generation = GaugeMetricFamily("lbd_config_generation", "The config generation in service.")
        generation.add_metric([], self.stats.generation)
        yield from (workers, generation)

    def _edge_metrics(self) -> Iterator[Metric]:
        return _edge_metric_families(self.stats)

    def _discovery_metrics(self) -> Iterator[Metric]:
        labels = ["target_group", "provider"]
        up = GaugeMetricFamily(
            "lbd_discovery_up",
            "1 while the target group's discovery provider answers; 0 while it fails (its last known targets "
            "stay in service).",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "lbd_discovery_errors", "Failed attempts of the target group's discovery provider.", labels=labels
        )
        found = GaugeMetricFamily(
            "lbd_discovered_targets", "Targets the provider found at its last success.", labels=labels
        )
        for provider in self.stats.discovery:
            values = [provider["target_group"], provider["type"]]
            up.add_metric(values, int(provider["state"] == "up"))
            errors.add_metric(values, provider["errors"])
            found.add_metric(values, provider["targets"])
        yield from (up, errors, found)

    def _waf_metrics(self) -> Iterator[Metric]:
        # AWS WAF's CloudWatch metrics AllowedRequests, BlockedRequests, CountedRequests, per web ACL and
        # rule; allowed and blocked go to the rule that decided (Default_Action when none did).
        families = {
            outcome: CounterMetricFamily(
                f"lbd_waf_{outcome}_requests",
                f"Requests a web ACL {text}, by the rule that did it ({twin}).",
                labels=["web_acl", "rule"],
            )
            for outcome, text, twin in (
                ("allowed", "allowed", "AllowedRequests"),
                ("blocked", "blocked", "BlockedRequests"),
                ("counted", "counted (a count rule matched)", "CountedRequests"),
            )
        }
        for acl, outcomes in sorted(self.stats.web_acls.items()):
            for outcome, family in families.items():
                for rule, count in sorted(outcomes.get(outcome, {}).items()):
                    family.add_metric([acl, rule], count)
        yield from families.values()


def _edge_metric_families(stats: NodeStats) -> Iterator[Metric]:
    """Distributions (CloudFront's metrics in docs/metrics.md), summed over workers."""
    label = ["distribution"]
    requests = CounterMetricFamily(
        "lbd_edge_requests", "Viewer requests by cache result (Requests).", labels=[*label, "result"]
    )
    responses = CounterMetricFamily(
        "lbd_edge_responses",
        "Viewer responses by status class (4xxErrorRate, 5xxErrorRate).",
        labels=[*label, "code"],
    )
    hits = CounterMetricFamily("lbd_edge_cache_hits", "Requests answered from the cache.", labels=label)
    misses = CounterMetricFamily("lbd_edge_cache_misses", "Requests that went to an origin.", labels=label)
    bytes_ = CounterMetricFamily(
        "lbd_edge_bytes",
        "Body bytes served from the cache, sent to viewers, and received from origins.",
        labels=[*label, "source"],
    )
    origin_requests = CounterMetricFamily(
        "lbd_edge_origin_requests", "Requests sent to origins.", labels=label
    )
    failovers = CounterMetricFamily(
        "lbd_edge_origin_failovers", "Origin-group failovers to the next member.", labels=label
    )
    collapsed = CounterMetricFamily(
        "lbd_edge_collapsed_requests", "Misses answered from another request's origin fetch.", labels=label
    )
    latency = HistogramMetricFamily(
        "lbd_edge_origin_latency_seconds",
        "Origin latency to the response head (OriginLatency).",
        labels=label,
    )
    entries = GaugeMetricFamily("lbd_edge_cache_entries", "Objects in the cache, all workers.", labels=label)
    size = GaugeMetricFamily("lbd_edge_cache_bytes", "Bytes the cache holds, all workers.", labels=label)
    waiting = GaugeMetricFamily(
        "lbd_edge_collapsed_waiting", "Requests waiting now on another request's origin fetch.", labels=label
    )
    for name, totals in sorted(stats.distributions.items()):
        results = totals.get("results", {})
        for result in ("hit", "refresh_hit", "miss", "stale", "error"):
            requests.add_metric([name, result], results.get(result, 0))
        for code in ("2xx", "3xx", "4xx", "5xx"):
            responses.add_metric([name, code], totals.get("responses", {}).get(code, 0))
        hits.add_metric(
            [name], results.get("hit", 0) + results.get("refresh_hit", 0) + results.get("stale", 0)
        )
        misses.add_metric([name], results.get("miss", 0))
        bytes_.add_metric([name, "cache"], totals.get("bytes_from_cache", 0))
        bytes_.add_metric([name, "sent"], totals.get("bytes_sent", 0))
        bytes_.add_metric([name, "origin"], totals.get("bytes_from_origin", 0))
        origin_requests.add_metric([name], totals.get("origin_requests", 0))
        failovers.add_metric([name], totals.get("origin_failovers", 0))
        collapsed.add_metric([name], totals.get("collapsed", 0))
        _histogram(latency, [name], totals.get("origin_latency"))
        entries.add_metric([name], totals.get("cache_entries", 0))
        size.add_metric([name], totals.get("cache_bytes", 0))
        waiting.add_metric([name], totals.get("waiting", 0))
    yield from (requests, responses, hits, misses, bytes_, origin_requests, failovers, collapsed, latency)
    yield from (entries, size, waiting)


def _histogram(family: HistogramMetricFamily, labels: list[str], data: dict[str, Any] | None) -> None:
    counts = data["counts"] if data else [0] * (len(LATENCY_BUCKETS) + 1)
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    family.add_metric(labels, buckets, sum_value=data["sum"] if data else 0.0)


def render(stats: NodeStats) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(stats))
    return generate_latest(registry)
