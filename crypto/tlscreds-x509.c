/*
 * tls-creds-x509: x509 certificate credentials.
 *
 * A server presents server-cert.pem and, with verify-peer (the
 * default), requires a client certificate signed by a CA of ca-cert.pem.
 * The client's identity is its certificate's distinguished name in
 * GnuTLS's traditional form ("C=GB,O=Example,CN=client"), which is what
 * QEMU hands to authz objects, so existing rules keep matching.
 *
 * sanity-check (the default) checks our own certificate when the object
 * is created: it must be signed by a CA of ca-cert.pem and be valid now
 * (QEMU also checks key usage and basic constraints).
 * That turns a wrong directory into an object-add error instead of
 * handshakes that fail later.
 */
#include "crypto/tlscreds.h"

#include <gnutls/x509.h>

typedef struct QCryptoTLSCredsX509 {
    QCryptoTLSCreds parent;
    gnutls_certificate_credentials_t cred;
    gnutls_dh_params_t dh;
} QCryptoTLSCredsX509;

static QCryptoTLSCredsX509 *x509_creds(QCryptoTLSCreds *creds)
{
    return container_of(creds, QCryptoTLSCredsX509, parent);
}

static int x509_apply(QCryptoTLSCreds *creds, gnutls_session_t session)
{
    int ret = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE,
                                     x509_creds(creds)->cred);

    if (ret >= 0 && creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER) {
        gnutls_certificate_server_set_request(session,
                                              creds->verify_peer
                                              ? GNUTLS_CERT_REQUIRE
                                              : GNUTLS_CERT_IGNORE);
    }
    return ret;
}

/* Why a certificate failed verification, in QEMU's words. */
static const char *x509_status_reason(unsigned int status)
{
    if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
        return "The certificate hasn't got a known issuer";
    }
    if (status & GNUTLS_CERT_REVOKED) {
        return "The certificate has been revoked";
    }
    if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
        return "The certificate uses an insecure algorithm";
    }
    if (status & GNUTLS_CERT_EXPIRED) {
        return "The certificate has expired";
    }
    if (status & GNUTLS_CERT_NOT_ACTIVATED) {
        return "The certificate is not yet active";
    }
    return "The certificate is not trusted";
}

/*
 * A client checks that the server's certificate names the host it meant
 * to reach; without a host name (a UNIX socket and no tls-hostname) it
 * cannot, and refuses, as QEMU does.
 */
static bool x509_check_hostname(QCryptoTLSCreds *creds, gnutls_x509_crt_t crt,
                                const char *hostname, Error **errp)
{
    if (creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER) {
        return true;
    }
    if (!hostname) {
        error_setg(errp, "No hostname for certificate validation");
        return false;
    }
    if (!gnutls_x509_crt_check_hostname(crt, hostname)) {
        error_setg(errp, "Certificate does not match the hostname %s",
                   hostname);
        return false;
    }
    return true;
}

static bool x509_check_peer(QCryptoTLSCreds *creds, gnutls_session_t session,
                            const char *hostname, char **identity,
                            Error **errp)
{
    const gnutls_datum_t *certs;
    unsigned int status = 0, ncerts = 0;
    gnutls_x509_crt_t crt;
    size_t len = 0;
    char *dn;
    int ret;

    *identity = NULL;
    if (!creds->verify_peer) {
        return true;
    }
    ret = gnutls_certificate_verify_peers2(session, &status);
    if (ret < 0) {
        error_setg(errp, "Verify failed: %s", gnutls_strerror(ret));
        return false;
    }
    if (status != 0) {
        error_setg(errp, "%s", x509_status_reason(status));
        return false;
    }
    certs = gnutls_certificate_get_peers(session, &ncerts);
    if (!certs || ncerts == 0) {
        error_setg(errp, "No certificate peer");
        return false;
    }

    ret = gnutls_x509_crt_init(&crt);
    if (ret >= 0) {
        ret = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
        if (ret >= 0 && !x509_check_hostname(creds, crt, hostname, errp)) {
            gnutls_x509_crt_deinit(crt);
            return false;
        }
        if (ret >= 0) {
            ret = gnutls_x509_crt_get_dn(crt, NULL, &len);
            if (ret == GNUTLS_E_SHORT_MEMORY_BUFFER) {
                dn = g_malloc(len + 1);
                ret = gnutls_x509_crt_get_dn(crt, dn, &len);
                if (ret >= 0) {
                    *identity = dn;
                } else {
                    g_free(dn);
                }
            }
        }
        gnutls_x509_crt_deinit(crt);
    }
    if (ret < 0) {
        error_setg(errp, "Cannot read the peer certificate: %s",
                   gnutls_strerror(ret));
        return false;
    }
    return true;
}

