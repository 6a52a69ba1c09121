"""The ``repocket`` command line (docs/cli.rst): look at a model's data, and maintain it.

::

    repocket ls [--url URL [--cluster]] module.Model [--filter F=V ...] [--order=-F] [--limit N] [--json]
    repocket count module.Model [--filter F=V ...]
    repocket inspect KEY [--model module.Model]
    repocket stats module.Model|module ...
    repocket check [--repair] module.Model     # or module:Model
    repocket reindex module.Model
    repocket migrate-format [--to plain|envelope] module.Model
    repocket migrate module.Model [--rename OLD=NEW ...] [--drop FIELD ...] [--retype FIELD[=OldType] ...]
                     [--dry-run] [--batch N]
    repocket repartition [--from standalone|N] module.Model
    repocket replicate module.Model --to URL [--once] [--resync]
    repocket server [--path DIR] [--port PORT | --unix-socket PATH]
    repocket shell [module ...]
    repocket admin module [--host HOST] [--port PORT]
    repocket demo

``--url`` may come before or after the command; without it, ``$REDIS_URL``,
else ``localhost:6379`` database 0. With ``--cluster``, the URL names a node of
a Redis Cluster (``configure.cluster()``: the cluster key layout). The module is imported with the current
directory first on ``sys.path``, as ``python -m`` does.

Exit status:

- ``0``: all is well (``check`` found nothing, or ``--repair`` left nothing).
- ``1``: ``check`` found problems, or some remain after ``--repair`` (corrupt
  records, broken pointers and orphan ByteStreams are never repaired); or
  ``migrate`` found values it cannot convert (their records are left as they
  were); or the server of ``repocket server`` exited on its own.
- ``2``: a usage error, a module that cannot be imported, a name that is not a
  model, an unknown field in a filter, a key that is not a record, Redis
  unreachable or refusing, or any other repocket error. The error is one line
  on stderr, never a traceback.

``repocket server`` runs until Ctrl-C, SIGTERM or SIGHUP, and stops its
``redis-server`` by its PID before exiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis

import repocket
from repocket import console, errors, formats

if TYPE_CHECKING:
    from repocket.checks import CheckReport
    from repocket.server import RedisServer

#: Exit statuses.
OK, PROBLEMS, ERROR = 0, 1, 2

_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)  # no SIGHUP on Windows
Handler = Any  # what signal.signal() takes and returns: a callable, SIG_IGN, SIG_DFL or None


class _CliError(Exception):
    """A one-line error for stderr, ending the command with status 2."""


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived: unwind so that the server is stopped."""


