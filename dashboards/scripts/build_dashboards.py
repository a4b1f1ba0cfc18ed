#!/usr/bin/env python3
"""Writes the Grafana dashboards (dashboards/grafana/dashboards/*.json) from the definitions below.

The JSON files are what Grafana loads and what is committed; this script is their source, so
panels stay uniform (data source variable, instance variable, units, layout). Edit here, then

    python3 dashboards/scripts/build_dashboards.py          # rewrite the JSON files
    python3 dashboards/scripts/build_dashboards.py --check  # fail if they are not up to date

Every histogram of the services is exported as a Prometheus histogram with buckets (`_bucket`
with `le`, `_sum`, `_count`; the bounds are in crates/runtime/src/telemetry.rs). Buckets are
counters and add up across replicas, so `histogram_quantile(φ, sum by (le) (rate(x_bucket[...])))`
is the fleet's quantile (`hq` below), `by (le, instance)` each replica's, and means are
rate(_sum) / rate(_count). A quantile is interpolated within its bucket: read it to the bucket's
precision, not to the millisecond.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
SCHEMA_VERSION = 41  # Grafana 12
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SEND_ROUTE = 'route="/v1/conversations/{id}/messages", method="POST"'
STATUS_5XX = 'status=~"5.."'
STATUS_4XX = 'status=~"4.."'
ROLE_CONSUMER = 'role="consumer"'
IN_USE = 'state="in_use"'
IDLE = 'state="idle"'
NOT_OK = 'code!="Ok"'
ROLE_PRODUCER = 'role="producer"'
# gRPC status codes that are the server's trouble, not the caller's.
GRPC_SERVER_ERRORS = "Unavailable|Internal|Unknown|DeadlineExceeded|DataLoss|Unimplemented"


def q(expr: str, legend: str = "__auto") -> dict:
    return {"expr": expr, "legendFormat": legend}


class Board:
    def __init__(self, uid: str, title: str, description: str, job: str | None):
        self.uid, self.title, self.description, self.job = uid, title, description, job
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def sel(self, extra: str = "") -> str:
        """Label matchers for this board: its job (if any) and the instance variable."""
        parts = [f'job="{self.job}"'] if self.job else []
        parts.append('instance=~"$instance"')
        if extra:
            parts.append(extra)
        return "{" + ", ".join(parts) + "}"

    def _place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def _panel(self, kind: str, title: str, description: str, targets: list[dict], w: int, h: int) -> dict:
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": [
                {"datasource": DS, "refId": chr(ord("A") + i), "range": True, "instant": False, **t}
                for i, t in enumerate(targets)
            ],
        }
        self.panels.append(panel)
        return panel

    def graph(
        self,
        title: str,
        description: str,
        targets: list[dict],
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        threshold: float | None = None,
        stack: bool = False,
    ) -> None:
        panel = self._panel("timeseries", title, description, targets, w, h)
        custom: dict = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False}
        steps: list[dict] = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
            custom["thresholdsStyle"] = {"mode": "line"}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
            custom["fillOpacity"] = 40
        panel["fieldConfig"] = {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": custom,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        }
        panel["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }

    def stat(
        self,
        title: str,
        description: str,
        targets: list[dict],
        unit: str = "short",
        w: int = 6,
        h: int = 4,
        red_at: float | None = None,
        red_below: float | None = None,
    ) -> None:
        panel = self._panel("stat", title, description, targets, w, h)
        if red_below is not None:
            steps = [{"color": "red", "value": None}, {"color": "green", "value": red_below}]
        elif red_at is not None:
            steps = [{"color": "green", "value": None}, {"color": "red", "value": red_at}]
        else:
            steps = [{"color": "green", "value": None}]
        panel["fieldConfig"] = {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        }
        panel["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        }

    def render(self) -> dict:
        up = f'up{{job="{self.job}"}}' if self.job else "up"
        for i, panel in enumerate(self.panels, start=1):
            panel["id"] = i
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["realchat"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "title": "RealChat",
                    "tags": ["realchat"],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "templating": {
                "list": [
                    {
                        "name": "datasource",
                        "label": "Data source",
                        "type": "datasource",
                        "query": "prometheus",
                        "current": {},
                        "hide": 0,
                        "refresh": 1,
                        "regex": "",
                    },
                    {
                        "name": "instance",
                        "label": "Instance" if self.job is None else "Replica",
                        "type": "query",
                        "datasource": DS,
                        "definition": f"label_values({up}, instance)",
                        "query": {"query": f"label_values({up}, instance)", "refId": "instances"},
                        "current": {},
                        "includeAll": True,
                        "allValue": ".*",
                        "multi": True,
                        "refresh": 2,
                        "sort": 1,
                        "hide": 0,
                        "regex": "",
                    },
                ]
            },
            "panels": self.panels,
        }


# Queries shared by the panels.


def hq(b: Board, metric: str, phi: str, by: str = "", extra: str = "") -> str:
    """The φ-quantile of histogram `metric` over every series the board selects, per `by`.

    Buckets are counters, so they add up across replicas: `sum by (le)` of their rates is the
    fleet's histogram, and `by: "instance"` gives one quantile per replica."""
    labels = ", ".join(["le"] + [label.strip() for label in by.split(",") if label.strip()])
    return f"histogram_quantile({phi}, sum by ({labels}) (rate({metric}_bucket{b.sel(extra)}[{RATE}])))"


