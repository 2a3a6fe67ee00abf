"""A malicious VM against a real vmdk-opsd on the local backend, on SQLite and
PostgreSQL. A victim VM holds an attached volume with known data; the
attacker tries every name, option and request it can send, and every file a
host sharing the datastore can plant. After each try: the victim's data is
unchanged, no second loop device exists on its extent (or any other), the
attacker learned nothing of the victim's volumes, and the executor serves."""

import json
import os
import stat
import threading
import time

import pytest

from rig.executor import loops_on, no_file_has_two_loops

pytestmark = pytest.mark.usefixtures("configured")

DATA = b"the victim's own data\n" * 2048   # 45 KB at the start of the disk
ATTACKER_GROUP = "attackers"


class Victim:
    """VM1's volume ``victim`` on DS1 in _DEFAULT, attached, with ``DATA`` on it."""

    def __init__(self, executor, inventory):
        from vmdkops_admin.names import DEFAULT_VMGROUP_UUID

        self.executor = executor
        executor.ok("VM1", "create", "victim@DS1", {"size": "10mb"})
        self.device = executor.ok("VM1", "attach", "victim@DS1")["Device"]
        fd = os.open(self.device, os.O_WRONLY)
        try:
            os.write(fd, DATA)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
        self.datastores = os.path.dirname(inventory.datastore_by_name("DS1").path)  # DS1 and DS2
        self.folder = os.path.join(self.dockvols, DEFAULT_VMGROUP_UUID)
        self.extent = os.path.join(self.folder, "victim-flat.vmdk")
        self.files = sorted(os.listdir(self.folder))

    def check(self):
        """The victim's data is as written, its files are all there, only its
        own device is on its extent, and the executor still serves."""
        with open(self.extent, "rb") as f:
            assert f.read(len(DATA)) == DATA
        assert {"victim.vmdk", "victim-flat.vmdk", "victim.vmfd", "victim.lck"} <= set(os.listdir(self.folder))
        assert loops_on(self.extent) == [self.device]
        no_file_has_two_loops(self.datastores)
        assert self.executor.ok("VM1", "get", "victim@DS1")["attached to VM"] == "VM1"


@pytest.fixture
def victim(executor, inventory):
    found = Victim(executor, inventory)
    yield found
    found.check()


@pytest.fixture
def attacker_folder(executor, admin, inventory):
    """VM2 in its own vmgroup, which may create on DS1: its folder there."""
    admin.ok(f"vmgroup create --name={ATTACKER_GROUP} --default-datastore=DS1 --vm-list=VM2")
    executor.ok("VM2", "create", "mine")  # makes the vmgroup's folder
    executor.ok("VM2", "remove", "mine")
    uuid = json.loads(admin.ok("vmgroup ls --output-format=json"))
    uuid = next(g["uuid"] for g in uuid if g["name"] == ATTACKER_GROUP)
    return os.path.join(inventory.datastore_by_name("DS1").path, "dockvols", uuid)


def plant(folder, volume, extent_line, extent=b"\0" * 1024 * 1024, sidecar=True):
    """A volume's files as a host sharing the datastore can write them: a
    descriptor whose extent line is ``extent_line``, and an extent (None: none)."""
    with open(os.path.join(folder, volume + ".vmdk"), "w") as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                f'createType="monolithicFlat"\n\n# Extent description\nRW 2048 FLAT {extent_line}\n\n'
                '# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\n')
    if extent is not None:
        with open(os.path.join(folder, volume + "-flat.vmdk"), "wb") as f:
            f.write(extent)
    if sidecar:
        with open(os.path.join(folder, volume + ".vmfd"), "w") as f:
            json.dump({"status": "detached", "volOpts": {"fstype": "ext4"}}, f)


def own_extent_is_attached(executor, vm, name, extent):
    """Attach ``name`` for ``vm``: the device is bound to ``extent``, then detach."""
    device = executor.ok(vm, "attach", name)["Device"]
    try:
        assert loops_on(extent) == [device]
    finally:
        executor.ok(vm, "detach", name)
    assert loops_on(extent) == []


# -- the review's reproduction ---------------------------------------------------------

