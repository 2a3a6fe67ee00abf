"""The ``vmdkops_admin`` command: the root group, and the edge where errors
become what a user sees. A ``VmdkopsError`` prints ``ERROR:{text}`` and exits 2;
anything unexpected is logged with its traceback and shown as a short line
with an id to find it in the log, never as a traceback."""

import importlib
import os
import sys

import click

from ..errors import VmdkopsError
from .options import EXIT_FAILURE, CommandGroup, output_format_option


class CommandFailed(click.ClickException):
    exit_code = EXIT_FAILURE

    def show(self, file=None):
        click.echo(f"ERROR:{self.message}")


# The commands, in the order ``--help`` lists them, each in the module of its
# name, with its short help: a module is imported only when its command is
# asked for, so ``--help`` imports none (tests/test_cli.py checks that each
# text here is its command's own).
COMMANDS = {
    "volume": "Manipulate volumes",
    "policy": "Configure and display storage policy information",
    "vmgroup": "Administer and monitor volume access control",
    "config": "Init and manage Config DB to enable quotas and access control",
    "host": "List (and on the local backend, manage) datastores and VMs",
    "report": "Reports for cron and monitoring: usage, history and audit",
    "status": "Show the status of the vmdk_ops service",
}


def _fits(text, width):
    return len(text) <= width and text == text.strip() and not any(c in text for c in "\n\b\t")


class _FittingFormatter(click.HelpFormatter):
    """Click's help formatter, writing a text that fits on its line as it is:
    the root's help then needs no textwrap (a third of what ``--help`` costs
    beyond its imports). tests/test_cli.py checks the output is click's own."""

    def write_usage(self, prog, args="", prefix=None):
        start = f"{prefix or 'Usage: ':>{self.current_indent}}{prog} "
        width = self.width - self.current_indent
        if not args or width < len(start) + 20 or not _fits(start + args, width):
            return super().write_usage(prog, args, prefix)
        self.write(f"{start}{args}\n")

    def write_text(self, text):
        indent = " " * self.current_indent
        paragraphs = text.split("\n\n")
        if not all(_fits(p, self.width - self.current_indent) for p in paragraphs):
            return super().write_text(text)
        self.write("\n\n".join(indent + p for p in paragraphs) + "\n")

    def write_dl(self, rows, col_max=30, col_spacing=2):
        first_col = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        if not all(_fits(text, max(self.width - first_col - 2, 10)) for _, text in rows):
            return super().write_dl(rows, col_max, col_spacing)
        for first, text in rows:
            pad = (" " * (first_col - len(first)) if len(first) <= first_col - col_spacing
                   else "\n" + " " * (first_col + self.current_indent))
            self.write(f"{'':>{self.current_indent}}{first}{pad}{text}\n")


class RootContext(click.Context):
    formatter_class = _FittingFormatter


class RootGroup(CommandGroup):
    context_class = RootContext

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(f"{__name__}.{name}"), name)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VmdkopsError as exc:
            raise CommandFailed(exc.message) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            raise CommandFailed(_internal_error(exc)) from None


def _internal_error(exc):
    import logging
    import uuid

    from ..paths import layout

    error_id = uuid.uuid4().hex[:8]
    log_file = layout().log_file
    try:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d [%(levelname)s] %(message)s"))
        logger = logging.getLogger("vmdkops_admin")
        logger.addHandler(handler)
        logger.error("internal error id=%s", error_id, exc_info=exc)
        logger.removeHandler(handler)
        handler.close()
        where = f"see {log_file}"
    except OSError:
        where = "the log could not be written"
    return f"Internal Error({type(exc).__name__}, id={error_id}; {where})"


@click.group(cls=RootGroup, help="vSphere Docker Volume Service admin CLI\n\n"
             "Manage VMDK-based Volumes for Docker.",
             context_settings={"help_option_names": ["-h", "--help"]})
@output_format_option
@click.version_option(package_name="vmdkops", prog_name="vmdkops_admin",
                      message="%(prog)s %(version)s")
def cli(output_format):
    pass


def _help_width():
    """The width click's help formatter would take from shutil, found without
    importing shutil (a third of what ``--help`` costs beyond its imports)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, 80) - 2, 50)


def main():
    return cli.main(prog_name="vmdkops_admin", terminal_width=_help_width())