static void x509_free(QCryptoTLSCreds *creds)
{
    QCryptoTLSCredsX509 *x509 = x509_creds(creds);

    if (x509->cred) {
        gnutls_certificate_free_credentials(x509->cred);
    }
    if (x509->dh) {
        gnutls_dh_params_deinit(x509->dh);
    }
    qcrypto_tls_creds_cleanup(creds);
    g_free(x509);
}

static const QCryptoTLSCredsOps x509_ops = {
    .apply = x509_apply,
    .check_peer = x509_check_peer,
};

/* Load the PEM certificates of @path (at least one). */
static bool x509_load_crt_list(const char *path, gnutls_x509_crt_t **list,
                               unsigned int *n, Error **errp)
{
    gnutls_datum_t data = { 0 };
    int ret = gnutls_load_file(path, &data);

    *list = NULL;
    *n = 0;
    if (ret >= 0) {
        ret = gnutls_x509_crt_list_import2(list, n, &data,
                                           GNUTLS_X509_FMT_PEM, 0);
        gnutls_free(data.data);
    }
    if (ret >= 0 && *n == 0) {
        ret = GNUTLS_E_NO_CERTIFICATE_FOUND;
    }
    if (ret < 0) {
        error_setg(errp, "Unable to load certificate %s: %s", path,
                   gnutls_strerror(ret));
        return false;
    }
    return true;
}

static void x509_free_crt_list(gnutls_x509_crt_t *list, unsigned int n)
{
    for (unsigned int i = 0; i < n; i++) {
        gnutls_x509_crt_deinit(list[i]);
    }
    gnutls_free(list);
}

/* sanity-check: @cert_path must be signed by a CA in @ca_path, valid now. */
static bool x509_sanity_check(const char *cert_path, const char *ca_path,
                              Error **errp)
{
    gnutls_x509_crt_t *cas = NULL, *certs = NULL;
    unsigned int ncas = 0, ncerts = 0, status = 0;
    time_t now = time(NULL);
    bool ok = false;
    int ret;

    if (!x509_load_crt_list(ca_path, &cas, &ncas, errp) ||
        !x509_load_crt_list(cert_path, &certs, &ncerts, errp)) {
        goto out;
    }
    if (gnutls_x509_crt_get_activation_time(certs[0]) > now) {
        error_setg(errp, "The certificate %s is not yet active", cert_path);
        goto out;
    }
    if (gnutls_x509_crt_get_expiration_time(certs[0]) < now) {
        error_setg(errp, "The certificate %s has expired", cert_path);
        goto out;
    }
    ret = gnutls_x509_crt_list_verify(certs, ncerts, cas, ncas, NULL, 0, 0,
                                      &status);
    if (ret < 0) {
        error_setg(errp, "Unable to validate certificate %s: %s", cert_path,
                   gnutls_strerror(ret));
        goto out;
    }
    if (status != 0) {
        error_setg(errp, "Our own certificate %s failed validation against "
                   "%s: %s", cert_path, ca_path, x509_status_reason(status));
        goto out;
    }
    ok = true;
out:
    x509_free_crt_list(cas, ncas);
    x509_free_crt_list(certs, ncerts);
    return ok;
}

