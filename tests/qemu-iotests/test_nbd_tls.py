"""NBD over TLS: tls-creds-x509/-psk, authz-simple/-list, STARTTLS.

The CAs and certificates (tls_pki.make_pki, made with certtool inside
the test): alice is allowed by the authz objects, mallory is from the
right CA but denied, eve is from another CA, whom the server must not
trust.

Real clients connect: qemu-img and qemu-io (``--object
tls-creds-x509,...,endpoint=client`` plus ``tls-creds=``), nbdinfo
(``nbds://...?tls-certificates=DIR``), and for the protocol details the
test's own client, which wraps its socket with Python's ssl module after
NBD_OPT_STARTTLS.  Refused: a plain client, eve and mallory, while alice
keeps being served.
"""

import os
import ssl
from typing import Any, Dict, List

import pytest

import iotests
from iotests import MiB
from nbd_client import (Disconnected, NBDClient, OPT_EXPORT_NAME, OPT_GO,
                        OPT_LIST, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_ACK,
                        REP_ERR_INVALID, REP_ERR_TLS_REQD)
from tls_pki import make_pki, start_tls_daemon, x509_server

IMAGE_SIZE = 4 * MiB

# The identities the server sees: GnuTLS's form of the subject DN, as
# QEMU hands it to authz objects.
ALICE_DN = "C=GB,O=blockd test,CN=alice"
MALLORY_DN = "C=GB,O=blockd test,CN=mallory"


# ---------------------------------------------------------------------------
# Certificates (tls_pki)

@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Dict[str, str]:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


# ---------------------------------------------------------------------------
# Daemon and clients

def keyval_escape(value: str) -> str:
    return value.replace(",", ",,")


def image_opts(port: int, creds_id: str = "") -> str:
    opts = f"driver=nbd,host=127.0.0.1,port={port},export=disk"
    return opts + (f",tls-creds={creds_id}" if creds_id else "")


def client_object(kind: str, creds_dir: str, extra: str = "") -> List[str]:
    return ["--object", f"tls-creds-{kind},id=c0,endpoint=client,dir={creds_dir}{extra}"]


def qemu_io_tls(port: int, creds: List[str], cmds: List[str],
                check: bool = True) -> iotests.ToolResult:
    argv: List[Any] = [*creds, "--image-opts", image_opts(port, "c0" if creds else "")]
    for c in cmds:
        argv += ["-c", c]
    return iotests.qemu_io(*argv, check=check)


def qemu_img_info(port: int, creds: List[str]) -> iotests.ToolResult:
    return iotests.qemu_img("info", *creds, "--image-opts",
                            image_opts(port, "c0" if creds else ""), check=False)


def nbdinfo(uri: str) -> iotests.ToolResult:
    return iotests.run([iotests.require_tool("nbdinfo"), "--size", uri], check=False)


def assert_alice_served(port: int, pki: Dict[str, str], pattern: int) -> None:
    """alice writes @pattern and reads it back through qemu-io."""
    res = qemu_io_tls(port, client_object("x509", pki["alice"]),
                      [f"write -P {pattern} 0 64k", f"read -P {pattern} 0 64k"])
    assert "read 65536/65536 bytes" in res.stdout, res.output


def alice_ssl_context(pki: Dict[str, str], name: str = "alice") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(pki[name], "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(pki[name], "client-cert.pem"),
                        os.path.join(pki[name], "client-key.pem"))
    ctx.check_hostname = False
    return ctx


# ---------------------------------------------------------------------------
# x509 with real clients

