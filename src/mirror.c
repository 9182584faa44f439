/*
 * mirror.c - opening the mirror, its directory, PRAGMAs and writer lock.
 *
 * Layout (docs/mirror.md): <root>/mirror/mirror.db (+ -wal, -shm) unless
 * --mirror / $JMIRROR_MIRROR says otherwise.  Beside the database:
 *   <db>.lock   the writer lock: flock(LOCK_EX) held by whoever writes the
 *               mirror (the daemon for its lifetime); holds "pid who" so a
 *               refused writer can say who has it.
 *   <db>.sock   the daemon's control socket (daemon.c).
 * The default mirror/ directory also carries CACHEDIR.TAG and, on macOS,
 * the Time Machine exclusion attribute: it is derived data, rebuilt from
 * journal/ on demand, and a live database copied file by file is corrupt.
 *
 * PRAGMAs: WAL (readers never block the writer), synchronous=NORMAL (a
 * crash may lose the last commits, never corrupt; the journal is the truth
 * and re-ingest recovers them), foreign keys on (wiping a conversation
 * cascades), a busy timeout, and checkpoint_fullfsync on macOS.
 */
#include "mirror_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __APPLE__
#include <sys/xattr.h>
#endif

#include "migrate.h"

/* Statements ---------------------------------------------------------------- */

static const char *const stmt_sql[JM__S_COUNT] = {
  [JM__S_CONV_GET] =
    "SELECT title, brain, meta, created_at, updated_at, deleted_at,"
    " message_count, bad_lines, unknown_events"
    " FROM conversations WHERE id = ?1",
  [JM__S_CONV_PUT] =
    "INSERT INTO conversations (id, title, brain, meta, created_at,"
    " updated_at, deleted_at, message_count, bad_lines, unknown_events)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    " ON CONFLICT (id) DO UPDATE SET title = excluded.title,"
    " brain = excluded.brain, meta = excluded.meta,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " deleted_at = excluded.deleted_at,"
    " message_count = excluded.message_count,"
    " bad_lines = excluded.bad_lines, unknown_events = excluded.unknown_events",
  [JM__S_CONV_DEL] = "DELETE FROM conversations WHERE id = ?1",
  [JM__S_SRC_GET] =
    "SELECT byte_offset, lines, file_size, file_dev, file_ino,"
    " file_mtime_ns, head_hash, tail_hash"
    " FROM sources WHERE conversation_id = ?1",
  [JM__S_SRC_PUT] =
    "INSERT INTO sources (conversation_id, byte_offset, lines, file_size,"
    " file_dev, file_ino, file_mtime_ns, head_hash, tail_hash, ingested_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
    " strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    " ON CONFLICT (conversation_id) DO UPDATE SET"
    " byte_offset = excluded.byte_offset, lines = excluded.lines,"
    " file_size = excluded.file_size, file_dev = excluded.file_dev,"
    " file_ino = excluded.file_ino, file_mtime_ns = excluded.file_mtime_ns,"
    " head_hash = excluded.head_hash, tail_hash = excluded.tail_hash,"
    " ingested_at = excluded.ingested_at",
  [JM__S_MSG_GET] =
    "SELECT rowid, seq, role, content, parent_id, brain, reasoning_level,"
    " thinking, meta, status, stop_reason, usage, created_at, updated_at,"
    " edited_at FROM messages WHERE conversation_id = ?1 AND id = ?2",
  [JM__S_MSG_INS] =
    "INSERT INTO messages (conversation_id, id, seq, role, content,"
    " parent_id, brain, reasoning_level, thinking, meta, status,"
    " stop_reason, usage, created_at, updated_at, edited_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16)",
  [JM__S_MSG_UPD] =
    "UPDATE messages SET seq = ?3, role = ?4, content = ?5, parent_id = ?6,"
    " brain = ?7, reasoning_level = ?8, thinking = ?9, meta = ?10,"
    " status = ?11, stop_reason = ?12, usage = ?13, created_at = ?14,"
    " updated_at = ?15, edited_at = ?16"
    " WHERE rowid = ?17 AND conversation_id = ?1 AND id = ?2",
  [JM__S_MSG_DEL] = "DELETE FROM messages WHERE rowid = ?1",
  [JM__S_BAD_PUT] = ("INSERT OR REPLACE INTO bad_lines (conversation_id,"
                     " line, byte_offset, reason, message)"
                     " VALUES (?1, ?2, ?3, ?4, ?5)"),
  [JM__S_MSG_BY_SEQ] = ("SELECT rowid FROM messages"
                        " WHERE conversation_id = ?1 AND seq = ?2"),
  [JM__S_BAD_DEL] = "DELETE FROM bad_lines WHERE conversation_id = ?1",
  [JM__S_MSG_ROWID] = ("SELECT rowid FROM messages"
                       " WHERE conversation_id = ?1 AND id = ?2"),
  /* Exactly these values, stored as these types (diff-replay). */
  [JM__S_MSG_SAME] =
    ("SELECT 1 FROM messages WHERE rowid = ?17 AND conversation_id IS ?1"
     " AND id IS ?2 AND seq IS ?3 AND role IS ?4 AND content IS ?5"
     " AND parent_id IS ?6 AND brain IS ?7 AND reasoning_level IS ?8"
     " AND thinking IS ?9 AND meta IS ?10 AND status IS ?11"
     " AND stop_reason IS ?12 AND usage IS ?13 AND created_at IS ?14"
     " AND updated_at IS ?15 AND edited_at IS ?16"),
};

