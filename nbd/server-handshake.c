/*
 * NBD server: the fixed newstyle handshake.
 *
 * The server greets with NBDMAGIC, IHAVEOPT and its handshake flags
 * (FIXED_NEWSTYLE | NO_ZEROES), reads the client's flags, then answers
 * options one at a time until one of them starts the transmission phase
 * (NBD_OPT_GO, or the old NBD_OPT_EXPORT_NAME) or ends the connection.
 * Clients that do not set FIXED_NEWSTYLE, or set flags we do not know,
 * are disconnected at once: oldstyle and plain newstyle are not served.
 *
 * Bounds: an option's payload may be up to NBD_MAX_OPTION_SIZE long (as
 * in QEMU; a longer one ends the connection).  Each
 * option we understand has a largest valid payload (nbd_opt_max_payload);
 * a payload within it is read whole into one buffer.  A longer one is
 * read and discarded in chunks, never buffered, and the option is
 * answered as it would be with an unusable payload: NBD_REP_ERR_UNSUP for
 * options we do not know, NBD_REP_ERR_INVALID for options whose payload
 * cannot be that long, NBD_REP_ERR_TOO_BIG for meta context queries we
 * will not hold in memory; the negotiation then goes on.  Only
 * NBD_OPT_EXPORT_NAME, which has no error reply, ends the connection.
 * Every length inside a payload is checked against what is left of it
 * before use; a mismatch is NBD_REP_ERR_INVALID.  The whole
 * handshake runs under a timer (listener.c) that disconnects clients that
 * take too long, so a stalled or slow-dripping client cannot keep a
 * connection slot.
 *
 * TLS: on a server with tls-creds nothing but NBD_OPT_STARTTLS (and
 * ABORT) is served until the client has completed the TLS handshake; other
 * options get NBD_REP_ERR_TLS_REQD, so not even the export list leaks.
 * Nothing negotiated before TLS carries over, since nothing can be.
 *
 * Exports are looked up by name for each option, and no pointer to one
 * is kept across a yield without a reference on its BlockExport: the
 * export may be deleted while a reply is being sent.  The meta context
 * selection therefore remembers the export by name.
 *
 * Return convention of the option handlers: 0 to read the next option,
 * 1 when the transmission phase begins, -errno to disconnect.
 */
#include "nbd/nbd-internal.h"

#include <stdarg.h>
#include <sys/uio.h>

static int coroutine_fn nbd_opt_reply(NBDClient *client, uint32_t option,
                                      uint32_t type, const void *data,
                                      uint32_t len)
{
    NBDOptionReply hdr;
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    nbd_st64(&hdr.magic, NBD_REP_MAGIC);
    nbd_st32(&hdr.option, option);
    nbd_st32(&hdr.type, type);
    nbd_st32(&hdr.length, len);
    return nbd_co_sendv(client, iov, len ? 2 : 1);
}

static int coroutine_fn nbd_opt_ack(NBDClient *client, uint32_t option)
{
    return nbd_opt_reply(client, option, NBD_REP_ACK, NULL, 0);
}

/* An error reply carrying a message for humans. */
static int coroutine_fn G_GNUC_PRINTF(4, 5)
nbd_opt_error(NBDClient *client, uint32_t option, uint32_t type,
              const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return nbd_opt_reply(client, option, type, msg,
                         MIN(strlen(msg), NBD_MAX_NAME_SIZE));
}

static int coroutine_fn nbd_opt_invalid(NBDClient *client, uint32_t option)
{
    return nbd_opt_error(client, option, NBD_REP_ERR_INVALID,
                         "malformed option %" PRIu32, option);
}

/* Send NBD_REP_INFO with @type and a payload. */
static int coroutine_fn nbd_opt_info_reply(NBDClient *client,
                                           uint32_t option, uint16_t type,
                                           const void *data, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(2 + len);

    nbd_st16(buf, type);
    memcpy(buf + 2, data, len);
    return nbd_opt_reply(client, option, NBD_REP_INFO, buf, 2 + len);
}

