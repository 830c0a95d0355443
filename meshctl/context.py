"""Click plumbing shared by the noun modules: the client, --json, failures."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from meshctl.client import ClientError, MeshClient

EXIT_ERROR = 1
EXIT_INVALID = 2


@dataclass
class Session:
    """What the root command resolved, for the subcommands."""

    client: MeshClient
    json: bool


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` on a command (also accepted before it: ``meshctl --json status``)."""

    @functools.wraps(fn)
    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, as_json: bool, **kwargs: Any) -> Any:
        root = ctx.find_root().obj
        return fn(*args, as_json=as_json or (isinstance(root, Session) and root.json), **kwargs)

    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (stable field names) for scripts.")(wrapper)


def with_client(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the MeshClient as first argument; turn ClientError into exit 1."""

    @functools.wraps(fn)
    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        client: MeshClient = ctx.find_root().obj.client
        try:
            return fn(client, *args, **kwargs)
        except ClientError as exc:
            fail(str(exc))

    return wrapper


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"meshctl: {message}", err=True)
    raise click.exceptions.Exit(code)
