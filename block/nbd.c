/*
 * The "nbd" protocol driver: a node whose data lives in an export of a
 * remote NBD server (another blockd, qemu-nbd, nbdkit), reached through
 * libnbd.  Options are QEMU 7.2's BlockdevOptionsNbd.
 *
 * Requests.  Each request coroutine queues its command with libnbd's
 * asynchronous API (nbd_aio_*), with a completion callback that wakes it,
 * and yields; the connection's socket watch (block/nbd-connection.c)
 * drives libnbd for all of them, so any number are in flight on the one
 * connection.  A request that fails because the connection was lost
 * waits for the reconnection (up to reconnect-delay) and is sent again;
 * an error the server reports is returned as its errno.
 *
 * What the export offers is passed through: flush, FUA, trim, write
 * zeroes (MAY_UNMAP lets the server punch holes, NO_FALLBACK asks for a
 * fast zero), and block status from "base:allocation" or the meta
 * context named by x-dirty-bitmap, whose flags are read the same way (1:
 * no data, 2: zero), as QEMU does.  The export's minimum block size
 * becomes the request alignment and its maximum the largest transfer.
 *
 * TLS (tls-creds, tls-hostname) is set up on each connection before
 * libnbd takes it over: see block/nbd-tls.c.
 */
#include "block/nbd-client.h"

enum {
    /* Largest read or write sent at once (QEMU's limit too). */
    NBD_CLIENT_MAX_TRANSFER = 32 * 1024 * 1024,
    /* Block status asks about at most this much at once. */
    NBD_CLIENT_MAX_STATUS = 1 << 30,
};

typedef enum NbdCommand {
    NBD_COMMAND_READ,
    NBD_COMMAND_WRITE,
    NBD_COMMAND_FLUSH,
    NBD_COMMAND_TRIM,
    NBD_COMMAND_ZERO,
    NBD_COMMAND_BLOCK_STATUS,
} NbdCommand;

typedef struct NbdRequest {
    NbdCommand command;
    int64_t offset;
    int64_t bytes;
    void *buf;                  /* read into, or written from */
    uint32_t flags;             /* LIBNBD_CMD_FLAG_* */

    /* One try on one connection. */
    Coroutine *co;
    uint64_t generation;        /* the connection it was sent on */
    bool waiting;               /* co yielded for the completion */
    bool done;
    int error;                  /* errno from the completion */

    /* Block status: the first extent. */
    const char *meta_context;
    uint32_t extent_bytes;
    uint32_t extent_flags;
} NbdRequest;

/* libnbd calls this from nbd_aio_notify_*, in the socket watch. */
static int nbd_request_done(void *opaque, int *error)
{
    NbdRequest *req = opaque;

    req->done = true;
    req->error = *error;
    if (req->waiting) {
        /* Not now: the coroutine must not call libnbd from its callback. */
        coroutine_wake(req->co);
    }
    return 1;   /* retire the command */
}

static int nbd_extent_seen(void *opaque, const char *context,
                           uint64_t offset, uint32_t *entries,
                           size_t nr_entries, int *error)
{
    NbdRequest *req = opaque;

    (void)offset;
    (void)error;
    if (strcmp(context, req->meta_context) == 0 && nr_entries >= 2 &&
        req->extent_bytes == 0) {
        req->extent_bytes = entries[0];
        req->extent_flags = entries[1];
    }
    return 0;
}

