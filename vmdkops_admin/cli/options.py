"""What every command group shares: the group class (help and exit code 3
when no sub-command is given), the ``--output-format`` option, and the
decorator that gives a command one DB transaction."""

import functools
import inspect

import click

EXIT_FAILURE = 2
EXIT_NO_COMMAND = 3
FORMATS = ("table", "json", "csv", "xml")  # the --output-format choices, rendered by render.py


class CommandGroup(click.Group):
    """Lists commands in the order they were added; without a sub-command,
    prints its own help and exits 3."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("invoke_without_command", True)
        kwargs.setdefault("subcommand_metavar", "COMMAND [ARGS]...")
        super().__init__(*args, **kwargs)

    def list_commands(self, ctx):
        return list(self.commands)

    def invoke(self, ctx):
        result = super().invoke(ctx)
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help())
            ctx.exit(EXIT_NO_COMMAND)
        return result


def group(name, help_text, parent=None):
    """A group (of ``parent``, else of the root) whose listing shows the whole help sentence."""
    sub = CommandGroup(name, help=help_text, short_help=help_text)
    sub.path = getattr(parent, "path", []) + [name]
    if parent is not None:
        parent.add_command(sub)
    return sub


def command(parent, name, help_text, audited=True, **kwargs):
    """A command of ``parent`` (None: of the root). Its function's docstring
    is its example, shown after the help and in the man page. An ``audited``
    command (one that changes something) leaves an event in the audit
    trail, whether it succeeds or not."""
    action = " ".join(getattr(parent, "path", []) + [name])

    def decorate(function):
        example = inspect.cleandoc(function.__doc__ or "")
        if audited:
            function = _audited(action, function)
        made = click.command(name, help=help_text, short_help=help_text,
                             epilog=f"\b\nExample:\n  {example}" if example else None, **kwargs)(function)
        made.example = example
        if parent is not None:
            parent.add_command(made)
        return made
    return decorate


def _audited(action, function):
    from ..errors import VmdkopsError

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from ..db import audit

        try:
            result = function(*args, **kwargs)
        except VmdkopsError as exc:
            audit.admin_event(action, kwargs, exc.message)
            raise
        audit.admin_event(action, kwargs, None)
        return result
    return wrapper


output_format_option = click.option(
    "--output-format", type=click.Choice(FORMATS, case_sensitive=False), default=None,
    help="Table by default; xml is esxcli's format.")


def with_db(function=None, *, optional=False):
    """Run the command in one transaction of the config DB, the session as
    its first argument (see ``db.modes.run_in_transaction``)."""
    if function is None:
        return functools.partial(with_db, optional=optional)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from ..db.modes import run_in_transaction

        return run_in_transaction(function, *args, optional=optional, **kwargs)

    return wrapper


def backend():
    """The installation's backend, made once per command: a parameter type
    that resolves a datastore and the command itself share it (on vSphere,
    one login, logged out when the command ends)."""
    from ..backends import get_backend

    context = click.get_current_context(silent=True)
    if context is None:
        return get_backend()
    root = context.find_root()
    if "vmdkops.backend" not in root.meta:
        made = root.meta["vmdkops.backend"] = get_backend()
        root.call_on_close(made.close)
    return root.meta["vmdkops.backend"]
