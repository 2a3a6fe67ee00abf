"""The command line as a whole: parsing (spec admin-cli §6.A), exit codes,
status and output formats (§6.H), no tracebacks for any bad input, man pages
in step with --help, and commands run as real processes."""

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from conftest import parse_table

from rig import VM1_UUID
from vmdkops_admin.cli import cli


def subcommands(group):
    """(name, command) of a group's commands (the root's are loaded when asked for)."""
    return [(name, group.get_command(None, name)) for name in group.list_commands(None)]


def leaf_commands(group=cli, path=()):
    for name, command in subcommands(group):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, path + (name,))
        else:
            yield path + (name,), command


def group_paths(group=cli, path=()):
    yield path
    for name, command in subcommands(group):
        if isinstance(command, click.Group):
            yield from group_paths(command, path + (name,))


# -- parsing (§6.A) --------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    "vmgroup create", "vmgroup create --name=vmgroup1", "vmgroup update", "vmgroup rm",
    "vmgroup vm add", "vmgroup vm add --name=vmgroup1", "vmgroup vm ls",
    "vmgroup access add", "vmgroup access add --name=vmgroup1",
    "vmgroup access add --name=vmgroup1 --default-datastore",
    "vmgroup access add --name=vmgroup1 --datastore=datastore1 --rights=create",
    "vmgroup access set", "vmgroup access set --name=vmgroup1",
    "vmgroup access set --name=vmgroup1 --datastore=datastore1 --rights=crete,mount",
    "vmgroup access set --name=vmgroup1 --datastore=datastore1 --allow-create",
    "vmgroup access rm", "vmgroup access rm --name=vmgroup1", "vmgroup access ls",
    "status --all", "set", "set --options=access=read-only", "set --volume=volume_name", "ls",
    "config init --confirm", "config rm --no-backup --datastore=DS1", "config mv --force",
    "vmgroup nosuch", "--output-format=yaml vmgroup ls"])
