# testScript of kafka-outage.nix: the bench's `outage` scenario (the one `cargo xtask` runs
# against its local broker) with Apache Kafka stopped and started by systemd. The driver provides
# the machines (backend, delivery1, delivery2) and its helpers as globals.
import json
import re
import shlex
import time

BACKEND_SERVICES = {
    "realchat-auth": 9181,
    "realchat-profile": 9183,
    "realchat-messaging": 9182,
    "realchat-gateway": 9180,
}
DELIVERY_ADMIN_PORT = 9184
MESSAGING_METRICS = "http://127.0.0.1:9182/metrics"

OUTAGE_AFTER_S = 10
OUTAGE_S = 30
# Stops the broker; starts it and returns once it takes connections again.
STOP = "systemctl stop apache-kafka.service"
START = (
    "systemctl start apache-kafka.service && "
    "bash -c 'until (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; do sleep 0.5; done'"
)
BENCH = " ".join(
    [
        "bench outage",
        "--url http://127.0.0.1:8080",
        "--json",
        "--no-limits",
        "--rate 50",
        "--users 10",
        f"--outage-after {OUTAGE_AFTER_S}",
        f"--outage {OUTAGE_S}",
        "--drain 180",
        f"--stop-command {shlex.quote(STOP)}",
        f"--start-command {shlex.quote(START)}",
    ]
)


def wait_ready(machine: "BaseMachine", unit: str, admin_port: int) -> None:
    machine.wait_for_unit(f"{unit}.service")
    machine.wait_until_succeeds(
        f"curl --fail --silent http://127.0.0.1:{admin_port}/readyz", timeout=180
    )


def outbox_backlog() -> int:
    """Rows waiting in messaging's outbox, from its Prometheus metrics."""
    metrics = backend.succeed(f"curl --fail --silent {MESSAGING_METRICS}")
    rows = 0.0
    for line in metrics.splitlines():
        match = re.match(r"^outbox_backlog_rows(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            rows += float(match.group(2))
    return int(rows)


def kafka_active() -> bool:
    status, _ = backend.execute("systemctl is-active --quiet apache-kafka.service")
    return status == 0


start_all()

with subtest("the infrastructure and every service come up"):
    backend.wait_for_unit("postgresql.target")
    backend.wait_for_unit("apache-kafka.service")
    backend.wait_for_open_port(9092)
    for unit, port in BACKEND_SERVICES.items():
        wait_ready(backend, unit, port)
    for replica in (delivery1, delivery2):
        wait_ready(replica, "realchat-delivery", DELIVERY_ADMIN_PORT)
    assert outbox_backlog() == 0, "the outbox is not empty before the run"

with subtest("the bench runs direct load and takes the broker away"):
    backend.succeed(
        f"({BENCH} > /var/tmp/bench.json 2> /var/tmp/bench.log; echo $? > /var/tmp/bench.status) >&2 &"
    )
    backend.wait_until_fails(
        "systemctl is-active --quiet apache-kafka.service", timeout=120
    )

with subtest("while Kafka is down, sends are accepted and the outbox backlog grows"):
    peak = 0
    deadline = time.monotonic() + OUTAGE_S - 5
    while time.monotonic() < deadline and not kafka_active():
        peak = max(peak, outbox_backlog())
        time.sleep(2)
    assert peak > 0, "the outbox never grew while the broker was down"
    backend.log(f"outbox backlog peaked at {peak} rows")

with subtest("Kafka returns and the backlog drains to zero"):
    backend.wait_for_unit("apache-kafka.service", timeout=180)
    retry(lambda _last_try: outbox_backlog() == 0, timeout_seconds=180)

with subtest("the checker finds every acknowledged message on its sockets, in order"):
    backend.wait_for_file("/var/tmp/bench.status", timeout=600)
    status = backend.succeed("cat /var/tmp/bench.status").strip()
    print(backend.succeed("cat /var/tmp/bench.log"))
    report = json.loads(backend.succeed("cat /var/tmp/bench.json"))
    print(json.dumps(report, indent=2))
    assert status == "0", f"bench exited with {status}: {report.get('violations')}"
    assert report["passed"] is True, report.get("violations")
    assert report["acked"] > 0, "no send was acknowledged"
    assert report["send_errors"] == 0, f"{report['send_errors']} sends failed"
    for counter in ("lost", "duplicates", "reordered", "mismatched", "gaps"):
        assert report[counter] == 0, f"{counter}: {report[counter]}"
    assert report.get("backlog_drain_s") is not None, "the backlog was never delivered"
