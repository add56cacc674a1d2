/*
 * Asking the daemon to shut down (QMP quit, signals).  The main loop
 * checks shutdown_requested() after every iteration.
 */
#ifndef UTIL_SHUTDOWN_H
#define UTIL_SHUTDOWN_H

#include "util/osdep.h"

void shutdown_request(void);
bool shutdown_requested(void);

#endif /* UTIL_SHUTDOWN_H */
