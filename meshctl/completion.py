"""meshctl completion: print the shell completion script."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

COMPLETE_VAR = "_MESHCTL_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash:  meshctl completion bash > /etc/bash_completion.d/meshctl
    zsh:   meshctl completion zsh > "${fpath[1]}/_meshctl"
    fish:  meshctl completion fish > ~/.config/fish/completions/meshctl.fish
    """
    completer = get_completion_class(shell)
    assert completer is not None  # the Choice above admits only supported shells
    root = ctx.find_root().command
    click.echo(completer(root, {}, "meshctl", COMPLETE_VAR).source())
