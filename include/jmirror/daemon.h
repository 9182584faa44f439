/*
 * jmirror/daemon.h - jmirrord, the indexer daemon, and its control socket.
 *
 * The daemon keeps the mirror up to date within milliseconds of an append:
 * one watch on journal/, events taken as hints, ingest in bounded slices on
 * a worker thread, and a Unix socket beside the database (<db>.sock, mode
 * 0600) that speaks line-delimited JSON (docs/daemon.md has the protocol).
 * The client functions below are what the jmirror tool and the store use to
 * talk to it.
 */
#ifndef JMIRROR_DAEMON_H
#define JMIRROR_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { JM_LOG_ERROR = 0, JM_LOG_WARN = 1, JM_LOG_INFO = 2, JM_LOG_DEBUG = 3 };

typedef struct jm_daemon_options {
  const char *root;        /* journal root (required) */
  const char *db_path;     /* NULL: $JMIRROR_MIRROR or <root>/mirror/mirror.db */
  int log_level;           /* JM_LOG_*; default (0-initialised) errors only */
  unsigned reconcile_s;    /* full reconcile period; 0 = 600, minimum 600 */
  size_t max_line;         /* 0 = default */
} jm_daemon_options;

/*
 * Run the daemon in the foreground until SIGTERM/SIGINT (returns 0) or a
 * fatal error.  JM_ELOCKED if another process holds the mirror's writer
 * lock (err names its pid).
 */
int jm_daemon_run(const jm_daemon_options *opt, jm_error *err);

/* ------------------------------------------------------------------ */
/* Client side.                                                         */

typedef struct jm_client jm_client;

/*
 * Connect to the daemon serving the mirror at db_path.  JM_ENODAEMON when
 * nothing listens there (no socket, or a stale one).
 */
int jm_client_connect(const char *db_path, int timeout_ms, jm_client **out,
                      jm_error *err);
void jm_client_close(jm_client *c);

/*
 * Send one request (a JSON object, without newline) and read one response
 * line.  *response is malloc'd (caller frees).  timeout_ms < 0: no limit.
 */
int jm_client_request(jm_client *c, const char *request, char **response,
                      int timeout_ms, jm_error *err);

/*
 * Wait until the daemon has ingested conversation `id` up to byte `offset`
 * (a jm_append_info.end), at most timeout_ms.  0 when it has; JM_ETIMEDOUT;
 * JM_ENODAEMON when no daemon runs.
 */
int jm_daemon_wait(const char *db_path, const char *id, uint64_t offset,
                   int timeout_ms, jm_error *err);

#ifdef __cplusplus
}
#endif
#endif