static bool x509_load(QCryptoTLSCredsX509 *x509, bool sanity_check,
                      Error **errp)
{
    QCryptoTLSCreds *creds = &x509->parent;
    bool server = creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER;
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    Error *local_err = NULL;
    int ret;

    ca = qcrypto_tls_creds_path(creds, "ca-cert.pem", true, errp);
    if (!ca) {
        return false;
    }
    crl = qcrypto_tls_creds_path(creds, "ca-crl.pem", false, &local_err);
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    /* A server needs its certificate; for a client it is optional. */
    cert = qcrypto_tls_creds_path(creds, server ? "server-cert.pem"
                                                : "client-cert.pem",
                                  server, &local_err);
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    if (cert) {
        key = qcrypto_tls_creds_path(creds, server ? "server-key.pem"
                                                   : "client-key.pem",
                                     true, errp);
        if (!key) {
            return false;
        }
    }

    ret = gnutls_certificate_allocate_credentials(&x509->cred);
    if (ret < 0) {
        x509->cred = NULL;
        error_setg(errp, "Cannot allocate credentials: %s",
                   gnutls_strerror(ret));
        return false;
    }
    ret = gnutls_certificate_set_x509_trust_file(x509->cred, ca,
                                                 GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        error_setg(errp, "Cannot load CA certificate '%s': %s", ca,
                   gnutls_strerror(ret));
        return false;
    }
    if (crl) {
        ret = gnutls_certificate_set_x509_crl_file(x509->cred, crl,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            error_setg(errp, "Cannot load CRL '%s': %s", crl,
                       gnutls_strerror(ret));
            return false;
        }
    }
    if (cert) {
        if (sanity_check && !x509_sanity_check(cert, ca, errp)) {
            return false;
        }
        ret = gnutls_certificate_set_x509_key_file(x509->cred, cert, key,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            error_setg(errp, "Cannot load certificate '%s' & key '%s': %s",
                       cert, key, gnutls_strerror(ret));
            return false;
        }
    }
    if (server) {
        if (!qcrypto_tls_creds_load_dh(creds, &x509->dh, errp)) {
            return false;
        }
        if (x509->dh) {
            gnutls_certificate_set_dh_params(x509->cred, x509->dh);
        } else {
            gnutls_certificate_set_known_dh_params(x509->cred,
                                                   GNUTLS_SEC_PARAM_MEDIUM);
        }
    }
    return true;
}

static Object *x509_create(ObjectOptions *opts, Error **errp)
{
    TlsCredsX509Properties *props = &opts->u.tls_creds_x509;
    QCryptoTLSCredsX509 *x509 = g_new0(QCryptoTLSCredsX509, 1);

    if (!qcrypto_tls_creds_init(&x509->parent, &x509_ops,
                                qapi_TlsCredsX509Properties_base(props), "",
                                errp)) {
        x509_free(&x509->parent);
        return NULL;
    }
    if (props->passwordid) {
        /* blockd has no secret objects (QEMU's message for a missing one) */
        error_setg(errp, "No secret with id '%s'", props->passwordid);
        x509_free(&x509->parent);
        return NULL;
    }
    if (!x509_load(x509, !props->has_sanity_check || props->sanity_check,
                   errp)) {
        x509_free(&x509->parent);
        return NULL;
    }
    return &x509->parent.parent;
}

static void x509_object_free(Object *obj)
{
    x509_free(container_of(obj, QCryptoTLSCreds, parent));
}

static const ObjectClass tls_creds_x509_class = {
    .type = OBJECT_TYPE_TLS_CREDS_X509,
    .abstract_type = TYPE_QCRYPTO_TLS_CREDS,
    .create = x509_create,
    .free = x509_object_free,
};

static void __attribute__((constructor)) tls_creds_x509_register(void)
{
    object_class_register(&tls_creds_x509_class);
}