def test_s07_to_s15_usage_errors(admin, home, argv):
    result = admin(argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Error:" in result.stderr


@pytest.mark.parametrize("path", list(group_paths()), ids=lambda p: " ".join(p) or "root")
def test_s16_no_sub_command_prints_that_group_help(admin, home, path):
    result = admin(*path)
    assert result.exit_code == 3
    assert result.stdout.startswith(f"Usage: vmdkops_admin {' '.join(path)}".rstrip() + " [OPTIONS] COMMAND")


@pytest.mark.parametrize("path", [p for p, _ in leaf_commands()] + list(group_paths()),
                         ids=lambda p: " ".join(p) or "root")
def test_s17_help_everywhere(admin, home, path):
    for flag in ("-h", "--help"):
        result = admin(*path, flag)
        assert result.exit_code == 0
        assert result.stdout.startswith("Usage: vmdkops_admin")


def test_help_sentences_of_the_original(admin, home):
    out = admin.ok("vmgroup --help")
    for sentence in ("Administer and monitor volume access control", "Create a new vmgroup",
                     "Update an existing vmgroup", "Delete a vmgroup",
                     "List vmgroups and the VMs they are applied to",
                     "Add or remove Datastore access and quotas for a vmgroup"):
        assert sentence in out
    out = admin.ok("vmgroup access set --help")
    assert "Allow create and delete on datastore if set to True; disallow create and delete" in " ".join(out.split())


def test_option_value_forms(admin, inventory):
    admin.ok("config init --local")
    admin.ok("vmgroup create --name vg1 --default-datastore DS1")
    admin.ok("vmgroup create --name=vg2 --default-datastore=DS1")
    assert [r["Name"] for r in parse_table(admin.ok("vmgroup ls"))] == ["_DEFAULT", "vg1", "vg2"]


# -- exit codes and no tracebacks ----------------------------------------------------

BAD_VALUES = ["", "x" * 300, "../../etc", "a,b,,", "-1GB", "ü\u200b", "_ALL_DS", "'\"; DROP TABLE vms"]


@pytest.fixture(params=["not-configured", "single-node", "broken-link"])
def any_mode(request, admin, inventory, home):
    if request.param == "single-node":
        admin.ok("config init --local")
        admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    elif request.param == "broken-link":
        os.symlink(str(home / "gone.db"), home / "auth-db")
    return request.param


@pytest.mark.parametrize("path,command", list(leaf_commands()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_no_command_shows_a_traceback(admin, any_mode, path, command):
    """Every command, with every option given each bad value, in every mode:
    exit 0 or 2, and never a traceback or an internal error."""
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "output_format"]
    for value in BAD_VALUES:
        argv = list(path)
        for option in options:
            argv += [option.opts[0]] if option.is_flag else [option.opts[0], value]
        result = admin(*argv)
        assert result.exit_code in (0, 2), (argv, result.output)
        assert "Traceback" not in result.output and "Internal Error" not in result.output, (argv, result.output)
        if result.exit_code == 2 and result.stdout:
            assert result.stdout.startswith("ERROR:"), (argv, result.output)


# A valid value for each option, so that one option at a time can be given a bad one.
VALID = {"--name": "vg1", "--description": "d", "--vm-list": "VM1", "--default-datastore": "DS1",
         "--new-name": "vg9", "--datastore": "DS1", "--volume-maxsize": "1GB",
         "--volume-totalsize": "2GB", "--allow-create": "True", "--volume": "v1@DS1",
         "--vmgroup": "vg1", "--options": "access=read-only", "--to": "DS2",
         "--content": '(("hostFailuresToTolerate" i1))', "--db-url": "sqlite:///{tmp}/x.db",
         "--from-vdvs": "{tmp}/auth-db", "--path": "{tmp}", "--uuid": VM1_UUID, "--output": "{tmp}/out",
         "--threshold": "50", "--keep": "30d", "--since": "7d", "--vm": "VM1", "-c": "volume"}
VALID_IN = {("policy", "--name"): "p1", ("datastore", "--name"): "DS9", ("vm", "--name"): "VM1"}
OUT_OF_RANGE = ["99999999999999TB", "99999999999999999999GB", "/nonexistent/dir/file", "1e400", "9" * 40,
                "-5", "nan", "inf", "((", "))(", "1.5GB", "0x10", "99999999999999999999d", "-1d",
                "access=", "=x", "\t", "ü"]


@pytest.mark.parametrize("path,command", list(leaf_commands()), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_no_option_value_gives_an_internal_error(admin, inventory, home, tmp_path, monkeypatch, path,
                                                 command):
    """Each option of each command, one at a time, with out-of-range and
    malformed values while the others are valid: a clear error (exit 2) or
    success, never an internal error."""
    monkeypatch.chdir(tmp_path)  # values such as "((" are relative paths for --output
    admin.ok("config init --local")
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    options = [p for p in command.params if isinstance(p, click.Option) and not p.is_flag
               and p.name != "output_format"]

    def valid(option):
        value = VALID_IN.get((path[-2] if len(path) > 1 else "", option.opts[0]),
                             VALID.get(option.opts[0], "x"))
        return value.format(tmp=tmp_path)

    for bad in options:
        for value in OUT_OF_RANGE + BAD_VALUES:
            argv = list(path)
            for option in options:
                argv += [option.opts[0], value if option is bad else valid(option)]
            result = admin(*argv)
            assert result.exit_code in (0, 2, 4), (argv, result.output)
            assert "Traceback" not in result.output and "Internal Error" not in result.output, \
                (argv, result.output)


def test_out_of_range_values_get_clear_errors(admin, inventory):
    admin.ok("config init --local")
    assert admin.err("vmgroup access set --name=_DEFAULT --datastore=_VM_DS "
                     "--volume-totalsize=99999999999999TB") == (
        "Invalid volume size specified. '99999999999999TB' is more than the largest size a limit "
        "can have, 2048.00TB.")
    assert admin.err("report usage --output=/nonexistent/dir/file") == \
        "Cannot write /nonexistent/dir/file: No such file or directory"
    result = admin("report audit --since=99999999999999999999d")
    assert result.exit_code == 2 and "Invalid value for '--since': Invalid duration " \
        "'99999999999999999999d': at most 36500d" in result.stderr


def test_unexpected_errors_are_logged_not_shown(admin, inventory, home, monkeypatch):
    from vmdkops_admin.admin import vmgroups

    admin.ok("config init --local")
    monkeypatch.setattr(vmgroups, "list_vmgroups", lambda *a: 1 / 0)
    message = admin.err("vmgroup ls")
    assert message.startswith("Internal Error(ZeroDivisionError, id=")
    error_id = message.split("id=")[1].split(";")[0]
    log = (home / "log" / "vmdk_ops.log").read_text()
    assert f"internal error id={error_id}" in log and "Traceback" in log


# -- status (§6.H) ------------------------------------------------------------------

STATUS_KEYS = {"Version", "Status", "Pid", "Port", "LogConfigFile", "LogFile", "LogLevel",
               "DB_LocalPath", "DB_SharedLocation", "DB_Mode", "=== Service",
               "=== Backend", "Backend", "=== Authorization Config DB"}


def test_s96_status_of_a_running_service(admin, inventory, home):
    """The service's pid file and state file (as vmdk-opsd writes them) name a live process."""
    admin.ok("config init --local")
    process = subprocess.Popen(["sleep", "60"])
    try:
        (home / "run").mkdir()
        (home / "run" / "vmdk-opsd.pid").write_text(f"{process.pid}\n")
        (home / "run" / "vmdk-opsd.json").write_text(json.dumps({"listeners": ["unix:/x.sock"]}))
        lines = admin.ok("status").rstrip("\n").split("\n")
        assert len(lines) == 14
        assert {line.split(": ")[0] for line in lines} == STATUS_KEYS
        assert "Backend: local" in lines
        assert f"Pid: {process.pid}" in lines and "Port: unix:/x.sock" in lines
        assert "Port: ?" in admin.ok("status --fast")
    finally:
        process.kill()
        process.wait()
    lines = admin.ok("status").rstrip("\n").split("\n")
    assert "Status: Stopped" in lines and len(lines) == 12


def test_s97_status_fast_and_stopped(admin, home):
    lines = admin.ok("status --fast").rstrip("\n").split("\n")
    assert lines[0] == "=== Service: " and lines[1] == "Version: ?" and "Status: Stopped" in lines
    assert not any(line.startswith(("Pid:", "Port:")) for line in lines)
    assert lines[-3:] == ["DB_Mode: NotConfigured (no local DB, no symlink to shared DB)",
                          "DB_LocalPath: N/A", "DB_SharedLocation: N/A"]


# -- output formats (§6.H) -----------------------------------------------------------

def test_s98_xml(admin, inventory):
    admin.ok("config init --local")
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1")
    assert admin.ok("--output-format=xml vmgroup vm add --name=vg1 --vm-list=VM2") == (
        '<?xml version="1.0" ?>\n<output xmlns="http://www.vmware.com/Products/ESX/6.0/esxcli/">\n'
        "\t<string>vmgroup vm add succeeded</string>\n</output>\n")
    out = admin.ok("--output-format=xml vmgroup ls")
    assert out.count('<structure typeName="vdvs">') == 2 and '<list type="structure">' in out
    for field in ("Uuid", "Name", "Description", "Default_datastore", "VM_list"):
        assert out.count(f'<field name="{field}">') == 2
    result = admin("--output-format=xml vmgroup rm --name=nosuch")
    assert (result.exit_code, result.stdout) == (2, "ERROR:Vmgroup nosuch does not exist\n")
    admin.ok("vmgroup create --name=vg2 --default-datastore=DS1")
    empty = admin.ok("--output-format=xml vmgroup vm ls --name=vg2")
    assert "<structure" not in empty and "<list" in empty


def test_json_and_csv(admin, inventory):
    admin.ok("config init --local")
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1 --description='a, b'")
    records = json.loads(admin.ok("vmgroup ls --output-format=json"))
    assert records[1] == {"uuid": records[1]["uuid"], "name": "vg1", "description": "a, b",
                          "default_datastore": "DS1", "vms": [{"uuid": VM1_UUID, "name": "VM1"}],
                          "takeover_after": 30}
    assert json.loads(admin.ok("--output-format json vmgroup vm ls --name vg1")) == [
        {"uuid": VM1_UUID, "name": "VM1"}]
    csv = admin.ok("--output-format=csv vmgroup access ls --name=vg1")
    assert csv == "datastore,allow_create,max_volume_size,total_size\nDS1,true,,\n"
    assert json.loads(admin.ok("--output-format=json vmgroup vm rm --name=vg1 --vm-list=VM1")) == {
        "message": "vmgroup vm rm succeeded"}
    # The command's own option wins over the global one.
    assert admin.ok("--output-format=xml vmgroup ls --output-format=table").startswith("Uuid")


# -- as real processes ----------------------------------------------------------------

def test_commands_as_real_processes(admin, inventory, home):
    """Each command commits its own transaction: what one process wrote, the next one reads."""
    assert admin.proc("config", "init", "--local").returncode == 0
    created = admin.proc("vmgroup", "create", "--name=vg1", "--default-datastore=DS1", "--vm-list=VM1")
    assert (created.returncode, created.stderr) == (0, "")
    listed = admin.proc("vmgroup", "ls")
    assert "VM1" in listed.stdout and "vg1" in listed.stdout
    failed = admin.proc("vmgroup", "rm", "--name=vg1")
    assert failed.returncode == 2 and failed.stdout.startswith("ERROR:Cannot delete non-empty vmgroup")
    assert admin.proc("vmgroup").returncode == 3


# -- man pages -------------------------------------------------------------------------

def test_man_pages_are_up_to_date():
    from vmdkops_admin.cli.manpage import pages

    man = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "man")
    on_disk = {name: open(os.path.join(man, name)).read()
               for name in os.listdir(man) if name.endswith(".1")}
    assert on_disk == pages(cli), "man/ is out of date: run python3 scripts/gen_man.py"


def test_man_pages_name_every_command():
    from vmdkops_admin.cli.manpage import pages

    text = "\n".join(pages(cli).values())
    for path, command in leaf_commands():
        assert f"vmdkops_admin {' '.join(path)}" in text or (len(path) == 1 and path[0] in text)
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[0].replace("-", "\\-") in text


# -- the table layout ----------------------------------------------------------------

def test_table_layout_is_tabulate_simple_without_padding():
    """The renderer writes what tabulate would (tabulate is a test dependency only)."""
    import tabulate
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from vmdkops_admin.cli.render import table

    tabulate.MIN_PADDING = 0
    cell = st.text(st.characters(whitelist_categories=("L", "N", "P", "Zs"), max_codepoint=0x2FF),
                   max_size=12).map(lambda text: " ".join(text.split()))

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.integers(1, 5).flatmap(lambda n: st.tuples(
        st.lists(cell.filter(bool), min_size=n, max_size=n),
        st.lists(st.lists(cell, min_size=n, max_size=n), max_size=6))))
    def same(data):
        headers, rows = data
        expected = tabulate.tabulate(rows, headers=headers, tablefmt="simple",
                                     disable_numparse=True, stralign="left")
        assert table(headers, rows) == expected

    same()


def test_every_command_shows_an_example_that_parses():
    """Each command's help ends with an example of its own options, as its man page does."""
    import shlex

    commands = list(leaf_commands())
    assert len(commands) > 35
    for path, command in commands:
        path = list(path)
        words = shlex.split(command.example)
        assert words[:len(path) + 1] == ["vmdkops_admin"] + path
        known = {option for param in command.params for option in param.opts + param.secondary_opts}
        assert [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in known] == []
        shown = CliRunner().invoke(cli, path + ["--help"]).output
        assert shown.rstrip().endswith(f"Example:\n    {command.example}")


def test_the_root_help_names_each_command_with_its_own_help_and_imports_none(monkeypatch):
    """``vmdkops_admin --help`` lists the commands from a table and writes
    the lines that fit as they are, so that it imports no command's module
    and neither textwrap nor shutil (its start-up is measured by
    bench/cli_startup.py): each text there is its command's own, and the page
    is click's own at every width."""
    from vmdkops_admin.cli import COMMANDS, RootContext, cli

    for name, text in COMMANDS.items():
        command = cli.get_command(None, name)
        assert (command.name, command.short_help) == (name, text)
    code = ("import sys\nfrom vmdkops_admin.cli import main\nsys.argv = ['vmdkops_admin', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sys.modules), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Manipulate volumes" in run.stdout
    loaded = set(run.stderr.split())
    assert not {f"vmdkops_admin.cli.{name}" for name in COMMANDS} & loaded
    assert not {"textwrap", "shutil"} & loaded
    widths = range(40, 121)
    ours = [CliRunner().invoke(cli, ["--help"], terminal_width=width).output for width in widths]
    monkeypatch.setattr(RootContext, "formatter_class", click.HelpFormatter)
    assert [CliRunner().invoke(cli, ["--help"], terminal_width=width).output for width in widths] == ours