def test_x509_clients_and_refusals(daemon_factory: Any, scratch: str,
                                   pki: Dict[str, str]) -> None:
    authz = f"authz-simple,id=authz0,identity={keyval_escape(ALICE_DN)}"
    t = start_tls_daemon(daemon_factory, scratch, [x509_server(pki), authz],
                         authz="authz0")
    port = t["port"]

    # alice through all three tools
    assert_alice_served(port, pki, 0x11)
    res = qemu_img_info(port, client_object("x509", pki["alice"]))
    assert res.returncode == 0 and f"({IMAGE_SIZE} bytes)" in res.stdout, res.output
    uri = f"nbds://127.0.0.1:{port}/disk?tls-certificates={pki['alice']}"
    res = nbdinfo(uri)
    assert res.returncode == 0 and res.stdout.strip() == str(IMAGE_SIZE), res.output

    # alice stays connected (own client, over TLS) while the others are refused
    with NBDClient(("127.0.0.1", port)) as held:
        held.handshake_start()
        held.starttls(alice_ssl_context(pki))
        rtype, _ = held.opt_go("disk")
        assert rtype == REP_ACK
        err, data = held.read(0, 4096)
        assert err == 0 and data == bytes([0x11]) * 4096

        refused = [
            ("plain qemu-img", qemu_img_info(port, [])),
            ("plain nbdinfo", nbdinfo(f"nbd://127.0.0.1:{port}/disk")),
            ("eve (other CA)", qemu_img_info(port, client_object("x509", pki["eve"]))),
            ("eve nbdinfo", nbdinfo(f"nbds://127.0.0.1:{port}/disk"
                                    f"?tls-certificates={pki['eve']}")),
            ("mallory (denied)", qemu_img_info(port, client_object("x509", pki["mallory"]))),
            ("mallory qemu-io", qemu_io_tls(port, client_object("x509", pki["mallory"]),
                                            ["read 0 4k"], check=False)),
            ("mallory nbdinfo", nbdinfo(f"nbds://127.0.0.1:{port}/disk"
                                        f"?tls-certificates={pki['mallory']}")),
        ]
        for what, res in refused:
            assert res.returncode != 0, f"{what} was served: {res.output}"
            assert str(IMAGE_SIZE) not in res.stdout, what

        # The held connection was served throughout.
        err, data = held.read(IMAGE_SIZE - 4096, 4096)
        assert err == 0
        t["daemon"].assert_alive()

    assert_alice_served(port, pki, 0x22)
    with open(t["image"], "rb") as f:
        assert f.read(65536) == bytes([0x22]) * 65536


def test_x509_without_authz(daemon_factory: Any, scratch: str,
                            pki: Dict[str, str]) -> None:
    """Without tls-authz any client with a certificate of the CA is served."""
    t = start_tls_daemon(daemon_factory, scratch, [x509_server(pki)])
    port = t["port"]
    for name in ("alice", "mallory"):
        res = qemu_img_info(port, client_object("x509", pki[name]))
        assert res.returncode == 0, res.output
    for creds in ([], client_object("x509", pki["eve"])):
        res = qemu_img_info(port, creds)
        assert res.returncode != 0, res.output
    t["daemon"].assert_alive()


def test_authz_list_glob_and_object_del(daemon_factory: Any, scratch: str,
                                        pki: Dict[str, str]) -> None:
    """authz-list rules, created by object-add at run time; object-del of
    the credentials does not stop the server (as in QEMU)."""
    t = start_tls_daemon(daemon_factory, scratch, [x509_server(pki)],
                         authz="authz0")
    d, port = t["daemon"], t["port"]

    # No authz object yet: nobody is allowed.
    res = qemu_img_info(port, client_object("x509", pki["alice"]))
    assert res.returncode != 0, res.output

    d.command("object-add", {"qom-type": "authz-list", "id": "authz0",
                             "policy": "deny",
                             "rules": [{"match": MALLORY_DN, "policy": "deny"},
                                       {"match": "*,O=blockd test,*", "policy": "allow",
                                        "format": "glob"}]})
    assert qemu_img_info(port, client_object("x509", pki["alice"])).returncode == 0
    assert qemu_img_info(port, client_object("x509", pki["mallory"])).returncode != 0

    # The running server holds the credentials; the id goes away at once.
    d.command("object-del", id="tls0")
    assert qemu_img_info(port, client_object("x509", pki["alice"])).returncode == 0
    err = d.cmd("object-del", id="tls0")["error"]
    assert err["desc"] == "object 'tls0' not found"

    # Replacing the authz object takes effect for the next client.
    d.command("object-del", id="authz0")
    d.command("object-add", {"qom-type": "authz-simple", "id": "authz0",
                             "identity": MALLORY_DN})
    assert qemu_img_info(port, client_object("x509", pki["alice"])).returncode != 0
    assert qemu_img_info(port, client_object("x509", pki["mallory"])).returncode == 0
    d.assert_alive()


# ---------------------------------------------------------------------------
# PSK

def test_psk(daemon_factory: Any, scratch: str, pki: Dict[str, str]) -> None:
    objects = [f"tls-creds-psk,id=tls0,endpoint=server,dir={pki['psk-server']}",
               "authz-simple,id=authz0,identity=alice"]
    t = start_tls_daemon(daemon_factory, scratch, objects, authz="authz0")
    port = t["port"]
    ok = qemu_io_tls(port, client_object("psk", pki["psk-alice"], ",username=alice"),
                     ["write -P 0x5 0 4k", "read -P 0x5 0 4k"])
    assert "read 4096/4096 bytes" in ok.stdout, ok.output
    for creds in ([], client_object("psk", pki["psk-wrong"], ",username=alice")):
        res = qemu_img_info(port, creds)
        assert res.returncode != 0, res.output
    t["daemon"].assert_alive()


