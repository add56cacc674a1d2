/*
 * The shutdown request flag, and QMP quit, which sets it.
 */
#include "util/shutdown.h"
#include "qapi/qapi-commands.h"

static bool requested;

void shutdown_request(void)
{
    requested = true;
    /* The loop may be asleep in poll(); make it look at the flag. */
    g_main_context_wakeup(NULL);
}

bool shutdown_requested(void)
{
    return requested;
}

void qmp_quit(Error **errp)
{
    shutdown_request();
}
