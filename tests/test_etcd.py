"""The vfile plugin's etcd client against a real three-member etcd cluster on
loopback (Debian's etcd): keys, transactions, leases, locks, watches, and
clear errors within the timeout when the cluster is out of reach or has lost
its quorum."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from rig import missing
from rig.executor import stop_process
from plugin.vfile import etcd as kv
from plugin.vfile import txn
from plugin.vfile.etcd import Etcd, EtcdError, LeaseNotFound, WaitTimeout
from plugin.vfile.lease import Lease
from plugin.vfile.state import START, STAT, State


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def until_ready(client, log):
    """Once etcd takes a write (its log shown if it never does)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client.put("ready", "1")
            return
        except EtcdError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    """Three members; (client endpoints, processes)."""
    if shutil.which("etcd") is None:
        missing("etcd (Debian package etcd-server; scripts/test.sh installs it)")
    ports = free_ports(6)
    clients, peers = ports[:3], ports[3:]
    initial = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(3))
    processes = []
    for i in range(3):
        with open(tmp_path / f"m{i}.log", "w") as log:
            processes.append(subprocess.Popen(
                ["etcd", "--name", f"m{i}", "--data-dir", str(tmp_path / f"m{i}"),
                 "--listen-client-urls", f"http://127.0.0.1:{clients[i]}",
                 "--advertise-client-urls", f"http://127.0.0.1:{clients[i]}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new"],
                stdout=log, stderr=subprocess.STDOUT))
    endpoints = [f"127.0.0.1:{port}" for port in clients]
    until_ready(Etcd(endpoints), tmp_path / "m0.log")
    yield endpoints, processes
    for process in processes:
        stop_process(process)


def test_keys_transactions_and_leases(cluster):
    endpoints, _ = cluster
    client = Etcd(endpoints)
    made, _ = client.txn([txn.absent("SVOLS_stat_a")], [txn.put_op("SVOLS_stat_a", "Creating")],
                         [txn.get_op("SVOLS_stat_a")])
    assert made
    again, ranges = client.txn([txn.absent("SVOLS_stat_a")], [txn.put_op("SVOLS_stat_a", "Ready")],
                               [txn.get_op("SVOLS_stat_a")])
    assert not again and ranges[0][0].value == "Creating"  # create-if-absent never resets
    assert client.get("SVOLS_stat_a") == "Creating" and client.get("nosuch") is None
    lease = client.grant(5)
    client.put("SVOLS_client_a_n1", "10.0.0.1", lease)
    client.put("SVOLS_client_ab_n1", "10.0.0.9")
    assert [k.value for k in client.range("SVOLS_client_a_", prefix=True)] == ["10.0.0.1"]
    assert client.keepalive(lease) > 0
    client.revoke(lease)
    assert client.range("SVOLS_client_a_", prefix=True) == []  # a lease takes its keys with it


def test_a_lock_has_one_holder_at_a_time(cluster):
    endpoints, _ = cluster
    client = Etcd(endpoints)
    lease = client.grant(10)
    inside, overlaps = [], []

    def work():
        unlock = client.lock("SVOLS_gref_v-lock", lease, timeout=30)
        try:
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.05)
            inside.pop()
        finally:
            unlock()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    unlock = client.lock("SVOLS_gref_v-lock", lease, timeout=5)
    with pytest.raises(EtcdError, match="ETCD Lock blocking wait timeout"):
        client.lock("SVOLS_gref_v-lock", client.grant(10), timeout=0.5)
    unlock()


