"""Man pages generated from the Click tree: ``vmdkops_admin(1)`` for the
command as a whole and ``vmdkops_admin-<group>(1)`` for each top-level group,
so the pages say exactly what ``--help`` says. ``scripts/gen_man.py`` writes
them to ``man/``; a test fails when they are out of date."""

import click

from .. import __version__
from ..paths import DEFAULT_HOME

PROG = "vmdkops_admin"
CRON_EXAMPLE = """\
*/5 * * * * root vmdkops_admin report usage --output-format prometheus --output /var/lib/node_exporter/textfile_collector/vmdkops.prom
15 3 * * * root vmdkops_admin report usage --record --keep 90d > /dev/null
0 8 * * * root vmdkops_admin report usage --threshold 90 > /dev/null"""


def _escape(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.split("\n"))


def _paragraphs(text):
    return "\n.PP\n".join(_escape(part.strip()) for part in (text or "").split("\n\n") if part.strip())


def _header(name, summary):
    return [f'.TH "{name.upper()}" "1" "" "vmdkops {__version__}" "vmdkops manual"',
            ".SH NAME", f"{_escape(name)} \\- {_escape(summary)}"]


def _option_lines(command):
    lines = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = ", ".join(f"\\fB{_escape(opt)}\\fR" for opt in param.opts)
        if not param.is_flag:
            names += f" \\fI{_escape(param.make_metavar(click.Context(command)))}\\fR"
        help_text = param.help or ""
        if param.required:
            help_text += " (required)"
        lines += [".TP", names, _escape(help_text.strip())]
    return lines


def _commands(group):
    """Name -> command of a group's commands, in its order (the root's are
    imported only when asked for)."""
    return {name: group.get_command(None, name) for name in group.list_commands(None)}


def _leaves(group, path):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaves(command, path + [name])
        else:
            yield path + [name], command


def _group_page(name, group):
    lines = _header(f"{PROG}-{name}", group.help)
    lines += [".SH SYNOPSIS", f"\\fB{PROG} {_escape(name)}\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
              ".SH DESCRIPTION", _paragraphs(group.help), ".SH COMMANDS"]
    for path, command in _leaves(group, [name]):
        lines += _command_section(" ".join(path), command)
    lines += [".SH SEE ALSO", f"\\fB{PROG}\\fR(1)"]
    return "\n".join(lines) + "\n"


def _command_section(name, command):
    lines = [f'.SS "{PROG} {_escape(name)}"', _paragraphs(command.help)] + _option_lines(command)
    if getattr(command, "example", ""):
        lines += [".PP", "Example:", ".PP", ".nf", _escape(command.example), ".fi"]
    return lines


def _main_page(cli):
    lines = _header(PROG, "administer Docker volumes backed by VMDK disks")
    lines += [".SH SYNOPSIS", f"\\fB{PROG}\\fR [\\fB\\-\\-output\\-format\\fR \\fIFORMAT\\fR] "
              "\\fIGROUP\\fR [\\fISUBGROUP\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
              ".SH DESCRIPTION", _paragraphs(cli.help), ".SH OPTIONS"]
    lines += _option_lines(cli)
    lines.append(".SH COMMANDS")
    for name, command in _commands(cli).items():
        if isinstance(command, click.Group):
            lines += [".TP", f"\\fB{_escape(name)}\\fR", _escape(command.short_help or ""),
                      f"See \\fB{PROG}\\-{_escape(name)}\\fR(1)."]
        else:
            lines += _command_section(name, command)
    lines += [
        ".SH OUTPUT",
        "Listings print a table by default. \\fB\\-\\-output\\-format json\\fR prints a list of "
        "objects with snake_case keys, sizes in MB as numbers and null for unlimited; "
        "\\fBcsv\\fR prints the same keys as a header line; \\fBxml\\fR prints the esxcli "
        "document of the original VDVS.",
        ".SH EXIT STATUS",
        ".TP", "0", "Success.",
        ".TP", "2", "The command failed (an ERROR: line on standard output) or was used wrongly.",
        ".TP", "3", "No command was given; the help of the group that was reached is printed.",
        ".TP", "4", "report usage \\-\\-threshold: a quota is used at or above the threshold.",
        ".SH CRON",
        "Reports are made for cron: they never prompt, write data to standard output or, with "
        "\\fB\\-\\-output\\fR, to a file replaced atomically, and exit 4 when a quota passes "
        "\\fB\\-\\-threshold\\fR. The package installs this example as "
        "share/vmdkops/cron.d/vmdkops\\-report:",
        ".PP", ".nf"] + [_escape(line) for line in CRON_EXAMPLE.splitlines()] + [".fi",
        ".SH ENVIRONMENT",
        ".TP", "\\fBVMDKOPS_HOME\\fR",
        f"The state root: config DB, inventory, logs and run files (default {_escape(DEFAULT_HOME)}).",
        ".SH FILES",
        ".TP", "\\fI$VMDKOPS_HOME/auth\\-db\\fR",
        "The config DB (SingleNode), or a link to a shared one on a datastore (MultiNode).",
        ".TP", "\\fI$VMDKOPS_HOME/auth\\-db.url\\fR", "The URL of a shared database (MultiNode).",
        ".TP", "\\fI$VMDKOPS_HOME/inventory.json\\fR", "Datastores and VMs of the local backend.",
        ".SH SEE ALSO",
        ", ".join(f"\\fB{PROG}\\-{_escape(name)}\\fR(1)" for name, command in _commands(cli).items()
                  if isinstance(command, click.Group))]
    return "\n".join(lines) + "\n"


