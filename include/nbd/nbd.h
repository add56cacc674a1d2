/*
 * The NBD server: public interface (main loop only).
 *
 * One server per daemon listens on one address (nbd-server-start or
 * --nbd-server).  Exports are published on it by the "nbd" block export
 * type (block/export/export-nbd.c), which wraps each BlockExport in an
 * NBDExport carrying the NBD-specific state: the name clients ask for, the
 * description, the meta contexts and the connected clients.
 */
#ifndef NBD_NBD_H
#define NBD_NBD_H

#include "block/export.h"
#include "qapi/qapi-types.h"

typedef struct NBDExport NBDExport;

/* Longest export name or description (the protocol's string limit). */
#define NBD_MAX_NAME_SIZE 4096

/* Default of nbd-server-start's max-connections (0 means unlimited). */
#define NBD_DEFAULT_MAX_CONNECTIONS 100

/* Seconds a client may take to finish the handshake. */
#define NBD_DEFAULT_HANDSHAKE_MAX_SECONDS 10

/*
 * nbd_server_start:
 * @addr: where to listen (UNIX path or TCP host/port)
 * @tls_creds: id of server TLS credentials that clients must use, or NULL
 * @tls_authz: id of the authz object TLS clients must pass, or NULL
 * @max_connections: connections served at once; 0 means no limit
 *
 * Start listening.  Fails if a server is already running.  A UNIX socket
 * file that the server creates is removed again when it stops.
 */
bool nbd_server_start(SocketAddress *addr, const char *tls_creds,
                      const char *tls_authz, uint32_t max_connections,
                      Error **errp);

/* nbd_server_start() for --nbd-server. */
bool nbd_server_start_options(NbdServerOptions *opts, Error **errp);

bool nbd_server_is_running(void);

/*
 * Serve the connected socket @fd as if the server had accepted it (for
 * tests and the fuzzer).  Takes ownership of @fd, also on failure.  Fails
 * if no server is running.
 */
bool nbd_server_add_client(int fd, Error **errp);

/*
 * Stop the server: every NBD export is removed (its clients are
 * disconnected) and waited for, then the listening sockets are closed.
 * Returns false and sets @errp if no server is running.
 */
bool nbd_server_stop(Error **errp);

/* For daemon shutdown: nbd_server_stop() if a server is running. */
void nbd_server_shutdown(void);

/*
 * nbd_export_new:
 * @exp: the generic export, whose BlockBackend serves the data
 * @name: the name clients ask for
 * @description: free text shown to clients, or NULL
 * @allocation_depth: offer the qemu:allocation-depth meta context
 * @bitmaps: dirty bitmaps to offer as qemu:dirty-bitmap:NAME contexts
 * @multi_conn: whether to advertise NBD_FLAG_CAN_MULTI_CONN; auto: when
 *     the server accepts more than one connection (QEMU 7.2's rule)
 *
 * Publish @exp under @name.  Fails if no server is running, the name is
 * taken or a bitmap cannot be exported.  Exported bitmaps are busy
 * until nbd_export_free().  The NBDExport takes no reference on @exp; each
 * client that opens it does.
 */
NBDExport *nbd_export_new(BlockExport *exp, const char *name,
                          const char *description, bool allocation_depth,
                          BlockDirtyBitmapOrStrList *bitmaps,
                          OnOffAuto multi_conn, Error **errp);

/*
 * Unpublish @nexp (new clients no longer find it) and disconnect its
 * clients.  Each client drops its reference on the BlockExport when its
 * in-flight requests have finished.
 */
void nbd_export_close(NBDExport *nexp);

/* Free @nexp; it must be closed and have no clients left. */
void nbd_export_free(NBDExport *nexp);

#endif /* NBD_NBD_H */
