"""A deliberately minimal NBD client for protocol tests.

It speaks just enough of the fixed-newstyle handshake and the transmission
phase to send both well-formed and malformed messages.  Replies are simple
unless the test negotiates structured replies (and meta contexts for
NBD_CMD_BLOCK_STATUS) itself.  Numbers come from the public NBD
protocol document (doc/proto.md in the NBD project).

Everything blocks with a timeout; a peer that closes the connection raises
:class:`Disconnected`.
"""

import socket
import ssl
import struct
from typing import Dict, List, Optional, Tuple, Union

NBDMAGIC = 0x4E42444D41474943        # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054        # "IHAVEOPT"
REPLY_MAGIC = 0x3E889045565A9        # option reply magic
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# Handshake flags (server) and client flags
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

# Options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# Option reply types
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR = 1 << 31
REP_ERR_UNSUP = REP_ERR + 1
REP_ERR_POLICY = REP_ERR + 2
REP_ERR_INVALID = REP_ERR + 3
REP_ERR_PLATFORM = REP_ERR + 4
REP_ERR_TLS_REQD = REP_ERR + 5
REP_ERR_UNKNOWN = REP_ERR + 6
REP_ERR_SHUTDOWN = REP_ERR + 7
REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8
REP_ERR_TOO_BIG = REP_ERR + 9

# NBD_INFO_*
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_CAN_MULTI_CONN = 1 << 8

# Commands and command flags
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_REQ_ONE = 1 << 3

# Structured reply chunk types and flags
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_BLOCK_STATUS = 5

# Errors (wire values)
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108


class Disconnected(Exception):
    """The server closed the connection."""


