"""The ``relay-plugin bindings`` subcommands: list, add, remove, import and export bot bindings.

Exit codes: 0 on success, 2 for a usage or input error (bad value, bad file), 1 when the store or
an output file cannot be used. Errors are one line on standard error, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relay_plugin.config import Settings
from relay_plugin.core.hotplex_io import export_bindings, import_bindings
from relay_plugin.core.protocol import format_time
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.errors import BindingError, BotNotBoundError, ConfigError, StoreError

EXIT_OK = 0
EXIT_STORE = 1
EXIT_INPUT = 2
CREATED_BY = "cli"


class _CommandError(Exception):
    """A failure already worded for the user, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_bindings_parser(subparsers: Any) -> None:
    """Add the ``bindings`` command and its subcommands to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "bindings",
        help="list, add, remove, import or export bot bindings",
        description="Manage which bots are bound in which Slack channels. The store is "
        "relay.db in RELAY_DATA_DIR.",
    )
    commands = parser.add_subparsers(dest="bindings_command", metavar="COMMAND", required=True)

    show = commands.add_parser("list", help="show bindings (tokens are never shown)")
    show.add_argument("--team", help="only bindings of this Slack workspace id (T...)")
    show.add_argument("--channel", help="only bindings of this channel id (C...)")

    add = commands.add_parser("add", help="bind a bot in a channel, replacing one of the same name")
    _add_key_arguments(add)
    add.add_argument("--url", required=True, help="the bot instance's http(s) URL")
    token = add.add_mutually_exclusive_group()
    token.add_argument(
        "--token", default="", help="bearer token for this bot (default: RELAY_TOKEN)"
    )
    token.add_argument(
        "--token-env",
        metavar="NAME",
        help="read the bot's bearer token from environment variable NAME, which keeps it out of "
        "shell history and process lists",
    )
    add.add_argument(
        "--dedupe",
        action="store_true",
        help="the bot drops repeated requests by Idempotency-Key, so failures where the request "
        "may have arrived are retried too",
    )

    remove = commands.add_parser("remove", help="unbind a bot from a channel")
    _add_key_arguments(remove)

    load = commands.add_parser("import", help="import a HotPlex bindings.json file")
    load.add_argument(
        "file", metavar="FILE", help="the bindings.json file, or - for standard input"
    )
    load.add_argument("--team", help="workspace id (T...) for entries that have no team_id")

    dump = commands.add_parser("export", help="export bindings as a HotPlex bindings.json file")
    dump.add_argument(
        "file", metavar="FILE", nargs="?", help="output file, written with mode 0600 "
        "(default: standard output)",
    )  # fmt: skip
    dump.add_argument(
        "--include-secrets", action="store_true", help="include per-bot tokens in the output"
    )


def _add_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, help="Slack workspace id (T...)")
    parser.add_argument("--channel", required=True, help="Slack channel id (C..., G... or D...)")
    parser.add_argument("--bot", required=True, help="bot name: letters, digits, '-', '_', '.'")


def run_bindings(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``bindings`` subcommand, print its result and return the exit code."""
    handler = _HANDLERS[args.bindings_command]
    try:
        data_dir = Settings.from_env(env, require_slack=False).data_dir
        handler(args, env, data_dir)
    except _CommandError as exc:
        return _fail(str(exc), exc.code)
    except ConfigError as exc:
        return _fail(f"invalid setting {exc}", EXIT_INPUT)
    except BindingError as exc:
        return _fail(str(exc), EXIT_INPUT)
    except StoreError as exc:
        return _fail(str(exc), EXIT_STORE)
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"relay-plugin bindings: error: {message}", file=sys.stderr)
    return code


def _list(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path) -> None:
    # Reading commands do not create a store where there is none.
    if not (data_dir / BindingStore.FILE_NAME).exists():
        print(f"no bindings (no store at {data_dir / BindingStore.FILE_NAME} yet)")
        return
    with BindingStore(data_dir) as store:
        if args.team and args.channel:
            bindings = store.channel(args.team, args.channel)
        else:
            bindings = [
                b for b in store.all()
                if (not args.team or b.team_id == args.team)
                and (not args.channel or b.channel_id == args.channel)
            ]  # fmt: skip
    if not bindings:
        print("no bindings")
        return
    header = ("TEAM", "CHANNEL", "BOT", "URL", "OPTIONS", "CREATED")
    rows = [header] + [_list_row(b) for b in bindings]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join([*cells, row[-1]]))


