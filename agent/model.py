"""Plain data passed between pipeline stages, and every contract string.

capture -> decode -> flows -> inventory -> judges -> sinks: each stage hands the
next one of the classes below. Strings that users' dashboards, alerts and
scripts rely on (verdicts, finding kinds, endpoint kinds, ...) are defined here
once. This module imports nothing from `agent`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

# Verdicts of a flow.
ALLOW = "allow"
DENY = "deny"
UNKNOWN = "unknown"

# Finding (event) kinds.
POLICY_VIOLATION = "policy-violation"
PLAINTEXT = "plaintext"
TLS_VERSION = "tls-version"
POLICY_CHANGE = "policy-change"  # what candidate policies would change: reported, never a violation
POLICY_VERDICT = "policy-verdict"  # `evaluate`: every flow's NetworkPolicy verdict, explained; never a violation
RULE = "rule"  # a built-in rule (agent/judges/rules/) broken: its id is the finding's detail["rule"]

# Which NetworkPolicy sides of a flow a node's agent judges (side_of): the source's egress is enforced
# where the source runs, the destination's ingress where the destination runs.
EGRESS, INGRESS, BOTH = "egress", "ingress", "both"

# The points of a connection's life where judges speak (Judge.stage) and sinks are told (Judged.stage).
START = "start"  # first packet: what the 5-tuple alone decides
ANSWER = "answer"  # answered (reply, RST/ABORT refusal) or unanswered after flows.answer_timeout
CLASSIFIED = "classified"  # application protocol known (TLS at the ServerHello, or with no answer)
ACTIVE = "active"  # still open after flows.active_timeout: its counters so far, for flow records
END = "end"  # idle, closed, evicted or end of run: counters only, never a new verdict

# Severities.
CRITICAL = "critical"
WARNING = "warning"
INFO = "info"

# Endpoint kinds.
POD = "pod"
NODE = "node"
SERVICE = "service"
EXTERNAL = "external"

# Attribution of an address.
UNIQUE = "unique"
AMBIGUOUS = "ambiguous"

# Application protocols of a connection (decode/app.py tells them from the first bytes).
APP_TLS = "tls"
APP_UNKNOWN = "unknown"  # no byte seen, or not enough to tell: never judged plaintext
TLS_VERSIONS = ("ssl2", "ssl3", "1.0", "1.1", "1.2", "1.3-draft", "1.3")  # oldest first
# Minimum versions compare ranks: a TLS 1.3 draft (0x7fNN, 0x7e0N) meets what 1.3 meets.
TLS_RANK = {**{v: i for i, v in enumerate(TLS_VERSIONS)}, "1.3-draft": TLS_VERSIONS.index("1.3")}


def highest_version(versions: Iterable[str]) -> str | None:
    """The newest of the known TLS version names (1.3 over a 1.3 draft), or None."""
    known = [v for v in versions if v in TLS_VERSIONS]
    return max(known, key=TLS_VERSIONS.index) if known else None


# How a plaintext stream's first bytes send a login in the clear (Flow.credentials; decode/app.py tells
# them): presence only, never the value.
HTTP_BASIC, FTP_LOGIN, POP3_LOGIN, POP3_AUTH = "http-basic", "ftp-login", "pop3-login", "pop3-auth"
IMAP_LOGIN, IMAP_AUTH, SMTP_AUTH, TELNET_LOGIN = "imap-login", "imap-auth", "smtp-auth", "telnet"

# Transport protocols, by IP protocol number.
TCP, UDP, SCTP, ICMP, ICMPV6 = "TCP", "UDP", "SCTP", "ICMP", "ICMPv6"
PROTOCOLS = {6: TCP, 17: UDP, 132: SCTP, 1: ICMP, 58: ICMPV6}
JUDGED_PROTOCOLS = frozenset((TCP, UDP, SCTP))

# Where a flow's packets/bytes come from (Flow.accounting), and conntrack event kinds.
CAPTURE = "capture"  # what the capture let through: handshakes, ends, the first data segments
CONNTRACK = "conntrack"  # the kernel's complete counters (nf_conntrack_acct=1)
CT_NEW, CT_DESTROY = "new", "destroy"

# Pod phases whose pod no longer owns its IP.
TERMINAL_PHASES = frozenset(("Succeeded", "Failed"))

# The label the API server puts on every namespace (namespaceSelectors rely on it).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Annotations flowwarden reads.
REQUIRE_TLS_ANNOTATION = "flowwarden.io/require-tls"
TLS_MIN_VERSION_ANNOTATION = "flowwarden.io/tls-min-version"
EXPOSE_ANNOTATION = "flowwarden.io/expose"  # "true": a Service's NodePorts may be reached from outside the cluster

# Labels flowwarden reads.
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


# --- cluster objects (what the inventory keeps; only what judges need) ---------

@dataclass(slots=True, frozen=True)
class ContainerPort:
    port: int
    protocol: str = TCP
    name: str | None = None


@dataclass(slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    ips: tuple[str, ...]
    node: str | None = None
    phase: str = "Running"
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    workload: str | None = None  # "Deployment/web", resolved from ownerReferences
    created: float | None = None  # creationTimestamp, epoch seconds
    deleted: float | None = None  # when the pod stopped owning its IPs


@dataclass(slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class ServicePort:
    """A Service port and where it goes on the backend pods: a number, or a container port name."""
    port: int
    protocol: str = TCP
    target: int | str | None = None  # None: the same number as `port`
    node_port: int | None = None  # type NodePort or LoadBalancer: opened on every node's addresses


@dataclass(slots=True)
class Service:
    namespace: str
    name: str
    uid: str
    cluster_ips: tuple[str, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ServicePort, ...] = ()


@dataclass(slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str | None
    addresses: tuple[str, ...]
    pod_uids: tuple[str, ...] = ()  # targetRef uids of Pod endpoints


@dataclass(slots=True)
class Node:
    name: str
    internal_ips: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class NetworkPolicy:
    namespace: str
    name: str
    spec: Mapping  # networking.k8s.io/v1 spec as the API returns it (camelCase)
    uid: str = ""


# --- what judges and sinks see --------------------------------------------------

@dataclass(slots=True, frozen=True)
class Endpoint:
    """One end of a flow, attributed to its owner at the flow's time."""
    ip: str
    kind: str = EXTERNAL
    namespace: str | None = None
    pod: str | None = None
    uid: str | None = None
    node: str | None = None
    service: str | None = None
    workload: str | None = None
    attribution: str = UNIQUE
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    ports: tuple[ContainerPort, ...] = field(default=(), compare=False, hash=False)
    service_ports: tuple[ServicePort, ...] = field(default=(), compare=False, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Service ClusterIPs: the backend pods; ambiguous addresses: the claimants.
    candidates: tuple["Endpoint", ...] = field(default=(), compare=False, hash=False)


def backend_port(service: Endpoint, backend: Endpoint, port: int, protocol: str) -> int | None:
    """The port a flow to `service`:`port` reaches on `backend` (kube-proxy's DNAT).

    NetworkPolicy ports are pod ports, so a flow captured before DNAT is judged on the
    target port. A port the Service does not define is taken as is; a named target the
    backend does not define is None (kube-proxy sends no traffic there).
    """
    for sp in service.service_ports:
        if sp.port == port and sp.protocol == protocol:
            if sp.target is None:
                return port
            if isinstance(sp.target, int):
                return sp.target
            return next((cp.port for cp in backend.ports if cp.name == sp.target and cp.protocol == protocol), None)
    return port


class Fingerprinted(Protocol):
    """A parsed ClientHello (decode/tls.py): its fingerprints are computed when first read."""

    @property
    def ja4(self) -> str: ...

    @property
    def ja3(self) -> str: ...


@dataclass(slots=True)
class TlsInfo:
    """A TLS handshake's metadata (never payload): what judges compare and sinks write.

    The JA4/JA3 fingerprints are read from the ClientHello (`hello`) on first use: they cost
    ~16 µs per TLS flow and only the flows written out need them."""
    version: str | None  # negotiated (ServerHello); None when the answer was not captured
    offered_versions: tuple[str, ...] = ()
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    cipher: str | None = None  # "0x1301"
    hello: Fingerprinted | None = None
    _record: dict | None = field(default=None, compare=False, repr=False)

    def record(self) -> dict:
        """The `tls` object of events and flow records."""
        if self._record is None:
            ja4, ja3 = (self.hello.ja4, self.hello.ja3) if self.hello is not None else (None, None)
            self._record = {"version": self.version, "offered_versions": list(self.offered_versions),
                            "sni": self.sni, "alpn": list(self.alpn), "cipher": self.cipher, "ja4": ja4, "ja3": ja3}
        return self._record


@dataclass(slots=True)
class Flow:
    """A bidirectional conversation; src is the initiator.

    Updated in place by the flow table for every packet; `app` and `tls` are set
    by the flow table when the connection is classified, before the judges see it.
    """
    protocol: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    first_seen: float
    last_seen: float
    packets_src: int = 0
    bytes_src: int = 0
    packets_dst: int = 0
    bytes_dst: int = 0
    established: bool = False
    mid_stream: bool = False  # start not captured: direction inferred from ports
    closed: bool = False  # FIN/RST seen
    app: str | None = None
    tls: TlsInfo | None = None
    credentials: str | None = None  # how its first bytes carry credentials in the clear ("http-basic"): presence only
    dns_query: str | None = None  # UDP/53: the first query's name, when a judge asks for it; never written out
    orig_dst: tuple[str, int] | None = None  # ClusterIP:port the client dialled, when conntrack saw DNAT
    accounting: str = CAPTURE  # CONNTRACK once the kernel's complete counters replaced the captured ones
    # What the pipeline decided so far (set once each, in the order of the connection's life).
    ends: tuple["Endpoint", "Endpoint"] | None = None  # src, dst attributed at first_seen
    started: bool = False  # the START judges spoke (here, or in the compact table before it moved here)
    verdict: str | None = None  # set at the ANSWER stage
    classified: bool = False  # the CLASSIFIED stage ran
    findings: tuple[str, ...] = ()  # kinds of the violations found, for the flow record
    reported: float = 0.0  # when the last periodic flow record was written (flows.active_timeout)
    side: str = BOTH  # the policy sides judged here (side_of): EGRESS, INGRESS or BOTH

    def tls_fields(self) -> dict | None:
        """`tls` as events and flow records carry it."""
        return self.tls.record() if self.tls is not None else None


@dataclass(slots=True, frozen=True)
class ConntrackEvent:
    """One connection-tracker event (capture/conntrack.py -> flows/merge.py).

    `orig` is the tuple as the initiator sent it, `reply` as the responder
    answers: reply src != orig dst means DNAT (ClusterIP -> backend pod),
    reply dst != orig src means SNAT. Tuples are (src, dst, sport, dport).
    """
    kind: str  # CT_NEW or CT_DESTROY
    at: float  # wall clock when the agent read it
    protocol: int  # IP protocol number
    orig: tuple[str, str, int, int]
    reply: tuple[str, str, int, int]
    seen_reply: bool = False
    counters: tuple[int, int, int, int] | None = None  # packets, bytes orig; packets, bytes reply (DESTROY)
    id: int = 0


@dataclass(slots=True, frozen=True)
class Finding:
    kind: str
    severity: str
    policies: tuple[str, ...] = ()  # "namespace/name" that decided it
    reasons: tuple[str, ...] = ()
    requirement: str | None = None  # which annotation or rule was broken
    detail: Mapping | None = None  # kind-specific extra fields (e.g. before/after)


def side_of(node: str | None, src: Endpoint, dst: Endpoint) -> str | None:
    """What the agent of `node` judges of src -> dst: EGRESS (the source is its pod, the destination a pod
    elsewhere), INGRESS (the reverse), BOTH, or None (not its flow: transit between other nodes' pods, or a
    pod elsewhere with an address that is no pod). A Service with backends counts as a pod elsewhere (its
    backends' nodes judge the translated flow); hostNetwork pods are their node's (kind NODE). No node
    (replay on a laptop, tests): BOTH, everything is judged."""
    if node is None:
        return BOTH
    src_pod, dst_pod = src.kind == POD, dst.kind == POD or (dst.kind == SERVICE and bool(dst.candidates))
    src_here, dst_here = src_pod and src.node == node, dst.kind == POD and dst.node == node
    if src_pod and dst_pod:
        return BOTH if src_here and dst_here else EGRESS if src_here else INGRESS if dst_here else None
    if src_pod or dst_pod:
        return BOTH if src_here or dst_here else None
    return BOTH


def is_violation(finding: Finding) -> bool:
    """Violations are counted and alerted on; a what-if `policy-change` is only reported."""
    return finding.kind != POLICY_CHANGE and finding.kind != POLICY_VERDICT


def finding_name(finding: Finding) -> str:
    """A finding as summaries and flow records name it: its kind, a rule's as "rule:<id>"."""
    return f"{RULE}:{finding.detail['rule']}" if finding.kind == RULE else finding.kind


def verdict_of(findings: Sequence[Finding], *, synced: bool) -> str:
    """A flow's verdict: deny when a NetworkPolicy denies it; unknown before the inventory's first sync."""
    if any(f.kind == POLICY_VIOLATION for f in findings):
        return DENY
    return ALLOW if synced else UNKNOWN


@dataclass(slots=True)
class Spread:
    """What the attempts of an aggregate spread over (see `Judged.count`)."""
    ports: bytes | None  # a bit per destination port (little-endian bit order), None: no attempt
    sources: list[str]  # source addresses, repeats included; "" for one that was not kept
    full: bool = False  # set by a sink that can count no more sources of this group


@dataclass(slots=True)
class Judged:
    """What one stage of a flow's life decided: what sinks receive (`Sink.emit`).

    `count` > 1: the compact flow table's aggregate of that many flows with the same outcome
    (agent/outcomes.py); `flow` then holds their sums (packets and bytes as `*_src`), the
    earliest first_seen, the latest last_seen, and `spread` what their attempts spread over."""
    stage: str  # START, ANSWER, CLASSIFIED, ACTIVE or END
    flow: Flow
    src: Endpoint
    dst: Endpoint
    findings: Sequence[Finding] = ()
    count: int = 1
    spread: Spread | None = None


class Judge(Protocol):
    """flows + endpoints -> findings, at the one stage of a connection's life where its verdict is known."""
    name: str
    stage: str  # START, ANSWER or CLASSIFIED

    def judge(self, flow: Flow, src: Endpoint, dst: Endpoint) -> list[Finding]: ...

    def on_change(self, kind: str, old: object, new: object) -> None:
        """A cluster object changed (old/new None on add/delete): drop what was cached about it."""


class Sink(Protocol):
    """The only code that writes out. The pipeline calls `flush` on its tick (<= 1 s live).

    A sink is told of every `Judged` with findings, and of every one at the `stages` it lists."""
    stages: frozenset[str]

    def emit(self, judged: Judged) -> None: ...

    def flush(self, now: float) -> None:
        """Write what is due at `now` (capture time in a replay, wall clock live)."""

    def close(self) -> None:
        """Write everything still held (end of replay, SIGTERM)."""


class ClusterView(Protocol):
    """The narrow, read-only view of the cluster that judges get (never the API client)."""

    @property
    def synced(self) -> bool:
        """True once every resource had its first full list: no deny before that."""

    def endpoint(self, ip: str, at: float) -> Endpoint:
        """Who owned `ip` at time `at` (epoch seconds); kind external when nobody."""

    def namespace(self, name: str) -> Namespace | None: ...

    def namespaces(self) -> Iterable[Namespace]: ...

    def policies(self, namespace: str) -> Sequence[NetworkPolicy]: ...

    def services_for_pod(self, uid: str) -> Sequence[Service]:
        """Services whose EndpointSlices point at the pod (for require-tls on a Service)."""

    def nodes(self) -> Iterable[Node]: ...

    def services(self) -> Iterable[Service]: ...

    def service_backends(self, namespace: str, name: str) -> Sequence[str]:
        """The addresses of a Service's EndpointSlices (the `kubernetes` Service's: the API servers)."""