int jm__sql_err(jm_mirror *m, jm_error *err, const char *what) {
  int ec = sqlite3_extended_errcode(m->db);
  if ((ec & 0xff) == SQLITE_INTERRUPT)
    return jm__errf(err, JM_ECANCELED, "mirror '%s': %s: interrupted",
                    m->db_path, what);
  /* A disk error met inside another step (a page spilled while a virtual
   * table was being opened) keeps its code but not its words: add them. */
  const char *msg = sqlite3_errmsg(m->db);
  const char *cause = "";
  if (((ec & 0xff) == SQLITE_FULL || (ec & 0xff) == SQLITE_IOERR) &&
      strstr(msg, sqlite3_errstr(ec)) == NULL)
    cause = sqlite3_errstr(ec);
  return jm__errf(err, (ec & 0xff) == SQLITE_FULL ? -ENOSPC : JM_ESQLITE,
                  "mirror '%s': %s: %s%s%s%s", m->db_path, what, msg,
                  cause[0] ? " (" : "", cause, cause[0] ? ")" : "");
}

sqlite3_stmt *jm__stmt(jm_mirror *m, jm__stmt_id id, jm_error *err) {
  if (m->stmt[id] == NULL &&
      sqlite3_prepare_v3(m->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                         &m->stmt[id], NULL) != SQLITE_OK) {
    jm__sql_err(m, err, "cannot prepare statement");
    return NULL;
  }
  sqlite3_reset(m->stmt[id]);
  sqlite3_clear_bindings(m->stmt[id]);
  return m->stmt[id];
}

void jm__finalize_all(jm_mirror *m) {
  for (int i = 0; i < JM__S_COUNT; i++) {
    sqlite3_finalize(m->stmt[i]);
    m->stmt[i] = NULL;
  }
}

int jm__exec(jm_mirror *m, const char *sql, jm_error *err) {
  if (sqlite3_exec(m->db, sql, NULL, NULL, NULL) == SQLITE_OK)
    return 0;
  return jm__sql_err(m, err, sql);
}

/* Paths ------------------------------------------------------------------------ */

char *jm_mirror_sibling(const char *db_path, const char *suffix) {
  return jm__asprintf("%s%s", db_path, suffix);
}

char *jm_mirror_resolve_path(const char *root, const jm_mirror_options *opt) {
  if (opt && opt->db_path && opt->db_path[0])
    return jm__strdup(opt->db_path);
  const char *env = getenv("JMIRROR_MIRROR");
  if (env && env[0])
    return jm__strdup(env);
  return jm__path_join(root, "mirror/mirror.db");
}

const char *jm_mirror_db_path(const jm_mirror *m) { return m->db_path; }
const char *jm_mirror_root(const jm_mirror *m) { return m->root; }
int jm_mirror_recreated(const jm_mirror *m) { return m->recreated; }