/*
 * A reader over an option's payload.  Every getter fails (returns false)
 * instead of reading past the end.
 */
typedef struct NBDOptReader {
    const uint8_t *p;
    uint32_t left;
} NBDOptReader;

static bool nbd_opt_get16(NBDOptReader *r, uint16_t *v)
{
    if (r->left < 2) {
        return false;
    }
    *v = nbd_ld16(r->p);
    r->p += 2;
    r->left -= 2;
    return true;
}

static bool nbd_opt_get32(NBDOptReader *r, uint32_t *v)
{
    if (r->left < 4) {
        return false;
    }
    *v = nbd_ld32(r->p);
    r->p += 4;
    r->left -= 4;
    return true;
}

/* A length-prefixed string, returned NUL-terminated. */
static char *nbd_opt_get_string(NBDOptReader *r)
{
    uint32_t len;
    char *s;

    if (!nbd_opt_get32(r, &len) || len > r->left ||
        len > NBD_MAX_NAME_SIZE) {
        return NULL;
    }
    s = g_strndup((const char *)r->p, len);
    r->p += len;
    r->left -= len;
    return s;
}

/*
 * A meta context query; *query is NULL for one longer than any context
 * name, which can match nothing and is skipped.
 */
static bool nbd_opt_get_query(NBDOptReader *r, char **query)
{
    uint32_t len;

    if (!nbd_opt_get32(r, &len) || len > r->left) {
        return false;
    }
    *query = len > NBD_MAX_NAME_SIZE ? NULL
                                     : g_strndup((const char *)r->p, len);
    r->p += len;
    r->left -= len;
    return true;
}

/*
 * Meta contexts chosen by SET_META_CONTEXT apply only if the transmission
 * phase is entered on the export they were chosen for.
 */
static void nbd_meta_selection_apply(NBDClient *client, NBDExport *exp)
{
    NBDMetaSelection *meta = &client->meta;
    bool same = meta->export_name && !strcmp(meta->export_name,
                                             exp->name);

    if (!same) {
        g_array_set_size(meta->ids, 0);
        return;
    }
    /* The export may have been replaced by one with fewer contexts. */
    for (guint i = 0; i < meta->ids->len; i++) {
        if (g_array_index(meta->ids, uint32_t, i) >= exp->contexts->len) {
            g_array_set_size(meta->ids, 0);
            return;
        }
    }
}

static void nbd_client_enter_transmission(NBDClient *client)
{
    client->tx_flags = nbd_export_tx_flags(client->exp,
                                           client->structured_reply,
                                           client->server->max_connections
                                           != 1);
    nbd_meta_selection_apply(client, client->exp);
}

static int coroutine_fn nbd_opt_export_name(NBDClient *client,
                                            const char *data, uint32_t len)
{
    uint8_t reply[sizeof(NBDExportNameReply) + 124] = { 0 };
    NBDExportNameReply *r = (NBDExportNameReply *)reply;
    g_autofree char *name = g_strndup(data, len);
    NBDExport *exp = nbd_export_find(name);
    struct iovec iov;

    /* The option has no error reply: an unknown name ends the session. */
    if (!exp || len > NBD_MAX_NAME_SIZE ||
        !nbd_export_attach_client(exp, client)) {
        return -ENOENT;
    }
    client->exp = exp;
    nbd_client_enter_transmission(client);

    nbd_st64(&r->size, exp->size);
    nbd_st16(&r->flags, client->tx_flags);
    iov.iov_base = reply;
    iov.iov_len = client->no_zeroes ? sizeof(*r) : sizeof(reply);
    return nbd_co_sendv(client, &iov, 1);
}

