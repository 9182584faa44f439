/*
 * jmirror/mirror.h - the SQLite mirror: opening, the writer lock, ingest,
 * replay, rebuild and verify.
 *
 * The mirror is a pure function of the journal files.  It is never patched:
 * a conversation whose rows disagree with its file is wiped and replayed.
 * Every write to the mirror happens under one exclusive writer lock (a lock
 * file beside the database); the daemon holds it for its lifetime.
 */
#ifndef JMIRROR_MIRROR_H
#define JMIRROR_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jm_mirror jm_mirror;

/* Progress of long work: done of total (bytes, or files when total is 0),
 * called from the thread doing the work. */
typedef void (*jm_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct jm_mirror_options {
  const char *db_path; /* NULL: $JMIRROR_MIRROR, else <root>/mirror/mirror.db */
  int read_only;       /* queries only: never creates, migrates or writes */
  size_t max_line;     /* 0 = JM_MAX_LINE_DEFAULT */
  int allow_newer;     /* a mirror made by a newer jmirror opens unmigrated,
                        * only to be rebuilt (jm_mirror_rebuild replaces it
                        * whole); anything else on it is refused */
  int recreate_damaged; /* a file SQLite cannot read as a database (say a
                         * damaged first page) is renamed "<db>.damaged" and
                         * the mirror created anew, empty, under the writer
                         * lock: jm_mirror_recreated() says so.
                         * For whoever rebuilds or owns the mirror. */
} jm_mirror_options;

/*
 * Open (creating and migrating unless read_only) the mirror of `root`.
 * *out is owned by the caller: jm_mirror_close() it.
 * JM_ESCHEMA if the database was made by a newer jmirror.
 */
int jm_mirror_open(jm_mirror **out, const char *root,
                   const jm_mirror_options *opt, jm_error *err);
void jm_mirror_close(jm_mirror *m);

const char *jm_mirror_db_path(const jm_mirror *m);
/*
 * The database file deleted or replaced under an open mirror (or its -wal
 * deleted while open): the connection would go on writing to a file nobody
 * else sees.  Close it and open what is at the path now (creating it, as
 * jm_mirror_open() would; the writer lock, if held, stays held).  1 if it
 * did, 0 if nothing had changed, < 0 on error (the mirror then has no
 * connection: close it).  For a long-lived owner such as jmirrord.
 */
int jm_mirror_reopen_if_replaced(jm_mirror *m, jm_error *err);

/* Did jm_mirror_open() set a damaged database aside and start anew? */
int jm_mirror_recreated(const jm_mirror *m);
const char *jm_mirror_root(const jm_mirror *m);
/* Path of a file beside the database: "<db>.lock", "<db>.sock", ... */
char *jm_mirror_sibling(const char *db_path, const char *suffix);
/* Is the mirror's directory marked for backup tools?  cachedir_tag: a
 * valid CACHEDIR.TAG beside the database; tm_excluded: the Time Machine
 * exclusion attribute is set (macOS; -1 elsewhere). */
void jm_mirror_exclusion(const char *db_path, int *cachedir_tag,
                         int *tm_excluded);

/* Resolve the database path for root/opt without opening (malloc'd). */
char *jm_mirror_resolve_path(const char *root, const jm_mirror_options *opt);

/*
 * The writer lock.  wait_ms: 0 fails at once, -1 waits forever.  `who`
 * names the holder in the lock file ("jmirrord", "jmirror replay") so that
 * the next one can say who has it.  JM_ELOCKED names the holder's pid.
 */
int jm_mirror_lock(jm_mirror *m, int wait_ms, const char *who, jm_error *err);
void jm_mirror_unlock(jm_mirror *m);
int jm_mirror_locked(const jm_mirror *m);
/* Read who holds the lock of the mirror at db_path: 1 held (pid, who
 * filled), 0 free, <0 error. */
int jm_mirror_lock_holder(const char *db_path, long *pid, char who[64]);

/*
 * Ask long work on `m` (ingest, replay, rebuild, verify) to stop soon: the
 * current transaction is rolled back and the call returns JM_ECANCELED.
 * Safe from another thread.  Once called, later calls on m also cancel:
 * meant for shutting down.
 */
void jm_mirror_interrupt(jm_mirror *m);

/* ------------------------------------------------------------------ */
/* Ingest.                                                              */

typedef struct jm_ingest_limits {
  uint64_t max_bytes;  /* per transaction; 0 = no limit */
  uint64_t max_events; /* per transaction; 0 = no limit */
} jm_ingest_limits;

typedef struct jm_ingest_result {
  uint64_t lines;     /* physical lines consumed by this call */
  uint64_t events;    /* valid lines folded */
  uint64_t bad_lines; /* bad lines recorded */
  uint64_t bytes;     /* bytes consumed */
  uint64_t offset;    /* committed offset afterwards (just past an LF) */
  uint64_t file_size; /* size of the file when it was read */
  int unchanged;      /* stat showed nothing new: nothing was read */
  int replayed;       /* drift: rows were wiped and the file replayed */
  int removed;        /* the file is gone: its rows were removed */
  int more;           /* a limit stopped it; call again to go on */
  char why[160];      /* replayed: what drift was seen */
} jm_ingest_result;

/*
 * Bring one conversation up to date with its file: from the stored offset
 * to the last LF, rows + offset + line count + bad lines committed in one
 * transaction per slice (a slice ends at a limit or at the file's end).
 * Before trusting the stored offset the file is checked for drift (smaller
 * than the offset, different first line, different bytes before the
 * offset); drift means the conversation is wiped and replayed.
 * Needs the writer lock.  `lim` and `res` may be NULL.
 */
int jm_mirror_ingest(jm_mirror *m, const char *conv_id,
                     const jm_ingest_limits *lim, jm_ingest_result *res,
                     jm_error *err);

/*
 * Wipe one conversation's rows and replay its file from the start, in one
 * transaction (parsing on `threads` threads; 0 = one per core).  A missing
 * file removes the rows.  Needs the writer lock.
 */
int jm_mirror_replay(jm_mirror *m, const char *conv_id, int threads,
                     jm_ingest_result *res, jm_error *err);

typedef struct jm_catchup_stats {
  uint64_t files;         /* valid-named files seen */
  uint64_t unchanged;     /* skipped after a stat */
  uint64_t ingested;      /* read because they changed */
  uint64_t replayed;      /* found drifted and replayed */
  uint64_t removed;       /* conversations whose file is gone */
  uint64_t ignored_files; /* other names in journal/ */
  uint64_t events, bad_lines, bytes;
  double seconds;
} jm_catchup_stats;

/*
 * Bring conversations up to date: ingest the files whose stat changed since
 * the mirror last read them (unchanged files cost one stat), remove
 * conversations whose file is gone.  ids/n_ids: just these (n_ids 0: every
 * file and every conversation the mirror has).  -ENOENT if journal/ is
 * missing (then nothing is removed).  Needs the writer lock.
 * progress(ctx, files done, 0).
 */
int jm_mirror_catch_up(jm_mirror *m, const char *const *ids, size_t n_ids,
                       const jm_ingest_limits *lim, jm_progress_fn progress,
                       void *progress_ctx, jm_catchup_stats *st,
                       jm_error *err);

/* One journal file as the reconcile scan saw it. */
typedef struct jm_file_status {
  const char *id;  /* valid during the callback */
  uint64_t size;   /* lstat size now */
  uint64_t offset; /* bytes the mirror has ingested (0 if never) */
  int changed;     /* stat differs from what the mirror recorded */
} jm_file_status;

/*
 * The listing half of catch-up: call on_file for every valid-named file
 * (nothing is read: a stat compared with the recorded one says whether it
 * changed), and remove conversations whose file is gone (on_removed may be
 * NULL).  -ENOENT if journal/ is missing (nothing removed then).
 * Needs the writer lock.
 */
int jm_mirror_changed(jm_mirror *m,
                      int (*on_file)(void *ctx, const jm_file_status *f),
                      void (*on_removed)(void *ctx, const char *id),
                      void *ctx, jm_catchup_stats *st, jm_error *err);

/* Remove the rows of a conversation whose file is gone. Needs the lock.
 * JM_EID for an invalid id (nothing touched). */
int jm_mirror_forget(jm_mirror *m, const char *conv_id, jm_error *err);

/* ------------------------------------------------------------------ */
/* The search index, built incrementally.                               */

typedef struct jm_search_progress {
  int64_t upto;      /* messages with rowid <= upto are indexed */
  int64_t max_rowid; /* the largest rowid in messages */
  int done;          /* the index covers every message */
} jm_search_progress;

/*
 * Index the next max_rows messages not yet in the full-text index (0 =
 * 2000), in one transaction.  p->done when nothing is left.  Search is
 * complete before that too (unindexed rows are scanned), only slower.
 * Needs the writer lock.
 */
int jm_mirror_index_step(jm_mirror *m, size_t max_rows, jm_search_progress *p,
                         jm_error *err);

/*
 * Before a large ingest: stop indexing new messages one by one as they
 * arrive (the triggers would tokenise each in the ingest's transaction);
 * they are indexed in bulk afterwards by jm_mirror_index_step().  Returns 1
 * if indexing was deferred, 0 if it already was.  Needs the writer lock.
 */
int jm_mirror_index_defer(jm_mirror *m, jm_error *err);

/* ------------------------------------------------------------------ */
/* Rebuild everything.                                                  */

typedef struct jm_rebuild_stats {
  uint64_t conversations; /* files with a valid name */
  uint64_t ignored_files; /* files in journal/ with another name */
  uint64_t events;        /* valid lines */
  uint64_t bad_lines;
  uint64_t bytes;         /* journal bytes read */
  double seconds;         /* wall time, all of it */
  double rows_seconds;    /* of which: scanning, parsing, folding, rows */
  double rows_cpu_seconds; /* CPU time of the process (all threads) then */
  double swap_seconds;    /* of which: copying it into the live mirror */
} jm_rebuild_stats;


/*
 * Rebuild the whole mirror from journal/ into a fresh database file, then
 * copy it into the live mirror in one step (SQLite's online backup), so
 * readers see the old mirror or the new one, never a half-built one.  The
 * full-text index starts empty (search scans meanwhile): build it with
 * jm_mirror_index_step().  Needs the writer lock on `m`.
 * threads 0 = one per core.
 */
int jm_mirror_rebuild(jm_mirror *m, int threads, jm_progress_fn progress,
                      void *progress_ctx, jm_rebuild_stats *stats,
                      jm_error *err);

/* ------------------------------------------------------------------ */
/* Verify.                                                              */

typedef enum jm_verify_state {
  JM_VERIFY_OK = 0,     /* rows equal; ingested up to the last LF */
  JM_VERIFY_BEHIND = 1, /* rows equal so far; more complete lines follow */
  JM_VERIFY_DRIFT = 2,  /* rows, offsets or the file disagree */
} jm_verify_state;

typedef struct jm_verify_item {
  const char *id;          /* conversation id (valid during the callback) */
  jm_verify_state state;
  uint64_t missing;        /* messages the file has and the mirror lacks */
  uint64_t extra;          /* messages the mirror has and the file does not */
  uint64_t changed;        /* messages in both whose columns differ */
  int file_missing;        /* rows remain for a file that is gone */
  int not_ingested;        /* a file the mirror has never seen */
  uint64_t mirror_offset;  /* bytes the mirror says it ingested */
  uint64_t file_offset;    /* just past the file's last LF */
  char detail[512];        /* what differs, one line ("" when ok) */
} jm_verify_item;

typedef struct jm_verify_summary {
  uint64_t checked, ok, behind, drift;
} jm_verify_summary;

/* Called once per conversation; non-zero stops the run. */
typedef int (*jm_verify_fn)(void *ctx, const jm_verify_item *item);

/*
 * Fold each file again, independently of the mirror, and compare every row
 * and column with the mirror, within one read snapshot.  ids/n_ids: the
 * conversations to check (n_ids 0 = every file plus every conversation the
 * mirror has).  Never writes.  Returns 0 when the check ran (whatever it
 * found: see *sum), or an error.
 */
int jm_mirror_verify(jm_mirror *m, const char *const *ids, size_t n_ids,
                     int threads, jm_verify_fn fn, void *fn_ctx,
                     jm_progress_fn progress, void *progress_ctx,
                     jm_verify_summary *sum, jm_error *err);

/* PRAGMA quick_check: 1 ok, 0 corrupt, -1 the check could not run (the
 * database is unreadable: permissions, I/O); detail says why. */
int jm_mirror_check_integrity(jm_mirror *m, char *detail, size_t cap);

/* ------------------------------------------------------------------ */
/* Bad lines.                                                           */

typedef struct jm_bad_line {
  const char *conversation_id; /* valid until the next jm_bad_line_next */
  uint64_t line;               /* physical line number, from 1 */
  uint64_t offset;             /* byte offset of the line's first byte */
  const char *reason;          /* "invalid_json", ... */
  const char *message;
} jm_bad_line;

typedef struct jm_bad_line_iter jm_bad_line_iter;

/* Iterate the recorded bad lines (id NULL: all; an invalid id: JM_EID,
 * *out NULL).  Free with jm_bad_line_iter_free() before closing the
 * mirror. */
int jm_mirror_bad_lines(jm_mirror *m, const char *id, jm_bad_line_iter **out,
                        jm_error *err);
/* 1: *out filled; 0: no more; <0: error. */
int jm_bad_line_next(jm_bad_line_iter *it, jm_bad_line *out);
void jm_bad_line_iter_free(jm_bad_line_iter *it);

/* ------------------------------------------------------------------ */
/* Status without a daemon.                                             */

typedef struct jm_mirror_status {
  uint64_t conversations;          /* rows in conversations */
  uint64_t deleted_conversations;  /* of which deleted_at is set */
  uint64_t messages;               /* messages present */
  uint64_t bad_lines;              /* recorded bad lines */
  uint64_t files;                  /* valid-named files in journal/ */
  uint64_t ignored_files;          /* other names in journal/ */
  uint64_t bytes_behind;           /* file bytes not yet ingested */
  int journal_missing;             /* journal/ does not exist */
  int schema_version;
} jm_mirror_status;

/* Read a status summary from the mirror and journal/ (stats every file). */
int jm_mirror_status_read(jm_mirror *m, jm_mirror_status *out,
                          jm_error *err);

/* ------------------------------------------------------------------ */
/* Listing the journal.                                                 */

/* Calls fn for every valid-named file in journal/ (sorted by id); counts
 * the others in *ignored.  fn returning non-zero stops the walk. */
int jm_journal_scan(const char *root,
                    int (*fn)(void *ctx, const char *conv_id), void *ctx,
                    uint64_t *ignored, jm_error *err);

#ifdef __cplusplus
}
#endif
#endif
