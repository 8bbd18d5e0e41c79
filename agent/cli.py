"""`flowwarden` command line: argparse -> pipeline. No logic of its own.

Every user error (missing or corrupt file, bad cluster state, bad config or
policy) ends as one line on stderr naming the file and the problem, exit 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson
from agent.capture.pcap import Damage, PcapError, capture_files, file_size, read_frames
from agent.config import ConfigError, load_config
from agent.evaluate import evaluate_lines, load_policy_files, policy_files
from agent.inventory.objects import ObjectError
from agent.inventory.snapshot import ClusterFileError, check_usable, describe_kinds, load_cluster
from agent.judges.netpol import PolicyError, validate_policy
from agent.model import ALLOW, DENY, UNKNOWN
from agent.pipeline import Pipeline, settle_heap
from agent.sinks.events import EventSink, FlowRecordSink
from agent.sinks.metrics import MetricsSink
from agent.sinks.outputs import OutputClashError, refuse_clobbering
from agent.sinks.summary import Progress, SummarySink, summary_lines
from agent.sinks.text import FORMATS, SEVERITIES, EventFilter, FilteredSink, TextWriter, default_format, use_colour

USER_ERRORS = (PcapError, ClusterFileError, ConfigError, PolicyError, ObjectError, ValueError,
               FileNotFoundError, IsADirectoryError, PermissionError)
EXIT_DAMAGED = 1  # completed, but some input was damaged or skipped
EXIT_USAGE = 2


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


class UserError(Exception):
    """Bad input named in one line; exit 2."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="flowwarden: %(message)s", stream=sys.stderr)
    try:
        return args.command(args)
    except UserError as e:
        print(f"flowwarden: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `flowwarden ... | head`: the reader left; no error to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


EVALUATE_INPUT = """input: one flow per line, JSON; blank lines are skipped:
  {"src_ip": "10.244.1.30", "dst_ip": "10.244.1.20", "dst_port": 8080, "protocol": "TCP", "src_port": 40000}
  src_ip and dst_ip are IPv4 or IPv6 addresses, dst_port (and the optional src_port) 1-65535,
  protocol TCP (the default), UDP or SCTP. flowwarden's own flow records (replay/run --flows)
  are read too: their src.ip, src.port, dst.ip, dst.port and protocol.

exit status: 0 judged (1 with --check when any verdict is deny); 2 bad input (one line names it)
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowwarden", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"flowwarden {_version()}")
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
    r.set_defaults(command=cmd_replay)

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
    e.set_defaults(command=cmd_evaluate)

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
    n.set_defaults(command=cmd_run)

    m = sub.add_parser("merge", help="one line per connection from the events of many agents",
                       description="Read the events many agents wrote (as a log stack collected them) and write "
                       "each connection's findings once, both nodes' sides combined, as JSON Lines.")
    m.add_argument("files", nargs="+", metavar="EVENTS", help="events files (JSON Lines); - is standard input")
    m.set_defaults(command=cmd_merge)

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
    g.set_defaults(command=cmd_suggest)

    s = sub.add_parser("snapshot", help="write the live cluster state as a --cluster file",
                       description="Write the live cluster state (Namespaces, Pods, Services, EndpointSlices, "
                       "NetworkPolicies) as a file for replay --cluster, taken next to a capture.")
    s.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster account, else $KUBECONFIG)")
    s.add_argument("--context", help="kubeconfig context")
    s.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    s.set_defaults(command=cmd_snapshot)
    return p


def _version() -> str:
    try:
        return importlib.metadata.version("flowwarden")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


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
                   help="only events of this kind, e.g. policy-violation, plaintext, tls-version "
                   "(repeat or comma-separate for several)")
    p.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="only events with this namespace at either end (repeat or comma-separate)")
    p.add_argument("--min-severity", choices=SEVERITIES, help="only events at least this severe")
    p.add_argument("--verdict", action="append", default=[], choices=(ALLOW, DENY, UNKNOWN),
                   help="only events of flows with this NetworkPolicy verdict (repeatable)")


def _event_filter(args: argparse.Namespace) -> EventFilter:
    def split(values: list[str]) -> frozenset[str]:
        return frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    return EventFilter(kinds=split(args.kind), namespaces=split(args.namespace),
                       min_severity=args.min_severity, verdicts=frozenset(args.verdict))


def _allow_empty(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-empty-cluster", action="store_true",
                   help="accept a --cluster file with no Pods and no Namespaces (every endpoint is then external)")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        raise UserError(_one_line(e)) from e


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror}"
    return " ".join(str(e).split())


_OUTPUT_FLAGS = ("events", "flows", "metrics")
_INPUT_FLAGS = ("cluster", "config", "kubeconfig")


def _refuse_clobbering(args: argparse.Namespace, inputs: dict[str, list[str]]) -> None:
    """An output that is an input or another output would lose evidence: refuse before opening any."""
    outputs = {f"--{flag}": getattr(args, flag, None) for flag in _OUTPUT_FLAGS}
    named = {(k if k == "PCAP" else f"--{k.replace('_', '-')}"): v for k, v in inputs.items()}
    try:
        refuse_clobbering(outputs, named)
    except OutputClashError as e:
        raise UserError(str(e)) from e


def _check_writable(flag: str, path: str) -> None:
    """A file written only at the end (--metrics, atomically through a temporary name) is checked at the start."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {path}: no such directory: {folder}")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{flag} {path}: cannot write in {folder}")