/* NBD_OPT_INFO and NBD_OPT_GO. */
static int coroutine_fn nbd_opt_info(NBDClient *client, uint32_t option,
                                     const uint8_t *data, uint32_t len)
{
    NBDOptReader r = { .p = data, .left = len };
    g_autofree char *name = nbd_opt_get_string(&r);
    bool want_name = false, want_desc = false, want_bsize = false;
    uint8_t bsize[12], info[10];
    uint16_t nreq;
    NBDExport *exp;
    int ret;

    if (!name || !nbd_opt_get16(&r, &nreq) || r.left != 2u * nreq) {
        return nbd_opt_invalid(client, option);
    }
    for (uint16_t i = 0; i < nreq; i++) {
        uint16_t type = NBD_INFO_EXPORT;

        nbd_opt_get16(&r, &type);
        want_name |= type == NBD_INFO_NAME;
        want_desc |= type == NBD_INFO_DESCRIPTION;
        want_bsize |= type == NBD_INFO_BLOCK_SIZE;
    }

    exp = nbd_export_find(name);
    if (!exp) {
        return nbd_opt_error(client, option, NBD_REP_ERR_UNKNOWN,
                             "export '%s' not present", name);
    }
    /*
     * Keep the export alive while replying: GO attaches the client for
     * good, INFO holds a reference until the end of this function.
     */
    if (option == NBD_OPT_GO) {
        if (!nbd_export_attach_client(exp, client)) {
            return nbd_opt_error(client, option, NBD_REP_ERR_UNKNOWN,
                                 "export '%s' not present", name);
        }
        client->exp = exp;
    } else {
        blk_exp_ref(exp->common);
    }

    ret = 0;
    if (want_name) {
        ret = nbd_opt_info_reply(client, option, NBD_INFO_NAME, exp->name,
                                 strlen(exp->name));
    }
    if (ret == 0 && want_desc && exp->description) {
        ret = nbd_opt_info_reply(client, option, NBD_INFO_DESCRIPTION,
                                 exp->description,
                                 strlen(exp->description));
    }
    if (ret == 0) {
        /*
         * A minimum above 1 is only promised to clients that asked for
         * block sizes (or merely look, with INFO); the block layer
         * handles unaligned requests of the others.
         */
        uint32_t min = (want_bsize || option == NBD_OPT_INFO)
                       ? exp->min_block : 1;

        nbd_st32(bsize, min);
        nbd_st32(bsize + 4, MAX(min, 4096));
        nbd_st32(bsize + 8, NBD_MAX_PAYLOAD_SIZE);
        ret = nbd_opt_info_reply(client, option, NBD_INFO_BLOCK_SIZE,
                                 bsize, sizeof(bsize));
    }
    if (ret == 0) {
        nbd_st64(info, exp->size);
        nbd_st16(info + 8, nbd_export_tx_flags(exp, client->structured_reply,
                                               client->server->max_connections
                                               != 1));
        ret = nbd_opt_info_reply(client, option, NBD_INFO_EXPORT, info,
                                 sizeof(info));
    }
    if (ret == 0) {
        ret = nbd_opt_ack(client, option);
    }

    if (option == NBD_OPT_INFO) {
        blk_exp_unref(exp->common);
        return ret;
    }
    if (ret < 0) {
        return ret;    /* teardown detaches client->exp */
    }
    nbd_client_enter_transmission(client);
    return 1;
}

typedef struct NBDListEntry {
    char *name;
    char *description;
} NBDListEntry;

static void nbd_list_entry_clear(gpointer p)
{
    NBDListEntry *e = p;

    g_free(e->name);
    g_free(e->description);
}