/* The mirror directory ---------------------------------------------------------- */

static const char cachedir_tag_text[] =
  "Signature: 8a477f597d28d172789f06886806bc55\n"
  "# This file is a cache directory tag created by jmirror.\n"
  "# Everything here is derived from ../journal and is rebuilt with\n"
  "# 'jmirror replay --all'.  See https://bford.info/cachedir/\n";

/* Does the file `tag` start with the CACHEDIR.TAG signature (43 bytes)?
 * That is all backup tools look at. */
static int tag_signed(const char *tag) {
  char head[43];
  int fd = tag ? jm__open(tag, O_RDONLY, 0) : -1;
  int ok = fd >= 0 && jm__pread_full(fd, head, sizeof head, 0) == 43 &&
           memcmp(head, cachedir_tag_text, sizeof head) == 0;
  if (fd >= 0)
    jm__close(fd);
  return ok;
}

/* Mark the default mirror/ directory as a cache for backup tools. */
int jm__mirror_dir_mark(const char *dir) {
  char *tag = jm__path_join(dir, "CACHEDIR.TAG");
  if (tag == NULL)
    return -ENOMEM;
  /* Missing, or not starting with the signature (emptied, edited, cut
   * short): backup tools would copy the mirror.  Our own directory: the
   * tag is written whole again. */
  int rc = 0;
  if (!tag_signed(tag))
    rc = jm__write_file_atomic(tag, cachedir_tag_text,
                               sizeof cachedir_tag_text - 1, 0600, NULL);
  free(tag);
#ifdef __APPLE__
  /* What `tmutil addexclusion` writes: a sticky exclusion that follows the
   * directory when it is moved or restored.  A failure (a file system
   * without xattrs) is not an error of the open: `jmirror status` reads
   * the attribute back and says whether the mirror is excluded. */
  static const char val[] =
    "bplist00_\x10\x11" "com.apple.backupd\x08\x00\x00\x00\x00\x00\x00\x01\x01"
    "\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x1c";
  setxattr(dir, "com.apple.metadata:com_apple_backup_excludeItem", val,
           sizeof val - 1, 0, 0);
#endif
  return rc;
}

void jm_mirror_exclusion(const char *db_path, int *cachedir_tag,
                         int *tm_excluded) {
  *cachedir_tag = *tm_excluded = 0;
  char *dir = jm__strdup(db_path);
  char *slash = dir ? strrchr(dir, '/') : NULL;
  if (slash == NULL) {
    free(dir);
    return;
  }
  *slash = '\0';
  char *tag = jm__path_join(dir, "CACHEDIR.TAG");
  *cachedir_tag = tag_signed(tag);
  free(tag);
#ifdef __APPLE__
  *tm_excluded = getxattr(dir, "com.apple.metadata:com_apple_backup_excludeItem",
                          NULL, 0, 0, 0) > 0;
#else
  *tm_excluded = -1; /* no Time Machine here */
#endif
  free(dir);
}

static int prepare_dir(jm_mirror *m, jm_error *err) {
  char *dir = jm__strdup(m->db_path);
  if (dir == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  char *slash = strrchr(dir, '/');
  if (slash == NULL) {
    free(dir);
    return 0; /* a bare file name: the current directory exists */
  }
  *slash = '\0';
  int rc = dir[0] ? jm__mkdirs(dir) : 0;
  if (rc != 0) {
    jm__errno_f(err, -rc, "cannot create mirror directory '%s'", dir);
    free(dir);
    return rc;
  }
  char *dflt = jm__path_join(m->root, "mirror");
  if (dflt && strcmp(dflt, dir) == 0)
    jm__mirror_dir_mark(dir); /* only our own directory is a cache */
  free(dflt);
  free(dir);
  return 0;
}

/* Open ---------------------------------------------------------------------------- */

int jm__db_open(const char *path, int flags, sqlite3 **out, jm_error *err) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    int e = jm__errf(err, rc == SQLITE_CANTOPEN ? -ENOENT : JM_ESQLITE,
                     "cannot open mirror '%s': %s", path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return e;
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_extended_result_codes(db, 1);
  *out = db;
  return 0;
}

static int set_pragmas(jm_mirror *m, jm_error *err) {
  int rc = jm__exec(m, "PRAGMA foreign_keys = ON", err);
  if (rc || m->read_only)
    return rc;
  rc = jm__exec(m, "PRAGMA journal_mode = WAL", err);
  if (!rc)
    rc = jm__exec(m, "PRAGMA synchronous = NORMAL", err);
#ifdef __APPLE__
  if (!rc)
    rc = jm__exec(m, "PRAGMA checkpoint_fullfsync = ON", err);
#endif
  return rc;
}

/* The fold depends on the maximum line length: record it on first use, and
 * notice when the mirror was built with another one (then only a rebuild,
 * which records the new one, may write). */
int jm__record_max_line(sqlite3 *db, size_t max_line) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "INSERT OR REPLACE INTO settings (key, value) VALUES "
                         "('max_line', ?1)",
                         -1, &st, NULL) != SQLITE_OK)
    return JM_ESQLITE;
  sqlite3_bind_int64(st, 1, (sqlite3_int64)max_line);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : JM_ESQLITE;
  sqlite3_finalize(st);
  return rc;
}