# ---------------------------------------------------------------------------
# The protocol before and after STARTTLS

def test_options_before_starttls(daemon_factory: Any, scratch: str,
                                 pki: Dict[str, str]) -> None:
    t = start_tls_daemon(daemon_factory, scratch, [x509_server(pki)])
    addr = ("127.0.0.1", t["port"])

    with NBDClient(addr) as c:
        c.handshake_start()
        # Nothing is served in plain text, not even the export list.
        for opt, data in ((OPT_LIST, b""), (OPT_STRUCTURED_REPLY, b""),
                          (OPT_GO, b"\0\0\0\4disk\0\0")):
            c.send_option(opt, data)
            ropt, rtype, _ = c.read_option_reply()
            assert (ropt, rtype) == (opt, REP_ERR_TLS_REQD)

        c.starttls(alice_ssl_context(pki))
        # TLS cannot be started twice.
        c.send_option(OPT_STARTTLS)
        ropt, rtype, _ = c.read_option_reply()
        assert (ropt, rtype) == (OPT_STARTTLS, REP_ERR_INVALID)
        rtype, _ = c.opt_go("disk")
        assert rtype == REP_ACK and c.size == IMAGE_SIZE
        assert c.write(0, b"\x42" * 8192) == 0
        err, data = c.read(4096, 4096)
        assert err == 0 and data == b"\x42" * 4096

    # STARTTLS has no payload: blockd replies NBD_REP_ERR_INVALID, QEMU
    # hangs up; either way TLS does not start.
    with NBDClient(addr) as c:
        c.handshake_start()
        c.send_option(OPT_STARTTLS, b"xx")
        try:
            ropt, rtype, _ = c.read_option_reply()
            assert (ropt, rtype) == (OPT_STARTTLS, REP_ERR_INVALID)
        except Disconnected:
            assert iotests.is_reference()

    # NBD_OPT_EXPORT_NAME has no error reply: the server hangs up.
    with NBDClient(addr) as c:
        c.handshake_start()
        c.send_option(OPT_EXPORT_NAME, b"disk")
        assert c.is_closed_by_peer()

    t["daemon"].assert_alive()


@iotests.blockd_only("qemu-storage-daemon feeds such bytes to its TLS handshake, "
                     "which then waits for the rest of the record")
def test_plaintext_after_starttls_is_refused(daemon_factory: Any, scratch: str,
                                             pki: Dict[str, str]) -> None:
    """Bytes the client sent right behind NBD_OPT_STARTTLS, before the
    server's reply, must not be taken as coming through TLS: blockd's
    read-ahead buffer holds them, so it hangs up."""
    t = start_tls_daemon(daemon_factory, scratch, [x509_server(pki)])
    with NBDClient(("127.0.0.1", t["port"])) as c:
        c.handshake_start()
        c.send(b"".join([
            (0x49484156454F5054).to_bytes(8, "big") + OPT_STARTTLS.to_bytes(4, "big")
            + (0).to_bytes(4, "big"),
            b"\x16\x03\x01 injected",
        ]))
        assert c.is_closed_by_peer()
    t["daemon"].assert_alive()


def test_tls_over_unix_socket(daemon_factory: Any, scratch: str,
                              pki: Dict[str, str]) -> None:
    """TLS on a UNIX socket export too, with nbdinfo."""
    image = os.path.join(scratch, "u.raw")
    iotests.create_image(image, IMAGE_SIZE)
    d = daemon_factory("--object", x509_server(pki))
    d.add_file_raw(image, node="disk")
    sock = d.start_nbd_unix(tls_creds="tls0")
    d.export("disk", name="disk")
    uri = f"nbds+unix:///disk?socket={sock}&tls-certificates={pki['alice']}"
    res = nbdinfo(uri)
    assert res.returncode == 0 and res.stdout.strip() == str(IMAGE_SIZE), res.output
    res = nbdinfo(iotests.nbd_uri(sock, "disk"))
    assert res.returncode != 0


# ---------------------------------------------------------------------------
# Objects and the server's QMP errors (messages as in QEMU 7.2)

