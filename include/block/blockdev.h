/*
 * The nodes the monitor owns: those created by blockdev-add (over QMP or
 * with --blockdev).  Each holds one reference until blockdev-del.
 */
#ifndef BLOCK_BLOCKDEV_H
#define BLOCK_BLOCKDEV_H

#include "block/block-common.h"

/* Drop the monitor's reference to every node it owns (shutdown). */
void blockdev_close_all(void);

#endif /* BLOCK_BLOCKDEV_H */