def _executor_parser():
    from ..executor.main import build_parser

    return build_parser()


def _plugin_parser(kind):
    def parser():
        from plugin import config

        return config.parser(getattr(config, kind))
    return parser


SERVICES = {
    "vmdk-opsd": ("the vmdkops executor", _executor_parser,
                  "It runs in the foreground (for systemd), writes its pid to "
                  "$VMDKOPS_HOME/run/vmdk-opsd.pid and its listeners to "
                  "$VMDKOPS_HOME/run/vmdk-opsd.json, logs to $VMDKOPS_HOME/log/vmdk_ops.log "
                  "as $VMDKOPS_HOME/log_config.json says, reconciles the index with the disks "
                  "when it starts, and on SIGTERM finishes the requests in flight and declines "
                  "new ones before it exits."),
    "vsphere-storage-for-docker": (
        "the Docker volume plugin", _plugin_parser("Config"),
        "Unknown keys are warned about. Volumes are mounted at MountRoot/vol@datastore. After a "
        "restart the plugin rebuilds its mount counts from Docker and /proc/mounts before it "
        "removes, mounts or unmounts anything."),
    "vfile": (
        "the shared-volume Docker plugin", _plugin_parser("VfileConfig"),
        "Each volume <v> is a base volume _vF_<v> of the internal driver, served over SMB by the "
        "swarm service vFileServer<v> while any node mounts it, and mounted at MountRoot/<v>. Its "
        "state lives in etcd: the plugins of the swarm managers run etcd from EtcdBinary unless "
        "EtcdEndpoints names a cluster. After a restart the plugin rebuilds its mount counts "
        "from Docker and /proc/mounts."),
}


def _service_page(name):
    """The page of a service from its own argument parser."""
    summary, parser, details = SERVICES[name]
    parser = parser()
    lines = _header(name, summary)
    lines += [".SH SYNOPSIS", f"\\fB{_escape(name)}\\fR [\\fIOPTIONS\\fR]", ".SH DESCRIPTION",
              _paragraphs(parser.description), _paragraphs(details)]
    lines += [_paragraphs(parser.epilog)] if parser.epilog else []
    lines += [".SH OPTIONS"]
    for action in parser._actions:
        if not action.option_strings:
            continue
        names = ", ".join(f"\\fB{_escape(opt)}\\fR" for opt in action.option_strings)
        if action.metavar or action.nargs != 0:
            names += f" \\fI{_escape(action.metavar or action.dest.upper())}\\fR"
        lines += [".TP", names, _escape(action.help or "")]
    lines += [".SH SEE ALSO", f"\\fB{PROG}\\fR(1)"]
    return "\n".join(lines) + "\n"


def pages(cli):
    """File name -> roff text for every page."""
    result = {f"{PROG}.1": _main_page(cli)}
    result.update({f"{name}.1": _service_page(name) for name in SERVICES})
    for name, command in _commands(cli).items():
        if isinstance(command, click.Group):
            result[f"{PROG}-{name}.1"] = _group_page(name, command)
    return result