def _list_row(binding: BotBinding) -> tuple[str, ...]:
    created = format_time(binding.created_at) if binding.created_at else "-"
    if binding.created_by:
        created += f" by {binding.created_by}"
    return (
        binding.team_id,
        binding.channel_id,
        binding.bot,
        binding.url,
        _options(binding) or "-",
        created,
    )


def _options(binding: BotBinding) -> str:
    """Describe a binding's options without showing its token."""
    flags = [name for name, on in (("dedupe", binding.dedupe), ("token: set", binding.token)) if on]
    return ", ".join(flags)


def _add(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path) -> None:
    token = args.token
    if args.token_env:
        token = env.get(args.token_env, "")
        if not token:
            raise _CommandError(
                f"environment variable {args.token_env} is not set or empty; "
                "export it with the bot's token, or leave out --token-env",
                EXIT_INPUT,
            )
    binding = BotBinding(
        args.team, args.channel, args.bot, args.url,
        token=token, dedupe=args.dedupe, created_by=CREATED_BY,
    )  # fmt: skip
    with BindingStore(data_dir) as store:
        previous = store.get(args.team, args.channel, args.bot)
        stored = store.put(binding)
    verb = "replaced" if previous else "added"
    options = _options(stored)
    suffix = f" ({options})" if options else ""
    print(f"{verb} {stored.bot} in {stored.team_id}/{stored.channel_id}: {stored.url}{suffix}")
    if previous and previous.token and not stored.token:
        print("note: the previous token was removed; this bot now uses RELAY_TOKEN")


def _remove(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path) -> None:
    with BindingStore(data_dir) as store:
        if not store.remove(args.team, args.channel, args.bot):
            bound = [b.bot for b in store.channel(args.team, args.channel)]
            raise BotNotBoundError(args.bot, f"{args.team}/{args.channel}", bound)
    print(f"removed {args.bot} from {args.team}/{args.channel}")


def _import(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path) -> None:
    source = "standard input" if args.file == "-" else args.file
    data = _read_json(args.file, source)
    with BindingStore(data_dir) as store:
        report = import_bindings(store, data, default_team=args.team or "", created_by=CREATED_BY)
    print(
        f"imported {source}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.skipped)} skipped"
    )
    for verb, bindings in (("added", report.added), ("updated", report.updated)):
        for b in bindings:
            print(f"  {verb} {b.bot} in {b.team_id}/{b.channel_id}: {b.url}")
    for skipped in report.skipped:
        print(f"  skipped {skipped.entry}: {skipped.reason}")


def _read_json(file: str, source: str) -> Any:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _CommandError(
            f"{file}: file not found; give the path of a bindings.json file, or - for standard "
            "input",
            EXIT_INPUT,
        ) from None
    except OSError as exc:
        raise _CommandError(f"{source}: cannot read it ({exc.strerror})", EXIT_INPUT) from None
    except UnicodeDecodeError as exc:
        raise _CommandError(
            f"{source}: not UTF-8 text (invalid byte at offset {exc.start}); give a JSON file",
            EXIT_INPUT,
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _CommandError(
            f"{source}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "give a HotPlex bindings.json file",
            EXIT_INPUT,
        ) from None


def _export(args: argparse.Namespace, env: Mapping[str, str], data_dir: Path) -> None:
    if not (data_dir / BindingStore.FILE_NAME).exists():
        raise BindingError(
            f"no binding store at {data_dir / BindingStore.FILE_NAME}; check RELAY_DATA_DIR"
        )
    with BindingStore(data_dir) as store:
        document = export_bindings(store, include_secrets=args.include_secrets)
        withheld = 0 if args.include_secrets else sum(1 for b in store.all() if b.token)
    text = json.dumps(document, indent=2) + "\n"
    if args.file in (None, "-"):
        sys.stdout.write(text)
    else:
        _write_private(Path(args.file), text)
        count = sum(len(entry["bots"]) for entry in document["bindings"])
        print(f"exported {count} bindings to {args.file}")
    if withheld:
        print(
            f"note: {withheld} per-bot token(s) left out; add --include-secrets to export them",
            file=sys.stderr,
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise _CommandError(
            f"{path}: cannot write it ({exc.strerror}); give a path in a writable folder",
            EXIT_STORE,
        ) from None


_HANDLERS: dict[str, Callable[[argparse.Namespace, Mapping[str, str], Path], None]] = {
    "list": _list,
    "add": _add,
    "remove": _remove,
    "import": _import,
    "export": _export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as ``bindings ...`` arguments and run the subcommand."""
    parser = argparse.ArgumentParser(prog="relay-plugin")
    add_bindings_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return run_bindings(args, os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