static int coroutine_fn nbd_opt_list(NBDClient *client, uint32_t len)
{
    g_autoptr(GArray) entries = g_array_new(FALSE, TRUE,
                                            sizeof(NBDListEntry));

    if (len != 0) {
        return nbd_opt_invalid(client, NBD_OPT_LIST);
    }
    /* Snapshot first: exports may come and go while we send. */
    g_array_set_clear_func(entries, nbd_list_entry_clear);
    for (GList *l = nbd_export_list(); l; l = l->next) {
        NBDExport *exp = l->data;
        NBDListEntry e = {
            .name = g_strdup(exp->name),
            .description = g_strdup(exp->description ? exp->description
                                                     : ""),
        };

        g_array_append_val(entries, e);
    }

    for (guint i = 0; i < entries->len; i++) {
        NBDListEntry *e = &g_array_index(entries, NBDListEntry, i);
        size_t nlen = strlen(e->name), dlen = strlen(e->description);
        g_autofree uint8_t *buf = g_malloc(4 + nlen + dlen);
        int ret;

        nbd_st32(buf, nlen);
        memcpy(buf + 4, e->name, nlen);
        memcpy(buf + 4 + nlen, e->description, dlen);
        ret = nbd_opt_reply(client, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                            4 + nlen + dlen);
        if (ret < 0) {
            return ret;
        }
    }
    return nbd_opt_ack(client, NBD_OPT_LIST);
}

static int coroutine_fn nbd_opt_structured_reply(NBDClient *client,
                                                 uint32_t len)
{
    if (len != 0 || client->structured_reply) {
        return nbd_opt_invalid(client, NBD_OPT_STRUCTURED_REPLY);
    }
    client->structured_reply = true;
    return nbd_opt_ack(client, NBD_OPT_STRUCTURED_REPLY);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static int coroutine_fn nbd_opt_meta_context(NBDClient *client,
                                             uint32_t option,
                                             const uint8_t *data,
                                             uint32_t len)
{
    bool list = option == NBD_OPT_LIST_META_CONTEXT;
    NBDOptReader r = { .p = data, .left = len };
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(uint32_t));
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *name = NULL;
    uint32_t nqueries;
    NBDExport *exp;

    if (!client->structured_reply) {
        return nbd_opt_error(client, option, NBD_REP_ERR_INVALID,
                             "structured replies are not negotiated");
    }
    name = nbd_opt_get_string(&r);
    if (!name || !nbd_opt_get32(&r, &nqueries)) {
        return nbd_opt_invalid(client, option);
    }
    if (!list) {
        /* A failed SET also leaves nothing selected. */
        g_free(client->meta.export_name);
        client->meta.export_name = NULL;
        g_array_set_size(client->meta.ids, 0);
    }

    exp = nbd_export_find(name);
    for (uint32_t i = 0; i < nqueries; i++) {
        g_autofree char *query = NULL;

        if (!nbd_opt_get_query(&r, &query)) {
            return nbd_opt_invalid(client, option);
        }
        if (exp && query) {
            nbd_meta_match(exp, query, list, ids);
        }
    }
    if (r.left != 0) {
        return nbd_opt_invalid(client, option);
    }
    if (!exp) {
        return nbd_opt_error(client, option, NBD_REP_ERR_UNKNOWN,
                             "export '%s' not present", name);
    }
    if (list && nqueries == 0) {
        for (uint32_t id = 0; id < exp->contexts->len; id++) {
            g_array_append_val(ids, id);
        }
    }

    /* Copy what we send: the export may go away while we do. */
    for (guint i = 0; i < ids->len; i++) {
        NBDMetaContext *ctx = g_ptr_array_index(exp->contexts,
                                                g_array_index(ids, uint32_t,
                                                              i));

        g_ptr_array_add(names, g_strdup(ctx->name));
    }
    if (!list) {
        client->meta.export_name = g_strdup(name);
        g_array_append_vals(client->meta.ids, ids->data, ids->len);
    }

    for (guint i = 0; i < ids->len; i++) {
        const char *cname = g_ptr_array_index(names, i);
        size_t clen = strlen(cname);
        g_autofree uint8_t *buf = g_malloc(4 + clen);
        int ret;

        nbd_st32(buf, g_array_index(ids, uint32_t, i));
        memcpy(buf + 4, cname, clen);
        ret = nbd_opt_reply(client, option, NBD_REP_META_CONTEXT, buf,
                            4 + clen);
        if (ret < 0) {
            return ret;
        }
    }
    return nbd_opt_ack(client, option);
}

