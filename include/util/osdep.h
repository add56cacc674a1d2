/*
 * Common definitions included by every blockd source file.
 *
 * Execution-context markers: a function marked coroutine_fn may only be
 * called from coroutine context (it may yield).  The marker is documentary
 * for gcc; it exists so that readers and reviewers can see where a call may
 * suspend the caller.
 */
#ifndef UTIL_OSDEP_H
#define UTIL_OSDEP_H

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <glib.h>

#define coroutine_fn

#define IS_ALIGNED(n, m)    (((n) % (m)) == 0)
#define ALIGN_DOWN(n, m)    ((n) / (m) * (m))
#define ALIGN_UP(n, m)      ALIGN_DOWN((n) + (m) - 1, (m))
#define DIV_ROUND_UP(n, d)  (((n) + (d) - 1) / (d))
#define IS_POWER_OF_2(n)    ((n) != 0 && ((n) & ((n) - 1)) == 0)

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) G_N_ELEMENTS(a)
#endif

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#endif /* UTIL_OSDEP_H */
