/*
 * The nbd driver's TLS: STARTTLS and the TLS session are blockd's own
 * (crypto/tlssession.c, with the tls-creds object), and libnbd speaks
 * plain NBD through a relay.
 *
 * Why not libnbd's TLS.  libnbd 1.14 (Debian 12's) checks the server's
 * certificate only when it dialed a TCP address itself: on a socket it
 * is handed (nbd_aio_connect_socket, which the driver uses so that
 * connecting runs on the event loop) and on UNIX sockets it accepts any
 * certificate, and it has no tls-hostname.  It would also read the
 * credentials from their directory again, leaving out the object's
 * priority, verify-peer and PSK username.  The tls-creds object does all
 * of that as QEMU's client does: the certificate must come from the CA,
 * and name tls-hostname, else the inet host; with neither (a UNIX
 * socket) x509 with verify-peer is refused, as in QEMU.
 *
 * Negotiation, on the connected socket, before libnbd sees it:
 *
 *   server: NBDMAGIC IHAVEOPT flags       us: client flags
 *   us: NBD_OPT_STARTTLS                  server: NBD_REP_ACK
 *   TLS handshake, then the server's certificate or key is checked.
 *
 * libnbd gets one end of a socketpair, on which the server's greeting is
 * replayed; the client flags libnbd answers with are swallowed (the
 * server has ours, which must be the same), and from then on every byte
 * is relayed both ways: libnbd runs the rest of the handshake (OPT_GO,
 * meta contexts) and all requests as on a plain connection.
 *
 * The relay.  Two coroutines, one per direction, share the TLS session
 * (GnuTLS keeps sending and receiving apart).  When either direction
 * ends (libnbd closed its end, the server went away, a TLS error) it
 * shuts both sockets down, which ends the other one; the last one out
 * frees the relay.  When libnbd closes its end, what it sent last (the
 * NBD_CMD_DISC of a closing node) is forwarded and the server gets a TLS
 * close_notify, so it sees a clean end.  A lost connection's relay is cut
 * at once (nbd_client_tls_cut), and so is a closing node's after a grace
 * period: a stalled server would otherwise keep both directions waiting.
 * Closing the node waits until NbdClient.tls_relays is empty.  The cost
 * is one more copy and a socketpair hop per request; see
 * docs/devel/nbd.rst.
 */
#include "block/nbd-client.h"
#include "crypto/tlssession.h"
#include "nbd/nbd-protocol.h"
#include "util/main-loop.h"

#include <sys/socket.h>

enum {
    /* What the relay moves at once in each direction. */
    NBD_TLS_RELAY_BUF = 64 * 1024,
};

typedef struct NbdTlsRelay {
    NbdClient *client;
    QCryptoTLSSession *tls;
    int net_fd;                 /* to the server, TLS */
    int plain_fd;               /* our end of libnbd's socketpair */
    uint32_t client_flags;      /* what we sent; libnbd must send the same */
    int running;                /* directions still running */
} NbdTlsRelay;

/* --- plain reads and writes of the negotiation --- */

/* Read exactly @len bytes; false at the end of the stream or an error. */
static bool coroutine_fn nbd_tls_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        struct iovec iov = { .iov_base = p, .iov_len = len };
        ssize_t n = co_readv(fd, &iov, 1, false);

        if (n <= 0) {
            return false;
        }
        p += n;
        len -= n;
    }
    return true;
}

static bool coroutine_fn nbd_tls_write_full(int fd, const void *buf,
                                            size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return co_sendv_full(fd, &iov, 1) == 0;
}

/* --- STARTTLS --- */

/* Why the server refused STARTTLS, in QEMU's words where we know them. */
static void nbd_tls_refused(uint32_t type, Error **errp)
{
    switch (type) {
    case NBD_REP_ERR_POLICY:
        error_setg(errp, "Denied by server for option 5 (starttls)");
        break;
    case NBD_REP_ERR_INVALID:
        error_setg(errp, "Invalid parameters for option 5 (starttls)");
        break;
    case NBD_REP_ERR_PLATFORM:
    case NBD_REP_ERR_UNSUP:
        error_setg(errp, "Server does not support STARTTLS");
        break;
    case NBD_REP_ERR_SHUTDOWN:
        error_setg(errp, "Server shutting down before option 5 (starttls)");
        break;
    default:
        error_setg(errp, "Server rejected request to start TLS: reply "
                   "0x%" PRIx32, type);
        break;
    }
}

