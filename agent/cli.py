"""`flowwarden` command line: argparse -> pipeline. No logic of its own.

Every user error (missing or corrupt file, bad cluster state, bad config or
policy) ends as one line on stderr naming the file and the problem, exit 2.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import BinaryIO, Iterator

import orjson
from agent.capture.pcap import Damage, PcapError, capture_files, file_size, read_frames
from agent.cli_args import parser
from agent.config import ConfigError, load_config
from agent.evaluate import evaluate_lines, load_policy_files, policy_files
from agent.inventory.objects import ObjectError
from agent.inventory.snapshot import ClusterFileError, check_usable, describe_kinds, load_cluster
from agent.judges.netpol import PolicyError, validate_policy
from agent.pipeline import Pipeline, settle_heap
from agent.sinks.events import EventSink, FlowRecordSink
from agent.sinks.metrics import MetricsSink
from agent.sinks.outputs import OutputClashError, refuse_clobbering
from agent.sinks.summary import Progress, SummarySink, summary_lines
from agent.sinks.text import EventFilter, FilteredSink, TextWriter, default_format, use_colour

USER_ERRORS = (PcapError, ClusterFileError, ConfigError, PolicyError, ObjectError, ValueError,
               FileNotFoundError, IsADirectoryError, PermissionError)
EXIT_DAMAGED = 1  # completed, but some input was damaged or skipped
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    return parser({"replay": cmd_replay, "evaluate": cmd_evaluate, "run": cmd_run, "merge": cmd_merge,
                   "suggest": cmd_suggest, "snapshot": cmd_snapshot}, __doc__.splitlines()[0])


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


def _event_filter(args: argparse.Namespace) -> EventFilter:
    def split(values: list[str]) -> frozenset[str]:
        return frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    return EventFilter(kinds=split(args.kind), namespaces=split(args.namespace),
                       min_severity=args.min_severity, verdicts=frozenset(args.verdict))


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