def test_a_lost_lease_is_taken_again_once_with_the_keys_put_back(cluster):
    """The node's lease expired while etcd had no quorum: the next lock (in
    any thread) takes a new lease, the node's client key is back under it,
    and the thread that renews it sees the same."""
    endpoints, _ = cluster
    client = Etcd(endpoints)
    regained = []

    def register(lease):
        regained.append(lease)
        client.put("SVOLS_client_v_n1", "10.0.0.1", lease)

    lease = Lease(client, 10, register)
    lease.grant()
    register(lease.id)
    lost = lease.id
    client.revoke(lost)  # as etcd does when the TTL runs out
    assert client.get("SVOLS_client_v_n1") is None
    with pytest.raises(LeaseNotFound):
        client.lock("SVOLS_gref_v-lock", lost, timeout=5)
    unlocks = []

    def lock(volume):
        unlocks.append(lease.use(lambda id: client.lock(f"SVOLS_gref_{volume}-lock", id, timeout=5)))

    threads = [threading.Thread(target=lock, args=(f"v{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(unlocks) == 4 and regained[1:] == [lease.id] and lease.id != lost
    assert client.range("SVOLS_client_v_n1")[0].lease == lease.id
    for unlock in unlocks:
        unlock()
    client.revoke(lease.id)
    stopping = threading.Event()
    keeper = threading.Thread(target=lease.keep, args=(stopping,))
    lease.ttl = 3
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while client.get("SVOLS_client_v_n1") is None:
            assert time.monotonic() < deadline, "the keeper did not take a new lease"
            time.sleep(0.1)
    finally:
        stopping.set()
        keeper.join()
    assert len(regained) == 3


def test_a_watch_sees_changes_with_their_previous_values(cluster):
    endpoints, _ = cluster
    client = Etcd(endpoints)
    client.put("SVOLS_start_trigger_w", "0")
    events = []
    start = client.revision() + 1
    watcher = threading.Thread(target=client.watch, args=("SVOLS_st", start,
                                                          lambda k, item, prev: events.append(
                                                              (k, item.key, item.value, prev and prev.value))))
    watcher.start()
    time.sleep(0.3)
    client.put("SVOLS_start_trigger_w", "1")
    client.delete("SVOLS_start_trigger_w")
    deadline = time.monotonic() + 10
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close_watches()
    watcher.join(timeout=10)
    assert events == [("PUT", "SVOLS_start_trigger_w", "1", "0"), ("DELETE", "SVOLS_start_trigger_w", "", "1")]


def test_a_wait_for_the_file_server_moves_its_trigger_again(cluster):
    """The manager that took a start trigger can fail (swarm had no leader
    for a moment after etcd's quorum came back): a mounting node waiting for
    the server moves the trigger again, and a later event starts it."""
    endpoints, _ = cluster
    client = Etcd(endpoints)
    client.txn([], [txn.put_op(STAT + "w", "Ready"), txn.put_op("SVOLS_info_w", '{"username": "vfile"}'),
                    txn.put_op(START + "w", "0")])
    seen = []

    def manager(kind, item, previous):  # fails the first event, handles the next
        seen.append(item.value)
        if len(seen) == 2:
            client.put(STAT + "w", "Mounted")

    watcher = threading.Thread(target=client.watch, args=(START + "w", client.revision() + 1, manager))
    watcher.start()
    store = State(client, timeout=5)
    store.retrigger = 0.5
    try:
        assert store.wait_for("w", "Mounted", START) == {"username": "vfile"}
    finally:
        client.close_watches()
        watcher.join(timeout=10)
    assert seen == ["1", "2"]
    client.put(STAT + "w", "Ready")
    store.timeout = -9  # nothing answers: the wait ends after its timeout (+10 s)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="BlockingWait is not complete"):
        store.wait_for("w", "Mounted", START)
    assert time.monotonic() - started < 3


def test_a_member_that_does_not_answer_costs_one_timeout(cluster):
    """A dead manager (no answer, not even a reset) first in the list: the
    first request waits for it, the next go to the member that answered."""
    endpoints, _ = cluster
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # takes connections, never answers
        client = Etcd([f"127.0.0.1:{silent.getsockname()[1]}"] + endpoints)
        started = time.monotonic()
        client.put("k", "0")
        assert time.monotonic() - started >= kv.TIMEOUT
        started = time.monotonic()
        for i in range(5):
            client.put("k", str(i))
        assert time.monotonic() - started < kv.TIMEOUT
        assert client.get("k") == "4"


def test_an_unreachable_cluster_is_a_clear_error_at_once():
    client = Etcd([f"127.0.0.1:{port}" for port in free_ports(2)])
    started = time.monotonic()
    with pytest.raises(EtcdError, match="Failed to create etcd client: no etcd member answered"):
        client.get("x")
    assert time.monotonic() - started < 2


def test_a_lost_quorum_is_a_clear_error_within_the_timeout(cluster):
    endpoints, processes = cluster
    client = Etcd(endpoints)
    for process in processes[1:]:
        process.send_signal(signal.SIGKILL)
        process.wait()
    started = time.monotonic()
    with pytest.raises(EtcdError) as caught:
        client.put("x", "1")
    assert time.monotonic() - started < 3 * 2 + 1  # each endpoint's 2 s timeout at most
    assert str(caught.value).startswith("etcd has no quorum (no leader): more than half of its members")


def make_certificate(folder, name, san, ca=None):
    """A key and certificate (signed by ``ca``, a (cert, key) pair, or self-signed)."""
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    request = ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-subj", f"/CN={name}", "-keyout", str(key)]
    if ca is None:
        subprocess.run(request + ["-x509", "-days", "1", "-addext", f"subjectAltName={san}",
                                  "-addext", "basicConstraints=critical,CA:TRUE", "-out", str(cert)],
                       check=True, capture_output=True)
    else:
        csr = folder / f"{name}.csr"
        subprocess.run(request + ["-out", str(csr)], check=True, capture_output=True)
        ext = folder / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert)],
                       check=True, capture_output=True)
    return cert, key


