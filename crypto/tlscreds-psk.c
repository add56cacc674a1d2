/*
 * tls-creds-psk: pre-shared key credentials.
 *
 * keys.psk holds "username:hexkey" lines.  A server accepts any user in
 * the file whose key the client proves it has; the user name is then the
 * client's identity for authz objects.  A client uses the line of its
 * username property (default "qemu", as in QEMU).
 *
 * The PSK key exchanges are not in GnuTLS's default priority, so they
 * are appended to the priority string.
 */
#include "crypto/tlscreds.h"

#define QCRYPTO_TLS_PSK_PRIORITY ":+ECDHE-PSK:+DHE-PSK:+PSK"
#define QCRYPTO_TLS_PSK_DEFAULT_USERNAME "qemu"

typedef struct QCryptoTLSCredsPSK {
    QCryptoTLSCreds parent;
    gnutls_psk_server_credentials_t server;
    gnutls_psk_client_credentials_t client;
    gnutls_dh_params_t dh;
} QCryptoTLSCredsPSK;

static QCryptoTLSCredsPSK *psk_creds(QCryptoTLSCreds *creds)
{
    return container_of(creds, QCryptoTLSCredsPSK, parent);
}

static int psk_apply(QCryptoTLSCreds *creds, gnutls_session_t session)
{
    QCryptoTLSCredsPSK *psk = psk_creds(creds);

    if (creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER) {
        return gnutls_credentials_set(session, GNUTLS_CRD_PSK, psk->server);
    }
    return gnutls_credentials_set(session, GNUTLS_CRD_PSK, psk->client);
}

static bool psk_check_peer(QCryptoTLSCreds *creds, gnutls_session_t session,
                           const char *hostname, char **identity,
                           Error **errp)
{
    const char *user = NULL;

    (void)hostname;             /* a shared key names no host */

    /* The handshake itself proved that the client knows the key. */
    if (creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER) {
        user = gnutls_psk_server_get_username(session);
    }
    *identity = g_strdup(user);
    return true;
}

static const QCryptoTLSCredsOps psk_ops = {
    .apply = psk_apply,
    .check_peer = psk_check_peer,
};

static void psk_free(QCryptoTLSCredsPSK *psk)
{
    if (psk->server) {
        gnutls_psk_free_server_credentials(psk->server);
    }
    if (psk->client) {
        gnutls_psk_free_client_credentials(psk->client);
    }
    if (psk->dh) {
        gnutls_dh_params_deinit(psk->dh);
    }
    qcrypto_tls_creds_cleanup(&psk->parent);
    g_free(psk);
}

/* The hex key of @username in the keys file @path, or NULL. */
static char *psk_find_key(const char *path, const char *username,
                          Error **errp)
{
    g_autofree char *content = NULL;
    g_auto(GStrv) lines = NULL;
    size_t ulen = strlen(username);
    GError *gerr = NULL;

    if (!g_file_get_contents(path, &content, NULL, &gerr)) {
        error_setg(errp, "Cannot read PSK file %s: %s", path, gerr->message);
        g_error_free(gerr);
        return NULL;
    }
    lines = g_strsplit(content, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (!strncmp(*l, username, ulen) && (*l)[ulen] == ':') {
            return g_strstrip(g_strdup(*l + ulen + 1));
        }
    }
    error_setg(errp, "Username %s not found in PSK file %s", username, path);
    return NULL;
}

static bool psk_load(QCryptoTLSCredsPSK *psk, const char *username,
                     Error **errp)
{
    QCryptoTLSCreds *creds = &psk->parent;
    g_autofree char *keys = qcrypto_tls_creds_path(creds, "keys.psk", true,
                                                   errp);
    int ret;

    if (!keys) {
        return false;
    }
    if (creds->endpoint == QCRYPTO_TLS_CREDS_ENDPOINT_SERVER) {
        if (username) {
            error_setg(errp, "username should not be set when "
                       "endpoint=server");
            return false;
        }
        ret = gnutls_psk_allocate_server_credentials(&psk->server);
        if (ret < 0) {
            psk->server = NULL;
        } else {
            ret = gnutls_psk_set_server_credentials_file(psk->server, keys);
        }
        if (ret < 0) {
            error_setg(errp, "Cannot load PSK file %s: %s", keys,
                       gnutls_strerror(ret));
            return false;
        }
        if (!qcrypto_tls_creds_load_dh(creds, &psk->dh, errp)) {
            return false;
        }
        if (psk->dh) {
            gnutls_psk_set_server_dh_params(psk->server, psk->dh);
        } else {
            gnutls_psk_set_server_known_dh_params(psk->server,
                                                  GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        const char *user = username ? username
                                    : QCRYPTO_TLS_PSK_DEFAULT_USERNAME;
        g_autofree char *hex = psk_find_key(keys, user, errp);
        gnutls_datum_t key;

        if (!hex) {
            return false;
        }
        key.data = (unsigned char *)hex;
        key.size = strlen(hex);
        ret = gnutls_psk_allocate_client_credentials(&psk->client);
        if (ret < 0) {
            psk->client = NULL;
        } else {
            ret = gnutls_psk_set_client_credentials(psk->client, user, &key,
                                                    GNUTLS_PSK_KEY_HEX);
        }
        if (ret < 0) {
            error_setg(errp, "Cannot set PSK client credentials: %s",
                       gnutls_strerror(ret));
            return false;
        }
    }
    return true;
}

static Object *psk_create(ObjectOptions *opts, Error **errp)
{
    TlsCredsPskProperties *props = &opts->u.tls_creds_psk;
    QCryptoTLSCredsPSK *psk = g_new0(QCryptoTLSCredsPSK, 1);

    if (!qcrypto_tls_creds_init(&psk->parent, &psk_ops,
                                qapi_TlsCredsPskProperties_base(props),
                                QCRYPTO_TLS_PSK_PRIORITY, errp) ||
        !psk_load(psk, props->username, errp)) {
        psk_free(psk);
        return NULL;
    }
    return &psk->parent.parent;
}

static void psk_object_free(Object *obj)
{
    psk_free(psk_creds(container_of(obj, QCryptoTLSCreds, parent)));
}

static const ObjectClass tls_creds_psk_class = {
    .type = OBJECT_TYPE_TLS_CREDS_PSK,
    .abstract_type = TYPE_QCRYPTO_TLS_CREDS,
    .create = psk_create,
    .free = psk_object_free,
};

static void __attribute__((constructor)) tls_creds_psk_register(void)
{
    object_class_register(&tls_creds_psk_class);
}
