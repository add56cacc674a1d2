/*
 * NBD server: connections and the transmission phase.
 *
 * Each client is served by one coroutine (nbd_client_co_main) from
 * accept to close: it runs the handshake, then the receive loop, then
 * tears the client down.  The receive loop reads a request header and,
 * for writes, the payload, checks the request, and starts one coroutine
 * per request, so many requests of one client are in flight at once.
 *
 * Flow control: the receive loop reads no new request while a client has
 * NBD_MAX_IN_FLIGHT requests in flight or while they pin
 * NBD_MAX_PINNED_BYTES or more (see nbd_co_wait_for_room()).  Requests
 * then queue up in the kernel's socket buffer, which pushes back on the
 * client, and the loop is woken by the next request that finishes.  So a
 * client that never reads its replies holds a few MiB, not more.
 *
 * Replies are serialized by client->send_lock and go out with one
 * sendmsg() each: header and data from the request's own buffer (from a
 * pool, see nbd_buf_get()), no copy.  Reads and block status use
 * structured replies once negotiated (a read is always answered with a
 * single data chunk, so DF holds trivially); other commands always get
 * simple replies, which the protocol allows and every client handles.
 *
 * Transport: the bytes go straight to the socket, or after
 * NBD_OPT_STARTTLS through the client's TLS session; nbd_co_recv() and
 * nbd_co_sendv() choose, and nothing else touches the socket's data.
 *
 * Receiving goes through a small read-ahead buffer: one readv fills the
 * caller's buffer and the read-ahead buffer at once, so a burst of small
 * requests costs one read rather than two per request, and write
 * payloads still land directly in their aligned buffer.  Once a read has
 * drained the socket, the next one goes through io_uring (co_readv()),
 * which waits for the data and reads it in one step, batched with the
 * file I/O the last request submitted: an idle client costs no readv()
 * that fails with EAGAIN.
 *
 * Errors: a request the server can parse but not honour gets an error
 * reply (NBD errno values, see nbd_errno()); a write's payload is
 * consumed first.  Anything that loses the framing (bad magic, a write
 * payload over NBD_MAX_PAYLOAD_SIZE, end of file) ends this client only.
 *
 * Teardown: after NBD_CMD_DISC the client stops reading, waits until its
 * request coroutines have finished and replied, detaches from its export,
 * and closes the socket.  Any failure of the socket instead (end of file,
 * a receive or send error, a request that loses the framing) kicks the
 * client: nbd_client_kick() shuts the socket down, which wakes whatever
 * waits on it, so the requests still queued in the socket are never read,
 * and those in flight finish without replying (their sends fail at once).
 * Without that, a client that queued thousands of requests and went away
 * would have the server run every one of them.  Other parts of the server
 * kick clients too (export deletion, the handshake timeout).
 */
#include "nbd/nbd-internal.h"
#include "block/block-backend.h"
#include "util/main-loop.h"
#include "nbd/trace.h"

#include <sys/socket.h>
#include <sys/uio.h>

/*
 * No new request is read while a client's requests in flight pin this many
 * bytes or more.  The next request may add up to NBD_MAX_PAYLOAD_SIZE, so
 * one request of the largest size is always served, and a client pins less
 * than NBD_MAX_PINNED_BYTES + NBD_MAX_PAYLOAD_SIZE.  8 MiB still lets a
 * client keep eight 1 MiB requests in flight.
 */
#define NBD_MAX_PINNED_BYTES (8u << 20)

/* Read-ahead buffer size. */
#define NBD_RBUF_SIZE (16 * 1024)

/* Payload buffers kept for reuse, shared by all clients. */
#define NBD_BUF_POOL_MAX_BUFS 64
#define NBD_BUF_POOL_MAX_BYTES (64u << 20)

/* A request, parsed into host byte order. */
typedef struct NBDRequest {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
} NBDRequest;

typedef struct NBDRequestData {
    NBDClient *client;
    NBDRequest req;
    void *buf;              /* payload buffer (READ, WRITE) or NULL */
    size_t buf_size;
    size_t pinned;          /* accounted in client->pinned_bytes */
    int error;              /* NBD errno found by the checks, or 0 */
} NBDRequestData;

/* ------------------------------------------------------------------ */
/* Socket I/O */

