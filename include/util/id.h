/*
 * Identifiers that QMP users choose: node names, job ids, export ids.
 */
#ifndef UTIL_ID_H
#define UTIL_ID_H

#include "util/osdep.h"

/*
 * QEMU's rule for user-chosen ids: a letter, then letters, digits, '-',
 * '.' and '_'.  (Generated names such as "#block001" are not well formed,
 * so they can never clash with a user's.)
 */
bool id_wellformed(const char *id);

#endif /* UTIL_ID_H */