def test_a_quote_in_a_name_cannot_reach_another_volumes_extent(executor, victim):
    """A name that closed the descriptor's quoted extent name early named the
    victim's extent, and its attach put a second read-write loop device on it."""
    name = 'victim-flat.vmdk"@DS1'
    assert executor.err("VM3", "create", name) == 'Volume name contains illegal characters: "'
    # The same volume as the code before the fix wrote it: it is its own disk.
    plant(victim.folder, 'victim-flat.vmdk"', '"victim-flat.vmdk"-flat.vmdk" 0')
    own_extent_is_attached(executor, "VM3", name, os.path.join(victim.folder, 'victim-flat.vmdk"-flat.vmdk'))
    victim.check()


def test_volumes_named_with_quotes_before_the_fix_stay_usable_and_removable(executor, admin, victim):
    plant(victim.folder, 'old"name', '"old"name-flat.vmdk" 0')
    assert executor.ok("VM3", "get", 'old"name@DS1')["capacity"]["size"] == "1MB"
    own_extent_is_attached(executor, "VM3", 'old"name@DS1', os.path.join(victim.folder, 'old"name-flat.vmdk'))
    assert 'old"name' in admin.ok("volume ls -c volume")
    executor.ok("VM3", "remove", 'old"name@DS1')
    assert not any(name.startswith('old"name') for name in os.listdir(victim.folder))


# -- names -------------------------------------------------------------------------------

REFUSED_NAMES = {
    '"': 'Volume name contains illegal characters: "',
    "..": "Volume name contains illegal characters: ..",
    "../victim": "Volume name contains illegal characters: /",
    "victim/..": "Volume name contains illegal characters: /",
    "..\\victim": "Volume name contains illegal characters: \\",
    "victim\0": "Volume name contains illegal characters: control characters",
    "victim\n": "Volume name contains illegal characters: control characters",
    "victim-flat": "Volume names ending with '-flat', '-delta', '-ctk' or '-digest' are not supported",
    "victim-000001": "Volume names ending with '-NNNNNN' (where N is a digit) are not supported",
    "x" * 101: "Volume name is too long (max len is 100)",
    "\U0001f642" * 51: "Volume name is too long (max len is 200 bytes in UTF-8)",
    "\ud800": "Volume name is not valid Unicode",
}

# Names that are their own volumes: look-alikes of the victim's name and the
# names of its files with each suffix.
OWN_NAMES = ["v\u0456ctim", "victim\u200b", "\uff56\uff49\uff43\uff54\uff49\uff4d", "VICTIM", " victim",
             "victim ", "victim.vmdk", "victim-flat.vmdk", "victim.vmfd", "victim.lck",
             "victim.vmdk.1.tmp", "victim-flat.vmdk.1.tmp", "victim@DS1", "\u00e9" * 100, "x" * 100]


def test_every_name_trick_of_a_vm_of_the_same_vmgroup(executor, victim):
    for name, error in REFUSED_NAMES.items():
        assert executor.err("VM3", "create", name + "@DS1") == error, name
    for name in OWN_NAMES:
        full = name + "@DS1"
        executor.ok("VM3", "create", full, {"size": "1mb"})
        files = os.listdir(victim.folder)
        assert name + ".vmdk" in files and name + "-flat.vmdk" in files
        own_extent_is_attached(executor, "VM3", full, os.path.join(victim.folder, name + "-flat.vmdk"))
        executor.ok("VM3", "remove", full)
        victim.check()
    assert sorted(os.listdir(victim.folder)) == victim.files


# -- options -------------------------------------------------------------------------------

