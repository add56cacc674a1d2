"""The nbd block driver over TLS: tls-creds and tls-hostname.

The daemon under test is the client: an ``nbd`` node with ``tls-creds``
(a ``tls-creds-x509`` or ``tls-creds-psk`` object, endpoint=client)
connects to a TLS export of a second daemon (over TCP) or of qemu-nbd
(over a UNIX socket, where x509 needs ``tls-hostname``), and is
re-exported in plain NBD on a UNIX socket for qemu-io.  Data written
through it is read back from the server's image.  Refused, with QEMU
7.2's messages: credentials that are missing, not TLS credentials, or
for the server endpoint; a server certificate from another CA or for
another host name; x509 on a UNIX socket without tls-hostname; a plain
server while TLS is required, and a plain client of a TLS server.  A
node with reconnect-delay redoes TLS after the server restarts, also
with writes in flight.  blockdev-del and quit end the session cleanly.

The PKI comes from tls_pki (certtool, inside the test).

iotests groups: rw, quick (the reconnect tests are slower)
"""

import os
import time
from typing import Any, Dict, List, Optional

import pytest

import iotests
from iotests import MiB, Reference, create_image, qemu_io_cmds, qemu_io_popen, wait_all
from nbd_servers import Nbdkit, QemuNbd
from tls_pki import PSK_KEY_ALICE, make_pki, start_tls_daemon, x509_server

pytestmark = pytest.mark.rw

SIZE = 4 * MiB
WRITES = [(0x5A, 0, 64 * 1024), (0xC3, MiB + 512, 4096), (0x7E, SIZE - 4096, 4096)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Dict[str, str]:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


# --- helpers ------------------------------------------------------------------

def add_client_creds(daemon: iotests.Daemon, kind: str, creds_dir: str,
                     creds_id: str = "c0", **props: Any) -> None:
    props = {k.replace("_", "-"): v for k, v in props.items()}
    daemon.command("object-add", {"qom-type": f"tls-creds-{kind}", "id": creds_id,
                                  "endpoint": "client", "dir": creds_dir, **props})


def nbd_node(server: Dict[str, Any], export: str = "disk",
             **opts: Any) -> Dict[str, Any]:
    args = {"driver": "nbd", "node-name": "remote", "server": server,
            "export": export}
    args.update({k.replace("_", "-"): v for k, v in opts.items()})
    return args


def inet(port: int) -> Dict[str, Any]:
    return {"type": "inet", "host": "127.0.0.1", "port": str(port)}


def unix(path: str) -> Dict[str, Any]:
    return {"type": "unix", "path": path}


def add_error(daemon: iotests.Daemon, args: Dict[str, Any]) -> str:
    """blockdev-add @args must fail and leave no node; its message."""
    resp = daemon.cmd("blockdev-add", args)
    assert "error" in resp, resp
    assert resp["error"]["class"] == "GenericError", resp
    assert daemon.command("query-named-block-nodes", flat=True) == []
    return resp["error"]["desc"]


def write_through(daemon: iotests.Daemon, writes: List[Any]) -> None:
    """Re-export the node "remote" in plain NBD, write @writes through it
    with qemu-io and read them back."""
    sock = daemon.start_nbd_unix()
    daemon.export("remote", name="vol", writable=True)
    uri = iotests.nbd_uri(sock, "vol")
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {off} {ln}" for p, off, ln in writes]
                 + ["flush"])
    qemu_io_cmds(uri, [f"read -q -P {p:#x} {off} {ln}" for p, off, ln in writes])


def drop_node(daemon: iotests.Daemon) -> None:
    daemon.del_export("e")
    daemon.command("nbd-server-stop")
    daemon.command("blockdev-del", node_name="remote")


def check_image(image: str, writes: List[Any]) -> None:
    ref = Reference(SIZE)
    for p, off, ln in writes:
        ref.write(p, off, ln)
    ref.check_file(image)