/*
 * Read the greeting from @fd and ask for TLS.  Fills @greeting (to be
 * replayed to libnbd) and @client_flags (what we answered).
 */
static bool coroutine_fn nbd_tls_negotiate(NbdClient *s, int fd,
                                           NBDGreeting *greeting,
                                           uint32_t *client_flags,
                                           Error **errp)
{
    uint16_t server_flags;
    uint8_t request[sizeof(uint32_t) + sizeof(NBDOptionHeader)];
    NBDOptionReply reply;
    uint32_t type, len;

    if (!nbd_tls_read_full(fd, greeting, sizeof(*greeting))) {
        error_setg(errp, "Failed to connect to '%s': the server closed the "
                   "connection before its greeting", s->address);
        return false;
    }
    if (nbd_ld64(&greeting->magic) != NBD_MAGIC) {
        error_setg(errp, "Bad initial magic received: 0x%" PRIx64,
                   nbd_ld64(&greeting->magic));
        return false;
    }
    server_flags = nbd_ld16(&greeting->handshake_flags);
    if (nbd_ld64(&greeting->opts_magic) != NBD_OPTS_MAGIC ||
        !(server_flags & NBD_FLAG_FIXED_NEWSTYLE)) {
        error_setg(errp, "Server does not support STARTTLS");
        return false;
    }

    /* As libnbd answers: fixed newstyle, and no zeroes if offered. */
    *client_flags = NBD_FLAG_C_FIXED_NEWSTYLE |
                    (server_flags & NBD_FLAG_NO_ZEROES);
    nbd_st32(request, *client_flags);
    nbd_st64(request + 4, NBD_OPTS_MAGIC);
    nbd_st32(request + 12, NBD_OPT_STARTTLS);
    nbd_st32(request + 16, 0);
    if (!nbd_tls_write_full(fd, request, sizeof(request)) ||
        !nbd_tls_read_full(fd, &reply, sizeof(reply))) {
        error_setg(errp, "Failed to connect to '%s': the server closed the "
                   "connection during STARTTLS", s->address);
        return false;
    }
    type = nbd_ld32(&reply.type);
    len = nbd_ld32(&reply.length);
    if (nbd_ld64(&reply.magic) != NBD_REP_MAGIC ||
        nbd_ld32(&reply.option) != NBD_OPT_STARTTLS) {
        error_setg(errp, "Unexpected reply to option 5 (starttls)");
        return false;
    }
    if (type != NBD_REP_ACK) {
        nbd_tls_refused(type, errp);
        return false;
    }
    if (len != 0) {
        error_setg(errp, "Start TLS response was not zero %" PRIu32, len);
        return false;
    }
    return true;
}

/* --- the relay --- */

/* Wake both directions, wherever they wait, to see the end. */
static void nbd_tls_relay_cut(NbdTlsRelay *relay)
{
    shutdown(relay->net_fd, SHUT_RDWR);
    shutdown(relay->plain_fd, SHUT_RDWR);
}

/* One direction is done: end the other one too; the last one frees. */
static void nbd_tls_relay_finish(NbdTlsRelay *relay)
{
    nbd_tls_relay_cut(relay);
    if (--relay->running > 0) {
        return;
    }
    relay->client->tls_relays = g_slist_remove(relay->client->tls_relays,
                                               relay);
    qcrypto_tls_session_free(relay->tls);
    close(relay->net_fd);
    close(relay->plain_fd);
    g_free(relay);
}

void nbd_client_tls_cut(NbdClient *s)
{
    for (GSList *l = s->tls_relays; l; l = l->next) {
        nbd_tls_relay_cut(l->data);
    }
}