def _load_view(args: argparse.Namespace):
    with _user_errors():
        if args.cluster:
            store = _load_cluster_file(args)
            where = args.cluster
        else:
            from agent.inventory.live import live_store  # the API client is only loaded when used
            store = live_store(args.kubeconfig, args.context)
            where = args.kubeconfig
        for ns in sorted({p.namespace for p in store.objects["NetworkPolicy"].values()}):
            for policy in store.policies(ns):
                try:
                    validate_policy(policy)
                except PolicyError as e:
                    raise PolicyError(f"{where}: {e}") from e
    return store


def _load_cluster_file(args: argparse.Namespace):
    """The --cluster file; unused kinds are said in one line, and no Pods or Namespaces is an error."""
    ignored: Counter = Counter()
    store = load_cluster(args.cluster, ignored=ignored)
    if not args.allow_empty_cluster:
        check_usable(store, source=args.cluster, ignored=ignored)
    if ignored:
        print(f"flowwarden: warning: {args.cluster}: ignored {sum(ignored.values()):,} objects of kinds "
              f"flowwarden does not use ({describe_kinds(ignored)})", file=sys.stderr)
    return store


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    with open(path, "wb") as f:
        yield f


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so the sinks are flushed before exiting."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_replay(args: argparse.Namespace) -> int:
    with _user_errors():
        captures = capture_files(args.pcaps)
        if not captures:
            raise PcapError(f"{' '.join(args.pcaps)}: no capture files in it")
        _refuse_clobbering(args, {"PCAP": captures, **{f: [getattr(args, f)] for f in _INPUT_FLAGS},
                                  "with_policies": policy_files(args.with_policies)})
        config = load_config(args.config)
        if args.metrics:
            _check_writable("--metrics", args.metrics)
    view = _load_view(args)
    with _user_errors():
        candidates = load_policy_files(args.with_policies) if args.with_policies else []
    damaged: list[Damage] = []
    with _user_errors(), _output(args.events) as events_out, \
            (_output(args.flows) if args.flows else contextlib.nullcontext()) as flows_out:
        metrics = MetricsSink(max_namespaces=config.metrics.max_namespaces)
        fmt = args.format or default_format(events_out)
        written_to = TextWriter(events_out, colour=use_colour(events_out)) if fmt == "text" else events_out
        events = EventSink(written_to, window=config.events.window, max_groups=config.events.max_groups,
                           node=args.node)
        keep = _event_filter(args)
        counted = SummarySink()
        sinks = [FilteredSink(events, keep) if keep else events, metrics, counted]
        if flows_out:
            sinks.append(FlowRecordSink(flows_out, node=args.node))
        pipeline = Pipeline(view=view, config=config, sinks=sinks, candidates=candidates, node=args.node)
        metrics.watch(pipeline.stats())
        settle_heap()
        progress = Progress(sys.stderr, total_bytes=sum(file_size(p) for p in captures))
        started = time.perf_counter()
        interrupted = False
        try:
            with _stop_on_sigterm():
                for frames in read_frames(captures, damaged=damaged):
                    pipeline.feed(frames)
                    progress.advance(frames)
        except KeyboardInterrupt:  # SIGINT or SIGTERM: what was read is still judged and written
            interrupted = True
        pipeline.finish()
        elapsed = time.perf_counter() - started
        progress.done()
        if args.metrics:
            metrics.write(args.metrics)
        if len(damaged) == len(captures) and not any(d.records for d in damaged):
            for d in damaged:  # nothing usable: the damage is the error
                print(f"flowwarden: error: {d.describe()}", file=sys.stderr)
            return EXIT_USAGE
        for d in damaged:
            print(f"flowwarden: damaged input: {d.describe()}", file=sys.stderr)
        for line in summary_lines(pipeline, elapsed=elapsed, events=events.written, counted=counted):
            print(line, file=sys.stderr)
    if interrupted:
        print("flowwarden: interrupted; events and metrics cover what was read", file=sys.stderr)
        return 130
    return EXIT_DAMAGED if damaged else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    view = _load_view(args)
    with _user_errors():
        candidates = load_policy_files(args.with_policies) if args.with_policies else []
        source = sys.stdin.buffer if args.flows == "-" else open(args.flows, "rb")
        out = sys.stdout.buffer
        with source:
            try:
                denied = evaluate_lines(view, source, out, explain=args.explain, at=time.time(),
                                        text=(args.format or default_format(out)) == "text",
                                        colour=use_colour(out), keep=_event_filter(args), candidates=candidates)
            except ValueError as e:  # a bad line: name the input it is in
                raise UserError(f"{'stdin' if args.flows == '-' else args.flows}: {_one_line(e)}") from e
    return 1 if args.check and denied else 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.run import Agent, RunOptions, json_logging  # capture (scapy) is only loaded when used
    json_logging()
    with _user_errors():
        _refuse_clobbering(args, {f: [getattr(args, f)] for f in _INPUT_FLAGS})
        if args.cluster and not args.allow_empty_cluster:
            load_config(args.config)  # a bad config is named first, as the agent would
            ignored: Counter = Counter()
            check_usable(load_cluster(args.cluster, ignored=ignored), source=args.cluster, ignored=ignored)
        agent = Agent(RunOptions(config=args.config, cluster=args.cluster, kubeconfig=args.kubeconfig,
                                 context=args.context, interfaces=args.interfaces, listen=args.listen,
                                 events=args.events, flows=args.flows, format=args.format,
                                 with_policies=tuple(args.with_policies), node=args.node))
    return agent.run()