# -- arguments -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """The argument parser; ``--url`` is accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=argparse.SUPPRESS,
        help="Redis URL (default: $REDIS_URL, else localhost:6379/0)",
    )  # fmt: skip
    common.add_argument(
        "--cluster", action="store_true", default=argparse.SUPPRESS,
        help="the URL names a node of a Redis Cluster",
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="repocket", description="repocket: a Redis-native active-record ORM", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"repocket {repocket.__version__}")
    sub = parser.add_subparsers(dest="command")
    model_help = "the model as module.Model or module:Model (the module is imported)"
    check = sub.add_parser("check", parents=[common], help="compare a model's indexes with its records")
    check.add_argument("model", help=model_help)
    check.add_argument("--repair", action="store_true", help="fix the indexes and id set, then check again")
    reindex = sub.add_parser(
        "reindex", parents=[common], help="build a model's id set and indexes from its records"
    )
    reindex.add_argument("model", help=model_help)
    migrate = sub.add_parser(
        "migrate-format", parents=[common],
        help="rewrite a model's records in its storage format (resumable, idempotent)",
    )
    migrate.add_argument("model", help=model_help)
    migrate.add_argument("--to", choices=sorted(formats.FORMATS), default=None,
                         help="the format to store (default: the model's Meta.format)")
    evolve = sub.add_parser(
        "migrate", parents=[common],
        help="evolve a model's stored records after its declaration changed (resumable, idempotent)",
    )
    evolve.add_argument("model", help=model_help)
    evolve.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", type=_pair,
                        help="the stored field OLD is the declared attribute NEW now; repeat for more")
    evolve.add_argument("--drop", action="append", default=[], metavar="FIELD",
                        help="delete the stored field FIELD, which no attribute declares any more")
    evolve.add_argument("--retype", action="append", default=[], metavar="FIELD[=OldType]",
                        help="convert FIELD's stored values to its declared type (the plain format needs "
                             "the type they were stored with)")
    evolve.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    evolve.add_argument("--batch", type=int, default=500, metavar="N", help="records per atomic write (500)")
    move = sub.add_parser(
        "repartition", parents=[common],
        help="move a model's records into its current partitions (resumable, idempotent)",
    )
    move.add_argument("model", help=model_help)
    move.add_argument("--from", dest="source", default=None, type=_source,
                      help="where they are: 'standalone' (the keys of one server) or a partition count "
                           "(default: the model's Meta.moving_from, else 'standalone')")
    replicate = sub.add_parser(
        "replicate", parents=[common],
        help="apply a model's changes (Meta.changes) to another Redis, with progress and lag, until interrupted",
    )
    replicate.add_argument("model", help=model_help)
    replicate.add_argument("--to", dest="target", required=True, help="the replica's Redis URL")
    replicate.add_argument("--name", default="replica", help="the replica's name (its bookkeeping in the target)")
    replicate.add_argument("--interval", type=float, default=1.0, help="seconds between passes once caught up")
    replicate.add_argument("--once", action="store_true", help="stop once caught up")
    replicate.add_argument("--resync", action="store_true",
                           help="rebuild the replica from the primary's records first (also done when it fell "
                                "behind the trimming)")
    inspect = sub.add_parser("inspect", parents=[common],
                             help="one stored record, field by field: type and value next to the raw form")
    inspect.add_argument("key", help="the record's hash key (redis-cli KEYS shows them)")
    inspect.add_argument("--model", default=None, help="the record's model (for a plain-format record's types, "
                                                        "its ByteStreams and secrets)")
    ls = sub.add_parser("ls", parents=[common], help="a model's records as a table, or JSON lines")
    ls.add_argument("model", help=model_help)
    ls.add_argument("--filter", action="append", default=[], metavar="FIELD[__LOOKUP]=VALUE",
                    help="a filter() lookup; repeat for more (__in takes a comma-separated list)")
    ls.add_argument("--order", action="append", default=[], metavar="[-]FIELD", help="order_by() a field")
    ls.add_argument("--limit", type=int, default=20, help="records shown (default 20; 0: all)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line (to_dict(simple=True))")
    count = sub.add_parser("count", parents=[common], help="how many records match")
    count.add_argument("model", help=model_help)
    count.add_argument("--filter", action="append", default=[], metavar="FIELD[__LOOKUP]=VALUE",
                       help="a filter() lookup; repeat for more")
    stats = sub.add_parser("stats", parents=[common],
                           help="records, bytes per record (sampled MEMORY USAGE), index keys, per model")
    stats.add_argument("model", nargs="*", help="models (module.Model, or a module: all its models)")
    shell = sub.add_parser("shell", parents=[common],
                           help="IPython (or the standard console) with the connection configured and models imported")
    shell.add_argument("module", nargs="*", help="modules whose models are imported into the shell")
    admin = sub.add_parser("admin", parents=[common],
                           help="serve the HTML admin of a module's models (the admin extra)")
    admin.add_argument("module", help="the module whose models the admin shows")
    admin.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    admin.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    sub.add_parser("demo", help="run the original repocket tutorial on an embedded redis-server")
    server = sub.add_parser("server", help="run an embedded redis-server until interrupted")
    server.add_argument("--path", default=".repocket", help="data directory (append-only file, password)")
    where = server.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1 (default: a free one)")
    where.add_argument("--unix-socket", metavar="PATH", default=None, help="listen on this unix socket instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 problems, 2 errors)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return OK
    try:
        if args.command == "server":
            return _serve(args.path, port=args.port, unix_socket=args.unix_socket)
        if args.command == "demo":
            return _demo()
        _configure(getattr(args, "url", None), cluster=getattr(args, "cluster", False))
        if args.command == "inspect":
            return _inspect(args.key, _load_model(args.model) if args.model else None)
        if args.command == "stats":
            return _stats(args.model)
        if args.command == "shell":
            return _shell(args.module)
        if args.command == "admin":
            return _admin(args.module, args.host, args.port)
        model = _load_model(args.model)
        if args.command == "ls":
            return _ls(model, args)
        if args.command == "count":
            return _count(model, args.filter)
        if args.command == "reindex":
            return _reindex(model)
        if args.command == "migrate-format":
            return _migrate(model, args.to)
        if args.command == "migrate":
            return _evolve(model, args)
        if args.command == "repartition":
            return _repartition(model, args.source)
        if args.command == "replicate":
            return _replicate(model, args)
        return _check(model, repair=args.repair)
    except (_CliError, errors.RepocketError, redis.RedisError, ValueError) as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    """Print ``message``'s first line as the error and return status 2."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"repocket: {first}", file=sys.stderr)
    return ERROR


# -- check and reindex -----------------------------------------------------------------


def _configure(url: str | None, cluster: bool = False) -> None:
    """Point the global pool at ``url``, else ``$REDIS_URL`` (a cluster node's with ``cluster``);
    the default pool otherwise."""
    from repocket.connections import configure

    url = url or os.environ.get("REDIS_URL")
    if not url:
        if cluster:
            raise _CliError("--cluster needs --url (or $REDIS_URL): a node of the cluster")
        return
    try:
        if cluster:
            configure.cluster(url=url)
        else:
            configure.connection_pool(url=url)
    except ValueError as exc:  # the message never repeats the URL, which may hold a password
        raise _CliError(f"invalid Redis URL: {exc}") from None


def _load_model(spec: str) -> type[repocket.ActiveRecord]:
    """Import ``module.Model`` or ``module:Model`` and return the model class."""
    if ":" in spec:
        module_name, _, name = spec.partition(":")
    else:
        module_name, _, name = spec.rpartition(".")
    if not module_name or not name:
        raise _CliError(f"expected module.Model or module:Model, got {spec!r}")
    module = _import(module_name)
    model: Any = module
    for part in name.split("."):
        model = getattr(model, part, None)
    if not (isinstance(model, type) and issubclass(model, repocket.ActiveRecord)):
        raise _CliError(f"{spec} is not a repocket model")
    return model


def _import(module_name: str) -> Any:
    """Import the user's module as ``python -m`` would: the current directory comes first."""
    cwd = os.getcwd()
    if sys.path[:1] not in ([cwd], [""]):
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # includes ModuleNotFoundError
        reason = str(exc)
    except Exception as exc:  # the module itself failed while running
        reason = f"{type(exc).__name__}: {exc}"
    raise _CliError(f"cannot import module {module_name!r}: {reason}")


def _reindex(model: type[repocket.ActiveRecord]) -> int:
    """Run ``reindex()`` with a progress bar on stderr."""
    with console.progress(f"reindex {model.__name__}") as shown:
        total = model.objects.reindex(progress=shown)
    print(f"indexed {total} {model._meta.label} records")
    return OK


def _migrate(model: type[repocket.ActiveRecord], to: str | None) -> int:
    """Run ``migrate_format()`` with a progress bar on stderr (resumable: run it again after Ctrl-C)."""
    target = to or model._meta.format.name
    with console.progress(f"migrate {model.__name__}") as shown:
        rewritten = model.objects.migrate_format(to, progress=shown)
    print(f"{model._meta.label}: {rewritten} records rewritten; every record is stored in the {target} format")
    return OK


def _pair(text: str) -> tuple[str, str]:
    """``--rename``: ``OLD=NEW``."""
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, not {text!r}")
    return old, new


def _evolve(model: type[repocket.ActiveRecord], args: argparse.Namespace) -> int:
    """Run the migration (or its dry run) with a progress bar on stderr; print counts, samples and problems.

    Resumable: after Ctrl-C, the same command starts where it stopped.
    """
    if not (args.rename or args.drop or args.retype):
        raise _CliError("name what changed: --rename OLD=NEW, --drop FIELD or --retype FIELD")
    retype = {name: old or None for name, _, old in (text.partition("=") for text in args.retype)}
    with console.progress(f"migrate {model.__name__}") as shown:
        report = model.objects.migrate(dict(args.rename), args.drop, retype, dry_run=args.dry_run,
                                       batch_size=args.batch, progress=shown)
    would = " (dry run: nothing written)" if report.dry_run else ""
    print(f"{report.model}: {report.records} records read, {report.changed} "
          f"{'to rewrite' if report.dry_run else 'rewritten'}{would}")
    for operation, count in report.counts.items():
        print(f"  {operation}: {count} records")
    if report.index_keys_removed:
        print(f"  index keys of undeclared names {'to delete' if report.dry_run else 'deleted'}: "
              f"{report.index_keys_removed}")
    if report.dry_run:
        for key, fields in report.samples:
            print(f"  sample {key}: " + "; ".join(f"{name}: {old} -> {new}" for name, (old, new) in fields.items()))
    for key, name, value, problem in report.problems:
        print(f"  cannot convert {key} field {name!r} (value {value}): {problem}; the record was left as it was")
    return OK if report.ok else PROBLEMS


def _source(text: str) -> int | str:
    """``--from``: 'standalone', or a partition count."""
    if text == "standalone":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected 'standalone' or a partition count, not {text!r}")
    return int(text)


def _repartition(model: type[repocket.ActiveRecord], source: int | str | None) -> int:
    """Run ``repartition()`` with progress on stderr."""
    with console.progress(f"repartition {model.__name__}") as shown:
        moved = model.objects.repartition(source, progress=shown)
    source = source or model._meta.moving_from or "standalone"
    where = "the standalone layout" if source == "standalone" else f"{source} partitions"
    print(f"{model._meta.label}: {moved} records moved from {where} into its {model._meta.partitions} partitions")
    return OK


def _inspect(key: str, model: type[repocket.ActiveRecord] | None) -> int:
    """Print one stored record, field by field."""
    from repocket.connections import configure

    if model is None:
        print("repocket: no --model: types come from the envelopes, and secret attributes are shown as stored",
              file=sys.stderr)
    console.console().print(console.inspect_key(configure.get_connection(), key, model))
    return OK


def _ls(model: type[repocket.ActiveRecord], args: argparse.Namespace) -> int:
    """Print a model's records (filtered, ordered, at most ``--limit``), as a table or JSON lines."""
    query = model.objects.filter(**console.filters(model, args.filter))
    if args.order:
        query = query.order_by(*args.order)
    records = list(query[:args.limit] if args.limit else query)
    if args.json:
        for record in records:
            print(console.json_line(record))
        return OK
    console.console().print(console.records_table(model, records))
    return OK


def _count(model: type[repocket.ActiveRecord], texts: Sequence[str]) -> int:
    """Print how many records match the filters."""
    print(model.objects.filter(**console.filters(model, texts)).count())
    return OK


def _models_of(module: Any) -> dict[str, type[repocket.ActiveRecord]]:
    """The models ``module`` declares (not those it imports), by name."""
    return {name: value for name, value in vars(module).items() if isinstance(value, type)
            and issubclass(value, repocket.ActiveRecord) and value.__module__ == module.__name__}


def _stats(specs: Sequence[str]) -> int:
    """Print the statistics table of the models named (a module names all its models)."""
    from repocket.connections import configure

    models: list[type[repocket.ActiveRecord]] = []
    for spec in specs:
        try:
            models.append(_load_model(spec))
        except _CliError:  # a module: every model it declares
            models += _models_of(_import(spec)).values()
    if not models:
        raise _CliError("name the models (module.Model, or a module holding them)")
    console.console().print(console.stats_table(configure.get_connection(), models))
    return OK


def _shell_namespace(modules: Sequence[str]) -> dict[str, Any]:
    """What the shell starts with: repocket, its connection, and every model the ``modules`` declare."""
    from repocket.connections import configure

    namespace: dict[str, Any] = {"repocket": repocket, "connection": configure.get_connection()}
    for name in modules:
        namespace.update(_models_of(_import(name)))
    return namespace


def _shell(modules: Sequence[str]) -> int:
    """Start IPython if it is installed, else the standard console, with :func:`_shell_namespace`."""
    namespace = _shell_namespace(modules)
    models = sorted(key for key, value in namespace.items() if isinstance(value, type))
    banner = f"repocket {repocket.__version__}; models: {', '.join(models) or 'none'}; `connection` is configured"
    try:
        from IPython import start_ipython
    except ImportError:
        import code

        code.interact(banner=banner, local=namespace)
        return OK
    print(banner)
    start_ipython(argv=[], user_ns=namespace)
    return OK


def _admin(module_name: str, host: str, port: int) -> int:
    """Serve the admin pages of the models ``module_name`` declares until interrupted."""
    models = list(_models_of(_import(module_name)).values())
    if not models:
        raise _CliError(f"module {module_name!r} declares no model")
    try:
        from repocket.web.admin.serve import serve_admin

        serve_admin(models, host=host, port=port, title=f"repocket admin: {module_name}")
    except ImportError as exc:  # (FastAPI, Jinja2 or uvicorn missing)
        raise _CliError(f"{exc}; the admin needs pip install 'repocket[admin]'") from None
    return OK


def _demo() -> int:
    """Run the original repocket tutorial (examples/tutorial.py) on an embedded redis-server."""
    import runpy
    from pathlib import Path

    tutorial = Path(__file__).resolve().parent.parent / "examples" / "tutorial.py"
    if not tutorial.exists():
        raise _CliError(f"the tutorial is in the source tree ({tutorial}), which this install does not have")
    runpy.run_path(str(tutorial), run_name="__main__")
    return OK


def _replicate(model: type[repocket.ActiveRecord], args: argparse.Namespace) -> int:
    """Run a :class:`~repocket.replicas.Replica` pass after pass, printing progress and lag, until a signal
    (or, with ``--once``, until caught up)."""
    from repocket.replicas import Replica

    target = redis.Redis.from_url(args.target)
    replica = Replica(model, target=target, name=args.name)
    label = model._meta.label
    previous = _on_stop_signals(_raise_stopped)
    try:
        if args.resync:
            print(f"{label}: resynced {replica.resync()} records", flush=True)
        while True:
            try:
                read = replica.sync()
            except errors.ChangesTrimmedError as exc:
                print(f"{label}: behind the trimming ({exc.trimmed}): resyncing", flush=True)
                print(f"{label}: resynced {replica.resync()} records", flush=True)
                continue
            lag = replica.lag()
            print(f"{label}: applied {replica.applied}, skipped {replica.skipped}, gaps {len(replica.gaps)}, "
                  f"lag {'-' if lag is None else f'{lag.total_seconds():.3f} s'}", flush=True)
            if read == 0 and args.once:
                return OK
            if read == 0:
                time.sleep(args.interval)
    except (KeyboardInterrupt, _Stopped):
        return OK
    finally:
        _restore_signals(previous)
        target.close()


def _check(model: type[repocket.ActiveRecord], *, repair: bool) -> int:
    """Run ``check()``; after a repair, check again and report what remains."""
    report = model.objects.check(repair=repair)
    print(f"{report.model}: {report.records} records, {len(report)} problems"
          + (" (repaired)" if report.repaired else ""))
    _print_problems(report)
    if report.undeclared_fields:  # (not a problem: see docs/evolution.rst)
        print("undeclared fields (not problems): "
              + ", ".join(f"{name} {count} records" for name, count in report.undeclared_fields.items()))
    if report.ok:
        return OK
    if not repair:
        return PROBLEMS
    remaining = model.objects.check()
    print(f"after repair: {len(remaining)} problems remain")
    _print_problems(remaining)
    return OK if remaining.ok else PROBLEMS


def _print_problems(report: CheckReport) -> None:
    """One line per problem, for every list of the report (so a new kind is never left out)."""
    for name, item in _problems(report):
        print(f"  {name}: {item}")


def _problems(report: CheckReport) -> Iterator[tuple[str, Any]]:
    """``(list name, item)`` for every item of every list field of ``report``."""
    for field in dataclasses.fields(report):
        value = getattr(report, field.name)
        if isinstance(value, list):
            for item in value:
                yield field.name, item


# -- server ----------------------------------------------------------------------------


def _serve(path: str, *, port: int | None, unix_socket: str | None) -> int:
    """Run the embedded server in the foreground until a signal; always stop it by its PID."""
    from repocket.server import embedded_server

    server = embedded_server(path, port=port, unix_socket=unix_socket)
    previous = _on_stop_signals(_raise_stopped)
    try:
        server.start()
        _announce(server)
        while server.running:
            time.sleep(0.2)
        print(f"repocket: redis-server exited on its own; see {_log_path(server)}", file=sys.stderr)
        return PROBLEMS
    except (KeyboardInterrupt, _Stopped):
        return OK
    finally:
        _on_stop_signals(signal.SIG_IGN)  # a second signal must not interrupt the stop
        try:
            server.stop()
        finally:
            _restore_signals(previous)


def _announce(server: RedisServer) -> None:
    """Say where the server listens, without its password, and how to connect to it."""
    from repocket.server import PASSWORD_NAME

    assert server.path is not None
    password_file = server.path / PASSWORD_NAME
    print(f"redis-server listening at {server.masked_url} (pid {server.pid}); "
          f"password in {password_file}; Ctrl-C stops it")
    example = server.masked_url.replace("***", f"$(cat {shlex.quote(str(password_file))})")
    print(f'connect with: export REDIS_URL="{example}"', flush=True)


def _log_path(server: RedisServer) -> str:
    """The server's log file, to point at when it died."""
    from repocket.server import LOG_NAME

    return str(server.path / LOG_NAME) if server.path is not None else "its log"


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    """SIGINT behaves as usual (KeyboardInterrupt); SIGTERM and SIGHUP raise _Stopped."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise _Stopped(signal.Signals(signum).name)


def _on_stop_signals(handler: Handler) -> dict[signal.Signals, Handler]:
    """Install ``handler`` for SIGINT, SIGTERM and SIGHUP; return the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; in-process callers keep theirs
    return {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}


def _restore_signals(previous: dict[signal.Signals, Handler]) -> None:
    """Put back the handlers :func:`_on_stop_signals` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