/* libnbd to the server. */
static void coroutine_fn nbd_tls_relay_up(void *opaque)
{
    NbdTlsRelay *relay = opaque;
    g_autofree uint8_t *buf = g_malloc(NBD_TLS_RELAY_BUF);
    uint32_t flags;
    bool full = false;

    /* libnbd's answer to the replayed greeting stays here. */
    if (nbd_tls_read_full(relay->plain_fd, &flags, sizeof(flags)) &&
        be32toh(flags) == relay->client_flags) {
        for (;;) {
            struct iovec iov = { .iov_base = buf,
                                 .iov_len = NBD_TLS_RELAY_BUF };
            ssize_t n = co_readv(relay->plain_fd, &iov, 1, full);

            if (n == 0) {
                /* libnbd is done (after NBD_CMD_DISC, if it could). */
                qcrypto_tls_session_co_bye(relay->tls);
            }
            if (n <= 0) {
                break;
            }
            full = n == NBD_TLS_RELAY_BUF;
            iov.iov_len = n;
            if (qcrypto_tls_session_co_sendv(relay->tls, &iov, 1) < 0) {
                break;
            }
        }
    }
    nbd_tls_relay_finish(relay);
}

/* The server to libnbd. */
static void coroutine_fn nbd_tls_relay_down(void *opaque)
{
    NbdTlsRelay *relay = opaque;
    g_autofree uint8_t *buf = g_malloc(NBD_TLS_RELAY_BUF);

    for (;;) {
        struct iovec iov = { .iov_base = buf, .iov_len = NBD_TLS_RELAY_BUF };
        ssize_t n = qcrypto_tls_session_co_readv(relay->tls, &iov, 1);

        if (n <= 0) {
            break;
        }
        iov.iov_len = n;
        if (co_sendv_full(relay->plain_fd, &iov, 1) < 0) {
            break;
        }
    }
    nbd_tls_relay_finish(relay);
}

/* Negotiate TLS on @fd: the checked session, or NULL with @errp set. */
static QCryptoTLSSession *coroutine_fn nbd_tls_secure(NbdClient *s, int fd,
                                                      NBDGreeting *greeting,
                                                      uint32_t *client_flags,
                                                      Error **errp)
{
    QCryptoTLSSession *tls;

    if (!nbd_tls_negotiate(s, fd, greeting, client_flags, errp)) {
        return NULL;
    }
    tls = qcrypto_tls_session_new_client(s->tls_creds, s->tls_hostname, fd,
                                         errp);
    if (tls && !qcrypto_tls_session_co_handshake(tls, errp)) {
        qcrypto_tls_session_free(tls);
        return NULL;
    }
    return tls;
}

/* libnbd's socketpair, with the server's greeting waiting in it. */
static bool nbd_tls_socketpair(NbdClient *s, const NBDGreeting *greeting,
                               int pair[2], Error **errp)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   pair) < 0) {
        error_setg_errno(errp, errno, "Failed to connect to '%s'",
                         s->address);
        return false;
    }
    /* A new socket's buffer takes the greeting at once. */
    if (write(pair[0], greeting, sizeof(*greeting)) != sizeof(*greeting)) {
        error_setg_errno(errp, errno, "Failed to connect to '%s'",
                         s->address);
        close(pair[0]);
        close(pair[1]);
        return false;
    }
    return true;
}

int coroutine_fn nbd_client_starttls(NbdClient *s, int fd, Error **errp)
{
    QCryptoTLSSession *tls;
    NbdTlsRelay *relay;
    NBDGreeting greeting;
    uint32_t client_flags;
    int pair[2];

    s->attempt_fd = fd;
    tls = nbd_tls_secure(s, fd, &greeting, &client_flags, errp);
    s->attempt_fd = -1;
    if (!tls || !nbd_tls_socketpair(s, &greeting, pair, errp)) {
        if (tls) {
            qcrypto_tls_session_free(tls);
        }
        close(fd);
        return -1;
    }

    relay = g_new0(NbdTlsRelay, 1);
    relay->client = s;
    relay->tls = tls;
    relay->net_fd = fd;
    relay->plain_fd = pair[0];
    relay->client_flags = client_flags;
    relay->running = 2;
    s->tls_relays = g_slist_prepend(s->tls_relays, relay);
    coroutine_wake(coroutine_create(nbd_tls_relay_up, relay));
    coroutine_wake(coroutine_create(nbd_tls_relay_down, relay));
    return pair[1];
}