/* Largest payload a well-formed @option can have (see the top). */
static uint32_t nbd_opt_max_payload(uint32_t option)
{
    switch (option) {
    case NBD_OPT_EXPORT_NAME:
        return NBD_MAX_NAME_SIZE;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        /* name length, name, number of requests, requests */
        return 4 + NBD_MAX_NAME_SIZE + 2 + 2 * UINT16_MAX;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return NBD_MAX_META_OPTION_SIZE;
    default:
        /* The payload is ignored, or has to be empty. */
        return 0;
    }
}

/* Read and drop @len bytes of payload, a chunk at a time. */
static int coroutine_fn nbd_opt_discard(NBDClient *client, uint32_t len)
{
    const uint32_t chunk_size = 64 * 1024;
    g_autofree uint8_t *chunk = g_malloc(MIN(len, chunk_size));

    while (len > 0) {
        uint32_t n = MIN(len, chunk_size);
        int ret = nbd_co_recv(client, chunk, n);

        if (ret < 0) {
            return ret;
        }
        len -= n;
    }
    return 0;
}

/* Act on an option whose payload (if any) is @data; see the top. */
static int coroutine_fn nbd_opt_dispatch(NBDClient *client, uint32_t option,
                                         const uint8_t *data, uint32_t len)
{
    int ret;

    switch (option) {
    case NBD_OPT_EXPORT_NAME:
        ret = nbd_opt_export_name(client, (const char *)data, len);
        return ret < 0 ? ret : 1;
    case NBD_OPT_ABORT:
        /* Be polite, but the client may already have gone. */
        nbd_opt_ack(client, option);
        return -ECONNRESET;
    case NBD_OPT_LIST:
        return nbd_opt_list(client, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return nbd_opt_info(client, option, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        return nbd_opt_structured_reply(client, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return nbd_opt_meta_context(client, option, data, len);
    case NBD_OPT_STARTTLS:
        if (client->tls) {
            return nbd_opt_error(client, option, NBD_REP_ERR_INVALID,
                                 "TLS is already active");
        }
        return nbd_opt_error(client, option, NBD_REP_ERR_POLICY,
                             "TLS is not configured on this server");
    default:
        return nbd_opt_error(client, option, NBD_REP_ERR_UNSUP,
                             "option %" PRIu32 " is not supported",
                             option);
    }
}

/*
 * NBD_OPT_STARTTLS on a server with TLS: acknowledge, then run the TLS
 * handshake on the socket; from then on nbd_co_recv()/nbd_co_sendv() go
 * through the session.  A client that fails the handshake, the
 * certificate check or the authz object is disconnected.
 */
static int coroutine_fn nbd_opt_starttls(NBDClient *client)
{
    NBDServer *server = client->server;
    Error *err = NULL;
    int ret;

    /*
     * The client must wait for our reply before its TLS handshake: bytes
     * already read past the option are plaintext that must not be taken
     * as coming through TLS.
     */
    if (client->rbuf_end > client->rbuf_start) {
        return -EINVAL;
    }
    ret = nbd_opt_ack(client, NBD_OPT_STARTTLS);
    if (ret < 0) {
        return ret;
    }
    client->tls = qcrypto_tls_session_new_server(server->tls_creds,
                                                 server->tls_authz,
                                                 client->fd, &err);
    if (client->tls && qcrypto_tls_session_co_handshake(client->tls, &err)) {
        return 0;
    }
    error_report("NBD client refused: %s", error_get_pretty(err));
    error_free(err);
    return -EACCES;
}

/*
 * An option from a client that has not started TLS on a server that
 * requires it: STARTTLS and ABORT are served, NBD_OPT_EXPORT_NAME (which
 * has no error reply) ends the connection, everything else gets
 * NBD_REP_ERR_TLS_REQD.  No payload is kept.
 */
static int coroutine_fn nbd_opt_before_tls(NBDClient *client,
                                           uint32_t option, uint32_t len)
{
    int ret;

    if (option == NBD_OPT_EXPORT_NAME) {
        return -EACCES;
    }
    ret = nbd_opt_discard(client, len);
    if (ret < 0) {
        return ret;
    }
    switch (option) {
    case NBD_OPT_STARTTLS:
        return len ? nbd_opt_invalid(client, option)
                   : nbd_opt_starttls(client);
    case NBD_OPT_ABORT:
        return nbd_opt_dispatch(client, option, NULL, 0);
    default:
        return nbd_opt_error(client, option, NBD_REP_ERR_TLS_REQD,
                             "option %" PRIu32 " is not permitted before "
                             "TLS", option);
    }
}

/* Answer an option whose @len bytes of payload were discarded. */
static int coroutine_fn nbd_opt_oversized(NBDClient *client, uint32_t option,
                                          uint32_t len)
{
    switch (option) {
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return nbd_opt_invalid(client, option);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return nbd_opt_error(client, option, NBD_REP_ERR_TOO_BIG,
                             "option %" PRIu32 " of %" PRIu32 " bytes is "
                             "too big", option, len);
    default:
        /* Options that do not read their payload */
        return nbd_opt_dispatch(client, option, NULL, len);
    }
}

/* Read one option and act on it; see the return convention above. */
static int coroutine_fn nbd_co_handle_option(NBDClient *client)
{
    NBDOptionHeader hdr;
    g_autofree uint8_t *data = NULL;
    uint32_t option, len;
    int ret;

    ret = nbd_co_recv(client, &hdr, sizeof(hdr));
    if (ret < 0) {
        return ret;
    }
    if (nbd_ld64(&hdr.magic) != NBD_OPTS_MAGIC) {
        return -EINVAL;
    }
    option = nbd_ld32(&hdr.option);
    len = nbd_ld32(&hdr.length);
    if (len > NBD_MAX_OPTION_SIZE) {
        return -EINVAL;
    }
    if (client->server->tls_creds && !client->tls) {
        return nbd_opt_before_tls(client, option, len);
    }
    if (len > nbd_opt_max_payload(option)) {
        if (option == NBD_OPT_EXPORT_NAME) {
            return -EINVAL;     /* it has no error reply */
        }
        ret = nbd_opt_discard(client, len);
        return ret < 0 ? ret : nbd_opt_oversized(client, option, len);
    }
    /* One extra byte keeps string payloads NUL-terminated. */
    data = g_malloc0(len + 1);
    ret = nbd_co_recv(client, data, len);
    if (ret < 0) {
        return ret;
    }
    return nbd_opt_dispatch(client, option, data, len);
}

int coroutine_fn nbd_co_negotiate(NBDClient *client)
{
    NBDGreeting greeting;
    struct iovec iov = { .iov_base = &greeting,
                         .iov_len = sizeof(greeting) };
    uint32_t cflags;
    int ret;

    nbd_st64(&greeting.magic, NBD_MAGIC);
    nbd_st64(&greeting.opts_magic, NBD_OPTS_MAGIC);
    nbd_st16(&greeting.handshake_flags,
             NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    ret = nbd_co_sendv(client, &iov, 1);
    if (ret < 0) {
        return ret;
    }

    ret = nbd_co_recv(client, &cflags, sizeof(cflags));
    if (ret < 0) {
        return ret;
    }
    cflags = be32toh(cflags);
    if (!(cflags & NBD_FLAG_C_FIXED_NEWSTYLE) ||
        (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
        return -EINVAL;
    }
    client->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

    do {
        ret = nbd_co_handle_option(client);
    } while (ret == 0);
    return ret < 0 ? ret : 0;
}