def mean(b: Board, metric: str, by: str = "", extra: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return (
        f"sum{grouping} (rate({metric}_sum{b.sel(extra)}[{RATE}])) / "
        f"sum{grouping} (rate({metric}_count{b.sel(extra)}[{RATE}]))"
    )


def lag(b: Board, by: str = "group, topic") -> str:
    """A consumer group's lag: each member reports every partition of the topic and 0 for those it
    does not own, so the owner's figure is the max across replicas; then the sum over partitions."""
    return (
        f"sum by ({by}) (max by (job, group, topic, partition) "
        f"(kafka_consumer_lag_messages{b.sel()}))"
    )


# Panels shared by the services that have them.


def process_panels(b: Board) -> None:
    b.row("Process")
    b.graph(
        "CPU",
        "CPU time the process used per second, user and system (1 = one core busy).",
        [q(f"sum by (instance) (rate(process_cpu_seconds_total{b.sel()}[{RATE}]))", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Resident memory",
        "Memory the process holds in RAM (VmRSS).",
        [q(f"sum by (instance) (process_resident_memory_bytes{b.sel()})", "{{instance}}")],
        unit="bytes",
        w=8,
    )
    b.graph(
        "File descriptors, of the limit",
        "Open file descriptors (sockets, connections, files) as a share of the process's soft limit: at 100% "
        "new sockets and connections are refused (alert FileDescriptorsNearLimit above 80% for 5 minutes).",
        [
            q(
                f"sum by (instance) (process_open_fds{b.sel()}) / sum by (instance) (process_max_fds{b.sel()})",
                "{{instance}}",
            )
        ],
        unit="percentunit",
        w=8,
        threshold=0.8,
    )
    b.graph(
        "Open file descriptors",
        "File descriptors open, and the soft limit each process runs with.",
        [
            q(f"sum by (instance) (process_open_fds{b.sel()})", "open {{instance}}"),
            q(f"max by (instance) (process_max_fds{b.sel()})", "limit {{instance}}"),
        ],
        w=8,
    )
    b.graph(
        "Threads",
        "Threads of the process (the async runtime's workers, its blocking pool, librdkafka's).",
        [q(f"sum by (instance) (process_threads{b.sel()})", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Uptime",
        "Time since the process started: a drop to 0 is a restart.",
        [q(f"time() - max by (instance) (process_start_time_seconds{b.sel()})", "{{instance}}")],
        unit="s",
        w=8,
    )


def grpc_panels(b: Board) -> None:
    method = 'method!="/grpc.health.v1.Health/Check"'
    b.row("gRPC server")
    b.graph(
        "Calls by method",
        "Calls answered per second, by method (health checks of load balancers and probes included). "
        "`other`: a path that is none of this server's methods.",
        [q(f"sum by (method) (rate(grpc_server_requests_total{b.sel()}[{RATE}]))", "{{method}}")],
        unit="reqps",
        w=8,
    )
    b.graph(
        "Calls not OK, by method and code",
        "Calls answered with another status than OK. Unavailable: a dependency (PostgreSQL, auth) is down; "
        "Internal or Unknown: a bug; NotFound, InvalidArgument, AlreadyExists, PermissionDenied: the caller's "
        "request (the gateway maps them to 4xx).",
        [
            q(
                f"sum by (method, code) (rate(grpc_server_requests_total{b.sel(NOT_OK)}[{RATE}]))",
                "{{code}} {{method}}",
            )
        ],
        unit="reqps",
        w=8,
    )
    b.graph(
        "Internal TLS handshakes refused",
        "Connections refused in the mutual-TLS handshake: no certificate, another authority's, one that "
        "does not name an allowed caller, or expired (alert InternalTlsHandshakesRefused).",
        [
            q(
                f"sum by (instance) (increase(grpc_server_tls_handshake_failures_total{b.sel()}[{RATE}]))",
                "{{instance}}",
            )
        ],
        w=8,
    )
    b.graph(
        "p99 by method",
        "99th percentile of the time from a call's arrival to its response, per method, over every replica "
        "(health checks left out).",
        [q(hq(b, "grpc_server_request_duration_seconds", "0.99", "method", method), "{{method}}")],
        unit="s",
    )
    b.graph(
        "Mean by method",
        "Mean time from a call's arrival to its response, per method, over every replica (health checks "
        "left out).",
        [q(mean(b, "grpc_server_request_duration_seconds", "method", method), "{{method}}")],
        unit="s",
    )


def pool_panels(b: Board) -> None:
    b.row("PostgreSQL pool")
    b.graph(
        "Pool connections",
        "Connections of each replica's pool, in use and idle, and the most it opens "
        "(REALCHAT_<SERVICE>_DATABASE_MAX_CONNECTIONS). Read at each scrape.",
        [
            q(f"sum by (instance, database) (db_pool_connections{b.sel(IN_USE)})", "in use {{instance}}"),
            q(f"sum by (instance, database) (db_pool_connections{b.sel(IDLE)})", "idle {{instance}}"),
            q(f"max by (instance, database) (db_pool_max_connections{b.sel()})", "max {{instance}}"),
        ],
    )
    b.graph(
        "Pool in use, of its maximum",
        "Connections in use as a share of the pool's maximum. At 100% requests wait for a connection, and give up "
        "after the acquire timeout (3 s: a 503). How many wait is not exported.",
        [
            q(
                f"sum by (instance, database) (db_pool_connections{b.sel(IN_USE)}) / "
                f"max by (instance, database) (db_pool_max_connections{b.sel()})",
                "{{instance}} {{database}}",
            )
        ],
        unit="percentunit",
        threshold=0.9,
    )


def producer_panels(b: Board) -> None:
    b.graph(
        "Producer's brokers",
        "1 while the relay's producer is connected to the broker (librdkafka's statistics, every 5 s). "
        "0 during a broker outage; the relay also replaces its producer after one.",
        [q(f"max by (instance, broker) (kafka_broker_up{b.sel(ROLE_PRODUCER)})", "{{instance}} {{broker}}")],
        w=12,
    )
    b.graph(
        "Producer: round trip and queue, p99",
        "99th percentile over the last 5 s of the producer's request round trip to each broker, and of the time "
        "records waited in its queue before being sent (librdkafka's own windows: per replica, not combinable).",
        [
            q(f"max by (instance, broker) (kafka_broker_rtt_p99_seconds{b.sel(ROLE_PRODUCER)})", "round trip {{instance}} {{broker}}"),
            q(f"max by (instance, broker) (kafka_producer_queue_latency_p99_seconds{b.sel()})", "queue {{instance}} {{broker}}"),
        ],
        unit="s",
        w=12,
    )


def outbox_panels(b: Board) -> None:
    b.row("Outbox relay")
    b.graph(
        "Outbox backlog",
        "Rows waiting in the outbox, as each replica samples it every 5 s (they share one table). "
        "Grows while the broker is down and drains in order when it returns.",
        [q(f"max by (instance) (outbox_backlog_rows{b.sel()})", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Oldest outbox row",
        "Age of the oldest row not yet published; 0 when the outbox is empty. Alert OutboxOldestRowOld above 60 s.",
        [q(f"max by (instance) (outbox_oldest_row_age_seconds{b.sel()})", "{{instance}}")],
        unit="s",
        w=8,
        threshold=60,
    )
    b.graph(
        "Relay leader",
        "1 on the replica whose relay holds the outbox lock and publishes. Exactly one per database; "
        "a replica that never led has no line.",
        [q(f"outbox_relay_leader{b.sel()}", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Events published, failed and refused",
        "Published: acknowledged by the broker and deleted. Failed: not acknowledged, kept for the next round "
        "(broker trouble). Refused: refused for good by the producer, left in the table with its key held back.",
        [
            q(f"sum by (topic) (rate(outbox_published_total{b.sel()}[{RATE}]))", "published {{topic}}"),
            q(f"sum by (topic) (rate(outbox_publish_failed_total{b.sel()}[{RATE}]))", "failed {{topic}}"),
            q(f"sum by (topic) (rate(outbox_refused_total{b.sel()}[{RATE}]))", "refused {{topic}}"),
        ],
        unit="ops",
    )
    b.graph(
        "Commit to broker acknowledgement",
        "Time from a row's commit to the broker's acknowledgement of its event (only the leading relay publishes).",
        [
            q(hq(b, "outbox_publish_delay_seconds", "0.99"), "p99"),
            q(hq(b, "outbox_publish_delay_seconds", "0.5"), "p50"),
            q(mean(b, "outbox_publish_delay_seconds"), "mean"),
        ],
        unit="s",
    )
    producer_panels(b)


def consumer_panels(b: Board) -> None:
    b.row("Kafka consumer")
    b.graph(
        "Events consumed, by outcome",
        "ok: handled. retried: a handler error, tried again with backoff. waited: the handler's database was down, "
        "the event waits. dead_lettered: given up on and written to the topic's .dlq (alert DeadLetteredEvents).",
        [q(f"sum by (topic, outcome) (rate(consumer_events_total{b.sel()}[{RATE}]))", "{{topic}} {{outcome}}")],
        unit="ops",
    )
    b.graph(
        "Handler time per event",
        "99th percentile and mean over every replica, per topic.",
        [
            q(hq(b, "consumer_handle_seconds", "0.99", "topic"), "p99 {{topic}}"),
            q(mean(b, "consumer_handle_seconds", "topic"), "mean {{topic}}"),
        ],
        unit="s",
    )
    b.graph(
        "Consumer lag",
        "Messages of the topic the group has not handled yet (high watermark less the position reached), summed "
        "over partitions; each partition's figure comes from the member that owns it. Rises while the handlers "
        "fall behind or the group rebalances (alert ConsumerLagGrowing).",
        [q(lag(b), "{{group}} {{topic}}")],
        w=8,
    )
    b.graph(
        "Lag by partition",
        "The same, per partition: one partition far ahead of the others is one hot key or one slow member.",
        [q(lag(b, "group, topic, partition"), "{{group}} {{topic}}[{{partition}}]")],
        w=8,
    )
    b.graph(
        "Assigned partitions",
        "Partitions each member of the group holds (sampled every 5 s). The members' sum is the topic's partition "
        "count when healthy; all 0 during a broker outage (alert ConsumerGroupWithoutPartitions otherwise).",
        [q(f"sum by (instance, group) (consumer_assigned_partitions{b.sel()})", "{{instance}} {{group}}")],
        w=8,
        stack=True,
    )
    b.graph(
        "Rebalances",
        "Rebalances of the group as each member saw them: a member joined, left or was replaced.",
        [q(f"sum by (instance, group) (increase(kafka_consumer_rebalances_total{b.sel()}[{RATE}]))", "{{instance}} {{group}}")],
    )
    b.graph(
        "Consumer rebuilds",
        "A member replaced by a new one. brokers_lost: after losing every broker. unassigned: stuck without "
        "partitions while events waited (alert ConsumerRebuiltUnassigned). rejoin_requested: a dead delivery "
        "replica's partitions are being moved.",
        [q(f"sum by (instance, reason) (increase(consumer_rebuilds_total{b.sel()}[{RATE}]))", "{{instance}} {{reason}}")],
    )
    b.graph(
        "Consumer's brokers",
        "1 while the consumer is connected to the broker (librdkafka's statistics, every 5 s).",
        [q(f"max by (instance, broker) (kafka_broker_up{b.sel(ROLE_CONSUMER)})", "{{instance}} {{broker}}")],
    )
    b.graph(
        "Fetch round trip, p99",
        "99th percentile over the last 5 s of the consumer's request round trips (fetches, commits) to each broker "
        "(librdkafka's own window: per replica, not combinable). A fetch waits up to REALCHAT_KAFKA_FETCH_WAIT_MS "
        "when there is nothing to read, so idle topics show that wait.",
        [q(f"max by (instance, broker) (kafka_broker_rtt_p99_seconds{b.sel(ROLE_CONSUMER)})", "{{instance}} {{broker}}")],
        unit="s",
    )


# The dashboards.


def overview() -> Board:
    b = Board(
        "realchat-overview",
        "RealChat overview",
        "Health at a glance: is it up, are messages flowing and how fast, errors, outbox, consumers, sockets.",
        None,
    )
    b.row("Health")
    b.stat(
        "Targets up, by service",
        "Scrape targets answering, per job. Alerts ServiceDown and DeliveryReplicaDown fire after 1 minute down.",
        [q('sum by (job) (up{instance=~"$instance"})', "{{job}}")],
        w=10,
    )
    b.stat(
        "Targets down",
        "Scrape targets not answering.",
        [q('count(up{instance=~"$instance"} == 0) or vector(0)', "down")],
        w=4,
        red_at=1,
    )
    b.stat(
        "Alerts firing",
        "Alerts of the repository's rules firing in this Prometheus.",
        [q('count(ALERTS{alertstate="firing"}) or vector(0)', "firing")],
        w=4,
        red_at=1,
    )
    b.stat(
        "Relay leaders",
        "Outbox relays publishing, per database: must be 1 each (alert OutboxRelayLeaderAbsent).",
        [q('sum by (job) (outbox_relay_leader{instance=~"$instance"})', "{{job}}")],
        w=6,
        red_below=1,
    )
    b.stat(
        "Open sockets",
        "WebSocket sessions open on all delivery replicas.",
        [q('sum(delivery_sessions{instance=~"$instance"}) or vector(0)', "sockets")],
        w=5,
    )
    b.stat(
        "Consumer lag",
        "Messages not yet handled, summed over every consumer group (alert ConsumerLagGrowing).",
        [q(f"sum({lag(b)}) or vector(0)", "messages")],
        w=5,
        red_at=1000,
    )
    b.stat(
        "Dead-lettered, last hour",
        "Events consumers gave up on and wrote to a .dlq in the last hour (alert DeadLetteredEvents).",
        [
            q(
                'sum(increase(consumer_events_total{outcome="dead_lettered", instance=~"$instance"}[1h])) or vector(0)',
                "events",
            )
        ],
        w=5,
        red_at=1,
    )
    b.stat(
        "Commit to socket, p99",
        "99th percentile of the time from a message's commit to its frame on a socket, over every delivery replica.",
        [q(hq(b, "delivery_commit_to_socket_seconds", "0.99"), "p99")],
        unit="s",
        w=5,
        red_at=1,
    )
    b.stat(
        "Redis breakers open",
        "Gateways whose rate limiter skips Redis after a failure (limits kept per process; alert RedisBreakerOpen).",
        [q('sum(gateway_redis_breaker_open{instance=~"$instance"}) or vector(0)', "open")],
        w=4,
        red_at=1,
    )

    b.row("Messages")
    b.graph(
        "Messages",
        "Stored: sends committed by messaging (not retries of one already stored). Pushed: message frames written "
        "to sockets by all delivery replicas (one per member socket, so a multiple of stored).",
        [
            q(f'sum(rate(messaging_sends_total{{outcome="created", instance=~"$instance"}}[{RATE}]))', "stored/s"),
            q(f'sum(rate(messaging_sends_total{{outcome="duplicate", instance=~"$instance"}}[{RATE}]))', "retries of a stored send/s"),
            q(f'sum(rate(delivery_frames_sent_total{{type="message", instance=~"$instance"}}[{RATE}]))', "pushed to sockets/s"),
        ],
        unit="ops",
        w=8,
    )
    b.graph(
        "End to end: commit to socket",
        "From a message's commit in messaging to its frame written to a socket: the latency a user sees. "
        "Quantiles over every delivery replica (their buckets add up).",
        [
            q(hq(b, "delivery_commit_to_socket_seconds", "0.99"), "p99"),
            q(hq(b, "delivery_commit_to_socket_seconds", "0.5"), "p50"),
            q(mean(b, "delivery_commit_to_socket_seconds"), "mean"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Send latency",
        "POST /v1/conversations/{id}/messages at the gateways (alert SendLatencyP99High above 500 ms), and the part "
        "spent in messaging from arrival to commit; quantiles over every replica.",
        [
            q(hq(b, "gateway_http_request_duration_seconds", "0.99", extra=SEND_ROUTE), "gateway p99"),
            q(hq(b, "messaging_send_seconds", "0.99"), "messaging p99"),
            q(hq(b, "messaging_send_seconds", "0.5"), "messaging p50"),
        ],
        unit="s",
        w=8,
        threshold=0.5,
    )

    b.row("Errors")
    b.graph(
        "5xx responses",
        "Gateway responses with a 5xx status, by route and status. 503 is a dependency down (with Retry-After); "
        "500 is a bug.",
        [
            q(
                f'sum by (route, status) (rate(gateway_http_requests_total{{status=~"5..", instance=~"$instance"}}[{RATE}]))',
                "{{status}} {{route}}",
            )
        ],
        unit="reqps",
        w=8,
    )
    b.graph(
        "5xx ratio",
        "Share of gateway requests answered 5xx (alert GatewayHighErrorRatio above 5% for 5 minutes).",
        [
            q(
                f'sum(rate(gateway_http_requests_total{{status=~"5..", instance=~"$instance"}}[{RATE}])) / '
                f'sum(rate(gateway_http_requests_total{{instance=~"$instance"}}[{RATE}]))',
                "5xx ratio",
            )
        ],
        unit="percentunit",
        w=8,
        threshold=0.05,
    )
    b.graph(
        "Dead-lettered events",
        "Events a consumer gave up on and wrote to <topic>.dlq (alert DeadLetteredEvents on any).",
        [
            q(
                f'sum by (job, topic) (increase(consumer_events_total{{outcome="dead_lettered", instance=~"$instance"}}[{RATE}]))',
                "{{job}} {{topic}}",
            )
        ],
        w=8,
    )
    b.graph(
        "Redis trouble",
        "Failed Redis operations in delivery (forwards, routes, presence pause) and rate-limit checks a gateway "
        "made alone, without Redis (alerts DeliveryRedisErrors, RateLimitsFailingOpen, RedisBreakerOpen).",
        [
            q(f'sum by (instance) (rate(delivery_redis_errors_total{{instance=~"$instance"}}[{RATE}]))', "{{instance}} errors"),
            q(
                f'sum by (instance) (rate(gateway_rate_limit_fail_open_total{{instance=~"$instance"}}[{RATE}]))',
                "{{instance}} limits kept locally",
            ),
        ],
        unit="ops",
        w=8,
    )
    b.graph(
        "Outbox publish failures",
        "Events the broker did not acknowledge (retried), and events refused for good (held in the outbox).",
        [
            q(f'sum by (job) (rate(outbox_publish_failed_total{{instance=~"$instance"}}[{RATE}]))', "{{job}} failed"),
            q(f'sum by (job) (rate(outbox_refused_total{{instance=~"$instance"}}[{RATE}]))', "{{job}} refused"),
        ],
        unit="ops",
        w=8,
    )
    b.graph(
        "Internal calls failing",
        "gRPC calls answered Unavailable, Internal, Unknown or DeadlineExceeded, by service and code, and "
        "connections refused in the mutual-TLS handshake (alert InternalTlsHandshakesRefused).",
        [
            q(
                f'sum by (job, code) (rate(grpc_server_requests_total{{code=~"{GRPC_SERVER_ERRORS}", instance=~"$instance"}}[{RATE}]))',
                "{{job}} {{code}}",
            ),
            q(
                f'sum by (job) (rate(grpc_server_tls_handshake_failures_total{{instance=~"$instance"}}[{RATE}]))',
                "{{job}} TLS handshakes refused",
            ),
        ],
        unit="ops",
        w=8,
    )

    b.row("Outbox")
    b.graph(
        "Outbox backlog",
        "Rows waiting in each service's outbox (auth: registrations; messaging: messages, members, reads).",
        [q('max by (job) (outbox_backlog_rows{instance=~"$instance"})', "{{job}}")],
        w=12,
    )
    b.graph(
        "Oldest outbox row",
        "Age of the oldest unpublished row per database (alert OutboxOldestRowOld above 60 s).",
        [q('max by (job) (outbox_oldest_row_age_seconds{instance=~"$instance"})', "{{job}}")],
        unit="s",
        w=12,
        threshold=60,
    )

    b.row("Consumers and sockets")
    b.graph(
        "Open sockets",
        "WebSocket sessions open on each delivery replica.",
        [q('sum by (instance) (delivery_sessions{instance=~"$instance"})', "{{instance}}")],
        w=12,
        stack=True,
    )
    b.graph(
        "Consumer lag, by group",
        "Messages each consumer group has not handled yet, over its partitions (alert ConsumerLagGrowing). "
        "delivery: live messages not yet pushed; profile, messaging: registrations not yet applied.",
        [q(lag(b, "group"), "{{group}}")],
        w=12,
    )
    b.graph(
        "Assigned partitions, by group",
        "Partitions held by the members of each consumer group. 0 for a whole group while the broker is up means "
        "nothing of that group is consumed (alert ConsumerGroupWithoutPartitions).",
        [q('sum by (group) (consumer_assigned_partitions{instance=~"$instance"})', "{{group}}")],
        w=12,
    )
    b.graph(
        "Consumer rebuilds and rebalances",
        "Members replaced by a new one, by group and reason (unassigned: alert ConsumerRebuiltUnassigned), and "
        "rebalances of each group.",
        [
            q(
                f'sum by (group, reason) (increase(consumer_rebuilds_total{{instance=~"$instance"}}[{RATE}]))',
                "rebuilt {{group}} {{reason}}",
            ),
            q(
                f'max by (group) (increase(kafka_consumer_rebalances_total{{instance=~"$instance"}}[{RATE}]))',
                "rebalanced {{group}}",
            ),
        ],
        w=12,
    )
    process_panels(b)
    return b


def gateway() -> Board:
    b = Board("realchat-gateway", "RealChat gateway", "The public HTTP API and WebSocket proxy: RED per route, rate limits, Redis, tokens.", "gateway")
    b.row("Requests")
    b.graph(
        "Requests by route",
        "Requests per second by method and matched route template.",
        [q(f"sum by (method, route) (rate(gateway_http_requests_total{b.sel()}[{RATE}]))", "{{method}} {{route}}")],
        unit="reqps",
    )
    b.graph(
        "Responses by status",
        "Responses per second by status code (101: WebSocket upgrades).",
        [q(f"sum by (status) (rate(gateway_http_requests_total{b.sel()}[{RATE}]))", "{{status}}")],
        unit="reqps",
        stack=True,
    )
    b.graph(
        "5xx by route",
        "503: a dependency is down or the gateway shed load; 500: a bug.",
        [
            q(
                f"sum by (method, route, status) (rate(gateway_http_requests_total{b.sel(STATUS_5XX)}[{RATE}]))",
                "{{status}} {{method}} {{route}}",
            )
        ],
        unit="reqps",
    )
    b.graph(
        "4xx by route",
        "Client errors: invalid input, missing or expired tokens, rate limits (429), not a member (403/404).",
        [
            q(
                f"sum by (method, route, status) (rate(gateway_http_requests_total{b.sel(STATUS_4XX)}[{RATE}]))",
                "{{status}} {{method}} {{route}}",
            )
        ],
        unit="reqps",
    )
    b.row("Latency")
    b.graph(
        "p99 by route",
        "99th percentile per route over every gateway replica (WebSocket upgrades record the upgrade only).",
        [q(hq(b, "gateway_http_request_duration_seconds", "0.99", "method, route"), "{{method}} {{route}}")],
        unit="s",
    )
    b.graph(
        "Mean by route",
        "Mean request duration per route, over all replicas.",
        [q(mean(b, "gateway_http_request_duration_seconds", "method, route"), "{{method}} {{route}}")],
        unit="s",
    )
    b.graph(
        "Sends",
        "POST /v1/conversations/{id}/messages: p99 and p50 over every replica, and each replica's p99 "
        "(alert SendLatencyP99High above 500 ms).",
        [
            q(hq(b, "gateway_http_request_duration_seconds", "0.99", extra=SEND_ROUTE), "p99"),
            q(hq(b, "gateway_http_request_duration_seconds", "0.5", extra=SEND_ROUTE), "p50"),
            q(hq(b, "gateway_http_request_duration_seconds", "0.99", "instance", SEND_ROUTE), "p99 {{instance}}"),
        ],
        unit="s",
        w=24,
        threshold=0.5,
    )
    b.row("Limits and tokens")
    b.graph(
        "Rate limited",
        "Requests refused with 429 by scope (auth_ip: per client IP on auth routes; user: per user).",
        [q(f"sum by (scope) (rate(gateway_rate_limited_total{b.sel()}[{RATE}]))", "{{scope}}")],
        unit="reqps",
        w=6,
    )
    b.graph(
        "Rate limits kept per replica",
        "Limit checks made by the replica alone because Redis did not answer or its breaker was open: each "
        "replica enforces the limits on its own meanwhile (alert RateLimitsFailingOpen).",
        [q(f"sum by (scope) (rate(gateway_rate_limit_fail_open_total{b.sel()}[{RATE}]))", "{{scope}}")],
        unit="reqps",
        w=6,
    )
    b.graph(
        "Shed",
        "Requests refused with 503 at once because REALCHAT_GATEWAY_MAX_IN_FLIGHT were in progress.",
        [q(f"sum by (instance) (rate(gateway_requests_shed_total{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="reqps",
        w=6,
    )
    b.graph(
        "Access tokens refused",
        "By reason: missing, expired, invalid, revoked.",
        [q(f"sum by (reason) (rate(gateway_tokens_refused_total{b.sel()}[{RATE}]))", "{{reason}}")],
        unit="reqps",
        w=6,
    )
    b.row("Redis")
    b.graph(
        "Redis circuit breaker",
        "1 while a replica's rate limiter skips Redis after a failure and keeps limits in the process alone "
        "(alert RedisBreakerOpen after a minute). Only with rate limits on.",
        [q(f"max by (instance) (gateway_redis_breaker_open{b.sel()})", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Redis time",
        "Time of each rate-limit call to Redis, answered or failed (calls the breaker skipped are not counted): "
        "p99 and p50 over every replica, each replica's p99. A call gives up after 1 s.",
        [
            q(hq(b, "gateway_redis_seconds", "0.99"), "p99"),
            q(hq(b, "gateway_redis_seconds", "0.5"), "p50"),
            q(hq(b, "gateway_redis_seconds", "0.99", "instance"), "p99 {{instance}}"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Background tasks refused",
        "Best-effort tasks not started because the most allowed were running, by kind (gateway_handshakes: "
        "WebSocket proxy handshakes to delivery).",
        [q(f"sum by (kind) (rate(background_tasks_refused_total{b.sel()}[{RATE}]))", "{{kind}}")],
        unit="ops",
        w=8,
    )
    process_panels(b)
    return b


def auth() -> Board:
    b = Board("realchat-auth", "RealChat auth", "Registrations, logins, refresh tokens, password hashing, gRPC, the pool and the users outbox.", "auth")
    b.row("Accounts")
    for metric, title, description in (
        ("auth_registrations_total", "Registrations", "By outcome: created, taken (username in use), invalid."),
        ("auth_logins_total", "Logins", "By outcome: ok, invalid_credentials, throttled."),
        (
            "auth_refreshes_total",
            "Token refreshes",
            "By outcome: ok, invalid, reuse_detected (a spent refresh token presented again: its family is revoked).",
        ),
    ):
        b.graph(
            title,
            description,
            [q(f"sum by (outcome) (rate({metric}{b.sel()}[{RATE}]))", "{{outcome}}")],
            unit="ops",
            w=8,
        )
    b.graph(
        "Password hashing",
        "Time to hash or verify one password (argon2id, 19 MiB each): the cost of every registration and login. "
        "Grows when more run at once than REALCHAT_AUTH_HASH_CONCURRENCY. Over every replica.",
        [
            q(hq(b, "auth_password_hash_seconds", "0.99"), "p99"),
            q(hq(b, "auth_password_hash_seconds", "0.5"), "p50"),
            q(mean(b, "auth_password_hash_seconds"), "mean"),
        ],
        unit="s",
        w=16,
    )
    b.graph(
        "Password hashes",
        "Hashes and verifications per second.",
        [q(f"sum by (instance) (rate(auth_password_hash_seconds_count{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="ops",
        w=8,
    )
    grpc_panels(b)
    pool_panels(b)
    outbox_panels(b)
    process_panels(b)
    return b


def messaging() -> Board:
    b = Board(
        "realchat-messaging",
        "RealChat messaging",
        "Sends (group commit), conversations, gRPC, the pool, the messages outbox and the users consumer.",
        "messaging",
    )
    b.row("Sends")
    b.graph(
        "Sends",
        "created: stored. duplicate: a retry of a send already stored (same client_msg_id), answered with the original.",
        [q(f"sum by (outcome) (rate(messaging_sends_total{b.sel()}[{RATE}]))", "{{outcome}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Send time",
        "From a send's arrival at messaging to its commit, queueing for a writer included: p99 and p50 over every "
        "replica, each replica's p99.",
        [
            q(hq(b, "messaging_send_seconds", "0.99"), "p99"),
            q(hq(b, "messaging_send_seconds", "0.5"), "p50"),
            q(hq(b, "messaging_send_seconds", "0.99", "instance"), "p99 {{instance}}"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Group commit",
        "Sends committed together in one transaction: grows when sends queue for one of "
        "REALCHAT_MESSAGING_SEND_WRITERS writers.",
        [
            q(hq(b, "messaging_send_batch_size", "0.99"), "p99"),
            q(mean(b, "messaging_send_batch_size"), "mean"),
            q(f"sum(rate(messaging_send_batch_size_count{b.sel()}[{RATE}]))", "transactions/s"),
        ],
        w=8,
    )
    b.graph(
        "Conversations created",
        "By kind: direct, group.",
        [q(f"sum by (kind) (rate(messaging_conversations_created_total{b.sel()}[{RATE}]))", "{{kind}}")],
        unit="ops",
    )
    b.graph(
        "Members confirmed with auth",
        "Member ids messaging had not yet learned from registration events and asked auth about: how often "
        "the users consumer is behind the first use of a user. unknown: auth does not know the id either.",
        [q(f"sum by (outcome) (rate(messaging_users_confirmed_with_auth_total{b.sel()}[{RATE}]))", "{{outcome}}")],
        unit="ops",
    )
    grpc_panels(b)
    pool_panels(b)
    outbox_panels(b)
    consumer_panels(b)
    process_panels(b)
    return b


def profile() -> Board:
    b = Board(
        "realchat-profile",
        "RealChat profile",
        "Profiles built from registration events, edits, the username directory, gRPC, the pool and the users consumer.",
        "profile",
    )
    b.row("Profiles")
    b.graph(
        "Profiles",
        "Created from user.registered events; filled from auth's record when the event had not arrived yet; edited.",
        [
            q(f"sum(rate(profile_profiles_created_total{b.sel()}[{RATE}]))", "created from events"),
            q(f"sum(rate(profile_profiles_filled_from_auth_total{b.sel()}[{RATE}]))", "filled from auth"),
            q(f"sum(rate(profile_profiles_updated_total{b.sel()}[{RATE}]))", "edited"),
        ],
        unit="ops",
        w=8,
    )
    b.graph(
        "Directory search time",
        "One prefix search of the username directory: p99, p50 and mean over every replica.",
        [
            q(hq(b, "profile_search_seconds", "0.99"), "p99"),
            q(hq(b, "profile_search_seconds", "0.5"), "p50"),
            q(mean(b, "profile_search_seconds"), "mean"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Directory searches",
        "Searches per second.",
        [q(f"sum by (instance) (rate(profile_search_seconds_count{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="ops",
        w=8,
    )
    grpc_panels(b)
    pool_panels(b)
    consumer_panels(b)
    process_panels(b)
    return b


def delivery() -> Board:
    b = Board(
        "realchat-delivery",
        "RealChat delivery",
        "WebSockets per replica, what is pushed and how fast, fan-out, forwards between replicas, Redis and "
        "presence, and the messages consumer.",
        "delivery",
    )
    b.row("Sockets")
    b.graph(
        "Open sockets",
        "WebSocket sessions open on each replica.",
        [q(f"sum by (instance) (delivery_sessions{b.sel()})", "{{instance}}")],
        w=8,
        stack=True,
    )
    b.graph(
        "Sessions opened",
        "Sockets opened per second, per replica. A jump on the survivors follows a replica's or the gateway's restart.",
        [q(f"sum by (instance) (rate(delivery_sessions_opened_total{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Sessions closed, by reason",
        "client, idle, slow_reader (1013), token_expired (1008), frame_too_large (1009), too_many_frames, "
        "too_many_sockets, shutdown (1001), error.",
        [q(f"sum by (reason) (rate(delivery_sessions_closed_total{b.sel()}[{RATE}]))", "{{reason}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Sockets closed, by close code",
        "The close code the server sent or the client did: 1000 normal, 1001 going away (shutdown), 1008 policy "
        "(token expired), 1009 too large, 1013 try again later (slow reader); none: the connection ended without "
        "a close frame; other: an application's own code.",
        [q(f"sum by (code) (rate(delivery_socket_closes_total{b.sel()}[{RATE}]))", "{{code}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Upgrades refused",
        "WebSocket upgrades refused because the user already has as many sockets as allowed, by where it was "
        "counted (cluster: through Redis; replica: this replica alone, Redis being unusable).",
        [q(f"sum by (where) (rate(delivery_sockets_refused_total{b.sel()}[{RATE}]))", "{{where}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Client frames refused",
        "Frames from clients refused for the socket's frame budget, by reason (rate_limited, abusive, "
        "resume_deferred).",
        [q(f"sum by (reason) (rate(delivery_frames_refused_total{b.sel()}[{RATE}]))", "{{reason}}")],
        unit="ops",
        w=8,
    )
    b.row("Pushes")
    b.graph(
        "Commit to socket",
        "From a message's commit in messaging to its frame written to a socket: p99 and p50 over every replica, "
        "each replica's p99.",
        [
            q(hq(b, "delivery_commit_to_socket_seconds", "0.99"), "p99"),
            q(hq(b, "delivery_commit_to_socket_seconds", "0.5"), "p50"),
            q(hq(b, "delivery_commit_to_socket_seconds", "0.99", "instance"), "p99 {{instance}}"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Frames written",
        "Frames written to sockets per second, by type.",
        [q(f"sum by (type) (rate(delivery_frames_sent_total{b.sel()}[{RATE}]))", "{{type}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Send queue",
        "Pushes queued for each replica's sockets and not yet taken by their sessions (read at each scrape). "
        "Grows when sockets read slower than messages arrive; a socket whose own queue fills is closed as a "
        "slow reader (1013).",
        [q(f"sum by (instance) (delivery_send_queue_frames{b.sel()})", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Fan-out size",
        "Sockets of a replica one event was handed to (from the consumer, a forward, a typing notice or a "
        "presence change): p99, p50 and mean over every replica, and events fanned out per second.",
        [
            q(hq(b, "delivery_fanout_sockets", "0.99"), "p99"),
            q(hq(b, "delivery_fanout_sockets", "0.5"), "p50"),
            q(mean(b, "delivery_fanout_sockets"), "mean"),
        ],
        w=8,
    )
    b.graph(
        "Fan-out time",
        "From receiving an event to handing it to the last of the replica's sockets: p99 and p50 over every "
        "replica, each replica's p99.",
        [
            q(hq(b, "delivery_fanout_seconds", "0.99"), "p99"),
            q(hq(b, "delivery_fanout_seconds", "0.5"), "p50"),
            q(hq(b, "delivery_fanout_seconds", "0.99", "instance"), "p99 {{instance}}"),
        ],
        unit="s",
        w=8,
    )
    b.graph(
        "Events fanned out",
        "Events handed to this replica's sockets per second.",
        [q(f"sum by (instance) (rate(delivery_fanout_sockets_count{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Messages filled from history",
        "gap: a session saw seq N without N-1. resume: a client reconnected with its cursors. resync: every "
        "session was told to catch up after the forwarding channel came back.",
        [q(f"sum by (reason) (rate(delivery_gap_filled_messages_total{b.sel()}[{RATE}]))", "{{reason}}")],
        unit="ops",
        w=12,
    )
    b.graph(
        "Membership checks",
        "Members of a conversation asked of messaging for a client frame (typing, resuming a conversation the "
        "socket did not know), by answer: member, not_member, unavailable (messaging did not answer).",
        [q(f"sum by (answer) (rate(delivery_membership_checks_total{b.sel()}[{RATE}]))", "{{answer}}")],
        unit="ops",
        w=12,
    )
    b.row("Forwards between replicas")
    b.graph(
        "Forwards, by outcome",
        "sent; no_listener: the target replica was not subscribed; failed: Redis did not take it.",
        [q(f"sum by (outcome) (rate(delivery_forwards_total{b.sel()}[{RATE}]))", "{{outcome}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Forwards, by target",
        "Forwards published to each other replica (its node id, REALCHAT_DELIVERY_NODE_ID), by outcome.",
        [q(f"sum by (target, outcome) (rate(delivery_forwards_total{b.sel()}[{RATE}]))", "{{target}} {{outcome}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Forwards received",
        "Forwards from other replicas, per receiving replica.",
        [q(f"sum by (instance) (rate(delivery_forwards_received_total{b.sel()}[{RATE}]))", "{{instance}}")],
        unit="ops",
        w=8,
    )
    b.row("Redis and presence")
    b.graph(
        "Redis errors, by operation",
        "Failed or timed-out Redis operations (alert DeliveryRedisErrors): routes, claims, heartbeats, forwards, "
        "presence sweeps.",
        [q(f"sum by (op) (rate(delivery_redis_errors_total{b.sel()}[{RATE}]))", "{{op}}")],
        unit="ops",
        w=8,
    )
    b.graph(
        "Redis time, p99 by operation",
        "99th percentile of each Redis round trip, answered or failed, over every replica, by operation "
        "(calls the breaker skipped are not counted).",
        [q(hq(b, "delivery_redis_seconds", "0.99", "op"), "{{op}}")],
        unit="s",
        w=8,
    )
    b.graph(
        "Resyncs",
        "Times every session of a replica was told to resync: its forwarding channel came back, or another "
        "replica had skipped forwards to it.",
        [q(f"sum by (instance) (increase(delivery_resyncs_total{b.sel()}[{RATE}]))", "{{instance}}")],
        w=8,
    )
    b.graph(
        "Presence sweeps",
        "Sweeps for replicas whose heartbeat expired (one per heartbeat), and users a sweep found held only by "
        "dead replicas and marked offline (after a replica's crash).",
        [
            q(f"sum by (instance) (rate(delivery_presence_sweeps_total{b.sel()}[{RATE}]))", "sweeps/s {{instance}}"),
            q(
                f"sum by (instance) (increase(delivery_presence_swept_users_total{b.sel()}[{RATE}]))",
                "users marked offline {{instance}}",
            ),
        ],
        w=12,
    )
    b.graph(
        "Background tasks refused",
        "Best-effort tasks (presence announcements, typing notices) not started because the most allowed were "
        "running, by kind.",
        [q(f"sum by (kind) (rate(background_tasks_refused_total{b.sel()}[{RATE}]))", "{{kind}}")],
        unit="ops",
        w=12,
    )
    consumer_panels(b)
    process_panels(b)
    return b


BOARDS = {
    "overview": overview,
    "gateway": gateway,
    "auth": auth,
    "messaging": messaging,
    "profile": profile,
    "delivery": delivery,
}


def render_all() -> dict[Path, str]:
    return {
        OUT / f"{name}.json": json.dumps(build().render(), indent=2, ensure_ascii=False) + "\n"
        for name, build in BOARDS.items()
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv[1:]
    stale = []
    rendered = render_all()
    for path, text in rendered.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if check:
        extra = sorted(p.name for p in OUT.glob("*.json") if p not in rendered)
        if stale or extra:
            print(
                "dashboards out of date with scripts/build_dashboards.py: "
                + ", ".join(stale + [f"{e} (not generated)" for e in extra]),
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