def test_every_option_trick(executor, admin, victim, attacker_folder):
    def refused(name, opts, error):
        assert executor.err("VM2", "create", name, opts) == error, (name, opts)

    refused("c1", {"clone-from": "victim"}, "Could not find volume for cloning victim")
    refused("c1", {"clone-from": "victim@DS1"}, "Could not find volume for cloning victim@DS1")
    refused("c1", {"clone-from": "../11111111-1111-1111-1111-111111111111/victim"},
            "Volume name contains illegal characters: /")
    refused("c1", {"clone-from": 'victim-flat.vmdk"'}, "Could not find volume for cloning victim-flat.vmdk\"")
    refused("s", {"size": "0mb"}, "Invalid volume size specified.")
    refused("s", {"size": "63tb"}, "Invalid volume size specified: 63tb is more than the largest disk, 62tb")
    for size in ("-1mb", "1.5gb", "1e9mb", "mb", "10", "１０mb"):
        assert executor.err("VM2", "create", "s", {"size": size}).startswith("Invalid format for size"), size
    refused("s", {"size": "9" * 40 + "gb"},
            f"Invalid volume size specified: {'9' * 40}gb is more than the largest disk, 62tb")
    refused("s", {"attach-as": "shared"},
            "Attach type 'shared' is not supported. Valid options are: ['independent_persistent', 'persistent']")
    refused("s", {"access": "read-write-all"},
            "Access type 'read-write-all' is not supported. Valid options are: ['read-write', 'read-only']")
    refused("s", {"diskformat": "../victim"}, "Disk Allocation Format '../victim' is not supported. "
            "Valid options are: ['zeroedthick', 'thin', 'eagerzeroedthick'].")
    assert executor.err("VM2", "create", "s", {"extent": "/dev/loop0"}).startswith("Invalid options: ['extent']")
    # The largest disk there is: more than this filesystem holds; nothing is left of it.
    error = executor.err("VM2", "create", "huge", {"size": "62tb"})
    assert error.startswith("Failed to create volume: File too large"), error
    assert os.listdir(attacker_folder) == []
    assert "huge" not in admin.ok("volume ls -c volume")
    # Options of a volume of its own, on the next attach only.
    executor.ok("VM2", "create", "ro", {"access": "read-only", "attach-as": "persistent"})
    own_extent_is_attached(executor, "VM2", "ro", os.path.join(attacker_folder, "ro-flat.vmdk"))
    executor.ok("VM2", "remove", "ro")


# -- another vmgroup's volumes ---------------------------------------------------------------

def test_another_vmgroups_volumes_are_indistinguishable_from_none(executor, victim, attacker_folder):
    """Every request that names the victim's volume answers as it does for a
    name that exists nowhere: the attacker learns nothing."""
    assert executor.ok("VM2", "list") == []
    for cmd in ("get", "attach", "detach", "remove", "create"):
        for name in ("victim", "victim@DS1", "victim@ds1"):
            nowhere = name.replace("victim", "nowhere")
            opts = {"clone-from": name} if cmd == "create" else None
            reply = executor.call("VM2", cmd, "c-" + name if cmd == "create" else name, opts)
            other = executor.call("VM2", cmd, "c-" + nowhere if cmd == "create" else nowhere,
                                  {"clone-from": nowhere} if cmd == "create" else None)
            assert json.dumps(reply).replace("victim", "nowhere") == json.dumps(other), (cmd, name)
            victim.check()
    assert executor.ok("VM2", "list") == []


# -- files planted on the datastore -------------------------------------------------------------

def tampered_disks(victim, folder):
    """name -> what was planted in ``folder`` for a volume of that name."""
    victim_uuid = os.path.basename(victim.folder)

    def link(name):
        os.symlink(victim.extent, os.path.join(folder, name + "-flat.vmdk"))

    def device_node(name):
        os.mknod(os.path.join(folder, name + "-flat.vmdk"), stat.S_IFBLK | 0o600,
                 os.stat(victim.device).st_rdev)

    def fifo(name):
        os.mkfifo(os.path.join(folder, name + "-flat.vmdk"))

    def descriptor_link(name):
        os.unlink(os.path.join(folder, name + ".vmdk"))
        os.symlink(os.path.join(victim.folder, "victim.vmdk"), os.path.join(folder, name + ".vmdk"))

    return {
        "other-extent": (f'"../{victim_uuid}/victim-flat.vmdk" 0', None),
        "absolute": (f'"{victim.extent}" 0', None),
        "dotdot": ('".." 0', None),
        "device-path": (f'"{victim.device}" 0', None),
        "second-extent": ('"second-extent-flat.vmdk" 0\nRW 2048 FLAT "../' + victim_uuid
                          + '/victim-flat.vmdk" 0', b"\0" * 4096),
        "offset": ('"offset-flat.vmdk" 2048', b"\0" * 4096),
        "symlink": ('"symlink-flat.vmdk" 0', link),
        "devnode": ('"devnode-flat.vmdk" 0', device_node),
        "fifo": ('"fifo-flat.vmdk" 0', fifo),
        "desc-link": ('"desc-link-flat.vmdk" 0', descriptor_link),
    }


def plant_all(victim, folder):
    for name, (line, extent) in tampered_disks(victim, folder).items():
        plant(folder, name, line, extent=extent if isinstance(extent, bytes) else None)
        if callable(extent):
            extent(name)


