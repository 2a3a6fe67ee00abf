"""The swarm's own PKI, used for etcd: every swarm node holds a key and a
certificate signed by the swarm's root CA (in Docker's data root,
``swarm/certificates/``): the node's id is its CN, and a manager's
certificate, not a worker's, names ``swarm-manager``. So etcd takes only
clients that are members of this swarm and only managers as its peers, and
a client checks that it speaks to a manager; no other CA, and nothing for an
operator to hand out.

swarmkit writes the node's key with PEM headers of its own (``kek-version``,
and on a manager ``raft-dek``: the key that encrypts the swarm's store).
What OpenSSL and etcd need, the key itself, is copied out without them into
this plugin's root-only state directory, again whenever the swarm rotates
the node's certificate. A locked swarm (autolock) keeps the key encrypted:
it cannot be used, and the plugin says so."""

import logging
import os
import ssl

log = logging.getLogger("vmdkops.plugin")
MANAGER_NAME = "swarm-manager"  # in every manager's certificate, in no worker's
FILES = {"cert": "swarm-node.crt", "key": "swarm-node.key", "ca": "swarm-root-ca.crt"}


class SwarmLocked(Exception):
    """The node's key is encrypted (autolock)."""


class NoCertificates(Exception):
    """The node's swarm certificates are not where they were looked for."""


def key_without_headers(text):
    """The PEM private key of swarmkit's key file, without its headers."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise ValueError("not a PEM private key")
    kind = lines[0][len("-----BEGIN "):].rstrip("-")
    body = lines[1:-1]
    headers = []
    while body and ":" in body[0]:
        headers.append(body.pop(0))
    if body and not body[0].strip():
        body.pop(0)
    if "ENCRYPTED" in kind or any(h.startswith(("Proc-Type:", "DEK-Info:")) for h in headers):
        raise SwarmLocked("This swarm is locked (autolock): the node's key is encrypted, so the vfile "
                          "plugin cannot use the swarm's certificates to secure etcd. Turn autolock off "
                          "(docker swarm update --autolock=false), or give the plugin an etcd cluster "
                          "of your own (EtcdEndpoints with EtcdCA, EtcdCert and EtcdKey).")
    return "\n".join([lines[0]] + body + [lines[-1]]) + "\n"


class NodeIdentity:
    """This node's certificate, its key (without swarmkit's headers) and the
    swarm's root CA, as files under ``target`` that etcd and the plugin's
    etcd client use; ``refresh()`` follows the swarm's rotation."""

    def __init__(self, source, target):
        self.source, self.target = source, target
        self.cert, self.key, self.ca = (os.path.join(target, f"node.{kind}") for kind in ("crt", "key", "ca"))
        self._contexts = {}

    def refresh(self):
        """Copy what changed; whether anything did."""
        try:
            read = {}
            for kind, name in FILES.items():
                with open(os.path.join(self.source, name)) as f:
                    read[kind] = f.read()
        except FileNotFoundError as exc:
            raise NoCertificates(f"No swarm certificates at {self.source} ({exc.filename} is missing): is "
                                 "this node in a swarm, and is SwarmCertificates its Docker data root's "
                                 "swarm/certificates?") from None
        read["key"] = key_without_headers(read["key"])
        os.makedirs(self.target, mode=0o700, exist_ok=True)
        os.chmod(self.target, 0o700)
        changed = False
        for kind, path in (("cert", self.cert), ("key", self.key), ("ca", self.ca)):
            changed |= _write_if_changed(path, read[kind])
        if changed:
            self._contexts = {}
            log.info("The node's swarm certificate for etcd is %s", self.cert)
        return changed

    def is_manager(self):
        """Whether the node's certificate (as last copied) is a manager's: swarm
        gives a promoted node one a moment after its promotion, a demoted
        node a worker's."""
        with open(self.cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read().split("-----END CERTIFICATE-----")[0]
                                           + "-----END CERTIFICATE-----\n")
        return MANAGER_NAME.encode() in der  # a manager's names it (OU and SAN), a worker's never

    def context(self, protocol=None):
        """A client context: this node's certificate, and the swarm's CA as the
        only one trusted (the server's name to check is ``MANAGER_NAME``);
        ``protocol`` the one to ask for in the handshake (ALPN), if any."""
        context = self._contexts.get(protocol)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(self.ca)
            context.load_cert_chain(self.cert, self.key)
            if protocol:
                context.set_alpn_protocols([protocol])
            self._contexts[protocol] = context
        return context


def _write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


class SwarmTls:
    """TLS to the managers' etcd with this node's swarm certificate
    (``identity()``, taken before etcd is first asked); the server's
    certificate must name ``server_name``."""

    def __init__(self, identity, server_name=MANAGER_NAME):
        self.identity, self.server_name = identity, server_name

    def context(self):
        return self.identity().context()


class ExternalTls:
    """TLS to an etcd cluster of the operator's, with the CA, certificate and
    key the configuration names (the server's name is each endpoint's host)."""
    server_name = None

    def __init__(self, config):
        self.config = config
        self._context = None

    def context(self):
        if self._context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(self.config.EtcdCA)
            context.load_cert_chain(self.config.EtcdCert, self.config.EtcdKey)
            self._context = context
        return self._context