def tls_etcd(folder, server, ca, port, advertised, peer_port):
    """A one-member etcd serving clients over TLS on ``port`` with ``server``'s
    (cert, key), taking only clients with a certificate of ``ca``."""
    with open(folder / "etcd.log", "w") as log:
        return subprocess.Popen(
            ["etcd", "--name", "m", "--data-dir", str(folder / "data"),
             "--listen-client-urls", f"https://127.0.0.1:{port}", "--advertise-client-urls",
             f"https://127.0.0.1:{advertised}", "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-cluster",
             f"m=http://127.0.0.1:{peer_port}", "--cert-file", str(server[0]), "--key-file", str(server[1]),
             "--trusted-ca-file", str(ca[0]), "--client-cert-auth"], stdout=log, stderr=subprocess.STDOUT)


class Tls:
    def __init__(self, cert, key, ca, server_name):
        import ssl

        self.server_name = server_name
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._context.load_verify_locations(str(ca))
        self._context.load_cert_chain(str(cert), str(key))

    def context(self):
        return self._context


@pytest.mark.parametrize("server_role", ["swarm-manager", "swarm-worker"])
def test_over_tls_only_a_manager_is_a_server(tmp_path, server_role):
    """etcd with the swarm's kind of certificates: a client with a member's
    certificate is answered; one whose server is not a manager (its
    certificate does not name ``swarm-manager``) does not send it anything."""
    from plugin.vfile.pki import MANAGER_NAME

    if shutil.which("etcd") is None:
        missing("etcd (Debian package etcd-server; scripts/test.sh installs it)")
    ca = make_certificate(tmp_path, "swarm-ca", "DNS:swarm-ca")
    server = make_certificate(tmp_path, "server", f"DNS:{server_role},DNS:nodeid1", ca)
    client = make_certificate(tmp_path, "client", "DNS:swarm-worker,DNS:nodeid2", ca)
    cport, pport = free_ports(2)
    process = tls_etcd(tmp_path, server, ca, cport, cport, pport)
    try:
        member = Etcd([f"127.0.0.1:{cport}"], tls=Tls(*client, ca[0], MANAGER_NAME))
        unchecked = Etcd([f"127.0.0.1:{cport}"], tls=Tls(*client, ca[0], server_role))
        until_ready(unchecked, tmp_path / "etcd.log")
        if server_role == MANAGER_NAME:
            member.put("SVOLS_info_v", "secret")
            assert member.get("SVOLS_info_v") == "secret"
        else:
            with pytest.raises(EtcdError, match="certificate verify failed"):
                member.put("SVOLS_info_v", "sent to a worker")
            assert unchecked.get("SVOLS_info_v") is None
        stranger = make_certificate(tmp_path, "stranger", "DNS:swarm-manager")  # another CA
        with pytest.raises(EtcdError):
            Etcd([f"127.0.0.1:{cport}"], tls=Tls(*stranger, ca[0], server_role)).get("SVOLS_info_v")
    finally:
        stop_process(process)


