/*
 * Image locking between processes, compatible with QEMU's.
 *
 * Two processes that both have an image open (blockd, qemu-img,
 * qemu-storage-daemon, a VM) must not both write it unless each allows
 * the other to.  Each permission bit i (as in BLK_PERM_*) is advertised
 * with a shared open-file-description lock on one byte of the image:
 * byte 100 + i while we hold permission i, byte 200 + i while we do not
 * share it.  Such locks never conflict with each other, only with a test
 * for an exclusive lock, so "does anybody hold byte N" can be asked
 * without disturbing the holders.  These are the byte offsets QEMU uses,
 * so the tools refuse each other's conflicting opens in both directions.
 */
#ifndef BLOCK_FILE_LOCK_H
#define BLOCK_FILE_LOCK_H

#include "util/error.h"

/*
 * Can this open file take @perm and share only @shared, given the locks
 * other processes hold?  Fails with QEMU's message naming the permission.
 */
bool file_lock_check(int fd, const char *filename, uint64_t perm,
                     uint64_t shared, Error **errp);

/* Advertise @perm/@shared, replacing what this fd advertised before. */
void file_lock_apply(int fd, uint64_t perm, uint64_t shared);

#endif /* BLOCK_FILE_LOCK_H */