static void check_max_line(jm_mirror *m) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(m->db,
                         "SELECT CAST(value AS INTEGER) FROM settings WHERE "
                         "key = 'max_line'",
                         -1, &st, NULL) != SQLITE_OK)
    return;
  int have = sqlite3_step(st) == SQLITE_ROW;
  size_t built = have ? (size_t)sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  if (!have)
    jm__record_max_line(m->db, m->max_line);
  else if (built != m->max_line)
    m->built_max_line = built;
}

/* Remove the database's -wal and -shm (of a file that is gone or set
 * aside: never meant for the new one). */
static void remove_wal(jm_mirror *m) {
  static const char *const stale[] = {"-wal", "-shm"};
  for (size_t i = 0; i < 2; i++) {
    char *p = jm_mirror_sibling(m->db_path, stale[i]);
    if (p)
      unlink(p);
    free(p);
  }
}

/* Did SQLite find the file is not a database (a damaged header) or is
 * corrupt beyond opening? */
static int damaged(jm_mirror *m) {
  int ec = sqlite3_extended_errcode(m->db) & 0xff;
  return ec == SQLITE_NOTADB || ec == SQLITE_CORRUPT;
}

/* The mirror is derived: one SQLite cannot open is set aside and made anew
 * (empty: the caller replays).  Under the writer lock, so that no other
 * writer is using the file; the damaged file is renamed
 * to "<db>.damaged" (one, replaced each time: never someone's data lost to
 * a wrong --mirror path), its -wal and -shm removed. */
