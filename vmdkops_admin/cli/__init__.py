"""The ``vmdkops_admin`` command: the root group, and the edge where errors
become what a user sees. A ``VmdkopsError`` prints ``ERROR:{text}`` and exits 2;
anything unexpected is logged with its traceback and shown as a short line
with an id to find it in the log, never as a traceback."""

import click

from ..errors import VmdkopsError
from .options import EXIT_FAILURE, CommandGroup, output_format_option


class CommandFailed(click.ClickException):
    exit_code = EXIT_FAILURE

    def show(self, file=None):
        click.echo(f"ERROR:{self.message}")


class RootGroup(CommandGroup):
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
    import os
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


def _add_commands():
    from . import config, host, policy, report, status, vmgroup, volume

    for command in (volume.volume, policy.policy, vmgroup.vmgroup, config.config, host.host,
                    report.report, status.status):
        cli.add_command(command)


_add_commands()


def main():
    return cli.main(prog_name="vmdkops_admin")
