/*
 * The block graph, as seen by the control plane (main loop only).
 *
 * Nodes (BlockDriverState) are named by node-name and refcounted: the
 * monitor holds one reference for each node created by blockdev-add, and
 * every parent (another node, or a BlockBackend) holds one through its
 * BdrvChild.
 */
#ifndef BLOCK_BLOCK_H
#define BLOCK_BLOCK_H

#include "block/block-common.h"

typedef struct BlockdevOptions BlockdevOptions;

/* Find a node by node-name, or NULL. */
BlockDriverState *bdrv_find_node(const char *node_name);

/*
 * Find a node by @device (unused by blockd: there are no devices, but the
 * argument is kept for QEMU's message) or @node_name.  Fails with
 * "Cannot find device='D' nor node-name='N'".
 */
BlockDriverState *bdrv_lookup_bs(const char *device, const char *node_name,
                                 Error **errp);

const char *bdrv_get_node_name(const BlockDriverState *bs);
int64_t bdrv_getlength(BlockDriverState *bs);
bool bdrv_is_read_only(const BlockDriverState *bs);

void bdrv_ref(BlockDriverState *bs);
/* Drop a reference; the last one flushes and closes the node. */
void bdrv_unref(BlockDriverState *bs);

#endif /* BLOCK_BLOCK_H */
