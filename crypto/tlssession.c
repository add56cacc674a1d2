/*
 * TLS sessions on coroutines.  See include/crypto/tlssession.h.
 *
 * The socket stays non-blocking and GnuTLS uses it directly
 * (gnutls_transport_set_int).  GNUTLS_E_AGAIN means "wait for the
 * socket": for the handshake gnutls_record_get_direction() says which
 * way; a receive waits for input, a send for room.  A send that returned
 * GNUTLS_E_AGAIN is repeated with the same arguments, as GnuTLS requires.
 *
 * Sending: a reply is usually a header and a payload.  Small replies are
 * corked into one record (one system call, one record overhead); large
 * ones are sent piece by piece, since corking would copy them into a
 * buffer that GnuTLS keeps for the session's lifetime.
 */
#include "crypto/tlssession.h"
#include "authz/authz.h"
#include "util/main-loop.h"

/* Largest reply corked into one buffer before sending. */
#define QCRYPTO_TLS_CORK_MAX (64 * 1024)

struct QCryptoTLSSession {
    QCryptoTLSCreds *creds;     /* holds a reference */
    char *authz_id;             /* NULL: no authorization check */
    char *hostname;             /* a client's server; NULL: none known */
    int fd;
    gnutls_session_t session;
    char *peer_name;
};

/* A session on @fd with @creds; GnuTLS's @flags say which end it is. */
static QCryptoTLSSession *qcrypto_tls_session_new(QCryptoTLSCreds *creds,
                                                  unsigned int flags, int fd,
                                                  Error **errp)
{
    QCryptoTLSSession *sess = g_new0(QCryptoTLSSession, 1);
    int ret;

    sess->creds = creds;
    object_ref(&creds->parent);
    sess->fd = fd;

    /* No session tickets: blockd does not resume sessions. */
    ret = gnutls_init(&sess->session, flags | GNUTLS_NONBLOCK |
                      GNUTLS_NO_TICKETS);
    if (ret < 0) {
        sess->session = NULL;
    } else {
        ret = gnutls_priority_set(sess->session, creds->priority);
    }
    if (ret >= 0) {
        ret = creds->ops->apply(creds, sess->session);
    }
    if (ret < 0) {
        error_setg(errp, "Cannot set up the TLS session: %s",
                   gnutls_strerror(ret));
        qcrypto_tls_session_free(sess);
        return NULL;
    }
    gnutls_transport_set_int(sess->session, fd);
    return sess;
}

QCryptoTLSSession *qcrypto_tls_session_new_server(QCryptoTLSCreds *creds,
                                                  const char *authz_id,
                                                  int fd, Error **errp)
{
    QCryptoTLSSession *sess = qcrypto_tls_session_new(creds, GNUTLS_SERVER,
                                                      fd, errp);

    if (sess) {
        sess->authz_id = g_strdup(authz_id);
    }
    return sess;
}

QCryptoTLSSession *qcrypto_tls_session_new_client(QCryptoTLSCreds *creds,
                                                  const char *hostname,
                                                  int fd, Error **errp)
{
    QCryptoTLSSession *sess = qcrypto_tls_session_new(creds, GNUTLS_CLIENT,
                                                      fd, errp);

    if (sess) {
        sess->hostname = g_strdup(hostname);
    }
    return sess;
}

void qcrypto_tls_session_free(QCryptoTLSSession *sess)
{
    if (sess->session) {
        gnutls_deinit(sess->session);
    }
    object_unref(&sess->creds->parent);
    g_free(sess->authz_id);
    g_free(sess->hostname);
    g_free(sess->peer_name);
    g_free(sess);
}

