/*
 * NBD server: private header, one section per source file.
 *
 * Object graph (all main loop; no locks beyond the per-client send lock):
 *
 *   NBDServer (listener.c)   one while running; refcounted by its clients
 *     `- NBDClient (server.c) one per accepted socket, from accept to close
 *          `- NBDExport (export.c) once the handshake chose one; the client
 *               then holds a reference on the export's BlockExport
 *
 * A client runs in one coroutine from accept to close: handshake
 * (server-handshake.c), then the receive loop of the transmission phase
 * (server.c), which spawns one coroutine per request.  The client is freed
 * by its own coroutine, after every request coroutine has finished.
 *
 * Lock order: NBDClient.send_lock is the only lock and is never held
 * across anything but writing one reply.
 */
#ifndef NBD_NBD_INTERNAL_H
#define NBD_NBD_INTERNAL_H

#include "util/osdep.h"
#include "util/coroutine.h"
#include "block/export.h"
#include "nbd/nbd.h"
#include "nbd/nbd-protocol.h"
#include "block/dirty-bitmap.h"
#include "crypto/tlssession.h"

#include <sys/uio.h>

typedef struct NBDServer NBDServer;
typedef struct NBDClient NBDClient;
typedef struct NBDMetaContext NBDMetaContext;

/*
 * Most requests in flight per client; the receive loop stops reading at
 * the limit.  Payload memory has its own, tighter bound (see server.c), so
 * this only limits small requests, each of which pins little more than a
 * few pages of coroutine stack.  QEMU allows 16; clients such as nbdcopy
 * keep 64 in flight.
 */
#define NBD_MAX_IN_FLIGHT 64

/*
 * Largest option payload at all, as in QEMU: a longer one ends the
 * connection.  Payloads up to this size are read, though not necessarily
 * kept (see server-handshake.c).
 */
#define NBD_MAX_OPTION_SIZE (32 * 1024 * 1024)

/*
 * Largest NBD_OPT_LIST_META_CONTEXT / SET_META_CONTEXT payload read into
 * memory: room for a thousand queries of NBD_MAX_NAME_SIZE bytes.  A
 * larger one is read and discarded, and refused with NBD_REP_ERR_TOO_BIG.
 */
#define NBD_MAX_META_OPTION_SIZE (8 * 1024 * 1024)

/* Upper bound on extents in one block status reply. */
#define NBD_MAX_BLOCK_STATUS_EXTENTS (1u << 16)

/* ------------------------------------------------------------------ */
/* export.c */

struct NBDExport {
    /* Set at creation, never changed. */
    BlockExport *common;
    char *name;
    char *description;          /* NULL if none */
    uint64_t size;
    uint32_t min_block;         /* advertised minimum block size */
    OnOffAuto multi_conn;       /* NBD_FLAG_CAN_MULTI_CONN */
    GPtrArray *contexts;        /* NBDMetaContext *; index = context id */

    /* Main loop only. */
    bool closed;                /* unpublished; no new clients */
    GList *clients;             /* NBDClient in transmission phase */
};

/* A published export by name, or NULL. */
NBDExport *nbd_export_find(const char *name);

/* The published exports, oldest first (for NBD_OPT_LIST); not a copy. */
GList *nbd_export_list(void);

/*
 * Transmission flags for a client; NBD_FLAG_SEND_DF depends on whether
 * it negotiated structured replies, NBD_FLAG_CAN_MULTI_CONN on the
 * export's multi-conn setting and, for auto, on @shared_server (the
 * server accepts more than one connection).
 */
uint16_t nbd_export_tx_flags(NBDExport *exp, bool structured_reply,
                             bool shared_server);

/*
 * Attach @client (takes a BlockExport reference); fails if the export was
 * closed meanwhile.  Detach drops the reference.
 */
bool nbd_export_attach_client(NBDExport *exp, NBDClient *client);
void nbd_export_detach_client(NBDExport *exp, NBDClient *client);

/* ------------------------------------------------------------------ */
/* listener.c */

struct NBDServer {
    int refcount;               /* the running server + one per client */
    uint32_t max_connections;   /* 0: unlimited */
    unsigned handshake_max_seconds;
    uint32_t nclients;          /* clients accepted and not yet freed */
    GList *clients;             /* those clients, for stopping */
    GArray *listeners;          /* NBDListener */
    char *unix_path;            /* socket file we created, or NULL */
    QCryptoTLSCreds *tls_creds; /* holds a reference; NULL: no TLS */
    char *tls_authz;            /* authz object id for TLS clients */
};

void nbd_server_unref(NBDServer *server);
/* Stop or resume accepting as the client count crosses max-connections. */
void nbd_server_update_accepting(NBDServer *server);

/* ------------------------------------------------------------------ */
/* server.c */

