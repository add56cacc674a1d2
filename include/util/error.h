/*
 * Error objects for the control plane.
 *
 * Rules (they follow QMP's error model):
 *  - a function that can fail takes Error **errp as its last argument and
 *    also signals failure in its return value (false, NULL or -errno);
 *  - it never examines *errp itself and never touches it on success;
 *  - an error is either reported or returned, never both;
 *  - errp may be NULL (ignore the error), &error_abort (abort on error, for
 *    "cannot happen" cases) or &error_fatal (print and exit(1), only for
 *    start-up paths such as the command line).
 *
 * Every error carries an ErrorClass, which is what QMP puts in "class".
 * Nearly everything is GenericError; the other classes exist only where
 * QEMU uses them and management software checks for them.
 */
#ifndef UTIL_ERROR_H
#define UTIL_ERROR_H

#include "util/osdep.h"

typedef enum ErrorClass {
    ERROR_CLASS_GENERIC_ERROR,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_ACTIVE,
    ERROR_CLASS_DEVICE_NOT_FOUND,
    ERROR_CLASS_KVM_MISSING_CAP,
    ERROR_CLASS__MAX,
} ErrorClass;

typedef struct Error Error;

/* Special values of errp, see the rules above. */
extern Error *error_abort;
extern Error *error_fatal;

/* The QMP name of @cls, e.g. "GenericError". */
const char *ErrorClass_str(ErrorClass cls);

void error_setg(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Like error_setg(), with ": <strerror(os_errno)>" appended. */
void error_setg_errno(Error **errp, int os_errno, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/*
 * Prefix the message of an already set *errp.  A no-op when errp is NULL
 * or *errp is unset; the caller needs ERRP_GUARD() so that the prefix also
 * reaches &error_fatal.
 */
void error_prepend(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/*
 * Add a hint: printed on the command line after the message, but not part
 * of the QMP "desc".  A no-op when errp is NULL or *errp is unset; needs
 * ERRP_GUARD() like error_prepend().
 */
void error_append_hint(Error **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* Move @local_err into @dst_errp (or free it if @dst_errp is NULL). */
void error_propagate(Error **dst_errp, Error *local_err);

const char *error_get_pretty(const Error *err);
const char *error_get_hint(const Error *err);
ErrorClass error_get_class(const Error *err);
void error_free(Error *err);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Error, error_free)

/* Print "blockd: <message>" (and the hint) to stderr. */
void error_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void warn_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void error_report_err(Error *err);

/*
 * ERRP_GUARD(): put at the top of a function that dereferences errp, calls
 * error_prepend() or error_append_hint().  Where the caller passed NULL or
 * &error_fatal, errp is redirected to a local Error so the function can
 * inspect it; the local error is handed on when the function returns.
 */
typedef struct ErrorGuard {
    Error *local;
    Error **errp;
} ErrorGuard;

void error_guard_propagate(ErrorGuard *guard);

#define ERRP_GUARD()                                                    \
    g_auto(ErrorGuard) _auto_errp_prop = { .errp = errp };              \
    do {                                                                \
        if (!errp || errp == &error_fatal) {                            \
            errp = &_auto_errp_prop.local;                              \
        }                                                               \
    } while (0)

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ErrorGuard, error_guard_propagate)

#endif /* UTIL_ERROR_H */