def tls_qemu_nbd(scratch: str, pki: Dict[str, str], kind: str,
                 image: Optional[str] = None, extra: str = "") -> QemuNbd:
    """qemu-nbd serving a raw image as "disk" on a UNIX socket, TLS with
    the server credentials of @kind ("x509" or "psk")."""
    image = image or create_image(os.path.join(scratch, "remote.img"), SIZE)
    creds_dir = pki["server"] if kind == "x509" else pki["psk-server"]
    return QemuNbd(scratch, image, export="disk", extra_args=[
        "--object", f"tls-creds-{kind},id=tls0,endpoint=server,dir={creds_dir}{extra}",
        "--tls-creds", "tls0"])


# --- data through TLS -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["x509", "psk"])
def test_blockd_server_over_tcp(daemon_factory, scratch, pki, kind):
    """A second daemon's TLS export over TCP: with x509 the certificate
    must name the inet host (127.0.0.1 here)."""
    server_creds = (x509_server(pki) if kind == "x509" else
                    f"tls-creds-psk,id=tls0,endpoint=server,dir={pki['psk-server']}")
    server = start_tls_daemon(daemon_factory, scratch, [server_creds], size=SIZE)
    client = daemon_factory()
    if kind == "x509":
        add_client_creds(client, "x509", pki["alice"])
    else:
        add_client_creds(client, "psk", pki["psk-alice"], username="alice")
    client.command("blockdev-add", nbd_node(inet(server["port"]), tls_creds="c0"))
    write_through(client, WRITES)
    drop_node(client)
    server["daemon"].stop()
    check_image(server["image"], WRITES)


@pytest.mark.parametrize("kind", ["x509", "psk"])
def test_qemu_nbd_over_unix(daemon, scratch, pki, kind):
    """qemu-nbd --tls-creds on a UNIX socket: x509 with tls-hostname."""
    kit = tls_qemu_nbd(scratch, pki, kind).start()
    try:
        if kind == "x509":
            add_client_creds(daemon, "x509", pki["alice"])
            opts = {"tls_hostname": "localhost"}
        else:
            add_client_creds(daemon, "psk", pki["psk-alice"], username="alice")
            opts = {}
        daemon.command("blockdev-add", nbd_node(unix(kit.sock), tls_creds="c0", **opts))
        write_through(daemon, WRITES)
        drop_node(daemon)
    finally:
        kit.stop()
    check_image(kit.image, WRITES)


def test_psk_default_username_is_qemu(daemon, scratch, pki):
    """Without a username property the client is "qemu", as in QEMU."""
    keys = os.path.join(scratch, "psk-qemu")
    os.makedirs(keys)
    with open(os.path.join(keys, "keys.psk"), "w") as f:
        f.write(f"qemu:{PSK_KEY_ALICE}\n")
    kit = tls_qemu_nbd(scratch, pki, "psk").start()     # knows only alice
    try:
        add_client_creds(daemon, "psk", keys)
        desc = add_error(daemon, nbd_node(unix(kit.sock), tls_creds="c0"))
        assert desc.startswith("TLS handshake failed: "), desc
    finally:
        kit.stop()
    kit = QemuNbd(scratch, kit.image, export="disk", name="qemu-nbd-qemu", extra_args=[
        "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={keys}",
        "--tls-creds", "tls0"]).start()
    try:
        daemon.command("blockdev-add", nbd_node(unix(kit.sock), tls_creds="c0"))
        write_through(daemon, WRITES[:1])
        drop_node(daemon)
    finally:
        kit.stop()


# --- refusals -------------------------------------------------------------------

