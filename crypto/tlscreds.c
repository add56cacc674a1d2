/*
 * TLS credentials: what all kinds share.  See include/crypto/tlscreds.h.
 */
#include "crypto/tlscreds.h"

#include <unistd.h>

/* GnuTLS's default, as QEMU's. */
#define QCRYPTO_TLS_DEFAULT_PRIORITY "NORMAL"

bool qcrypto_tls_creds_init(QCryptoTLSCreds *creds,
                            const QCryptoTLSCredsOps *ops,
                            TlsCredsProperties *props,
                            const char *extra_priority, Error **errp)
{
    g_autofree char *prio = NULL;
    const char *err_pos = NULL;
    int ret;

    creds->ops = ops;
    creds->endpoint = props->has_endpoint ? props->endpoint
                                          : QCRYPTO_TLS_CREDS_ENDPOINT_CLIENT;
    creds->verify_peer = props->has_verify_peer ? props->verify_peer : true;
    if (!props->dir) {
        error_setg(errp, "Missing 'dir' property value");
        return false;
    }
    creds->dir = g_strdup(props->dir);

    prio = g_strconcat(props->priority ? props->priority
                                       : QCRYPTO_TLS_DEFAULT_PRIORITY,
                       extra_priority, NULL);
    ret = gnutls_priority_init(&creds->priority, prio, &err_pos);
    if (ret < 0) {
        creds->priority = NULL;
        error_setg(errp, "Unable to set TLS session priority %s: %s",
                   prio, gnutls_strerror(ret));
        return false;
    }
    return true;
}

void qcrypto_tls_creds_cleanup(QCryptoTLSCreds *creds)
{
    if (creds->priority) {
        gnutls_priority_deinit(creds->priority);
    }
    g_free(creds->dir);
}

char *qcrypto_tls_creds_path(QCryptoTLSCreds *creds, const char *filename,
                             bool required, Error **errp)
{
    g_autofree char *path = g_build_filename(creds->dir, filename, NULL);

    if (access(path, R_OK) < 0) {
        if (required || errno != ENOENT) {
            error_setg_errno(errp, errno, "Unable to access credentials %s",
                             path);
        }
        return NULL;
    }
    return g_steal_pointer(&path);
}

bool qcrypto_tls_creds_load_dh(QCryptoTLSCreds *creds,
                               gnutls_dh_params_t *dh, Error **errp)
{
    Error *local_err = NULL;
    g_autofree char *path = qcrypto_tls_creds_path(creds, "dh-params.pem",
                                                   false, &local_err);
    gnutls_datum_t data;
    int ret;

    *dh = NULL;
    if (!path) {
        if (local_err) {
            error_propagate(errp, local_err);
            return false;
        }
        return true;
    }
    ret = gnutls_load_file(path, &data);
    if (ret >= 0) {
        ret = gnutls_dh_params_init(dh);
        if (ret >= 0) {
            ret = gnutls_dh_params_import_pkcs3(*dh, &data,
                                                GNUTLS_X509_FMT_PEM);
        }
        gnutls_free(data.data);
    }
    if (ret < 0) {
        error_setg(errp, "Unable to load DH parameters from %s: %s", path,
                   gnutls_strerror(ret));
        if (*dh) {
            gnutls_dh_params_deinit(*dh);
            *dh = NULL;
        }
        return false;
    }
    return true;
}

QCryptoTLSCreds *qcrypto_tls_creds_find(const char *id,
                                        QCryptoTLSCredsEndpoint endpoint,
                                        Error **errp)
{
    Object *obj = object_find(id);
    QCryptoTLSCreds *creds;

    if (!obj) {
        error_setg(errp, "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (!object_is_a(obj, TYPE_QCRYPTO_TLS_CREDS)) {
        error_setg(errp, "Object with id '%s' is not TLS credentials", id);
        return NULL;
    }
    creds = container_of(obj, QCryptoTLSCreds, parent);
    if (creds->endpoint != endpoint) {
        error_setg(errp, "Expected TLS credentials for a %s endpoint",
                   QCryptoTLSCredsEndpoint_str(endpoint));
        return NULL;
    }
    return creds;
}
