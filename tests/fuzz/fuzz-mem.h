/*
 * An in-memory protocol driver for the fuzz harnesses: a node whose bytes
 * live in a buffer, so a harness can hand a parser an "image file" made
 * of the fuzzer's input without touching the disk.
 */
#ifndef TESTS_FUZZ_MEM_H
#define TESTS_FUZZ_MEM_H

#include "block/block_int.h"

/*
 * Open node @name holding a copy of @data (@size bytes).  Writes past the
 * end grow it up to @max_size bytes (then fail with -ENOSPC), so format
 * drivers can allocate.  Block status alternates 64 KiB of data and 64
 * KiB of zeroes, to give block-status users many extents.
 */
BlockDriverState *coroutine_fn fuzz_mem_open_node(const char *name,
                                                  const void *data,
                                                  size_t size,
                                                  size_t max_size);

#endif /* TESTS_FUZZ_MEM_H */
