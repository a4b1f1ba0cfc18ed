# testScript of topology.nix. The driver provides the machines (backend, delivery1, delivery2,
# client) and its helpers as globals; nixos-tests/check.sh type-checks this file against a stub of
# that API.
import json
import re
import shlex
from typing import Any

GATEWAY = "http://backend:8080"
PASSWORD = "correct horse battery staple"

# Each service's unit and admin port (/readyz answers once its dependencies do).
BACKEND_SERVICES = {
    "realchat-auth": 9181,
    "realchat-profile": 9183,
    "realchat-messaging": 9182,
    "realchat-gateway": 9180,
}
DELIVERY_ADMIN_PORT = 9184

# The services' certificates and keys on each machine (common.nix); messaging's gRPC port on the
# backend, reached under the name its certificate carries and checked against the authority.
INTERNAL_TLS = "/etc/realchat/internal-tls"
MESSAGING_TLS = (
    "curl --silent --max-time 10 --http2 --output /dev/null "
    f"--cacert {INTERNAL_TLS}/ca.pem --resolve messaging.realchat.internal:7052:127.0.0.1 "
    "https://messaging.realchat.internal:7052/"
)
MESSAGING_METRICS = "http://127.0.0.1:9182/metrics"

# Prometheus on the backend (services.realchat.prometheus): one job per service there, named
# after it, with `instance` = `<service>-<host>` (the module's default).
PROMETHEUS = "http://127.0.0.1:9090"
PROMETHEUS_TARGETS = {
    (service, f"{service}-backend")
    for service in (unit.removeprefix("realchat-") for unit in BACKEND_SERVICES)
}


def wait_ready(machine: "BaseMachine", unit: str, admin_port: int) -> None:
    machine.wait_for_unit(f"{unit}.service")
    machine.wait_until_succeeds(
        f"curl --fail --silent http://127.0.0.1:{admin_port}/readyz", timeout=180
    )