def cmd_merge(args: argparse.Namespace) -> int:
    from agent.combine import merge_files
    with _user_errors():
        return merge_files(args.files, sys.stdout.buffer)


def cmd_suggest(args: argparse.Namespace) -> int:
    from agent.suggest.command import SuggestOptions, parse_max_prefix, run_suggest
    if not args.pcaps and not args.flows:
        raise UserError("suggest: give captures (PCAP ...) or flow records (--flows FILE ...)")
    if args.output_dir and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserError(f"-o {args.output_dir}: not a directory")
    with _user_errors():
        captures = capture_files(args.pcaps) if args.pcaps else []
        if args.pcaps and not captures:
            raise PcapError(f"{' '.join(args.pcaps)}: no capture files in it")
        options = SuggestOptions(captures=captures, max_prefix=parse_max_prefix(args.max_prefix),
                                 ingress_only=args.ingress_only, output_dir=args.output_dir,
                                 namespaces=tuple(v.strip() for value in args.namespace
                                                  for v in value.split(",") if v.strip()))
    args.kubeconfig = None
    store = _load_view(args)
    with _user_errors(), contextlib.ExitStack() as files:
        options.flows = [("stdin", sys.stdin.buffer) if f == "-" else (f, files.enter_context(open(f, "rb")))
                         for f in args.flows]
        return run_suggest(options, store=store, config=load_config(None), out=sys.stdout.buffer)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from agent.inventory.live import snapshot_cluster
    with _user_errors():
        state = snapshot_cluster(args.kubeconfig, args.context)
        with _output(args.output) as out:
            out.write(orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
