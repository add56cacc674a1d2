/*
 * blockdev-backup and drive-backup (block/monitor/backup-qmp.c,
 * drive-backup.c), for their transaction actions (transaction.c).
 */
#ifndef BLOCK_BACKUP_QMP_H
#define BLOCK_BACKUP_QMP_H

#include "block/blockjob.h"
#include "qapi/qapi-types.h"

/*
 * The prepare step of the transaction actions: check the arguments
 * (QEMU's order and messages) and create the job, joined to @txn
 * (NULL: a transaction of its own).  The caller starts it.
 */
BlockJob *coroutine_fn blockdev_backup_prepare(BlockdevBackup *args,
                                               JobTxn *txn, Error **errp);
BlockJob *coroutine_fn drive_backup_prepare(DriveBackup *args, JobTxn *txn,
                                            Error **errp);

/* What both share once the source and target nodes are known. */
BlockJob *backup_prepare_common(BackupCommon *args, BlockDriverState *bs,
                                BlockDriverState *target, JobTxn *txn,
                                Error **errp);

/* A command is a transaction of its one action, as in QEMU. */
void coroutine_fn backup_run_transaction(TransactionAction *action,
                                         Error **errp);

#endif /* BLOCK_BACKUP_QMP_H */