static int64_t nbd_request_issue(struct nbd_handle *nbd, NbdRequest *req)
{
    nbd_completion_callback done = {
        .callback = nbd_request_done, .user_data = req,
    };

    switch (req->command) {
    case NBD_COMMAND_READ:
        return nbd_aio_pread(nbd, req->buf, req->bytes, req->offset, done,
                             0);
    case NBD_COMMAND_WRITE:
        return nbd_aio_pwrite(nbd, req->buf, req->bytes, req->offset, done,
                              req->flags);
    case NBD_COMMAND_FLUSH:
        return nbd_aio_flush(nbd, done, 0);
    case NBD_COMMAND_TRIM:
        return nbd_aio_trim(nbd, req->bytes, req->offset, done, 0);
    case NBD_COMMAND_ZERO:
        return nbd_aio_zero(nbd, req->bytes, req->offset, done, req->flags);
    case NBD_COMMAND_BLOCK_STATUS: {
        nbd_extent_callback extent = {
            .callback = nbd_extent_seen, .user_data = req,
        };

        return nbd_aio_block_status(nbd, req->bytes, req->offset, extent,
                                    done, LIBNBD_CMD_FLAG_REQ_ONE);
    }
    }
    g_assert_not_reached();
}

/*
 * Send @req and wait for its reply, on this connection or, if it breaks
 * (and reconnect-delay allows), the next one.  Returns 0 or -errno.
 */
static int coroutine_fn nbd_co_request(BlockDriverState *bs,
                                       NbdRequest *req)
{
    NbdClient *s = bs->opaque;

    for (;;) {
        int ret = nbd_client_wait_connected(s);

        if (ret < 0) {
            return ret;
        }
        req->co = coroutine_self();
        req->generation = s->generation;
        req->waiting = false;
        req->done = false;
        req->extent_bytes = 0;
        if (nbd_request_issue(s->nbd, req) < 0) {
            int err = nbd_get_errno();

            if (nbd_aio_is_ready(s->nbd) || nbd_aio_is_processing(s->nbd)) {
                /* Refused before sending (say, out of bounds). */
                return -(err ? err : EIO);
            }
            nbd_client_connection_lost(s);
            continue;
        }
        nbd_client_update_watch(s);
        while (!req->done) {
            req->waiting = true;
            coroutine_yield();
        }
        if (req->error == 0) {
            return 0;
        }
        if (req->generation == s->generation) {
            return -req->error;     /* the server's answer */
        }
        /* The connection broke under it: try again on the next one. */
    }
}

static void nbd_close_node(BlockDriverState *bs)
{
    NbdClient *s = bs->opaque;

    nbd_client_close(s);
    g_free(s->path);
    g_free(s->host);
    g_free(s->port);
    g_free(s->address);
    g_free(s->export);
    g_free(s->meta_context);
    g_free(s->tls_hostname);
    if (s->tls_creds) {
        object_unref(&s->tls_creds->parent);
    }
}

/*
 * tls-creds: client credentials, taken for the node's lifetime.  The
 * server's certificate must name tls-hostname, else the inet host (as in
 * QEMU; tls-hostname without tls-creds is ignored there too).
 */
static bool nbd_open_tls(NbdClient *s, BlockdevOptionsNbd *opts,
                         Error **errp)
{
    QCryptoTLSCreds *creds =
        qcrypto_tls_creds_find(opts->tls_creds,
                               QCRYPTO_TLS_CREDS_ENDPOINT_CLIENT, errp);

    if (!creds) {
        return false;
    }
    object_ref(&creds->parent);
    s->tls_creds = creds;
    s->tls_hostname = g_strdup(opts->tls_hostname ? opts->tls_hostname
                                                  : s->host);
    return true;
}