def test_credentials_lookup(daemon, scratch, pki):
    kit = tls_qemu_nbd(scratch, pki, "x509").start()
    try:
        daemon.command("object-add", {"qom-type": "authz-simple", "id": "az",
                                      "identity": "x"})
        daemon.command("object-add", {"qom-type": "tls-creds-x509", "id": "srv",
                                      "endpoint": "server", "dir": pki["server"]})
        server = unix(kit.sock)
        assert add_error(daemon, nbd_node(server, tls_creds="nope")) == \
            "No TLS credentials with id 'nope'"
        assert add_error(daemon, nbd_node(server, tls_creds="az")) == \
            "Object with id 'az' is not TLS credentials"
        assert add_error(daemon, nbd_node(server, tls_creds="srv")) == \
            "Expected TLS credentials for a client endpoint"
    finally:
        kit.stop()


def test_server_certificate_checks(daemon_factory, scratch, pki):
    """The server's certificate must come from the CA and name the host,
    over TCP and over a UNIX socket alike."""
    server = start_tls_daemon(daemon_factory, scratch,
                              [x509_server(pki, ",verify-peer=off")], size=SIZE)
    kit = tls_qemu_nbd(scratch, pki, "x509", extra=",verify-peer=off").start()
    try:
        client = daemon_factory()
        add_client_creds(client, "x509", pki["trusts-other-ca"], creds_id="other")
        add_client_creds(client, "x509", pki["alice"], creds_id="good")
        tcp, sock = inet(server["port"]), unix(kit.sock)
        for address, hostname in ((tcp, {}), (sock, {"tls_hostname": "localhost"})):
            assert add_error(client, nbd_node(address, tls_creds="other", **hostname)) == \
                "The certificate hasn't got a known issuer"
            assert add_error(client, nbd_node(address, tls_creds="good",
                                              tls_hostname="wronghost")) == \
                "Certificate does not match the hostname wronghost"
        assert add_error(client, nbd_node(sock, tls_creds="good")) == \
            "No hostname for certificate validation"
        # verify-peer=off on the client trusts any server, host or not.
        add_client_creds(client, "x509", pki["trusts-other-ca"], creds_id="any",
                         verify_peer=False)
        client.command("blockdev-add", nbd_node(sock, tls_creds="any"))
        client.command("blockdev-del", node_name="remote")
        server["daemon"].assert_alive()
    finally:
        kit.stop()


def test_plain_server_while_tls_required(daemon, scratch, pki):
    kit = Nbdkit(scratch, ["memory", str(SIZE)]).start()
    try:
        add_client_creds(daemon, "psk", pki["psk-alice"], username="alice")
        assert add_error(daemon, {"driver": "nbd", "node-name": "remote",
                                  "server": unix(kit.sock), "tls-creds": "c0"}) == \
            "Denied by server for option 5 (starttls)"
    finally:
        kit.stop()


def test_plain_client_of_tls_server(daemon, scratch, pki):
    kit = tls_qemu_nbd(scratch, pki, "psk").start()
    try:
        # tls-hostname alone does not ask for TLS (QEMU ignores it too).
        assert add_error(daemon, nbd_node(unix(kit.sock), tls_hostname="localhost")) == \
            "TLS negotiation required before option 7 (go)"
    finally:
        kit.stop()


def test_wrong_psk_key(daemon, scratch, pki):
    kit = tls_qemu_nbd(scratch, pki, "psk").start()
    try:
        add_client_creds(daemon, "psk", pki["psk-wrong"], username="alice")
        desc = add_error(daemon, nbd_node(unix(kit.sock), tls_creds="c0"))
        assert desc.startswith("TLS handshake failed: "), desc
    finally:
        kit.stop()


def test_clean_disconnect(daemon, scratch, pki):
    """blockdev-del ends the TLS session properly: nbdkit sees
    NBD_CMD_DISC and a TLS close_notify, not a cut connection."""
    kit = Nbdkit(scratch, ["--tls=require", f"--tls-certificates={pki['server']}",
                           "memory", str(SIZE)]).start()
    try:
        add_client_creds(daemon, "x509", pki["alice"])
        daemon.command("blockdev-add", nbd_node(unix(kit.sock), export="",
                                                tls_creds="c0", tls_hostname="localhost"))
        write_through(daemon, WRITES[:1])
        drop_node(daemon)
        time.sleep(0.5)     # for nbdkit to notice the end
    finally:
        kit.stop()
    assert "error" not in kit.log(), kit.log()


