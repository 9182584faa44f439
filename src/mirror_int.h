/*
 * mirror_int.h - the mirror handle and its prepared statements, shared by
 * mirror.c (open/lock), ingest.c (fold -> rows), rebuild.c and verify.c.
 */
#ifndef JMIRROR_MIRROR_INT_H
#define JMIRROR_MIRROR_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "fold.h"
#include "internal.h"
#include "jmirror/journal.h"
#include "jmirror/mirror.h"

/* Every statement the write path uses, prepared once per connection. */
typedef enum jm__stmt_id {
  JM__S_CONV_GET,
  JM__S_CONV_PUT,
  JM__S_CONV_DEL,
  JM__S_SRC_GET,
  JM__S_SRC_PUT,
  JM__S_MSG_GET,
  JM__S_MSG_INS,
  JM__S_MSG_UPD,
  JM__S_MSG_DEL,
  JM__S_BAD_PUT,
  JM__S_MSG_BY_SEQ,
  JM__S_BAD_DEL,
  JM__S_MSG_ROWID,
  JM__S_MSG_SAME,
  JM__S_COUNT
} jm__stmt_id;

struct jm_mirror {
  char *root;         /* journal root (owned) */
  char *journal_dir;  /* <root>/journal (owned) */
  char *db_path;      /* the database file (owned) */
  char *lock_path;    /* <db>.lock (owned) */
  sqlite3 *db;
  int read_only;
  size_t max_line;
  int lock_fd;        /* open while the writer lock is held, else -1 */
  sqlite3_stmt *stmt[JM__S_COUNT]; /* lazily prepared */
  atomic_int cancel;  /* jm_mirror_interrupt() was called */
  int newer;          /* opened with allow_newer on a newer schema */
  int recreated;      /* a damaged database was set aside at open */
  int recreate_damaged; /* as opened (jm_mirror_options) */
  dev_t db_dev;       /* the database file this connection opened */
  ino_t db_ino;
  ino_t wal_ino;      /* its -wal as opened (0: none then) */
  size_t built_max_line; /* != 0: the mirror was folded with this maximum,
                          * not max_line: only a rebuild may write */
  pthread_mutex_t aux_mu; /* guards aux_db against interrupt vs close */
  sqlite3 *aux_db;    /* a scratch database being written (rebuild) */
};

/* mirror.c: settings.max_line = max_line. */
int jm__record_max_line(sqlite3 *db, size_t max_line);

/* Has jm_mirror_interrupt() been called? */
static inline int jm__canceled(jm_mirror *m) {
  return atomic_load(&m->cancel) != 0;
}
void jm__set_aux(jm_mirror *m, sqlite3 *db);

/* Remove the rebuild's scratch database ("<db>.rebuild" and its
 * -journal): left by a rebuild that was killed.  Only the writer lock's
 * holder builds one, so its holder may remove what is there. */
void jm__remove_scratch(const char *db_path);

/* The source row of a conversation: how far its file was ingested. */
typedef struct jm__source {
  int found;                 /* a row exists */
  uint64_t offset, lines, size;
  int64_t dev, ino, mtime_ns;
  unsigned char head[32], tail[32];
  int has_head, has_tail;
} jm__source;

/* mirror.c */
sqlite3_stmt *jm__stmt(jm_mirror *m, jm__stmt_id id, jm_error *err);
int jm__sql_err(jm_mirror *m, jm_error *err, const char *what);
int jm__exec(jm_mirror *m, const char *sql, jm_error *err);
/* Open a connection with the mirror's PRAGMAs. */
int jm__db_open(const char *path, int flags, sqlite3 **out, jm_error *err);
void jm__finalize_all(jm_mirror *m);

/* ingest.c: the shared write path */
int jm__source_get(jm_mirror *m, const char *id, jm__source *src,
                   jm_error *err);
int jm__conv_load(jm_mirror *m, const char *id, jm__conv *c, int *found,
                  jm_error *err);
/* Rows a diff-replay has written or found equal (a set of rowids). */
typedef struct jm__kept {
  int64_t *slots; /* open addressing, 0 = empty (rowids start at 1) */
  size_t cap, n;
} jm__kept;

typedef struct jm__writer {
  jm_mirror *m;
  const char *id;
  jm_error *err;
  jm__kept *kept; /* non-NULL: replay as a diff (ingest.c) */
} jm__writer;

/* Writes the conversation row, flushes the fold, writes the source row. */
typedef struct jm__file_state {
  uint64_t offset, lines, size;
  int64_t dev, ino, mtime_ns;
} jm__file_state;
/* size, device, inode and mtime (ns) of a stat; offset/lines untouched */
struct stat;
void jm__file_state_of(const struct stat *st, jm__file_state *fs);
int jm__commit_conversation(jm__writer *w, jm__fold *f, int fd,
                            const jm__file_state *fs);
/* Diff-replay: start (drop bad lines, keep messages), and free the set. */
int jm__diff_begin(jm__writer *w, jm__kept *kept);
void jm__kept_free(jm__kept *k);

int jm__flush(jm__writer *w, jm__fold *f);
int jm__load_msg(void *ctx, jm__msg *msg);
int jm__wipe(jm_mirror *m, const char *id, jm_error *err);

/* catchup.c: ingest one conversation to its end, slice by slice. */
int jm__catch_up_one(jm_mirror *m, const char *id,
                     const jm_ingest_limits *lim, jm_catchup_stats *st,
                     jm_error *err);

/* catchup.c: fn for every conversation whose file changed, is new, or is
 * gone (read-only, no lock). */
int jm__mirror_stale(jm_mirror *m, int (*fn)(void *ctx, const char *id),
                     void *ctx, jm_error *err);

/* ingest.c: wipe a conversation whose file is gone; *removed says
 * whether it had a row. */
int jm__forget(jm_mirror *m, const char *id, int *removed, jm_error *err);
/* ingest.c: 0, or why rows may not be folded into m (newer schema,
 * another maximum line length): only a rebuild may write then. */
int jm__writable(jm_mirror *m, jm_error *err);
/* ingest.c: does journal/ exist? */
int jm__journal_dir_present(jm_mirror *m);
/* ingest.c: 1 if the mirror has read id's file as it is now. */
int jm__mirror_current(jm_mirror *m, const char *id, jm_error *err);

/* A backlog larger than this is ingested with the search index deferred. */
#define JM__DEFER_INDEX_BYTES ((uint64_t)16 << 20)

/* searchindex.c: rows with rowid <= *upto are in the full-text index. */
int jm__search_upto(jm_mirror *m, int64_t *upto);

/* Hashes of a file's first line and of the bytes before an offset. */
int jm__hash_head(int fd, uint64_t offset, unsigned char out[32]);
int jm__hash_tail(int fd, uint64_t offset, unsigned char out[32]);

#endif