/* Map a fatal GnuTLS error of a transfer onto -errno. */
static int qcrypto_tls_errno(int ret)
{
    switch (ret) {
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PUSH_ERROR:
    case GNUTLS_E_PULL_ERROR:
        return -EPIPE;
    case GNUTLS_E_MEMORY_ERROR:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

bool coroutine_fn qcrypto_tls_session_co_handshake(QCryptoTLSSession *sess,
                                                   Error **errp)
{
    QCryptoTLSCreds *creds = sess->creds;
    int ret;

    for (;;) {
        ret = gnutls_handshake(sess->session);
        if (ret == 0) {
            break;
        }
        if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
            co_wait_fd(sess->fd, gnutls_record_get_direction(sess->session)
                                 ? G_IO_OUT : G_IO_IN);
            continue;
        }
        error_setg(errp, "TLS handshake failed: %s", gnutls_strerror(ret));
        return false;
    }

    if (!creds->ops->check_peer(creds, sess->session, sess->hostname,
                                &sess->peer_name, errp)) {
        return false;
    }
    if (sess->authz_id) {
        if (!sess->peer_name) {
            error_setg(errp, "TLS peer has no identity to authorize");
            return false;
        }
        if (!qauthz_is_allowed_by_id(sess->authz_id, sess->peer_name,
                                     errp)) {
            return false;
        }
    }
    return true;
}

const char *qcrypto_tls_session_peer_name(QCryptoTLSSession *sess)
{
    return sess->peer_name;
}

ssize_t coroutine_fn qcrypto_tls_session_co_readv(QCryptoTLSSession *sess,
                                                  struct iovec *iov,
                                                  int iovcnt)
{
    size_t done = 0;
    size_t off = 0;
    int i = 0;

    /*
     * Go on past the first record only while GnuTLS already holds
     * decrypted data: another receive would most likely fail with
     * EAGAIN, and the caller's next call tries the socket first anyway.
     */
    while (i < iovcnt) {
        ssize_t n;

        if (off == iov[i].iov_len) {
            i++;
            off = 0;
            continue;
        }
        n = gnutls_record_recv(sess->session, (uint8_t *)iov[i].iov_base + off,
                               iov[i].iov_len - off);
        if (n > 0) {
            done += n;
            off += n;
            if (gnutls_record_check_pending(sess->session) == 0) {
                break;
            }
        } else if (n == 0) {
            break;                      /* end of the stream */
        } else if (n == GNUTLS_E_AGAIN) {
            co_wait_fd(sess->fd, G_IO_IN);
        } else if (n != GNUTLS_E_INTERRUPTED) {
            return done > 0 ? (ssize_t)done : qcrypto_tls_errno(n);
        }
    }
    return done;
}

/* Send @len bytes of @buf as records, waiting for room as needed. */
static int coroutine_fn qcrypto_tls_co_send_buf(QCryptoTLSSession *sess,
                                                const uint8_t *buf,
                                                size_t len)
{
    while (len > 0) {
        ssize_t n = gnutls_record_send(sess->session, buf, len);

        if (n > 0) {
            buf += n;
            len -= n;
        } else if (n == GNUTLS_E_AGAIN) {
            co_wait_fd(sess->fd, G_IO_OUT);
        } else if (n != GNUTLS_E_INTERRUPTED) {
            return qcrypto_tls_errno(n);
        }
    }
    return 0;
}

int coroutine_fn qcrypto_tls_session_co_sendv(QCryptoTLSSession *sess,
                                              struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    int ret;

    for (int i = 0; i < iovcnt; i++) {
        total += iov[i].iov_len;
    }
    if (total > QCRYPTO_TLS_CORK_MAX) {
        for (int i = 0; i < iovcnt; i++) {
            ret = qcrypto_tls_co_send_buf(sess, iov[i].iov_base,
                                          iov[i].iov_len);
            if (ret < 0) {
                return ret;
            }
        }
        return 0;
    }

    /* While corked, sends only buffer: they cannot fail for the socket. */
    gnutls_record_cork(sess->session);
    for (int i = 0; i < iovcnt; i++) {
        ret = gnutls_record_send(sess->session, iov[i].iov_base,
                                 iov[i].iov_len);
        if (ret < 0) {
            return qcrypto_tls_errno(ret);
        }
    }
    for (;;) {
        ssize_t n = gnutls_record_uncork(sess->session, 0);

        if (n >= 0) {
            return 0;
        }
        if (n == GNUTLS_E_AGAIN) {
            co_wait_fd(sess->fd, G_IO_OUT);
        } else if (n != GNUTLS_E_INTERRUPTED) {
            return qcrypto_tls_errno(n);
        }
    }
}

int coroutine_fn qcrypto_tls_session_co_bye(QCryptoTLSSession *sess)
{
    for (;;) {
        int ret = gnutls_bye(sess->session, GNUTLS_SHUT_WR);

        if (ret == 0) {
            return 0;
        }
        if (ret == GNUTLS_E_AGAIN) {
            co_wait_fd(sess->fd, G_IO_OUT);
        } else if (ret != GNUTLS_E_INTERRUPTED) {
            return qcrypto_tls_errno(ret);
        }
    }
}
