"""The ``repocket`` command line: ``repocket --version``, ``repocket check``, ``repocket server``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import repocket
from repocket import errors


def _load_model(path: str) -> type[repocket.ActiveRecord]:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise SystemExit(f"repocket: expected module.Model, got {path!r}")
    model = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(model, type) and issubclass(model, repocket.ActiveRecord)):
        raise SystemExit(f"repocket: {path} is not a repocket model")
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="repocket", description="repocket: a Redis-native active-record ORM")
    parser.add_argument("--version", action="version", version=f"repocket {repocket.__version__}")
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL, else localhost:6379/0)")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="compare a model's indexes with its records")
    check.add_argument("model", help="the model as module.Model (the module is imported)")
    check.add_argument("--repair", action="store_true", help="fix the indexes and id set")
    reindex = sub.add_parser("reindex", help="build a model's id set and indexes from its records")
    reindex.add_argument("model")
    server = sub.add_parser("server", help="run an embedded redis-server until interrupted")
    server.add_argument("--path", default=".repocket", help="data directory (append-only file)")
    server.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "server":
        from repocket.server import start_embedded

        handle = start_embedded(args.path, port=args.port)
        print(f"redis-server listening at {handle.url} (pid {handle.pid}); Ctrl-C stops it", flush=True)
        try:
            while handle.running:
                import time

                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            handle.stop()
        return 0

    import os

    from repocket.connections import configure

    url = args.url or os.environ.get("REDIS_URL")
    if url:
        configure.connection_pool(url=url)
    model = _load_model(args.model)
    try:
        if args.command == "reindex":
            total = model.objects.reindex(progress=lambda done, of: print(f"{done}/{of}", file=sys.stderr))
            print(f"indexed {total} {model._meta.label} records")
            return 0
        report = model.objects.check(repair=args.repair)
    except errors.RepocketError as exc:
        print(f"repocket: {exc}", file=sys.stderr)
        return 2
    print(f"{report.model}: {report.records} records, {len(report)} problems"
          + (" (repaired)" if report.repaired else ""))
    for name in ("missing_entries", "stale_entries", "orphan_streams", "broken_pointers", "corrupt_records"):
        for item in getattr(report, name):
            print(f"  {name}: {item}")
    return 0 if report.ok or report.repaired else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