def hammered(client, key, value, action):
    """The failures of four threads reading ``key`` while ``action()`` runs."""
    failures, done = [], threading.Event()

    def hammer():
        while not done.is_set():
            try:
                assert client.get(key) == value
            except EtcdError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        action()
        time.sleep(1)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return failures


def members_by_id(endpoints):
    return {Etcd([e]).status()["header"]["member_id"]: e for e in endpoints}


def test_an_election_fails_no_request(cluster):
    """The leader's member is removed (a demoted manager's, before it handed
    its leadership over): the cluster keeps its quorum, elects a leader, and
    requests wait the election out: none fails."""
    endpoints, _ = cluster
    client = Etcd(endpoints)
    client.put("SVOLS_stat_v", "Ready")
    by_id = members_by_id(endpoints)
    [leader] = {Etcd([e]).status()["leader"] for e in endpoints}
    other = next(e for member, e in by_id.items() if member != leader)

    def remove_leader():
        deadline = time.monotonic() + 15
        while True:  # etcd removes a member once the others have been connected a while
            try:
                return Etcd([other]).remove_member(leader)
            except EtcdError as exc:
                assert "unhealthy cluster" in str(exc) and time.monotonic() < deadline, exc
                time.sleep(0.5)
    assert hammered(client, "SVOLS_stat_v", "Ready", remove_leader) == []


def test_a_leadership_handed_over_fails_no_request(cluster):
    """As a demoted manager's plugin does before it leaves."""
    endpoints, _ = cluster
    client = Etcd(endpoints)
    client.put("SVOLS_stat_v", "Ready")

    def hand_over():
        for _ in range(3):
            by_id = members_by_id(endpoints)
            [leader] = {Etcd([e]).status()["leader"] for e in endpoints}
            target = next(member for member in by_id if member != leader)
            Etcd([by_id[leader]]).move_leader(target)
            assert Etcd([by_id[target]]).status()["leader"] == target
    assert hammered(client, "SVOLS_stat_v", "Ready", hand_over) == []


def node_identity(folder, cert, key, ca):
    """The node's identity as the plugin makes it from swarm's files."""
    from plugin.vfile.pki import FILES, NodeIdentity

    source = folder / "swarm-certificates"
    source.mkdir()
    for kind, path in (("cert", cert), ("key", key), ("ca", ca)):
        shutil.copy(path, source / FILES[kind])
    identity = NodeIdentity(str(source), str(folder / "tls"))
    identity.refresh()
    return identity