int coroutine_fn nbd_co_recv(NBDClient *client, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        size_t avail = client->rbuf_end - client->rbuf_start;
        struct iovec iov[2];
        ssize_t n;

        if (avail > 0) {
            size_t take = MIN(avail, len);

            memcpy(p, client->rbuf + client->rbuf_start, take);
            client->rbuf_start += take;
            p += take;
            len -= take;
            continue;
        }

        iov[0].iov_base = p;
        iov[0].iov_len = len;
        iov[1].iov_base = client->rbuf;
        iov[1].iov_len = NBD_RBUF_SIZE;
        n = client->tls ? qcrypto_tls_session_co_readv(client->tls, iov, 2)
                        : co_readv(client->fd, iov, 2, client->recv_filled);
        if (n == 0) {
            return -EPIPE;
        } else if (n < 0) {
            return n;
        }
        client->recv_filled = (size_t)n == len + NBD_RBUF_SIZE;
        if ((size_t)n > len) {
            client->rbuf_start = 0;
            client->rbuf_end = n - len;
            n = len;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int coroutine_fn nbd_co_sendv(NBDClient *client, struct iovec *iov,
                              int iovcnt)
{
    if (client->tls) {
        return qcrypto_tls_session_co_sendv(client->tls, iov, iovcnt);
    }
    return co_sendv_full(client->fd, iov, iovcnt);
}

/* ------------------------------------------------------------------ */
/* Payload buffers */

/*
 * A small pool of payload buffers.  Allocating and freeing a large
 * aligned buffer for every request makes the allocator map and unmap
 * memory, and every first touch of a fresh page faults; at 32 requests of
 * 1 MiB in flight that cost more than the data copies.  Clients tend to
 * use one request size, so buffers are reused by exact (page-rounded)
 * size, most recently freed first.  Main loop only.
 */
typedef struct NBDPooledBuf {
    size_t size;
    void *buf;
} NBDPooledBuf;

static NBDPooledBuf nbd_buf_pool[NBD_BUF_POOL_MAX_BUFS];
static unsigned nbd_buf_pool_len;
static size_t nbd_buf_pool_bytes;

static size_t nbd_buf_round(size_t size)
{
    return ALIGN_UP(MAX(size, 1), 4096);
}

static void *nbd_buf_get(size_t size)
{
    size = nbd_buf_round(size);
    for (unsigned i = nbd_buf_pool_len; i-- > 0;) {
        if (nbd_buf_pool[i].size == size) {
            void *buf = nbd_buf_pool[i].buf;

            nbd_buf_pool[i] = nbd_buf_pool[--nbd_buf_pool_len];
            nbd_buf_pool_bytes -= size;
            return buf;
        }
    }
    return blk_memalign(size);
}

static void nbd_buf_put(void *buf, size_t size)
{
    size = nbd_buf_round(size);
    if (nbd_buf_pool_len == NBD_BUF_POOL_MAX_BUFS ||
        nbd_buf_pool_bytes + size > NBD_BUF_POOL_MAX_BYTES) {
        blk_vfree(buf);
        return;
    }
    nbd_buf_pool[nbd_buf_pool_len++] = (NBDPooledBuf) { size, buf };
    nbd_buf_pool_bytes += size;
}

/* ------------------------------------------------------------------ */
/* Replies */

/* Map a (positive) host errno onto the values the protocol defines. */
static uint32_t nbd_errno(int err)
{
    switch (err) {
    case 0:
        return NBD_SUCCESS;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EINVAL;
    }
}

static int coroutine_fn nbd_co_send_locked(NBDClient *client,
                                           struct iovec *iov, int iovcnt)
{
    int ret;

    co_mutex_lock(&client->send_lock);
    ret = nbd_co_sendv(client, iov, iovcnt);
    co_mutex_unlock(&client->send_lock);
    if (ret < 0) {
        /*
         * The client is gone, or a reply went out in part and the framing
         * is lost: either way, nothing it still queued may run.
         */
        nbd_client_kick(client);
    }
    return ret;
}

/* Simple reply, with @data_len bytes of @data on success. */
static int coroutine_fn nbd_co_send_simple(NBDClient *client,
                                           uint64_t cookie, uint32_t error,
                                           void *data, size_t data_len)
{
    NBDSimpleReply hdr;
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = data, .iov_len = data_len },
    };

    nbd_st32(&hdr.magic, NBD_SIMPLE_REPLY_MAGIC);
    nbd_st32(&hdr.error, error);
    nbd_st64(&hdr.cookie, cookie);
    trace_nbd_co_send_simple(client, cookie, error, error ? 0 : data_len);
    return nbd_co_send_locked(client, iov, error || !data_len ? 1 : 2);
}