class NBDClient:
    def __init__(self, path: Union[str, Tuple[str, int]], timeout: float = 10.0):
        """Connect to a UNIX socket ``path`` or a TCP ``(host, port)``."""
        family = socket.AF_INET if isinstance(path, tuple) else socket.AF_UNIX
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.handle = 0
        self.size: Optional[int] = None
        self.tflags: Optional[int] = None
        self.hflags: Optional[int] = None

    # -- raw I/O ------------------------------------------------------------

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]

    def __enter__(self) -> "NBDClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Disconnected(str(e)) from e

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError as e:
                raise Disconnected(str(e)) from e
            if not chunk:
                raise Disconnected(f"EOF after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within ``timeout``
        (any data it sends first is discarded)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(old)

    # -- handshake ------------------------------------------------------------

    def read_greeting(self) -> int:
        magic, opt_magic, hflags = struct.unpack(">QQH", self.recv_exact(18))
        assert magic == NBDMAGIC, hex(magic)
        assert opt_magic == IHAVEOPT, hex(opt_magic)
        self.hflags = hflags
        return hflags

    def send_client_flags(self, flags: int = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) -> None:
        self.send(struct.pack(">I", flags))

    def handshake_start(self) -> None:
        hflags = self.read_greeting()
        assert hflags & FLAG_FIXED_NEWSTYLE
        self.send_client_flags(FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES))

    def send_option(self, opt: int, data: bytes = b"", length: Optional[int] = None,
                    magic: int = IHAVEOPT) -> None:
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, opt, length) + data)

    def read_option_reply(self) -> Tuple[int, int, bytes]:
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == REPLY_MAGIC, hex(magic)
        data = self.recv_exact(length) if length else b""
        return opt, rtype, data

    def opt_go(self, name: str, infos: Tuple[int, ...] = (), opt: int = OPT_GO
               ) -> Tuple[int, List[Tuple[int, bytes]]]:
        """Send NBD_OPT_GO (or INFO); return (final reply type, [(info type, data)])."""
        n = name.encode()
        data = struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos))
        data += b"".join(struct.pack(">H", i) for i in infos)
        self.send_option(opt, data)
        got = []
        for _ in range(64):
            ropt, rtype, rdata = self.read_option_reply()
            assert ropt == opt
            if rtype == REP_INFO:
                itype = struct.unpack(">H", rdata[:2])[0]
                got.append((itype, rdata))
                if itype == INFO_EXPORT:
                    _, self.size, self.tflags = struct.unpack(">HQH", rdata)
                continue
            return rtype, got
        raise AssertionError("too many NBD_REP_INFO replies")

    def starttls(self, context: ssl.SSLContext) -> None:
        """NBD_OPT_STARTTLS, which must succeed, then the TLS handshake:
        everything afterwards goes through TLS."""
        self.send_option(OPT_STARTTLS)
        opt, rtype, _ = self.read_option_reply()
        assert (opt, rtype) == (OPT_STARTTLS, REP_ACK), hex(rtype)
        self.sock = context.wrap_socket(self.sock)

    def structured_replies(self) -> None:
        """Negotiate structured replies (NBD_OPT_STRUCTURED_REPLY); must succeed."""
        self.send_option(OPT_STRUCTURED_REPLY)
        opt, rtype, _ = self.read_option_reply()
        assert (opt, rtype) == (OPT_STRUCTURED_REPLY, REP_ACK), hex(rtype)

    def set_meta_context(self, name: str, queries: List[str]) -> Dict[str, int]:
        """NBD_OPT_SET_META_CONTEXT for export ``name``; returns {context: id}."""
        n = name.encode()
        data = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            data += struct.pack(">I", len(q)) + q.encode()
        self.send_option(OPT_SET_META_CONTEXT, data)
        contexts = {}
        while True:
            opt, rtype, rdata = self.read_option_reply()
            assert opt == OPT_SET_META_CONTEXT
            if rtype != REP_META_CONTEXT:
                assert rtype == REP_ACK, hex(rtype)
                return contexts
            contexts[rdata[4:].decode()] = struct.unpack(">I", rdata[:4])[0]

    def connect_export(self, name: str) -> None:
        """Complete handshake: greeting, flags, NBD_OPT_GO; must succeed."""
        self.handshake_start()
        rtype, _ = self.opt_go(name)
        assert rtype == REP_ACK, f"NBD_OPT_GO failed: {rtype:#x}"
        assert self.size is not None

    # -- transmission ------------------------------------------------------------

    def send_request(self, cmd: int, offset: int, length: int, flags: int = 0,
                     data: bytes = b"", magic: int = REQUEST_MAGIC) -> int:
        self.handle += 1
        self.send(struct.pack(">IHHQQI", magic, flags, cmd, self.handle,
                              offset & 0xFFFFFFFFFFFFFFFF, length) + data)
        return self.handle

    def read_simple_reply(self, read_len: int = 0) -> Tuple[int, int, bytes]:
        """Return (error, handle, data); data is read only if error == 0."""
        magic, error, handle = struct.unpack(">IIQ", self.recv_exact(16))
        assert magic == SIMPLE_REPLY_MAGIC, hex(magic)
        data = self.recv_exact(read_len) if (error == 0 and read_len) else b""
        return error, handle, data

    def read_structured_chunk(self) -> Tuple[int, int, int, bytes]:
        """Return one structured reply chunk: (flags, type, handle, payload)."""
        magic, flags, rtype, handle, length = struct.unpack(">IHHQI", self.recv_exact(20))
        assert magic == STRUCTURED_REPLY_MAGIC, hex(magic)
        return flags, rtype, handle, self.recv_exact(length) if length else b""

    def read(self, offset: int, length: int) -> Tuple[int, bytes]:
        h = self.send_request(CMD_READ, offset, length)
        error, handle, data = self.read_simple_reply(length)
        assert handle == h
        return error, data

    def write(self, offset: int, data: bytes, flags: int = 0) -> int:
        h = self.send_request(CMD_WRITE, offset, len(data), flags=flags, data=data)
        error, handle, _ = self.read_simple_reply()
        assert handle == h
        return error

    def simple_cmd(self, cmd: int, offset: int = 0, length: int = 0, flags: int = 0) -> int:
        h = self.send_request(cmd, offset, length, flags=flags)
        error, handle, _ = self.read_simple_reply()
        assert handle == h
        return error

    def disconnect(self) -> None:
        self.send_request(CMD_DISC, 0, 0)
        self.close()