def test_object_and_server_errors(daemon: Any, scratch: str,
                                  pki: Dict[str, str]) -> None:
    def err(cmd: str, args: Dict[str, Any]) -> str:
        r = daemon.cmd(cmd, args)
        assert "error" in r, r
        return r["error"]["desc"]

    server = {"qom-type": "tls-creds-x509", "id": "tls0", "endpoint": "server",
              "dir": pki["server"]}
    daemon.command("object-add", server)
    missing = os.path.join(scratch, "nowhere")
    assert err("object-add", server) == \
        "attempt to add duplicate property 'tls0' to object (type 'container')"
    assert err("object-add", {**server, "id": "t1", "dir": missing}) == \
        f"Unable to access credentials {missing}/ca-cert.pem: No such file or directory"
    assert err("object-add", {**server, "id": "t1", "dir": pki["alice"]}) == \
        (f"Unable to access credentials {pki['alice']}/server-cert.pem: "
         "No such file or directory")
    assert err("object-add", {"qom-type": "tls-creds-x509", "id": "t1"}) == \
        "Missing 'dir' property value"
    assert err("object-add", {**server, "id": "1x"}) == \
        "Parameter 'id' expects an identifier"
    assert err("object-add", {"qom-type": "tls-creds-psk", "id": "p1",
                              "endpoint": "server", "dir": missing}) == \
        f"Unable to access credentials {missing}/keys.psk: No such file or directory"
    assert err("object-add", {**server, "id": "t1", "dir": pki["server-other-ca"]}) == \
        (f"Our own certificate {pki['server-other-ca']}/server-cert.pem failed "
         f"validation against {pki['server-other-ca']}/ca-cert.pem: "
         "The certificate hasn't got a known issuer")
    daemon.command("object-add", {**server, "id": "unchecked",
                                  "dir": pki["server-other-ca"], "sanity-check": False})
    assert err("object-add", {**server, "id": "t1", "passwordid": "sec0"}) == \
        "No secret with id 'sec0'"
    psk = {"qom-type": "tls-creds-psk", "id": "p1", "dir": pki["psk-server"]}
    assert err("object-add", {**psk, "endpoint": "server", "username": "x"}) == \
        "username should not be set when endpoint=server"
    assert err("object-add", {**psk, "endpoint": "client", "username": "bob"}) == \
        f"Username bob not found in PSK file {pki['psk-server']}/keys.psk"
    assert err("object-add", {"qom-type": "authz-simple", "id": "a1"}) == \
        "Parameter 'identity' is missing"
    assert err("object-add", {"qom-type": "authz-list", "id": "a1",
                              "rules": [{"match": "x"}]}) == \
        "Parameter 'rules[0].policy' is missing"
    assert err("object-add", {"qom-type": "nosuch", "id": "a1"}) == \
        "Parameter 'qom-type' does not accept value 'nosuch'"
    daemon.command("object-add", {"qom-type": "authz-simple", "id": "authz0",
                                  "identity": "x"})
    daemon.command("object-add", {"qom-type": "tls-creds-x509", "id": "client0",
                                  "endpoint": "client", "dir": pki["alice"]})

    addr = {"type": "unix", "data": {"path": os.path.join(daemon.sockdir, "n.sock")}}
    assert err("nbd-server-start", {"addr": addr, "tls-creds": "nosuch"}) == \
        "No TLS credentials with id 'nosuch'"
    assert err("nbd-server-start", {"addr": addr, "tls-creds": "authz0"}) == \
        "Object with id 'authz0' is not TLS credentials"
    assert err("nbd-server-start", {"addr": addr, "tls-creds": "client0"}) == \
        "Expected TLS credentials for a server endpoint"
    daemon.command("nbd-server-start", {"addr": addr, "tls-creds": "tls0",
                                        "tls-authz": "authz0"})
    daemon.command("nbd-server-stop")

    assert err("object-del", {"id": "nosuch"}) == "object 'nosuch' not found"
    for obj in ("tls0", "authz0", "client0", "unchecked"):
        daemon.command("object-del", id=obj)


def test_object_command_line_error(scratch: str, pki: Dict[str, str]) -> None:
    missing = os.path.join(scratch, "nowhere")
    res = iotests.start_daemon_expect_failure(
        ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={missing}"])
    assert res.returncode == 1
    assert (f"Unable to access credentials {missing}/ca-cert.pem: "
            "No such file or directory") in res.stderr


def test_object_command_line_json(daemon_factory: Any, pki: Dict[str, str]) -> None:
    """--object in JSON form, authz-list rules included."""
    rules = {"qom-type": "authz-list", "id": "authz0", "policy": "allow",
             "rules": [{"match": MALLORY_DN, "policy": "deny", "format": "exact"}]}
    d = daemon_factory("--object", iotests.json_arg(rules), "--object", x509_server(pki))
    d.command("object-del", id="authz0")
    d.command("object-del", id="tls0")