static void nbd_fill_chunk(NBDStructuredReply *hdr, uint64_t cookie,
                           uint16_t flags, uint16_t type, uint32_t len)
{
    trace_nbd_fill_chunk(cookie, flags, type, len);
    nbd_st32(&hdr->magic, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_st16(&hdr->flags, flags);
    nbd_st16(&hdr->type, type);
    nbd_st64(&hdr->cookie, cookie);
    nbd_st32(&hdr->length, len);
}

static int coroutine_fn nbd_co_send_chunk_none(NBDClient *client,
                                               uint64_t cookie)
{
    NBDStructuredReply hdr;
    struct iovec iov = { .iov_base = &hdr, .iov_len = sizeof(hdr) };

    nbd_fill_chunk(&hdr, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
                   0);
    return nbd_co_send_locked(client, &iov, 1);
}

static int coroutine_fn nbd_co_send_chunk_error(NBDClient *client,
                                                uint64_t cookie,
                                                uint32_t error)
{
    struct __attribute__((packed)) {
        NBDStructuredReply hdr;
        uint32_t error;
        uint16_t msg_len;
    } chunk;
    struct iovec iov = { .iov_base = &chunk, .iov_len = sizeof(chunk) };

    g_assert(error != 0);
    nbd_fill_chunk(&chunk.hdr, cookie, NBD_REPLY_FLAG_DONE,
                   NBD_REPLY_TYPE_ERROR, sizeof(chunk) - sizeof(chunk.hdr));
    nbd_st32(&chunk.error, error);
    nbd_st16(&chunk.msg_len, 0);
    return nbd_co_send_locked(client, &iov, 1);
}

static int coroutine_fn nbd_co_send_read_data(NBDClient *client,
                                              const NBDRequest *req,
                                              void *data)
{
    struct __attribute__((packed)) {
        NBDStructuredReply hdr;
        uint64_t offset;
    } chunk;
    struct iovec iov[2] = {
        { .iov_base = &chunk, .iov_len = sizeof(chunk) },
        { .iov_base = data, .iov_len = req->length },
    };

    nbd_fill_chunk(&chunk.hdr, req->cookie, NBD_REPLY_FLAG_DONE,
                   NBD_REPLY_TYPE_OFFSET_DATA, 8 + req->length);
    nbd_st64(&chunk.offset, req->offset);
    return nbd_co_send_locked(client, iov, 2);
}

/* ------------------------------------------------------------------ */
/* Commands */

static int coroutine_fn nbd_co_read(NBDClient *client, NBDRequestData *rd)
{
    NBDRequest *req = &rd->req;
    int ret = 0;

    if (req->length > 0) {
        ret = blk_co_pread(client->exp->common->blk, req->offset,
                           req->length, rd->buf, 0);
    }
    if (!client->structured_reply) {
        return nbd_co_send_simple(client, req->cookie, nbd_errno(-ret),
                                  rd->buf, req->length);
    }
    if (ret < 0) {
        return nbd_co_send_chunk_error(client, req->cookie,
                                       nbd_errno(-ret));
    }
    if (req->length == 0) {
        return nbd_co_send_chunk_none(client, req->cookie);
    }
    return nbd_co_send_read_data(client, req, rd->buf);
}

static int coroutine_fn nbd_co_block_status(NBDClient *client,
                                            NBDRequestData *rd)
{
    NBDRequest *req = &rd->req;
    NBDExport *exp = client->exp;
    GArray *ids = client->meta.ids;
    unsigned max = req->flags & NBD_CMD_FLAG_REQ_ONE
                   ? 1 : NBD_MAX_BLOCK_STATUS_EXTENTS;
    g_autoptr(GPtrArray) chunks = g_ptr_array_new_with_free_func(g_free);
    g_autofree struct iovec *iov = NULL;
    int ret;

    /* Compute every context first, then send them back to back. */
    for (guint i = 0; i < ids->len; i++) {
        uint32_t id = g_array_index(ids, uint32_t, i);
        g_autoptr(GArray) ext = g_array_new(FALSE, FALSE, sizeof(NBDExtent));
        NBDStructuredReply *hdr;
        uint8_t *chunk, *p;
        size_t payload;

        ret = nbd_meta_co_extents(exp, g_ptr_array_index(exp->contexts, id),
                                  req->offset, req->length, max, ext);
        if (ret < 0) {
            return nbd_co_send_chunk_error(client, req->cookie,
                                           nbd_errno(-ret));
        }
        payload = 4 + ext->len * sizeof(NBDExtent);
        chunk = g_malloc(sizeof(*hdr) + payload);
        hdr = (NBDStructuredReply *)chunk;
        nbd_fill_chunk(hdr, req->cookie,
                       i + 1 == ids->len ? NBD_REPLY_FLAG_DONE : 0,
                       NBD_REPLY_TYPE_BLOCK_STATUS, payload);
        p = chunk + sizeof(*hdr);
        nbd_st32(p, id);
        p += 4;
        for (guint j = 0; j < ext->len; j++) {
            NBDExtent *e = &g_array_index(ext, NBDExtent, j);

            nbd_st32(p, e->length);
            nbd_st32(p + 4, e->flags);
            p += 8;
        }
        g_ptr_array_add(chunks, chunk);
    }

    iov = g_new(struct iovec, chunks->len);
    for (guint i = 0; i < chunks->len; i++) {
        uint8_t *chunk = g_ptr_array_index(chunks, i);

        iov[i].iov_base = chunk;
        iov[i].iov_len = sizeof(NBDStructuredReply) +
                         nbd_ld32(&((NBDStructuredReply *)chunk)->length);
    }
    return nbd_co_send_locked(client, iov, chunks->len);
}

/* Run a command other than READ and BLOCK_STATUS; returns 0 or -errno. */
static int coroutine_fn nbd_co_do_command(NBDClient *client,
                                          NBDRequestData *rd)
{
    BlockExport *common = client->exp->common;
    BlockBackend *blk = common->blk;
    NBDRequest *req = &rd->req;
    bool fua = (req->flags & NBD_CMD_FLAG_FUA) || common->writethrough;
    BdrvRequestFlags flags = fua ? BDRV_REQ_FUA : 0;
    int ret;

    switch (req->type) {
    case NBD_CMD_WRITE:
        if (req->length == 0) {
            return 0;
        }
        return blk_co_pwrite(blk, req->offset, req->length, rd->buf, flags);

    case NBD_CMD_FLUSH:
        return blk_co_flush(blk);

    case NBD_CMD_TRIM:
        if (req->length > 0) {
            ret = blk_co_pdiscard(blk, req->offset, req->length);
            /* Trimming is advisory: not doing it is not an error. */
            if (ret < 0 && ret != -ENOTSUP) {
                return ret;
            }
        }
        return fua ? blk_co_flush(blk) : 0;

    case NBD_CMD_WRITE_ZEROES:
        if (!(req->flags & NBD_CMD_FLAG_NO_HOLE)) {
            flags |= BDRV_REQ_MAY_UNMAP;
        }
        if (req->flags & NBD_CMD_FLAG_FAST_ZERO) {
            flags |= BDRV_REQ_NO_FALLBACK;
        }
        if (req->length == 0) {
            return 0;
        }
        ret = blk_co_pwrite_zeroes(blk, req->offset, req->length, flags);
        if (ret < 0 && (req->flags & NBD_CMD_FLAG_FAST_ZERO)) {
            /* Whatever went wrong, it was not fast. */
            return -ENOTSUP;
        }
        if (ret == -ENOTSUP) {
            /* Only FAST_ZERO requests may fail with ENOTSUP. */
            return -EIO;
        }
        return ret;

    case NBD_CMD_CACHE:
        /* A hint; the range was checked, there is nothing to do. */
        return 0;

    default:
        g_assert_not_reached();
    }
}

/*
 * Serve one request.  @opaque points to its NBDRequestData in the frame
 * of nbd_co_receive_one(), which stays valid only until this coroutine
 * first yields: the request is copied at once (no allocation per
 * request).
 */
static void coroutine_fn nbd_request_co(void *opaque)
{
    NBDRequestData request = *(NBDRequestData *)opaque;
    NBDRequestData *rd = &request;
    NBDClient *client = rd->client;
    NBDRequest *req = &rd->req;
    uint32_t error = rd->error;

    if (error && client->structured_reply &&
        (req->type == NBD_CMD_READ || req->type == NBD_CMD_BLOCK_STATUS)) {
        nbd_co_send_chunk_error(client, req->cookie, error);
    } else if (error && req->type == NBD_CMD_READ) {
        nbd_co_send_simple(client, req->cookie, error, NULL, 0);
    } else if (req->type == NBD_CMD_READ) {
        nbd_co_read(client, rd);
    } else if (req->type == NBD_CMD_BLOCK_STATUS && !error) {
        nbd_co_block_status(client, rd);
    } else {
        if (!error) {
            error = nbd_errno(-nbd_co_do_command(client, rd));
        }
        nbd_co_send_simple(client, req->cookie, error, NULL, 0);
    }
    if (rd->buf) {
        nbd_buf_put(rd->buf, rd->buf_size);
    }
    client->in_flight--;
    client->pinned_bytes -= rd->pinned;
    if (client->recv_co) {
        Coroutine *co = client->recv_co;

        client->recv_co = NULL;
        coroutine_wake(co);
    }
}

/*
 * Check @req against the protocol and the export.  Returns the NBD errno
 * to reply with, or 0.
 */
static uint32_t nbd_request_check(NBDClient *client, const NBDRequest *req)
{
    NBDExport *exp = client->exp;
    uint16_t allowed = NBD_CMD_FLAG_FUA;
    bool ranged = true, writes = false;

    switch (req->type) {
    case NBD_CMD_READ:
        if (client->structured_reply) {
            allowed |= NBD_CMD_FLAG_DF;
        }
        if (req->length > NBD_MAX_PAYLOAD_SIZE) {
            return NBD_EINVAL;
        }
        break;
    case NBD_CMD_WRITE:
        writes = true;
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        writes = true;
        break;
    case NBD_CMD_TRIM:
        writes = true;
        break;
    case NBD_CMD_FLUSH:
        ranged = false;
        break;
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        if (!client->structured_reply || client->meta.ids->len == 0 ||
            req->length == 0) {
            return NBD_EINVAL;
        }
        break;
    default:
        return NBD_EINVAL;
    }

    if (req->flags & ~allowed) {
        return NBD_EINVAL;
    }
    if (ranged && (req->offset > exp->size ||
                   req->length > exp->size - req->offset)) {
        /* Writing past the end is "no space"; anything else invalid. */
        return req->type == NBD_CMD_WRITE ||
               req->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    }
    if (writes && !exp->common->writable) {
        return NBD_EPERM;
    }
    return 0;
}

/*
 * Memory @req holds until it has replied: its payload buffer of
 * @buf_size bytes, or for a block status request the largest reply it
 * can build (every extent covers at least one byte).
 */
static size_t nbd_request_pinned_bytes(NBDClient *client,
                                       const NBDRequest *req, uint32_t error,
                                       size_t buf_size)
{
    size_t extents;

    if (req->type != NBD_CMD_BLOCK_STATUS || error) {
        return buf_size;
    }
    extents = req->flags & NBD_CMD_FLAG_REQ_ONE
              ? 1 : MIN(req->length, NBD_MAX_BLOCK_STATUS_EXTENTS);
    return client->meta.ids->len *
           (sizeof(NBDStructuredReply) + 4 + extents * sizeof(NBDExtent));
}

/*
 * Wait until the client may have another request read: while it is at
 * the request limit or pins NBD_MAX_PINNED_BYTES, the next request stays
 * in the socket.  Returns at once when the client is closing.
 */
static void coroutine_fn nbd_co_wait_for_room(NBDClient *client)
{
    while (!client->closing &&
           (client->in_flight >= NBD_MAX_IN_FLIGHT ||
            client->pinned_bytes >= NBD_MAX_PINNED_BYTES)) {
        client->recv_co = coroutine_self();
        coroutine_yield();
    }
}

/*
 * Read and start one request.  Returns 0 to go on, -errno (or 1 for
 * NBD_CMD_DISC) to stop reading.
 */
static int coroutine_fn nbd_co_receive_one(NBDClient *client)
{
    NBDRequestWire wire;
    NBDRequestData rd;
    NBDRequest req;
    size_t buf_size = 0;
    uint32_t error;
    int ret;

    ret = nbd_co_recv(client, &wire, sizeof(wire));
    if (ret < 0) {
        return ret;
    }
    if (nbd_ld32(&wire.magic) != NBD_REQUEST_MAGIC) {
        return -EINVAL;
    }
    req.flags = nbd_ld16(&wire.flags);
    req.type = nbd_ld16(&wire.type);
    req.cookie = nbd_ld64(&wire.cookie);
    req.offset = nbd_ld64(&wire.offset);
    req.length = nbd_ld32(&wire.length);
    trace_nbd_co_receive_one(client, req.cookie, req.type, req.flags,
                             req.offset, req.length);

    if (req.type == NBD_CMD_DISC) {
        return 1;
    }
    if (req.type == NBD_CMD_WRITE && req.length > NBD_MAX_PAYLOAD_SIZE) {
        /* Too big to buffer, and skipping it would take as long. */
        return -EINVAL;
    }

    error = nbd_request_check(client, &req);
    if (req.type == NBD_CMD_WRITE ||
        (req.type == NBD_CMD_READ && !error)) {
        buf_size = req.length;
    }
    rd = (NBDRequestData) {
        .client = client,
        .req = req,
        .error = error,
        .buf_size = buf_size,
        .pinned = nbd_request_pinned_bytes(client, &req, error, buf_size),
        .buf = buf_size > 0 ? nbd_buf_get(buf_size) : NULL,
    };
    if (req.type == NBD_CMD_WRITE && req.length > 0) {
        /* Consumed even when the request is refused, to stay in sync. */
        ret = nbd_co_recv(client, rd.buf, req.length);
        if (ret < 0) {
            nbd_buf_put(rd.buf, buf_size);
            return ret;
        }
    }

    client->in_flight++;
    client->pinned_bytes += rd.pinned;
    /* It copies rd before it first yields, that is before this returns. */
    coroutine_enter(coroutine_create(nbd_request_co, &rd));
    return 0;
}

/* ------------------------------------------------------------------ */
/* Client life cycle */

static gboolean nbd_client_handshake_timeout(gpointer opaque)
{
    NBDClient *client = opaque;

    client->handshake_timer = 0;
    nbd_client_kick(client);
    return G_SOURCE_REMOVE;
}

void nbd_client_kick(NBDClient *client)
{
    client->closing = true;
    /* Wakes a coroutine waiting on the socket; later I/O fails. */
    shutdown(client->fd, SHUT_RDWR);
}

static void nbd_client_free(NBDClient *client)
{
    NBDServer *server = client->server;

    server->clients = g_list_remove(server->clients, client);
    server->nclients--;
    nbd_server_update_accepting(server);
    nbd_server_unref(server);

    if (client->tls) {
        qcrypto_tls_session_free(client->tls);
    }
    close(client->fd);
    g_free(client->meta.export_name);
    g_array_unref(client->meta.ids);
    g_free(client->rbuf);
    g_free(client);
}

static void coroutine_fn nbd_client_co_main(void *opaque)
{
    NBDClient *client = opaque;
    int ret;

    ret = nbd_co_negotiate(client);
    if (client->handshake_timer) {
        g_source_remove(client->handshake_timer);
        client->handshake_timer = 0;
    }
    while (ret == 0) {
        nbd_co_wait_for_room(client);
        ret = client->closing ? -ESHUTDOWN : nbd_co_receive_one(client);
    }
    if (ret < 0) {
        /* Drop the client now: see "Teardown" at the top of the file. */
        nbd_client_kick(client);
    }

    /* Let the requests in flight finish (after NBD_CMD_DISC they reply). */
    client->closing = true;
    while (client->in_flight > 0) {
        client->recv_co = coroutine_self();
        coroutine_yield();
    }
    if (client->exp) {
        nbd_export_detach_client(client->exp, client);
        client->exp = NULL;
    }
    nbd_client_free(client);
}

void nbd_client_new(NBDServer *server, int fd)
{
    NBDClient *client = g_new0(NBDClient, 1);

    client->server = server;
    client->fd = fd;
    client->rbuf = g_malloc(NBD_RBUF_SIZE);
    client->meta.ids = g_array_new(FALSE, FALSE, sizeof(uint32_t));
    co_mutex_init(&client->send_lock);

    server->refcount++;
    server->nclients++;
    server->clients = g_list_prepend(server->clients, client);
    nbd_server_update_accepting(server);

    if (server->handshake_max_seconds > 0) {
        client->handshake_timer =
            timeout_add_seconds(server->handshake_max_seconds,
                                nbd_client_handshake_timeout, client);
    }
    coroutine_enter(coroutine_create(nbd_client_co_main, client));
}