def test_the_gate_takes_only_the_swarms_nodes_now(tmp_path):
    """A node removed from the swarm still has a valid certificate: the gate
    refuses its next connection and closes those it has (a watch included)."""
    from plugin.vfile.gate import Gate
    from plugin.vfile.pki import MANAGER_NAME

    if shutil.which("etcd") is None:
        missing("etcd (Debian package etcd-server; scripts/test.sh installs it)")
    ca = make_certificate(tmp_path, "swarm-ca", "DNS:swarm-ca")
    manager = make_certificate(tmp_path, "manager1", f"DNS:{MANAGER_NAME},DNS:manager1", ca)
    worker = make_certificate(tmp_path, "worker2", "DNS:swarm-worker,DNS:worker2", ca)
    removed = make_certificate(tmp_path, "worker3", "DNS:swarm-worker,DNS:worker3", ca)
    upstream, gate_port, pport = free_ports(3)
    process = tls_etcd(tmp_path, manager, ca, upstream, gate_port, pport)
    nodes, swarm_answers = {"manager1", "worker2", "worker3"}, threading.Event()

    def swarm_nodes():
        if not swarm_answers.is_set():
            raise OSError("This node is not a swarm manager.")  # as on a node promoted a moment ago
        return set(nodes)

    gate = Gate("127.0.0.1", gate_port, upstream, node_identity(tmp_path, *manager, ca[0]), "manager1",
                swarm_nodes)
    try:
        gate.start()
        swarm_answers.set()
        as_worker = Etcd([f"127.0.0.1:{gate_port}"], tls=Tls(*worker, ca[0], MANAGER_NAME))
        as_removed = Etcd([f"127.0.0.1:{gate_port}"], tls=Tls(*removed, ca[0], MANAGER_NAME))
        until_ready(as_worker, tmp_path / "etcd.log")
        as_removed.put("SVOLS_info_v", "secret")  # still a node of the swarm
        grpc = subprocess.run(["etcdctl", f"--endpoints=https://127.0.0.1:{gate_port}", "--cacert", str(ca[0]),
                               "--cert", str(worker[0]), "--key", str(worker[1]), "--insecure-skip-tls-verify",
                               "get", "--print-value-only", "SVOLS_info_v"],
                              env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, timeout=30)
        assert grpc.stdout.strip() == "secret", grpc.stderr  # etcdctl's gRPC (HTTP/2) passes too
        watched = []
        watch = threading.Thread(target=as_removed.watch, args=("SVOLS_", as_removed.revision() + 1,
                                                                  lambda *event: watched.append(event)))
        watch.start()
        time.sleep(0.5)
        nodes.discard("worker3")  # docker node rm
        gate.refresh()
        watch.join(timeout=10)
        assert not watch.is_alive()  # its stream was closed
        as_worker.put("SVOLS_info_v", "changed")
        assert watched == []
        with pytest.raises(EtcdError):
            as_removed.get("SVOLS_info_v")
        assert as_worker.get("SVOLS_info_v") == "changed"
        intruder = make_certificate(tmp_path, "intruder", f"DNS:{MANAGER_NAME}")  # another CA
        with pytest.raises(EtcdError):
            Etcd([f"127.0.0.1:{gate_port}"], tls=Tls(*intruder, ca[0], MANAGER_NAME)).get("SVOLS_info_v")
        gate.stop()  # a demoted manager's, promoted again: its new gate takes the port at once
        gate = Gate("127.0.0.1", gate_port, upstream, gate.identity, "manager1", swarm_nodes)
        gate.start()
        assert as_worker.get("SVOLS_info_v") == "changed"  # its kept-alive connection, closed, is opened again
    finally:
        gate.stop()
        stop_process(process)


def test_a_mount_is_a_record_that_outlives_the_nodes_lease(cluster):
    """A node's mount is a durable record beside a key bound to its lease: the
    lease lapsing says the node is out of reach, the mount still counts."""
    endpoints, _ = cluster
    client = Etcd(endpoints)
    store = State(client, timeout=5)
    assert store.create("v", {"username": "vfile", "password": "p", "opts": {"size": "1gb"}}) is None
    assert store.create("v", {"username": "vfile", "password": "q", "opts": {}}) == {"size": "1gb"}
    assert store.created("v", {"username": "vfile", "password": "p", "opts": {"size": "1gb"}, "vmgroup": "g"})
    assert store.snapshot("v").info["vmgroup"] == "g"
    first, second = client.grant(60), client.grant(60)
    store.mount("v", "n1", "10.0.0.1", first)
    store.mount("v", "n2", "10.0.0.2", second)
    client.revoke(first)
    snapshot = store.snapshot("v")
    assert (snapshot.state, set(snapshot.mounts), snapshot.alive) == ("Ready", {"n1", "n2"}, {"n2"})
    store.mark_unreachable("v", "n1", snapshot.mounts["n1"], 1e9)
    assert store.snapshot("v").clients() == ["10.0.0.1 (unreachable since 2001-09-09 01:46:40 UTC)", "10.0.0.2"]
    again = client.grant(60)
    store.alive_again("v", "n1", "10.0.0.1", again)
    store.mark_reachable("v", "n1", store.snapshot("v").mounts["n1"])
    assert store.snapshot("v").clients() == ["10.0.0.1", "10.0.0.2"]
    store.unmount("v", "n1")
    assert store.mounted() == {"v": {"n2": {"address": "10.0.0.2"}}}
    assert store.alive() == {("v", "n2")}
    store.unmount("v", "n2")
    store.delete("v")
    assert store.snapshot("v") is None and store.states() == {}