static int recreate(jm_mirror *m, int flags, jm_error *err) {
  char who[] = "jmirror (recreating a damaged mirror)";
  jm_error lerr;
  jm_error_clear(&lerr);
  jm__finalize_all(m);
  sqlite3_close(m->db);
  m->db = NULL;
  int held = m->lock_fd >= 0; /* a reopen by the lock's owner */
  int rc = jm_mirror_lock(m, 2000, who, &lerr);
  if (rc != 0) {
    *err = lerr;
    return rc;
  }
  char *aside = jm_mirror_sibling(m->db_path, ".damaged");
  if (aside == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  if (rename(m->db_path, aside) != 0 && errno != ENOENT) {
    rc = jm__errno_f(err, errno, "cannot move the damaged mirror '%s' aside",
                     m->db_path);
    free(aside);
    return rc;
  }
  free(aside);
  remove_wal(m);
  int fd = jm__open(m->db_path, O_RDWR | O_CREAT, 0600);
  if (fd < 0)
    return jm__errno_f(err, -fd, "cannot create mirror '%s'", m->db_path);
  jm__close(fd);
  jm_error_clear(err);
  if ((rc = jm__db_open(m->db_path, flags, &m->db, err)) != 0)
    return rc;
  m->recreated = 1;
  rc = set_pragmas(m, err);
  if (!held)
    jm_mirror_unlock(m); /* a valid, empty mirror now: the caller locks it */
  return rc;
}

/* The schema part of opening: refuse a newer one (read-only), note it
 * (allow_newer), or migrate up to this binary's. */
static int open_schema(jm_mirror *m, const jm_mirror_options *opt,
                       jm_error *err) {
  int rc;
  if (m->read_only) {
    int have = jm__schema_version(m->db);
    int known = jm__migrations[jm__n_migrations - 1].version;
    if (have > known)
      return jm__errf(err, JM_ESCHEMA,
                      "mirror '%s' has schema version %d but this jmirror "
                      "knows only up to %d: upgrade jmirror, or rebuild the "
                      "mirror with 'jmirror replay --all'",
                      m->db_path, have, known);
  } else if (opt && opt->allow_newer &&
             jm__schema_version(m->db) >
                 jm__migrations[jm__n_migrations - 1].version) {
    m->newer = 1; /* left as it is: only a rebuild may touch it */
  } else if ((rc = jm__migrate(m->db, jm__migrations, jm__n_migrations,
                               m->db_path, err)) != 0)
    return rc;
  else {
    /* an empty mirror's search index is complete: every row to come is
     * kept in step by the triggers */
    sqlite3_exec(m->db,
                 "UPDATE settings SET value = '9223372036854775807' WHERE "
                 "key = 'search_upto' AND value != '9223372036854775807' AND "
                 "NOT EXISTS (SELECT 1 FROM messages)",
                 NULL, NULL, NULL);
    check_max_line(m);
  }
  return 0;
}

/* Open (creating, migrating) the database at m->db_path: the part of
 * jm_mirror_open() that jm_mirror_reopen_if_replaced() runs again. */
static int open_db(jm_mirror *m, const jm_mirror_options *opt,
                   jm_error *err) {
  int rc;
  if (!m->read_only && (rc = prepare_dir(m, err)) != 0)
    return rc;
  struct stat st;
  if (!m->read_only && stat(m->db_path, &st) != 0 && errno == ENOENT) {
    /* A new database must not meet an old -wal: SQLite would apply the
     * stale frames to the empty file. */
    remove_wal(m);
  }
  if (!m->read_only) {
    /* Personal data: 0600.  SQLite gives -wal/-shm the database's mode, so
     * creating the file here first sets it for all three. */
    int fd = jm__open(m->db_path, O_RDWR | O_CREAT, 0600);
    if (fd < 0)
      return jm__errno_f(err, -fd, "cannot create mirror '%s'", m->db_path);
    jm__close(fd);
  }
  int flags = m->read_only ? SQLITE_OPEN_READONLY
                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if ((rc = jm__db_open(m->db_path, flags, &m->db, err)) != 0)
    return rc;
  rc = set_pragmas(m, err);
  if (rc == 0)
    rc = open_schema(m, opt, err);
  if (rc != 0 && opt && opt->recreate_damaged && !m->read_only &&
      (rc == JM_ECORRUPT || damaged(m))) {
    /* page 1 unreadable, or tables the schema check reads */
    jm_error_clear(err);
    if ((rc = recreate(m, flags, err)) == 0)
      rc = open_schema(m, opt, err);
  }
  if (rc != 0)
    return rc;
  if (stat(m->db_path, &st) == 0) { /* which file this is, for later */
    m->db_dev = st.st_dev;
    m->db_ino = st.st_ino;
  }
  char *wal = jm_mirror_sibling(m->db_path, "-wal");
  m->wal_ino = 0; /* the -wal SQLite opened (WAL mode) */
  if (wal && stat(wal, &st) == 0)
    m->wal_ino = st.st_ino;
  free(wal);
  return 0;
}

int jm_mirror_open(jm_mirror **out, const char *root,
                   const jm_mirror_options *opt, jm_error *err) {
  *out = NULL;
  jm_mirror *m = calloc(1, sizeof *m);
  if (m == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  m->lock_fd = -1;
  pthread_mutex_init(&m->aux_mu, NULL);
  m->read_only = opt ? opt->read_only : 0;
  m->max_line = opt && opt->max_line ? opt->max_line : JM_MAX_LINE_DEFAULT;
  m->recreate_damaged = opt ? opt->recreate_damaged : 0;
  m->root = jm__strdup(root);
  m->journal_dir = jm__path_join(root, "journal");
  m->db_path = jm_mirror_resolve_path(root, opt);
  m->lock_path = m->db_path ? jm_mirror_sibling(m->db_path, ".lock") : NULL;
  int rc;
  if (!m->root || !m->journal_dir || !m->db_path || !m->lock_path)
    rc = jm__errf(err, -ENOMEM, "out of memory");
  else
    rc = open_db(m, opt, err);
  if (rc != 0) {
    jm_mirror_close(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* Is the file at db_path still the database this connection has open (the
 * same inode, and its -wal not deleted while we hold it)? */
static int replaced(jm_mirror *m) {
  struct stat st;
  if (stat(m->db_path, &st) != 0 || st.st_dev != m->db_dev ||
      st.st_ino != m->db_ino)
    return 1;
  sqlite3_file *f = NULL; /* the -wal: open while in WAL mode */
  if (sqlite3_file_control(m->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) !=
          SQLITE_OK ||
      f == NULL || f->pMethods == NULL)
    return 0;
  char *wal = jm_mirror_sibling(m->db_path, "-wal");
  if (wal == NULL)
    return 0;
  int r = stat(wal, &st);
  free(wal);
  if (r != 0)
    return errno == ENOENT; /* open here, gone there */
  if (m->wal_ino == 0)      /* first seen since the open */
    m->wal_ino = st.st_ino;
  return st.st_ino != m->wal_ino;
}

int jm_mirror_reopen_if_replaced(jm_mirror *m, jm_error *err) {
  if (m->read_only || m->db == NULL || !replaced(m))
    return 0;
  jm__finalize_all(m);
  sqlite3_close(m->db);
  m->db = NULL;
  jm_mirror_options opt = {.db_path = m->db_path,
                           .read_only = 0,
                           .max_line = m->max_line,
                           .recreate_damaged = m->recreate_damaged};
  m->newer = 0;
  m->built_max_line = 0;
  int rc = open_db(m, &opt, err);
  return rc ? rc : 1;
}

void jm_mirror_close(jm_mirror *m) {
  if (m == NULL)
    return;
  jm__finalize_all(m);
  if (m->db)
    sqlite3_close(m->db);
  jm_mirror_unlock(m);
  pthread_mutex_destroy(&m->aux_mu);
  free(m->root);
  free(m->journal_dir);
  free(m->db_path);
  free(m->lock_path);
  free(m);
}

/* Interrupting long work ----------------------------------------------------------- */

void jm__set_aux(jm_mirror *m, sqlite3 *db) {
  pthread_mutex_lock(&m->aux_mu);
  m->aux_db = db;
  pthread_mutex_unlock(&m->aux_mu);
}

void jm_mirror_interrupt(jm_mirror *m) {
  atomic_store(&m->cancel, 1);
  if (m->db)
    sqlite3_interrupt(m->db);
  pthread_mutex_lock(&m->aux_mu);
  if (m->aux_db)
    sqlite3_interrupt(m->aux_db);
  pthread_mutex_unlock(&m->aux_mu);
}

/* The writer lock ---------------------------------------------------------------- */

int jm_mirror_lock_holder(const char *db_path, long *pid, char who[64]) {
  char *path = jm_mirror_sibling(db_path, ".lock");
  if (path == NULL)
    return -ENOMEM;
  int fd = jm__open(path, O_RDONLY, 0);
  free(path);
  if (fd < 0)
    return fd == -ENOENT ? 0 : fd;
  int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  if (!held)
    flock(fd, LOCK_UN);
  char buf[128] = {0};
  ssize_t n = jm__pread_full(fd, buf, sizeof buf - 1, 0);
  jm__close(fd);
  *pid = 0;
  who[0] = '\0';
  if (n > 0) {
    char *sp = strchr(buf, ' ');
    *pid = strtol(buf, NULL, 10);
    if (sp) {
      snprintf(who, 64, "%s", sp + 1);
      who[strcspn(who, "\n")] = '\0';
    }
  }
  return held;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int jm_mirror_lock(jm_mirror *m, int wait_ms, const char *who,
                   jm_error *err) {
  if (m->lock_fd >= 0)
    return 0;
  int fd = jm__open(m->lock_path, O_RDWR | O_CREAT, 0600);
  if (fd < 0)
    return jm__errno_f(err, -fd, "cannot open lock file '%s'", m->lock_path);
  int waited = 0;
  while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR)
      continue;
    if (errno != EWOULDBLOCK) {
      int e = errno;
      jm__close(fd);
      return jm__errno_f(err, e, "cannot lock '%s'", m->lock_path);
    }
    if (wait_ms >= 0 && waited >= wait_ms) {
      long pid = 0;
      char holder[64] = "";
      jm_mirror_lock_holder(m->db_path, &pid, holder);
      jm__close(fd);
      return jm__errf(err, JM_ELOCKED,
                      "mirror '%s' is locked by %s (pid %ld)", m->db_path,
                      holder[0] ? holder : "another process", pid);
    }
    sleep_ms(20);
    waited += 20;
  }
  char line[128];
  int n = snprintf(line, sizeof line, "%ld %s\n", (long)getpid(),
                   who ? who : "jmirror");
  if (ftruncate(fd, 0) == 0)
    jm__pwrite_full(fd, line, (size_t)n, 0);
  m->lock_fd = fd;
  /* A holder killed mid-rebuild left its scratch file (as big as the
   * mirror); nobody else can be using it now. */
  jm__remove_scratch(m->db_path);
  return 0;
}

void jm__remove_scratch(const char *db_path) {
  char *scratch = jm_mirror_sibling(db_path, ".rebuild");
  char *journal = scratch ? jm_mirror_sibling(scratch, "-journal") : NULL;
  if (scratch)
    unlink(scratch);
  if (journal)
    unlink(journal);
  free(journal);
  free(scratch);
}

void jm_mirror_unlock(jm_mirror *m) {
  if (m->lock_fd < 0)
    return;
  jm__close(m->lock_fd); /* closing drops the flock */
  m->lock_fd = -1;
}

int jm_mirror_locked(const jm_mirror *m) { return m->lock_fd >= 0; }

/* Scanning journal/ ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int valid_entry(const char *dir, struct dirent *de, char *id) {
  size_t n = strlen(de->d_name);
  if (n <= 6 || strcmp(de->d_name + n - 6, ".jsonl") != 0)
    return 0;
  if (jm_id_check(de->d_name, n - 6, NULL) != 0)
    return 0;
  memcpy(id, de->d_name, n - 6);
  id[n - 6] = '\0';
#ifdef DT_REG
  if (de->d_type == DT_REG)
    return 1;
  if (de->d_type != DT_UNKNOWN)
    return 0;
#endif
  char *p = jm__path_join(dir, de->d_name);
  struct stat st;
  int ok = p && lstat(p, &st) == 0 && S_ISREG(st.st_mode);
  free(p);
  return ok;
}

int jm_journal_scan(const char *root,
                    int (*fn)(void *ctx, const char *conv_id), void *ctx,
                    uint64_t *ignored, jm_error *err) {
  char *dir = jm__path_join(root, "journal");
  if (dir == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  DIR *d = opendir(dir);
  if (d == NULL) {
    int rc = jm__errno_f(err, errno, "cannot read journal directory '%s'",
                         dir);
    free(dir);
    return rc;
  }
  char **ids = NULL;
  size_t n = 0, cap = 0;
  uint64_t skipped = 0;
  int rc = 0;
  struct dirent *de;
  char id[JM_ID_MAX + 1];
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (!valid_entry(dir, de, id)) {
      skipped++;
      continue;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      char **p = realloc(ids, cap * sizeof *p);
      if (p == NULL) {
        rc = jm__errf(err, -ENOMEM, "out of memory");
        break;
      }
      ids = p;
    }
    if ((ids[n] = jm__strdup(id)) == NULL) {
      rc = jm__errf(err, -ENOMEM, "out of memory");
      break;
    }
    n++;
  }
  closedir(d);
  if (rc == 0 && n > 1)
    qsort(ids, n, sizeof *ids, cmp_str);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = fn(ctx, ids[i]);
  for (size_t i = 0; i < n; i++)
    free(ids[i]);
  free(ids);
  free(dir);
  if (ignored)
    *ignored = skipped;
  return rc;
}