def test_quit_with_tls_node(daemon_factory, scratch, pki):
    """quit closes a connected TLS node (and its relay) cleanly: exit
    status 0, which under the sanitizers also means no leak."""
    kit = tls_qemu_nbd(scratch, pki, "psk").start()
    try:
        d = daemon_factory()
        add_client_creds(d, "psk", pki["psk-alice"], username="alice")
        d.command("blockdev-add", nbd_node(unix(kit.sock), tls_creds="c0"))
        write_through(d, WRITES[:1])
        assert d.stop(), d.stderr()
    finally:
        kit.stop()


# --- reconnecting -----------------------------------------------------------------

def open_fds(daemon: iotests.Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.pid}/fd"))


@pytest.mark.slow
def test_reconnect_redoes_tls(daemon, scratch, pki):
    """Kill and restart the TLS server: the node reconnects with TLS (with
    the credentials it holds, whose id is gone), writes go on, and no
    socket is left behind."""
    kit = tls_qemu_nbd(scratch, pki, "x509")
    kit.start()
    try:
        add_client_creds(daemon, "x509", pki["alice"])
        daemon.command("blockdev-add", nbd_node(unix(kit.sock), tls_creds="c0",
                                                tls_hostname="localhost",
                                                reconnect_delay=60))
        # The node holds the credentials: without the id they still serve.
        daemon.command("object-del", id="c0")
        sock = daemon.start_nbd_unix()
        daemon.export("remote", name="vol", writable=True)
        uri = iotests.nbd_uri(sock, "vol")
        qemu_io_cmds(uri, [f"write -q -P {WRITES[0][0]:#x} 0 64k"])
        fds = open_fds(daemon)
        for round_ in range(3):
            kit.kill()
            time.sleep(0.5)
            kit.start()
            pattern = 0x20 + round_
            qemu_io_cmds(uri, [f"write -q -P {pattern:#x} 1M 64k",
                               f"read -q -P {pattern:#x} 1M 64k"])
        # The old connections' sockets (and relays) are gone.
        assert open_fds(daemon) == fds
        drop_node(daemon)
    finally:
        kit.stop()
    check_image(kit.image, [WRITES[0], (0x22, MiB, 64 * 1024)])


@pytest.mark.slow
def test_reconnect_under_load(daemon, scratch, pki):
    """Writes in flight through TLS when nbdkit is killed are sent again
    on the new TLS connection; concurrent clients all get their data."""
    img = create_image(os.path.join(scratch, "remote.img"), SIZE)
    kit = Nbdkit(scratch, ["--tls=require", f"--tls-certificates={pki['server']}",
                           "file", img, "delay-write=2"], filters=["delay"])
    kit.start()
    writes = [(0x40 + i, i * 256 * 1024, 64 * 1024) for i in range(16)]
    try:
        add_client_creds(daemon, "x509", pki["alice"])
        daemon.command("blockdev-add", nbd_node(unix(kit.sock), export="",
                                                tls_creds="c0", tls_hostname="localhost",
                                                reconnect_delay=60))
        sock = daemon.start_nbd_unix()
        daemon.export("remote", name="vol", writable=True)
        uri = iotests.nbd_uri(sock, "vol")
        clients = [qemu_io_popen(uri, [f"aio_write -P {p:#x} {off} {ln}"
                                       for p, off, ln in writes[k::4]] + ["aio_flush"])
                   for k in range(4)]
        time.sleep(0.5)             # the writes wait in the server
        kit.kill()
        time.sleep(1.0)
        kit.start()
        wait_all(clients)
        qemu_io_cmds(uri, [f"read -q -P {p:#x} {off} {ln}" for p, off, ln in writes])
        drop_node(daemon)
    finally:
        kit.stop()
    check_image(img, writes)