def refused_handshakes() -> int:
    """Connections messaging's gRPC server refused in the TLS handshake, from its metrics."""
    metrics = backend.succeed(f"curl --fail --silent {MESSAGING_METRICS}")
    count = 0.0
    for line in metrics.splitlines():
        match = re.match(r"^grpc_server_tls_handshake_failures_total(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            count += float(match.group(2))
    return int(count)


def prometheus_api(path: str) -> dict[str, Any]:
    """The `data` of an answer of the backend's Prometheus HTTP API."""
    answer = json.loads(backend.succeed(f"curl --fail --silent {PROMETHEUS}/api/v1/{path}"))
    assert answer["status"] == "success", answer
    data: dict[str, Any] = answer["data"]
    return data


def targets_up(last_try: bool) -> bool:
    """Whether Prometheus scrapes exactly the expected targets, every one up."""
    health = {
        (target["labels"]["job"], target["labels"]["instance"]): target["health"]
        for target in prometheus_api("targets?state=active")["activeTargets"]
    }
    if last_try:
        print(f"Prometheus targets: {health}")
    return health == {target: "up" for target in PROMETHEUS_TARGETS}


def rules_evaluated(last_try: bool) -> bool:
    """Whether the repository's rule groups are loaded and each rule evaluated without error."""
    groups = prometheus_api("rules")["groups"]
    health = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    if last_try:
        print(f"Prometheus rule groups: {[group['name'] for group in groups]}, rules: {health}")
    return (
        bool(groups)
        and all(group["name"].startswith("realchat-") for group in groups)
        and all(value == "ok" for value in health.values())
    )


def messaging_as(service: str) -> str:
    """A TLS call to messaging with `service`'s certificate."""
    return f"{MESSAGING_TLS} --cert {INTERNAL_TLS}/{service}.pem --key {INTERNAL_TLS}/{service}.key"


def realchat(user: str, args: str) -> str:
    """Runs the command line on the client as `user`, each user with a session of their own."""
    return client.succeed(
        f"XDG_CONFIG_HOME=/var/tmp/{user} REALCHAT_URL={GATEWAY} "
        f"REALCHAT_PASSWORD={shlex.quote(PASSWORD)} realchat {args}"
    ).strip()


def start_tail(user: str, name: str) -> str:
    """Starts `realchat tail` for `user` in the background; returns the file it writes to."""
    log = f"/var/tmp/tail-{name}.log"
    client.succeed(
        f"XDG_CONFIG_HOME=/var/tmp/{user} REALCHAT_URL={GATEWAY} "
        f"setsid realchat tail > {log} 2>&1 < /dev/null &"
    )
    return log


def send_and_receive(conversation: str, text: str, log: str) -> None:
    """Sends as alice; bob's running tail must show it (it resumes across reconnects)."""
    realchat("alice", f"send {shlex.quote(conversation)} {shlex.quote(text)}")
    client.wait_until_succeeds(f"grep --fixed-strings {shlex.quote(text)} {log}", timeout=60)


def send_until_received(conversation: str, text: str, log: str) -> None:
    """Like send_and_receive for a tail that may not be connected yet: a tail shows what
    arrives after it connected, so send again until one copy shows up."""
    for attempt in range(30):
        realchat("alice", f"send {shlex.quote(conversation)} {shlex.quote(f'{text} #{attempt}')}")
        wait = f"until grep --quiet --fixed-strings {shlex.quote(text)} {log}; do sleep 0.2; done"
        status, _ = client.execute(f"timeout 2 sh -c {shlex.quote(wait)}")
        if status == 0:
            return
    raise AssertionError(f"{text!r} never reached {log}")


start_all()

with subtest("the infrastructure and every service come up"):
    backend.wait_for_unit("postgresql.target")
    backend.wait_for_unit("redis-realchat.service")
    backend.wait_for_unit("apache-kafka.service")
    backend.wait_for_open_port(9092)
    for unit, port in BACKEND_SERVICES.items():
        wait_ready(backend, unit, port)
    for replica in (delivery1, delivery2):
        wait_ready(replica, "realchat-delivery", DELIVERY_ADMIN_PORT)

with subtest("Prometheus scrapes every service on the backend, with the repository's rules"):
    backend.wait_for_unit("prometheus.service")
    backend.wait_for_open_port(9090)
    retry(targets_up, timeout_seconds=120)
    # Rules are evaluated every minute (nixpkgs' default evaluation interval).
    retry(rules_evaluated, timeout_seconds=180)

with subtest("the units run hardened, as dynamic users"):
    for unit in BACKEND_SERVICES:
        user = backend.get_unit_property(f"{unit}.service", "User")
        assert user == unit, f"{unit} runs as {user!r}"
        assert backend.get_unit_property(f"{unit}.service", "DynamicUser") == "yes"
        assert backend.get_unit_property(f"{unit}.service", "NoNewPrivileges") == "yes"

with subtest("internal gRPC is mutual TLS, and messaging takes only its callers"):
    refused_before = refused_handshakes()
    # Plaintext HTTP/2 from another machine, as a service without a certificate would call.
    delivery1.fail(
        "curl --silent --max-time 10 --http2-prior-knowledge --output /dev/null http://backend:7052/"
    )
    # TLS without a certificate, and with profile's, which never calls messaging.
    backend.fail(MESSAGING_TLS)
    backend.fail(messaging_as("profile"))
    # Each one counted by messaging as refused in the handshake.
    retry(lambda _last_try: refused_handshakes() - refused_before >= 3, timeout_seconds=30)
    # The gateway's certificate is taken, and messaging proves its own name.
    backend.succeed(messaging_as("gateway"))

with subtest("two users register and log in with the command line"):
    client.wait_until_succeeds(f"curl --fail --silent {GATEWAY}/v1/openapi.json", timeout=120)
    for user in ("alice", "bob"):
        realchat(user, f"register {user}")
        realchat(user, f"login {user}")
    conversation = realchat("alice", "open bob")
    assert conversation, "`realchat open bob` printed no conversation id"

with subtest("bob tails, alice sends, the message arrives"):
    tail_log = start_tail("bob", "first")
    send_until_received(conversation, "hello bob", tail_log)

with subtest("a delivery replica is killed, messages still arrive"):
    delivery1.succeed("systemctl kill --signal=KILL realchat-delivery.service")
    # Keep it down (Restart=on-failure would bring it back) so only delivery2 can deliver.
    delivery1.succeed("systemctl stop realchat-delivery.service")
    delivery1.fail("systemctl is-active --quiet realchat-delivery.service")
    send_and_receive(conversation, "hello bob, after a crash", tail_log)
    # A socket opened now goes to the surviving replica too.
    second_log = start_tail("bob", "after-crash")
    send_until_received(conversation, "hello bob, on a new socket", second_log)

with subtest("the killed replica comes back and serves again"):
    delivery1.succeed("systemctl start realchat-delivery.service")
    wait_ready(delivery1, "realchat-delivery", DELIVERY_ADMIN_PORT)
    send_and_receive(conversation, "hello bob, all replicas back", tail_log)
