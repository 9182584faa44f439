/*
 * jmirror/jmirror.h - everything the library offers, in one include.
 *
 *   error.h    the error convention (0 / -errno / JM_E*, jm_error)
 *   reader.h   events, validation, the incremental line reader, ids, times
 *   journal.h  the writer: appending events with chosen durability
 *   mirror.h   the SQLite mirror: ingest, replay, rebuild, verify
 *   daemon.h   jmirrord and the client of its control socket
 *   store.h    conversations and messages for applications: CRUD, ls,
 *              show, search, healed and read-your-writes
 *   backup.h   consistent incremental backups and their check
 */
#ifndef JMIRROR_JMIRROR_H
#define JMIRROR_JMIRROR_H

#define JM_VERSION_STRING "0.1.0"

#include "backup.h"
#include "daemon.h"
#include "error.h"
#include "journal.h"
#include "mirror.h"
#include "reader.h"
#include "store.h"

#endif
