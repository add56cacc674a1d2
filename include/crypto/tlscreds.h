/*
 * TLS credentials: the tls-creds-x509 and tls-creds-psk objects.
 *
 * Credentials are loaded from their directory when the object is created,
 * so a bad file fails object-add rather than the first connection.  A
 * session (include/crypto/tlssession.h) takes a reference on the
 * credentials it was made from.
 *
 * Files, as in QEMU:
 *   tls-creds-x509: ca-cert.pem, optional ca-crl.pem and dh-params.pem,
 *                   server-cert.pem + server-key.pem (server endpoint) or
 *                   client-cert.pem + client-key.pem (client, optional)
 *   tls-creds-psk:  keys.psk, lines of "username:hexkey"; optional
 *                   dh-params.pem
 */
#ifndef CRYPTO_TLSCREDS_H
#define CRYPTO_TLSCREDS_H

#include "qom/object.h"

#include <gnutls/gnutls.h>

#define TYPE_QCRYPTO_TLS_CREDS "tls-creds"

typedef struct QCryptoTLSCreds QCryptoTLSCreds;

/* What differs between the kinds of credentials. */
typedef struct QCryptoTLSCredsOps {
    /* Give @session these credentials; returns 0 or a GnuTLS error. */
    int (*apply)(QCryptoTLSCreds *creds, gnutls_session_t session);
    /*
     * After the handshake: check the peer's credentials and return its
     * identity (x509 distinguished name, PSK user name; NULL when the
     * peer is not checked), or set @errp.  A client passes the
     * @hostname the server's certificate must name (NULL: none known).
     */
    bool (*check_peer)(QCryptoTLSCreds *creds, gnutls_session_t session,
                       const char *hostname, char **identity, Error **errp);
} QCryptoTLSCredsOps;

struct QCryptoTLSCreds {
    Object parent;
    const QCryptoTLSCredsOps *ops;
    QCryptoTLSCredsEndpoint endpoint;
    bool verify_peer;
    char *dir;
    gnutls_priority_t priority;
};

/*
 * Find credentials by id, for a user of @endpoint (QEMU's messages).
 * No reference is taken.
 */
QCryptoTLSCreds *qcrypto_tls_creds_find(const char *id,
                                        QCryptoTLSCredsEndpoint endpoint,
                                        Error **errp);

/* ------------------------------------------------------------------ */
/* For the kinds of credentials (crypto/tlscreds-*.c) */

/*
 * Fill the common part of @creds from @props; @extra_priority is appended
 * to the priority string (PSK key exchanges need enabling).
 */
bool qcrypto_tls_creds_init(QCryptoTLSCreds *creds,
                            const QCryptoTLSCredsOps *ops,
                            TlsCredsProperties *props,
                            const char *extra_priority, Error **errp);
void qcrypto_tls_creds_cleanup(QCryptoTLSCreds *creds);

/*
 * Path of @filename in the credentials directory, or NULL: with
 * @required an inaccessible file sets @errp, otherwise it is just
 * absent.
 */
char *qcrypto_tls_creds_path(QCryptoTLSCreds *creds, const char *filename,
                             bool required, Error **errp);

/* Load dh-params.pem if present; else NULL (GnuTLS's known groups). */
bool qcrypto_tls_creds_load_dh(QCryptoTLSCreds *creds,
                               gnutls_dh_params_t *dh, Error **errp);

#endif /* CRYPTO_TLSCREDS_H */