static int coroutine_fn nbd_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    NbdClient *s = bs->opaque;
    BlockdevOptionsNbd *opts = &options->u.nbd;
    SocketAddress *server = opts->server;
    uint32_t min_block, max_block;

    switch (server->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        if (server->u.q_unix.has_abstract && server->u.q_unix.abstract) {
            error_setg(errp, "The nbd driver does not support abstract "
                       "UNIX sockets");
            return -ENOTSUP;
        }
        s->path = g_strdup(server->u.q_unix.path);
        s->address = g_strdup(s->path);
        bs->filename = g_strdup_printf("nbd+unix:///%s?socket=%s",
                                       opts->export ? opts->export : "",
                                       s->path);
        break;
    case SOCKET_ADDRESS_TYPE_INET:
        s->host = g_strdup(server->u.inet.host);
        s->port = g_strdup(server->u.inet.port);
        s->address = g_strdup_printf("%s:%s", s->host, s->port);
        bs->filename = g_strdup_printf("nbd://%s/%s", s->address,
                                       opts->export ? opts->export : "");
        break;
    default:
        /* QEMU's message for fd; vsock is not built into blockd. */
        error_setg(errp, server->type == SOCKET_ADDRESS_TYPE_FD
                   ? "only QEMU supports file descriptor passing"
                   : "The nbd driver supports only unix and inet "
                     "addresses");
        return -ENOTSUP;
    }
    s->type = server->type;
    s->export = g_strdup(opts->export ? opts->export : "");
    s->meta_context = g_strdup(opts->x_dirty_bitmap ? opts->x_dirty_bitmap
                                                    : "base:allocation");
    s->reconnect_delay = opts->has_reconnect_delay ? opts->reconnect_delay
                                                   : 0;
    if (opts->tls_creds && !nbd_open_tls(s, opts, errp)) {
        nbd_close_node(bs);
        return -EINVAL;
    }

    if (!nbd_client_connect(s, opts->has_open_timeout ? opts->open_timeout
                                                      : 0, errp)) {
        nbd_close_node(bs);
        return -EIO;
    }
    if (opts->x_dirty_bitmap && !s->has_meta_context) {
        error_setg(errp, "Could not open image: the server does not offer "
                   "meta context '%s' (x-dirty-bitmap)", s->meta_context);
        nbd_close_node(bs);
        return -EINVAL;
    }
    if (!bs->read_only && nbd_is_read_only(s->nbd) > 0) {
        if (!(options->has_auto_read_only && options->auto_read_only)) {
            /* QEMU's words for it */
            error_setg(errp, "Could not open image: Permission denied");
            nbd_close_node(bs);
            return -EACCES;
        }
        bs->read_only = true;
    }
    bs->total_bytes = s->size;

    min_block = MAX(nbd_get_block_size(s->nbd, LIBNBD_SIZE_MINIMUM), 1);
    max_block = nbd_get_block_size(s->nbd, LIBNBD_SIZE_MAXIMUM);
    if (max_block == 0 || max_block > NBD_CLIENT_MAX_TRANSFER) {
        max_block = NBD_CLIENT_MAX_TRANSFER;
    }
    bs->bl.request_alignment = IS_POWER_OF_2(min_block) ? min_block : 1;
    bs->bl.max_transfer = ALIGN_DOWN(max_block, bs->bl.request_alignment);
    return 0;
}

/*
 * libnbd takes one buffer per request: a vector of one element (the
 * usual case) is used in place, others go through a bounce buffer.
 */
static int coroutine_fn nbd_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    g_autofree void *bounce = qiov->niov == 1 ? NULL : g_malloc(bytes);
    NbdRequest req = {
        .command = NBD_COMMAND_READ, .offset = offset, .bytes = bytes,
        .buf = bounce ? bounce : qiov->iov[0].iov_base,
    };
    int ret;

    (void)flags;
    ret = nbd_co_request(bs, &req);
    if (ret == 0 && bounce) {
        iovector_from_buf(qiov, 0, bounce, bytes);
    }
    return ret;
}

static uint32_t nbd_fua_flag(NbdClient *s, BdrvRequestFlags flags)
{
    return (flags & BDRV_REQ_FUA) && s->can_fua ? LIBNBD_CMD_FLAG_FUA : 0;
}

static int coroutine_fn nbd_co_flush(BlockDriverState *bs)
{
    NbdClient *s = bs->opaque;
    NbdRequest req = { .command = NBD_COMMAND_FLUSH };

    return s->can_flush ? nbd_co_request(bs, &req) : 0;
}