class _ManagerNode:
    """What ``Managers`` asks of its node, on a real etcd: a manager with no
    missed trigger and no file server."""

    def __init__(self, client):
        from types import SimpleNamespace

        self.etcd, self.servers, self.stopping = client, None, threading.Event()
        self.store = SimpleNamespace(missed_events=lambda: [], states=lambda: {})
        self.cluster = SimpleNamespace(is_manager=lambda fresh=False: True)
        self.config = SimpleNamespace(EtcdEndpoints="external")


def test_a_manager_demoted_and_promoted_at_once_handles_each_trigger_once(cluster):
    from plugin.vfile.managers import Managers

    client = Etcd(cluster[0])
    node = _ManagerNode(client)
    managers, handled, before = Managers(node), [], set(threading.enumerate())
    managers._start_server = lambda name, value: handled.append((name, value))
    client.put(START + "v", "0")
    try:
        managers.start()
        managers.stop()
        managers.start()
        deadline, moves = time.monotonic() + 10, 0
        while not handled:  # the trigger moves until a watch is open
            assert time.monotonic() < deadline
            moves += 1
            client.put(START + "v", str(moves))
            time.sleep(0.3)
        client.put(START + "v", "last")
        time.sleep(1)
        values = [value for _, value in handled]
        assert values[-1] == "last" and len(values) == len(set(values)), values
        assert [t.name for t in set(threading.enumerate()) - before].count("watch") == 1
    finally:
        node.stopping.set()
        managers.stop()


def test_a_burst_of_triggers_is_handled_by_a_bounded_pool(cluster):
    from plugin.vfile.managers import TRIGGER_WORKERS, Managers

    client = Etcd(cluster[0])
    node = _ManagerNode(client)
    managers, handled, running, guard = Managers(node), [], [0, 0], threading.Lock()
    before = set(threading.enumerate())

    def start_server(name, value):
        with guard:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.3)
        with guard:
            running[0] -= 1
            handled.append(name)

    managers._start_server = start_server
    names = [f"burst{i}" for i in range(3 * TRIGGER_WORKERS)]
    client.txn([], [txn.put_op(START + name, "0") for name in names])
    try:
        managers.start()
        time.sleep(0.5)
        client.txn([], [txn.put_op(START + name, "1") for name in names])
        deadline = time.monotonic() + 20
        while len(handled) < len(names):
            assert time.monotonic() < deadline, handled
            time.sleep(0.1)
        assert sorted(handled) == sorted(names)
        assert running[1] == TRIGGER_WORKERS
        assert len([t for t in set(threading.enumerate()) - before if t.name.startswith("trigger-")]) == \
            TRIGGER_WORKERS
    finally:
        node.stopping.set()
        managers.stop()


def test_a_wait_goes_on_when_its_member_dies(cluster):
    """The stream of a wait for a key dies with its member: the wait opens
    it again on another from the revision it saw, and sees the value put then."""
    endpoints, processes = cluster
    client = Etcd(endpoints)
    client.put(STAT + "m", "Ready")
    result = []
    waiter = threading.Thread(target=lambda: result.append(client.wait_until(STAT + "m", "Mounted", 20)))
    waiter.start()
    time.sleep(0.5)
    answered = client._ordered()[0]
    victim = processes[endpoints.index(answered)]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    time.sleep(0.5)
    Etcd([e for e in endpoints if e != answered]).put(STAT + "m", "Mounted")
    waiter.join(timeout=25)
    assert result == [True]
