"""`flowwarden`'s arguments: every subcommand, flag and help text (the entry's argparse half).

`agent/cli.py` runs the commands; this module only declares what they take.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Mapping

from agent.model import ALLOW, DENY, UNKNOWN
from agent.sinks.text import FORMATS, SEVERITIES


REPLAY_EXIT_STATUSES = """exit status:
  0 complete: every capture was read to its end (violations do not change it)
  1 completed with damaged or skipped input: one line names each damaged file and
    what was lost; the results cover what was readable
  2 nothing usable: bad arguments, unusable cluster state, no readable capture
"""


SUGGEST_EPILOG = """output: per namespace, one NetworkPolicy per workload and direction, each rule commented
  with the observed flows it admits; egress always keeps DNS to the cluster DNS pods.
  The proof (stderr, and PROOF.txt with -o) re-judges every observed flow.

exit status: 0 written and proven; 1 written, but some input was damaged or an admitted
  flow would be denied (the proof names it); 2 nothing usable (one line says why)
"""


EVALUATE_INPUT = """input: one flow per line, JSON; blank lines are skipped:
  {"src_ip": "10.244.1.30", "dst_ip": "10.244.1.20", "dst_port": 8080, "protocol": "TCP", "src_port": 40000}
  src_ip and dst_ip are IPv4 or IPv6 addresses, dst_port (and the optional src_port) 1-65535,
  protocol TCP (the default), UDP or SCTP. flowwarden's own flow records (replay/run --flows)
  are read too: their src.ip, src.port, dst.ip, dst.port and protocol.

