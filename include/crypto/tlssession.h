/*
 * A TLS session over a non-blocking socket, driven from coroutines.
 *
 * GnuTLS reads and writes the socket itself; when it would block
 * (GNUTLS_E_AGAIN) the calling coroutine waits for the socket with
 * co_wait_fd() and tries again.  One coroutine may receive while others
 * send (one at a time): GnuTLS keeps the two directions apart.
 */
#ifndef CRYPTO_TLSSESSION_H
#define CRYPTO_TLSSESSION_H

#include "crypto/tlscreds.h"
#include "util/coroutine.h"

#include <sys/uio.h>

typedef struct QCryptoTLSSession QCryptoTLSSession;

/*
 * A server session on @fd with @creds (a reference is taken).  After the
 * handshake the peer is checked against the authz object @authz_id, if
 * not NULL.
 */
QCryptoTLSSession *qcrypto_tls_session_new_server(QCryptoTLSCreds *creds,
                                                  const char *authz_id,
                                                  int fd, Error **errp);

/*
 * A client session on @fd with @creds (a reference is taken).  With
 * x509 credentials that verify the peer, the server's certificate must
 * name @hostname; NULL refuses such a server (no name to check).
 */
QCryptoTLSSession *qcrypto_tls_session_new_client(QCryptoTLSCreds *creds,
                                                  const char *hostname,
                                                  int fd, Error **errp);
void qcrypto_tls_session_free(QCryptoTLSSession *sess);

/*
 * Run the handshake, check the peer's credentials (and a client, the
 * server's host name), then its identity against the authz object.
 * Returns false with @errp set when the peer must be disconnected.
 */
bool coroutine_fn qcrypto_tls_session_co_handshake(QCryptoTLSSession *sess,
                                                   Error **errp);

/* The peer's identity after the handshake, or NULL if it has none. */
const char *qcrypto_tls_session_peer_name(QCryptoTLSSession *sess);

/*
 * Like co_readv(): read into @iov, waiting until at least one byte or
 * the end of the stream is there.  Returns the bytes read, 0 at the end,
 * or -errno.
 */
ssize_t coroutine_fn qcrypto_tls_session_co_readv(QCryptoTLSSession *sess,
                                                  struct iovec *iov,
                                                  int iovcnt);

/* Like co_sendv_full(): send all of @iov; returns 0 or -errno. */
int coroutine_fn qcrypto_tls_session_co_sendv(QCryptoTLSSession *sess,
                                              struct iovec *iov,
                                              int iovcnt);

/*
 * Tell the peer we are done sending (TLS close_notify), so that it sees
 * a proper end of the stream rather than a cut connection.  Receiving
 * may go on.  Returns 0 or -errno.
 */
int coroutine_fn qcrypto_tls_session_co_bye(QCryptoTLSSession *sess);

#endif /* CRYPTO_TLSSESSION_H */