def test_descriptors_tampered_on_the_datastore_are_refused_everywhere(executor, admin, victim,
                                                                       attacker_folder):
    plant_all(victim, attacker_folder)
    before = sorted(os.listdir(attacker_folder))
    for name in tampered_disks(victim, attacker_folder):
        for cmd, opts in (("attach", None), ("get", None), ("remove", None)):
            error = executor.err("VM2", cmd, name, opts)
            assert f"Volume {name}" in error or "symlink" in error, (cmd, name, error)
            assert "Internal Error" not in error
        error = executor.err("VM2", "create", "copy", {"clone-from": name})
        assert f"Volume {name}" in error or "symlink" in error, (name, error)
        victim.check()
    assert sorted(os.listdir(attacker_folder)) == before
    # The administrator sees each of them, and nothing is done with them.
    listed = admin.ok("volume ls -c volume,vmgroup,capacity")
    for name in tampered_disks(victim, attacker_folder):
        assert name in listed
    findings = json.loads(admin.ok("volume reconcile --output-format=json"))
    reported = {f["volume"]: f for f in findings}
    for name in tampered_disks(victim, attacker_folder):
        assert reported[f"{name}@DS1"]["action"] == "reported", findings
    assert sorted(os.listdir(attacker_folder)) == before
    victim.check()


def test_an_extent_with_another_name_is_not_used(executor, victim, attacker_folder):
    """A hard link to the victim's extent in the attacker's folder: neither
    volume's disk is used while it exists (the host that wrote it can write
    the datastore anyway: the victim's data is what must not move)."""
    plant(attacker_folder, "hardlink", '"hardlink-flat.vmdk" 0', extent=None)
    os.link(victim.extent, os.path.join(attacker_folder, "hardlink-flat.vmdk"))
    for cmd in ("attach", "get", "remove"):
        assert executor.err("VM2", cmd, "hardlink") == (
            f"Volume hardlink: {attacker_folder}/hardlink-flat.vmdk has other names (hard links); "
            "the disk is not used")
    assert executor.err("VM2", "create", "copy", {"clone-from": "hardlink"}).startswith(
        "Volume hardlink: ")
    assert loops_on(victim.extent) == [victim.device]
    os.unlink(os.path.join(attacker_folder, "hardlink-flat.vmdk"))


def test_a_volume_tampered_after_its_create_is_neither_grown_nor_removed(executor, admin, victim,
                                                                         attacker_folder):
    executor.ok("VM2", "create", "good", {"size": "1mb"})
    descriptor = os.path.join(attacker_folder, "good.vmdk")
    with open(descriptor) as f:
        text = f.read()
    with open(descriptor, "w") as f:
        f.write(text.replace('"good-flat.vmdk"', f'"{victim.extent}"'))
    size = os.path.getsize(victim.extent)
    error = admin.err(f"volume resize --volume=good@DS1 --vmgroup={ATTACKER_GROUP} --size=20MB")
    assert "Volume good: its descriptor names the extent" in error
    assert os.path.getsize(victim.extent) == size
    assert executor.err("VM2", "remove", "good").startswith("Volume good: its descriptor names the extent")
    assert sorted(os.listdir(attacker_folder)) == ["good-flat.vmdk", "good.vmdk", "good.vmfd"]
    findings = json.loads(admin.ok("volume reconcile --output-format=json"))
    assert [(f["volume"], f["action"]) for f in findings] == [("good@DS1", "reported")]
    victim.check()


def test_folders_and_side_cars_replaced_by_symlinks_are_not_followed(executor, admin, inventory, victim,
                                                                      attacker_folder):
    """A vmgroup's folder that became a symlink to the victim's folder, and a
    side-car that is a symlink to the victim's: nothing is read or written
    through them."""
    plant(attacker_folder, "spy", '"spy-flat.vmdk" 0', sidecar=False)
    os.symlink(os.path.join(victim.folder, "victim.vmfd"), os.path.join(attacker_folder, "spy.vmfd"))
    info = executor.ok("VM2", "get", "spy")
    assert "attached to VM" not in info and info["created by VM"] == "N/A"
    os.rename(attacker_folder, attacker_folder + ".moved")
    os.symlink(os.path.basename(victim.folder), attacker_folder)
    for cmd in ("get", "attach", "remove"):
        reply = json.dumps(executor.call("VM2", cmd, "victim")).replace("victim", "nowhere")
        assert reply == json.dumps(executor.call("VM2", cmd, "nowhere")), cmd
    assert executor.ok("VM2", "list") == []
    error = executor.err("VM2", "create", "planted")
    assert "is not a folder (a symlink or a file is in its place)" in error
    assert not os.path.exists(os.path.join(victim.folder, "planted.vmdk"))
    victim.check()