/* What the handshake decided about a client's meta contexts. */
typedef struct NBDMetaSelection {
    char *export_name;          /* export they were selected for, or NULL */
    GArray *ids;                /* uint32_t context ids, in reply order */
} NBDMetaSelection;

struct NBDClient {
    /* Set at accept, never changed. */
    NBDServer *server;          /* holds a reference */
    int fd;

    /*
     * The transport: NULL for plain bytes on @fd; set by NBD_OPT_STARTTLS,
     * after which every byte goes through the TLS session.
     */
    QCryptoTLSSession *tls;

    /* Handshake results, set before the transmission phase. */
    NBDExport *exp;             /* NULL until an export was chosen */
    bool no_zeroes;
    bool structured_reply;
    NBDMetaSelection meta;
    uint16_t tx_flags;
    guint handshake_timer;      /* GLib source id, or 0 */

    /* Receive side: only the client's main coroutine touches these. */
    uint8_t *rbuf;              /* read-ahead buffer for small messages */
    size_t rbuf_start, rbuf_end;
    bool recv_filled;           /* the last read filled all it was given,
                                 * so more data is probably waiting */

    /* Main loop. */
    bool closing;               /* no more requests are read */
    unsigned in_flight;         /* request coroutines running */
    size_t pinned_bytes;        /* their buffers and block status replies */
    Coroutine *recv_co;         /* set while waiting for room for a new
                                 * request or for the last request at
                                 * teardown */
    CoMutex send_lock;          /* one reply at a time on the socket */
};

/* Accept a client on @fd (already non-blocking) and start serving it. */
void nbd_client_new(NBDServer *server, int fd);

/*
 * Make the client go away soon: stop reading and shut its socket down, so
 * that nothing it queued is read and replies still due are not sent.
 */
void nbd_client_kick(NBDClient *client);

/*
 * Receive exactly @len bytes, using the read-ahead buffer first.  Returns
 * 0 or -errno (-EPIPE at end of file).  This and nbd_co_sendv() are the
 * only functions that touch the transport.
 */
int coroutine_fn nbd_co_recv(NBDClient *client, void *buf, size_t len);

/*
 * Send @iov completely (consuming it); returns 0 or -errno.  The caller
 * holds send_lock, or is the handshake (which has the socket to itself).
 */
int coroutine_fn nbd_co_sendv(NBDClient *client, struct iovec *iov,
                              int iovcnt);

/* ------------------------------------------------------------------ */
/* server-handshake.c */

/*
 * Run the fixed newstyle negotiation.  Returns 0 when the client entered
 * the transmission phase (client->exp set and attached), -errno when the
 * connection should be closed.
 */
int coroutine_fn nbd_co_negotiate(NBDClient *client);

/* ------------------------------------------------------------------ */
/* server-meta.c */

/* Kinds of meta context; the table in server-meta.c has one per kind. */
typedef enum NBDMetaKind {
    NBD_META_BASE_ALLOCATION,
    NBD_META_ALLOCATION_DEPTH,
    NBD_META_DIRTY_BITMAP,
} NBDMetaKind;

struct NBDMetaContext {
    NBDMetaKind kind;
    char *name;                 /* full name, e.g. "base:allocation" */
    /*
     * NBD_META_DIRTY_BITMAP: the bitmap, busy for the life of the
     * export; the context holds a reference on its node.
     */
    BdrvDirtyBitmap *bitmap;
};

/*
 * Build @exp->contexts (@exp->common must be set): base:allocation,
 * qemu:allocation-depth if @allocation_depth, and one
 * qemu:dirty-bitmap:NAME per entry of @bitmaps, in order.  Fails with
 * QEMU's message if a bitmap is missing or unusable; then
 * @exp->contexts is NULL and no bitmap was touched.
 */
bool nbd_meta_init_export(NBDExport *exp, bool allocation_depth,
                          BlockDirtyBitmapOrStrList *bitmaps, Error **errp);
/* Free @exp->contexts, making the exported bitmaps usable again. */
void nbd_meta_free_export(NBDExport *exp);

/*
 * Append to @ids the contexts of @exp matching @query.  With @list
 * (NBD_OPT_LIST_META_CONTEXT) a query ending in ':' is a wildcard for
 * every context under that prefix; otherwise only exact names match.
 * Queries in unknown namespaces match nothing.
 */
void nbd_meta_match(NBDExport *exp, const char *query, bool list,
                    GArray *ids);

/*
 * Describe [@offset, @offset + @length) for context @ctx in at most
 * @max_extents extents, appending NBDExtent (host byte order) to
 * @extents.  Returns 0 or -errno.
 */
int coroutine_fn nbd_meta_co_extents(NBDExport *exp,
                                     const NBDMetaContext *ctx,
                                     uint64_t offset, uint32_t length,
                                     unsigned max_extents, GArray *extents);

#endif /* NBD_NBD_INTERNAL_H */