/* A FUA write to a server without FUA: make it stable with a flush. */
static int coroutine_fn nbd_co_finish_fua(BlockDriverState *bs, int ret,
                                          BdrvRequestFlags flags)
{
    NbdClient *s = bs->opaque;

    if (ret == 0 && (flags & BDRV_REQ_FUA) && !s->can_fua) {
        ret = nbd_co_flush(bs);
    }
    return ret;
}

static int coroutine_fn nbd_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    g_autofree void *bounce = qiov->niov == 1 ? NULL : g_malloc(bytes);
    NbdRequest req = {
        .command = NBD_COMMAND_WRITE, .offset = offset, .bytes = bytes,
        .buf = bounce ? bounce : qiov->iov[0].iov_base,
        .flags = nbd_fua_flag(bs->opaque, flags),
    };

    if (bounce) {
        iovector_to_buf(qiov, 0, bounce, bytes);
    }
    return nbd_co_finish_fua(bs, nbd_co_request(bs, &req), flags);
}

static int coroutine_fn nbd_co_pwrite_zeroes(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    NbdClient *s = bs->opaque;
    NbdRequest req = {
        .command = NBD_COMMAND_ZERO, .offset = offset, .bytes = bytes,
        .flags = nbd_fua_flag(s, flags),
    };

    if (!s->can_zero) {
        return -ENOTSUP;
    }
    if (!(flags & BDRV_REQ_MAY_UNMAP)) {
        req.flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        if (!s->can_fast_zero) {
            return -ENOTSUP;
        }
        req.flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    return nbd_co_finish_fua(bs, nbd_co_request(bs, &req), flags);
}

static int coroutine_fn nbd_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes)
{
    NbdClient *s = bs->opaque;
    NbdRequest req = {
        .command = NBD_COMMAND_TRIM, .offset = offset, .bytes = bytes,
    };

    return s->can_trim ? nbd_co_request(bs, &req) : -ENOTSUP;
}

static int coroutine_fn nbd_co_block_status(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    NbdClient *s = bs->opaque;
    uint32_t align = bs->bl.request_alignment;
    int64_t start = ALIGN_DOWN(offset, align);
    int64_t end = MIN(ALIGN_UP(offset + MIN(bytes, NBD_CLIENT_MAX_STATUS),
                               align), s->size);
    NbdRequest req = {
        .command = NBD_COMMAND_BLOCK_STATUS, .offset = start,
        .bytes = end - start, .meta_context = s->meta_context,
    };
    int ret;

    (void)map;
    (void)file;
    if (!s->has_meta_context) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    ret = nbd_co_request(bs, &req);
    if (ret < 0) {
        return ret;
    }
    if (req.extent_bytes == 0) {
        /* The server answered without an extent of our context. */
        return -EIO;
    }
    *pnum = MIN(start + req.extent_bytes, offset + bytes) - offset;
    if (*pnum <= 0) {
        /* An extent shorter than our alignment: say nothing is known. */
        *pnum = MIN(bytes, align - (offset - start));
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    return (req.extent_flags & LIBNBD_STATE_HOLE ? 0 : BDRV_BLOCK_DATA) |
           (req.extent_flags & LIBNBD_STATE_ZERO ? BDRV_BLOCK_ZERO : 0) |
           BDRV_BLOCK_ALLOCATED;
}

static const BlockDriver bdrv_nbd = {
    .format_name = "nbd",
    .instance_size = sizeof(NbdClient),
    .bdrv_open = nbd_open,
    .bdrv_close = nbd_close_node,
    .bdrv_co_preadv = nbd_co_preadv,
    .bdrv_co_pwritev = nbd_co_pwritev,
    .bdrv_co_pwrite_zeroes = nbd_co_pwrite_zeroes,
    .bdrv_co_pdiscard = nbd_co_pdiscard,
    .bdrv_co_flush = nbd_co_flush,
    .bdrv_co_block_status = nbd_co_block_status,
    /* Emulated with a flush where the export has no FUA. */
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) nbd_register(void)
{
    bdrv_register(&bdrv_nbd);
}
