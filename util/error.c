/*
 * Error objects: see include/util/error.h for the rules.
 */
#include "util/error.h"

struct Error {
    char *msg;
    ErrorClass err_class;
    GString *hint;
};

Error *error_abort;
Error *error_fatal;

static const char *const error_class_names[ERROR_CLASS__MAX] = {
    [ERROR_CLASS_GENERIC_ERROR] = "GenericError",
    [ERROR_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [ERROR_CLASS_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
    [ERROR_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
    [ERROR_CLASS_KVM_MISSING_CAP] = "KVMMissingCap",
};

const char *ErrorClass_str(ErrorClass cls)
{
    g_assert(cls < ERROR_CLASS__MAX);
    return error_class_names[cls];
}

static void error_print(const char *prefix, const Error *err)
{
    fprintf(stderr, "%s%s\n", prefix, err->msg);
    if (err->hint) {
        fputs(err->hint->str, stderr);
    }
}

/* Hand a freshly made error to its destination, following the rules. */
static void error_handle(Error **errp, Error *err)
{
    if (errp == &error_abort) {
        error_print("blockd: unexpected error: ", err);
        abort();
    }
    if (errp == &error_fatal) {
        error_print("blockd: ", err);
        exit(1);
    }
    if (!errp) {
        error_free(err);
        return;
    }
    g_assert(*errp == NULL);
    *errp = err;
}

static void error_setv(Error **errp, ErrorClass cls, int os_errno,
                       const char *fmt, va_list ap)
{
    Error *err = g_new0(Error, 1);

    err->msg = g_strdup_vprintf(fmt, ap);
    if (os_errno) {
        char *with_errno = g_strdup_printf("%s: %s", err->msg,
                                           g_strerror(os_errno));
        g_free(err->msg);
        err->msg = with_errno;
    }
    err->err_class = cls;
    error_handle(errp, err);
}

void error_setg(Error **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC_ERROR, 0, fmt, ap);
    va_end(ap);
}

void error_setg_errno(Error **errp, int os_errno, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC_ERROR, os_errno, fmt, ap);
    va_end(ap);
}

void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_setv(errp, cls, 0, fmt, ap);
    va_end(ap);
}

/*
 * Like QEMU's, error_prepend() and error_append_hint() do nothing when errp
 * is NULL or holds no error: an ignored error has nothing to decorate.
 * (With &error_fatal or &error_abort the error never reaches them: the
 * caller needs ERRP_GUARD() for the decoration to show.)
 */
void error_prepend(Error **errp, const char *fmt, ...)
{
    Error *err = errp ? *errp : NULL;
    g_autofree char *prefix = NULL;
    va_list ap;

    if (!err) {
        return;
    }
    va_start(ap, fmt);
    prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *msg = g_strconcat(prefix, err->msg, NULL);
    g_free(err->msg);
    err->msg = msg;
}

void error_append_hint(Error **errp, const char *fmt, ...)
{
    Error *err = errp ? *errp : NULL;
    va_list ap;

    if (!err) {
        return;
    }
    if (!err->hint) {
        err->hint = g_string_new(NULL);
    }
    va_start(ap, fmt);
    g_string_append_vprintf(err->hint, fmt, ap);
    va_end(ap);
}

void error_propagate(Error **dst_errp, Error *local_err)
{
    if (local_err) {
        error_handle(dst_errp, local_err);
    }
}

const char *error_get_pretty(const Error *err)
{
    return err->msg;
}

const char *error_get_hint(const Error *err)
{
    return err->hint ? err->hint->str : NULL;
}

ErrorClass error_get_class(const Error *err)
{
    return err->err_class;
}

void error_free(Error *err)
{
    if (err) {
        g_free(err->msg);
        if (err->hint) {
            g_string_free(err->hint, TRUE);
        }
        g_free(err);
    }
}

void error_guard_propagate(ErrorGuard *guard)
{
    if (guard->errp && guard->local) {
        error_propagate(guard->errp, guard->local);
        guard->local = NULL;
    } else {
        error_free(guard->local);
    }
}

static void report_vprintf(const char *prefix, const char *fmt, va_list ap)
{
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void error_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    report_vprintf("blockd: ", fmt, ap);
    va_end(ap);
}

void warn_report(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    report_vprintf("blockd: warning: ", fmt, ap);
    va_end(ap);
}

void error_report_err(Error *err)
{
    error_print("blockd: ", err);
    error_free(err);
}
