"""The vSphere simulator for the tests and the benchmarks: built from
tests/vcsim with Debian's Go and govmomi (offline, GOPATH mode), started on
loopback as a vCenter or as a standalone ESX host."""

import os
import shutil
import subprocess
import urllib.parse

from . import REPO

SOURCE = os.path.join(REPO, "tests", "vcsim")
GOVMOMI = "/usr/share/gocode/src/github.com/vmware/govmomi"


def available():
    return shutil.which("go") is not None and os.path.isdir(GOVMOMI)


def build(work):
    """The simulator binary, built under the directory ``work``."""
    binary = os.path.join(work, "vcsim")
    env = dict(os.environ, GOPATH=f"{work}/gopath:/usr/share/gocode", GO111MODULE="off",
               GOPROXY="off", GOFLAGS="", GOCACHE=os.path.join(work, "cache"))
    subprocess.run(["go", "build", "-o", binary, "."], cwd=SOURCE, env=env, check=True,
                   capture_output=True, timeout=600)
    return binary


def ca_file(binary, mode):
    """The PEM file of the certificate of the simulator in ``mode``."""
    return os.path.join(os.path.dirname(binary), f"vcsim-{mode}-ca.pem")


def start(binary, mode):
    """(process, URL) of a simulator in ``mode`` ("vpx" or "esx"). Its log goes
    to a file beside the binary: it writes a line for every property collector
    wait, which would fill an unread pipe and stop it."""
    log_path = os.path.join(os.path.dirname(binary), f"vcsim-{mode}.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "-cacert", ca_file(binary, mode)]
                                   + (["-esx"] if mode == "esx" else []),
                                   stdout=subprocess.PIPE, stderr=log, text=True)
    url = process.stdout.readline().strip()
    if not url:
        process.wait(timeout=10)
        with open(log_path) as log:
            raise RuntimeError(f"vcsim did not start: {log.read()}")
    return process, urllib.parse.urlparse(url)


def stop(process):
    process.terminate()
    process.wait(timeout=30)


def requests_served(url):
    """How many requests the simulator at ``url`` has served (its own count)."""
    import ssl
    import urllib.request

    with urllib.request.urlopen(f"https://{url.hostname}:{url.port}/vcsim/requests",
                                context=ssl._create_unverified_context(), timeout=10) as answer:
        return int(answer.read())
