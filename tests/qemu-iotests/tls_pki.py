"""TLS test fixtures shared by the NBD TLS tests: a PKI made with certtool
(GnuTLS) inside the test, and a daemon serving NBD over TLS.

``make_pki(work)`` makes two CAs and returns credential directories:

* CA "good": ``server`` (cn localhost, also valid for 127.0.0.1), clients
  ``alice`` and ``mallory``;
* CA "other": client ``eve`` (whose directory trusts the good CA, so the
  server, not eve, refuses), ``server-other-ca`` (the server's certificate
  next to a CA that did not sign it) and ``trusts-other-ca`` (only the
  other CA: a client that must refuse the good server);
* PSK: ``psk-server`` and ``psk-alice`` (user alice, same key),
  ``psk-wrong`` (alice with a wrong key).
"""

import os
from typing import Any, Dict, List

import iotests
from iotests import MiB

PSK_KEY_ALICE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _certtool(*args: str) -> None:
    iotests.run([iotests.require_tool("certtool"), *args])


def _template(path: str, lines: List[str]) -> str:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _make_ca(work: str, name: str) -> Dict[str, str]:
    key = os.path.join(work, f"{name}-ca-key.pem")
    cert = os.path.join(work, f"{name}-ca-cert.pem")
    tmpl = _template(os.path.join(work, f"{name}-ca.info"),
                     [f"cn = blockd test CA {name}", "ca", "cert_signing_key",
                      "expiration_days = 2"])
    _certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
    _certtool("--generate-self-signed", "--load-privkey", key,
              "--template", tmpl, "--outfile", cert)
    return {"key": key, "cert": cert}


def _make_cert(work: str, ca: Dict[str, str], name: str,
               lines: List[str]) -> Dict[str, str]:
    key = os.path.join(work, f"{name}-key.pem")
    cert = os.path.join(work, f"{name}-cert.pem")
    tmpl = _template(os.path.join(work, f"{name}.info"),
                     lines + ["encryption_key", "signing_key",
                              "expiration_days = 2"])
    _certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", key)
    _certtool("--generate-certificate", "--load-privkey", key,
              "--load-ca-certificate", ca["cert"], "--load-ca-privkey", ca["key"],
              "--template", tmpl, "--outfile", cert)
    return {"key": key, "cert": cert}


def _creds_dir(base: str, name: str, files: Dict[str, str]) -> str:
    path = os.path.join(base, name)
    os.makedirs(path)
    for dest, src in files.items():
        with open(src) as f, open(os.path.join(path, dest), "w") as out:
            out.write(f.read())
    return path


def make_pki(work: str) -> Dict[str, str]:
    """Credential directories under @work (see the module's docstring)."""
    good = _make_ca(work, "good")
    other = _make_ca(work, "other")
    server = _make_cert(work, good, "server",
                        ["organization = blockd test", "cn = localhost",
                         "dns_name = localhost", "ip_address = 127.0.0.1",
                         "tls_www_server"])
    client_lines = ["country = GB", "organization = blockd test", "tls_www_client"]
    alice = _make_cert(work, good, "alice", client_lines + ["cn = alice"])
    mallory = _make_cert(work, good, "mallory", client_lines + ["cn = mallory"])
    eve = _make_cert(work, other, "eve", client_lines + ["cn = alice"])

    dirs = {
        "server": _creds_dir(work, "server", {"ca-cert.pem": good["cert"],
                                              "server-cert.pem": server["cert"],
                                              "server-key.pem": server["key"]}),
        # The server's certificate with a CA that did not sign it
        "server-other-ca": _creds_dir(work, "server-other-ca",
                                      {"ca-cert.pem": other["cert"],
                                       "server-cert.pem": server["cert"],
                                       "server-key.pem": server["key"]}),
    }
    for name, cert in (("alice", alice), ("mallory", mallory), ("eve", eve)):
        # Every client trusts the good CA, so each of them accepts the
        # server: refusals come from the server.
        dirs[name] = _creds_dir(work, name, {"ca-cert.pem": good["cert"],
                                             "client-cert.pem": cert["cert"],
                                             "client-key.pem": cert["key"]})
    for name, line in (("psk-server", f"alice:{PSK_KEY_ALICE}"),
                       ("psk-alice", f"alice:{PSK_KEY_ALICE}"),
                       ("psk-wrong", "alice:" + "00" * 32)):
        path = os.path.join(work, name)
        os.makedirs(path)
        with open(os.path.join(path, "keys.psk"), "w") as f:
            f.write(line + "\n")
        dirs[name] = path
    dirs["trusts-other-ca"] = _creds_dir(work, "trusts-other-ca",
                                         {"ca-cert.pem": other["cert"]})
    dirs["work"] = work
    return dirs


def start_tls_daemon(daemon_factory: Any, scratch: str,
                     objects: List[str], authz: str = "",
                     size: int = 4 * MiB) -> Dict[str, Any]:
    """A daemon exporting a raw image as "disk" over TCP with tls-creds=tls0
    (and tls-authz=@authz)."""
    image = os.path.join(scratch, "disk.raw")
    iotests.create_image(image, size)
    port = iotests.free_tcp_port()
    server = f"addr.type=inet,addr.host=127.0.0.1,addr.port={port},tls-creds=tls0"
    if authz:
        server += f",tls-authz={authz}"
    args: List[str] = []
    for obj in objects:
        args += ["--object", obj]
    args += ["--blockdev", f"driver=file,node-name=file0,filename={image}",
             "--blockdev", "driver=raw,node-name=disk,file=file0",
             "--nbd-server", server,
             "--export", "type=nbd,id=e0,node-name=disk,name=disk,writable=on"]
    d = daemon_factory(*args)
    return {"daemon": d, "port": port, "image": image}


def x509_server(pki: Dict[str, str], extra: str = "") -> str:
    """The server's x509 credentials as tls0 (``extra``: more properties)."""
    return f"tls-creds-x509,id=tls0,endpoint=server,dir={pki['server']}{extra}"