def test_a_planted_temporary_file_is_never_written_through(executor, victim, attacker_folder):
    """Symlinks planted at the temporary names of the executor's next writes
    (it is the only process that writes there) lead nowhere."""
    pid = executor.process.pid
    target = os.path.join(victim.folder, "victim.vmfd")
    before = open(target, "rb").read()
    for name in ("new-flat.vmdk", "new.vmdk", "new.vmfd", "new.lck"):
        os.symlink(target, os.path.join(attacker_folder, f"{name}.{pid}.tmp"))
    executor.ok("VM2", "create", "new", {"size": "1mb"})
    own_extent_is_attached(executor, "VM2", "new", os.path.join(attacker_folder, "new-flat.vmdk"))
    assert open(target, "rb").read() == before
    executor.ok("VM2", "remove", "new")
    victim.check()


# -- the executor under hostile clients ---------------------------------------------------------

def slow_clients(executor, count, stop):
    """``count`` connections that each send one byte of a request every 2 s."""
    import socket

    from plugin.vsphere import protocol

    frame = protocol.HEADER.pack(protocol.MAGIC, 100) + b"{" * 100
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(executor.socket)
        sockets.append(sock)

    def drip():
        sent = 0
        while not stop.wait(2) and sent < len(frame):
            for sock in sockets:
                try:
                    sock.send(frame[sent:sent + 1])
                except OSError:
                    pass
            sent += 1
        for sock in sockets:
            sock.close()

    thread = threading.Thread(target=drip, name="slow clients", daemon=True)
    thread.start()
    return thread


def timed_cycle(executor, name):
    """Seconds each request of a create/attach/detach/remove cycle took."""
    times = []
    for cmd, opts in (("create", {"size": "10mb"}), ("attach", None), ("detach", None), ("remove", None)):
        start = time.monotonic()
        executor.ok("VM2", cmd, name, opts)
        times.append(time.monotonic() - start)
    return times


def test_slow_clients_do_not_delay_a_vms_requests(executor):
    """64 connections dripping one byte every 2 s: a VM's requests answer as
    fast as without them (within a second)."""
    usual = max(max(timed_cycle(executor, f"usual{i}")) for i in range(3))
    stop = threading.Event()
    drip = slow_clients(executor, 64, stop)
    try:
        loaded = [timed_cycle(executor, f"loaded{i}") for i in range(5)]
    finally:
        stop.set()
        drip.join()
    assert max(max(times) for times in loaded) < usual + 1.0, (usual, loaded)


def test_past_the_connection_limit_a_new_client_is_told_busy_at_once(home, inventory):
    import socket

    from rig.executor import Executor, release_loops

    running = Executor(home).start("--max-connections=8")
    running.token("VM1")  # issued before the executor is filled up
    held = []
    try:
        for _ in range(8):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(running.socket)
            held.append(sock)
        start = time.monotonic()
        assert running.call("VM1", "version") == {
            "Error": "Service is busy: too many connections; try again"}
        assert time.monotonic() - start < 1
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while running.call("VM1", "list") != [] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.call("VM1", "list") == []
    finally:
        for sock in held:
            sock.close()
        running.stop()
        release_loops(home)


def test_a_request_must_arrive_whole_within_its_deadline(executor):
    """A client that keeps sending, slowly, is still dropped at the deadline."""
    import socket

    from plugin.vsphere import protocol
    from vmdkops_admin.executor.server import REQUEST_DEADLINE

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(executor.socket)
    sock.settimeout(REQUEST_DEADLINE + 10)
    start = time.monotonic()
    frame = protocol.HEADER.pack(protocol.MAGIC, 4000) + b" " * 3999
    try:
        for byte in frame:
            sock.send(bytes([byte]))
            time.sleep(0.5)
    except OSError:
        pass
    finally:
        sock.close()
    assert REQUEST_DEADLINE - 1 < time.monotonic() - start < REQUEST_DEADLINE + 2
    assert executor.ok("VM1", "version")


def test_the_credentials_file_stays_root_only(executor, admin, home):
    path = home / "credentials.json"
    admin.ok("host vm token --name=VM2")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    admin.ok("host vm token --name=VM2 --rotate")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    admin.ok("host vm rm --name=VM2")  # revokes its credential
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for name in ("inventory.json", "attachments.json"):
        if (home / name).exists():
            assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
