/*
 * The nbd block driver's private header: the client state shared by the
 * driver (block/nbd.c: options and requests), its connection
 * (block/nbd-connection.c: connecting, the event-loop watch on the
 * socket, and reconnecting) and its TLS (block/nbd-tls.c).  See
 * docs/devel/nbd.rst, "The nbd client driver".
 */
#ifndef BLOCK_NBD_CLIENT_H
#define BLOCK_NBD_CLIENT_H

#include "block/block_int.h"
#include "crypto/tlscreds.h"
#include "util/coroutine.h"

#include <libnbd.h>

typedef struct NbdFdSource NbdFdSource;

typedef struct NbdClient {
    /* Set at open and never changed afterwards. */
    SocketAddressType type;
    char *path;                 /* unix */
    char *host;                 /* inet */
    char *port;                 /* inet */
    char *address;              /* "path" or "host:port", for messages */
    char *export;               /* never NULL ("" is the default export) */
    char *meta_context;         /* block status context */
    uint32_t reconnect_delay;   /* seconds */
    QCryptoTLSCreds *tls_creds; /* NULL: plain NBD; holds a reference */
    char *tls_hostname;         /* the certificate's name; NULL: none */
    /* What the export offered on the first connection. */
    int64_t size;
    bool can_flush;
    bool can_fua;
    bool can_trim;
    bool can_zero;
    bool can_fast_zero;
    bool has_meta_context;

    /* Main loop only. */
    struct nbd_handle *nbd;     /* NULL while disconnected */
    NbdFdSource *fd_source;     /* watches nbd's socket while connected */
    /* Counts connection losses: a request knows which connection it used. */
    uint64_t generation;
    bool closing;
    /* Reconnecting: the coroutine, its socket while it tries, its sleep. */
    Coroutine *reconnect_co;
    int attempt_fd;
    guint sleep_timer;
    Coroutine *sleeper;
    /* Requests waiting for the connection, until delay_expired. */
    CoQueue reconnect_waiters;
    guint delay_timer;
    bool delay_expired;
    /* Live TLS relays (block/nbd-tls.c): closing waits for them. */
    GSList *tls_relays;
} NbdClient;

/*
 * Connect to the server and complete the handshake, trying again with
 * growing pauses for up to @timeout_s seconds (0: once).  On success the
 * client is connected and its socket watched; returns false with @errp
 * set otherwise.
 */
bool coroutine_fn nbd_client_connect(NbdClient *s, uint32_t timeout_s,
                                     Error **errp);

/*
 * Wait until @s is connected: 0, or -EIO once the node is closing or the
 * reconnect delay has run out.
 */
int coroutine_fn nbd_client_wait_connected(NbdClient *s);

/*
 * The handle's state machine may have something new to send (a request
 * was queued): adjust the socket watch to its direction.
 */
void nbd_client_update_watch(NbdClient *s);

/*
 * The connection is gone (found by a request or by the watch): forget the
 * handle and start reconnecting in the background.  Does nothing if it
 * is already gone.
 */
void nbd_client_connection_lost(NbdClient *s);

/*
 * Ask the server on the connected socket @fd (which is taken) for TLS
 * and set it up with the client's tls_creds and tls_hostname.  Returns
 * the socket libnbd must use (plain NBD, relayed through TLS), or -1 with
 * @errp set.  See block/nbd-tls.c.
 */
int coroutine_fn nbd_client_starttls(NbdClient *s, int fd, Error **errp);

/*
 * Cut the connections of @s's TLS relays: their libnbd handles are gone.
 * They end, and leave s->tls_relays, from the main loop.
 */
void nbd_client_tls_cut(NbdClient *s);

/* Disconnect and stop reconnecting; waits for an attempt in progress. */
void nbd_client_close(NbdClient *s);

#endif /* BLOCK_NBD_CLIENT_H */