exit status: 0 judged (1 with --check when any verdict is deny); 2 bad input (one line names it)
"""


def parser(commands: Mapping[str, Callable], description: str) -> argparse.ArgumentParser:
    """The command line; `commands` maps each subcommand to the function that runs it."""
    p = argparse.ArgumentParser(prog="flowwarden", description=description)
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    r = sub.add_parser("replay", help="judge recorded captures against a cluster state", formatter_class=raw,
                       epilog=REPLAY_EXIT_STATUSES,
                       description="Judge recorded captures (pcap, pcapng, gzip) against a cluster state: "
                       "events on stdout (or --events), a summary on stderr.")
    r.add_argument("pcaps", nargs="+", metavar="PCAP",
                   help="pcap or pcapng files (gzip too); a folder means every file in it; - is standard input")
    _cluster_args(r)
    r.add_argument("--config", help="settings YAML, or the DaemonSet's ConfigMap manifest")
    r.add_argument("--events", help="write events here (default: stdout)")
    r.add_argument("--metrics", help="write Prometheus metrics (text format) here")
    r.add_argument("--flows", help="write every flow as a JSON line here")
    r.add_argument("--node", help="judge as the agent of this node would (a capture taken on it): only its "
                   "pods' policy sides, no transit (default: every flow, whole)")
    _with_policies(r)
    _output_args(r)
    _filter_args(r)
    r.set_defaults(command=commands["replay"])

    e = sub.add_parser("evaluate", help="judge flows given as JSON Lines", formatter_class=raw,
                       epilog=EVALUATE_INPUT,
                       description="Judge flows given as JSON Lines against the cluster's NetworkPolicies "
                       "(what-if: with candidate policies too): one result per input line.")
    _cluster_args(e)
    e.add_argument("--flows", default="-", help="JSON Lines of flows, see below (default: stdin)")
    _with_policies(e)
    e.add_argument("--explain", action="store_true",
                   help="a readable block per flow with every reason; with --with-policies, before → after")
    e.add_argument("--check", action="store_true", help="exit 1 when any verdict is deny (a CI gate)")
    _output_args(e)
    _filter_args(e)
    e.set_defaults(command=commands["evaluate"])

    n = sub.add_parser("run", help="the node agent: capture live pod traffic and judge it",
                       description="The node agent (what the DaemonSet runs): capture pod traffic on this node, "
                       "judge it, write events, serve /metrics, /healthz and /readyz. Needs root or CAP_NET_RAW.")
    g = n.add_mutually_exclusive_group()
    g.add_argument("--cluster", help="static cluster state file instead of the live API (air-gapped nodes, tests)")
    g.add_argument("--kubeconfig", help="kubeconfig (default: the pod's service account, else $KUBECONFIG)")
    n.add_argument("--context", help="kubeconfig context")
    _allow_empty(n)
    n.add_argument("--config", help="settings YAML (the DaemonSet's ConfigMap); SIGHUP reloads it")
    n.add_argument("--interfaces", help='comma-separated names or globs, e.g. "veth*,cni0" '
                   "(default: capture.interfaces, else pod veths, CNI bridges and overlays)")
    n.add_argument("--listen", default="0.0.0.0:9847", help="HTTP address for /metrics, /healthz, /readyz")
    n.add_argument("--events", help="append events here (default: stdout)")
    n.add_argument("--flows", help="append every flow as a JSON line here")
    n.add_argument("--with-policies", action="append", default=[], metavar="PATH",
                   help="staged candidate NetworkPolicies, a file or a folder (repeatable; over policies.staged): "
                   "policy-change events for the verdicts they would change; SIGHUP reloads them")
    n.add_argument("--node", help="the node this agent judges for: its pods' policy sides (default: $NODE_NAME, "
                   "else the node whose InternalIP or name is this host's, else every flow, whole)")
    _output_args(n)
    n.set_defaults(command=commands["run"])

    m = sub.add_parser("merge", help="one line per connection from the events of many agents",
                       description="Read the events many agents wrote (as a log stack collected them) and write "
                       "each connection's findings once, both nodes' sides combined, as JSON Lines.")
    m.add_argument("files", nargs="+", metavar="EVENTS", help="events files (JSON Lines); - is standard input")
    m.set_defaults(command=commands["merge"])

    g = sub.add_parser("suggest", help="propose NetworkPolicies from observed traffic, with a proof",
                       formatter_class=raw, epilog=SUGGEST_EPILOG,
                       description="Propose NetworkPolicies, per workload, that admit exactly the traffic observed "
                       "(captures, or the flow records of replay/run --flows), and prove it: every observed flow "
                       "is judged again with the current policies plus the suggestions.")
    g.add_argument("pcaps", nargs="*", metavar="PCAP", help="captures, as replay reads them")
    g.add_argument("--flows", nargs="+", default=[], metavar="FILE",
                   help="flow records written by replay/run --flows, from any number of nodes; - is stdin")
    g.add_argument("--cluster", required=True,
                   help="cluster state file (kubectl get ... -o json, or flowwarden snapshot)")
    _allow_empty(g)
    g.add_argument("--max-prefix", default="24,64", metavar="V4[,V6]",
                   help="the widest ipBlock made of external addresses (default: 24,64)")
    g.add_argument("--ingress-only", action="store_true", help="ingress policies only (no egress)")
    g.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="only policies for this namespace (repeat or comma-separate)")
    g.add_argument("-o", "--output", dest="output_dir", metavar="DIR",
                   help="write NS.yaml per namespace and PROOF.txt here (default: one YAML stream on stdout)")
    g.set_defaults(command=commands["suggest"])

    s = sub.add_parser("snapshot", help="write the live cluster state as a --cluster file",
                       description="Write the live cluster state (Namespaces, Pods, Services, EndpointSlices, "
                       "NetworkPolicies) as a file for replay --cluster, taken next to a capture.")
    s.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster account, else $KUBECONFIG)")
    s.add_argument("--context", help="kubeconfig context")
    s.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    s.set_defaults(command=commands["snapshot"])
    return p


class _Version(argparse.Action):
    """`--version`, read from the installed metadata only when asked (importlib.metadata costs ~25 ms)."""

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib.metadata
        try:
            version = importlib.metadata.version("flowwarden")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print(f"flowwarden {version}", file=sys.stdout)
        parser.exit()


def _with_policies(p: argparse.ArgumentParser) -> None:
    p.add_argument("--with-policies", action="append", default=[], metavar="PATH",
                   help="candidate NetworkPolicies, a file or a folder (repeat for several): "
                   "report what they would change")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--cluster", help="cluster state file (kubectl get ... -o json, or flowwarden snapshot)")
    g.add_argument("--kubeconfig", help="use the live cluster through this kubeconfig")
    p.add_argument("--context", help="kubeconfig context")
    _allow_empty(p)


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, dest="format",
                   help="text: one line per event (severity, kind, ns/pod → ns/pod:port/proto, established, "
                   "first reason; coloured on a terminal unless NO_COLOR is set); json: one JSON object per "
                   "line (default: text on a terminal, json otherwise)")


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", action="append", default=[], metavar="KIND",
                   help="only events of this kind, e.g. policy-violation, plaintext, tls-version, rule, "
                   "rule:cloud-metadata (repeat or comma-separate for several)")
    p.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="only events with this namespace at either end (repeat or comma-separate)")
    p.add_argument("--min-severity", choices=SEVERITIES, help="only events at least this severe")
    p.add_argument("--verdict", action="append", default=[], choices=(ALLOW, DENY, UNKNOWN),
                   help="only events of flows with this NetworkPolicy verdict (repeatable)")


def _allow_empty(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-empty-cluster", action="store_true",
                   help="accept a --cluster file with no Pods and no Namespaces (every endpoint is then external)")
