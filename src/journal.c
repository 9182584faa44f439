/*
 * journal.c - the writer: validated events appended to journal/<id>.jsonl.
 *
 * The rules it keeps (docs/journal.md, "Writing"):
 *
 *  1. Validate first.  The event is parsed and checked against the format
 *     with the reader's own code (event.c); "ts" is filled in (now, UTC,
 *     microseconds) when absent and normalised when present; the object is
 *     re-serialised compactly.  An invalid event returns JM_EEVENT and no
 *     byte reaches the disk.
 *  2. One line, one write(), under flock(LOCK_EX) of the file.  flock locks
 *     belong to the open file description, so they exclude other processes
 *     and other handles in this process alike.  After locking, the fd is
 *     checked against the path: if the file was deleted or replaced while the
 *     fd sat in the cache, it is reopened, so an acknowledged event can never
 *     land in an unlinked inode.
 *  3. Torn tail: if the file does not end in LF (a crash cut a line), the
 *     write starts with an LF, closing the fragment as a line of its own.
 *  4. A write that fails part-way is undone: ftruncate back to the size
 *     before this call.  Those bytes were ours and never acknowledged; bytes
 *     before them are never touched.
 *  5. Durability: ALWAYS syncs before returning (and on failure truncates
 *     back, so an unacknowledged event is not left for readers); BATCH hands
 *     the fd to a syncer thread that syncs every dirty file within the batch
 *     window (group commit: one sync covers many appends); NONE leaves it to
 *     the OS.  Creating a file syncs its directory.
 *
 * Open files are cached (a small LRU) because reopening per append costs
 * more than the write.  All system calls that matter go through jm__sys.
 */
#include "internal.h"
#include "jmirror/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FD_CACHE 32

typedef struct open_file {
  char id[JM_ID_MAX + 1]; /* conversation id; "" when the slot is free */
  int fd;                 /* O_RDWR|O_APPEND, or -1 */
  uint64_t used;          /* LRU clock value of the last use */
  int dirty;              /* batch mode: written since the last sync */
} open_file;

struct jm_journal {
  char *root;        /* owned */
  char *dir;         /* "<root>/journal", owned */
  int dir_ready;     /* journal/ is known to exist */
  jm_journal_options opt;
  pthread_mutex_t mu; /* guards everything below */
  open_file files[FD_CACHE];
  uint64_t clock;
  jm_journal_stats stats;
  /* batch mode */
  pthread_t syncer;
  int syncer_started;
  int stopping;          /* close() asks the syncer to finish */
  pthread_cond_t wake;   /* signalled when a file turns dirty or on stop */
  int dirty_count;
  int sync_err;          /* first deferred sync failure (-errno) or 0 */
  char sync_err_msg[JM_ERROR_MSG_MAX];
};

/* Options and names ------------------------------------------------------- */

int jm_sync_parse(const char *s, jm_sync *out) {
  if (strcmp(s, "always") == 0)
    *out = JM_SYNC_ALWAYS;
  else if (strcmp(s, "batch") == 0)
    *out = JM_SYNC_BATCH;
  else if (strcmp(s, "none") == 0)
    *out = JM_SYNC_NONE;
  else
    return JM_EUSAGE;
  return 0;
}

const char *jm_sync_name(jm_sync s) {
  return s == JM_SYNC_ALWAYS ? "always" : s == JM_SYNC_BATCH ? "batch" : "none";
}

void jm_journal_options_init(jm_journal_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->sync = JM_SYNC_BATCH;
  opt->batch_window_ms = 100;
  opt->max_line = JM_MAX_LINE_DEFAULT;
}

char *jm_journal_path(const char *root, const char *conv_id) {
  size_t n = strlen(root);
  while (n > 1 && root[n - 1] == '/')
    n--;
  return jm__asprintf("%.*s/journal/%s.jsonl", (int)n, root, conv_id);
}

/* The syncer's window is measured on a clock that wall-clock changes
 * (NTP steps, the user setting the time) cannot stretch: CLOCK_MONOTONIC
 * for the condition variable where POSIX allows it; macOS has no
 * pthread_condattr_setclock, and its relative timed wait is monotonic. */
#define WAKE_CLOCK CLOCK_MONOTONIC
#ifdef __APPLE__
static void init_wake(pthread_cond_t *cv) { pthread_cond_init(cv, NULL); }
#else
static void init_wake(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}
#endif

/* Open / close ------------------------------------------------------------- */

int jm_journal_open(jm_journal **out, const char *root,
                    const jm_journal_options *opt, jm_error *err) {
  *out = NULL;
  if (root == NULL || root[0] == '\0')
    return jm__errf(err, JM_EUSAGE, "the journal's root is empty: give a "
                                    "directory");
  jm_journal *j = calloc(1, sizeof *j);
  if (j == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  if (opt)
    j->opt = *opt;
  else
    jm_journal_options_init(&j->opt);
  if (j->opt.batch_window_ms == 0)
    j->opt.batch_window_ms = 100;
  if (j->opt.max_line == 0)
    j->opt.max_line = JM_MAX_LINE_DEFAULT;
  for (int i = 0; i < FD_CACHE; i++)
    j->files[i].fd = -1;
  pthread_mutex_init(&j->mu, NULL);
  init_wake(&j->wake);
  j->root = jm__strdup(root);
  j->dir = jm__path_join(root, "journal");
  if (j->root == NULL || j->dir == NULL) {
    jm_journal_close(j, NULL);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  *out = j;
  return 0;
}

/* Create journal/ (0700) on the first append that passed validation, so
 * that a refused event leaves no trace on disk.  Called with mu held. */

static int sync_dirty_locked(jm_journal *j);

int jm_journal_close(jm_journal *j, jm_error *err) {
  if (j == NULL)
    return 0;
  pthread_mutex_lock(&j->mu);
  if (j->syncer_started) {
    j->stopping = 1;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->syncer, NULL);
    pthread_mutex_lock(&j->mu);
  }
  sync_dirty_locked(j);
  int rc = j->sync_err;
  if (rc != 0)
    jm__errf(err, rc, "%s", j->sync_err_msg);
  for (int i = 0; i < FD_CACHE; i++)
    jm__close(j->files[i].fd);
  pthread_mutex_unlock(&j->mu);
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->wake);
  free(j->root);
  free(j->dir);
  free(j);
  return rc;
}

void jm_journal_get_stats(jm_journal *j, jm_journal_stats *out) {
  pthread_mutex_lock(&j->mu);
  *out = j->stats;
  pthread_mutex_unlock(&j->mu);
}

/* Batch syncing ------------------------------------------------------------ */

static void record_sync_error(jm_journal *j, int rc, const char *id) {
  if (j->sync_err != 0)
    return;
  j->sync_err = rc;
  snprintf(j->sync_err_msg, sizeof j->sync_err_msg,
           "cannot sync '%s/%s.jsonl': %s", j->dir, id, strerror(-rc));
}

/* Sync every dirty file.  Called with mu held; drops it around the syncs
 * (on dup'd fds, so eviction may close the originals meanwhile). */
static int sync_dirty_locked(jm_journal *j) {
  int fds[FD_CACHE];
  char ids[FD_CACHE][JM_ID_MAX + 1];
  int n = 0;
  for (int i = 0; i < FD_CACHE; i++) {
    open_file *f = &j->files[i];
    if (f->fd < 0 || !f->dirty)
      continue;
    f->dirty = 0;
    int d = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
      record_sync_error(j, -errno, f->id);
      continue;
    }
    fds[n] = d;
    memcpy(ids[n], f->id, sizeof ids[n]);
    n++;
  }
  j->dirty_count = 0;
  if (n == 0)
    return 0;
  pthread_mutex_unlock(&j->mu);
  int errs[FD_CACHE];
  for (int i = 0; i < n; i++) {
    errs[i] = jm__sys.fsync(fds[i]) == 0 ? 0 : -errno;
    jm__close(fds[i]);
  }
  pthread_mutex_lock(&j->mu);
  for (int i = 0; i < n; i++) {
    j->stats.syncs++;
    if (errs[i] != 0)
      record_sync_error(j, errs[i], ids[i]);
  }
  return 0;
}

static void deadline_after(struct timespec *ts, unsigned ms) {
  jm__sys.clock_gettime(WAKE_CLOCK, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* Wait on j->wake until `until` (from deadline_after): 0 or ETIMEDOUT. */
static int wait_until(jm_journal *j, const struct timespec *until) {
#ifdef __APPLE__
  struct timespec now, rel;
  jm__sys.clock_gettime(WAKE_CLOCK, &now);
  rel.tv_sec = until->tv_sec - now.tv_sec;
  rel.tv_nsec = until->tv_nsec - now.tv_nsec;
  if (rel.tv_nsec < 0) {
    rel.tv_sec--;
    rel.tv_nsec += 1000000000L;
  }
  if (rel.tv_sec < 0)
    return ETIMEDOUT;
  return pthread_cond_timedwait_relative_np(&j->wake, &j->mu, &rel);
#else
  return pthread_cond_timedwait(&j->wake, &j->mu, until);
#endif
}

static void *syncer_main(void *arg) {
  jm_journal *j = arg;
  pthread_mutex_lock(&j->mu);
  while (!j->stopping) {
    if (j->dirty_count == 0) {
      pthread_cond_wait(&j->wake, &j->mu);
      continue;
    }
    /* Something is dirty: give later appends the window to join in. */
    struct timespec until;
    deadline_after(&until, j->opt.batch_window_ms);
    while (!j->stopping &&
           wait_until(j, &until) != ETIMEDOUT)
      ;
    sync_dirty_locked(j);
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

int jm_journal_sync(jm_journal *j, jm_error *err) {
  pthread_mutex_lock(&j->mu);
  sync_dirty_locked(j);
  int rc = j->sync_err;
  if (rc != 0) {
    jm__errf(err, rc, "%s", j->sync_err_msg);
    j->sync_err = 0;
  }
  pthread_mutex_unlock(&j->mu);
  return rc;
}

/* The fd cache ---------------------------------------------------------------- */

static void evict(jm_journal *j, open_file *f) {
  if (f->fd >= 0 && f->dirty) {
    if (jm__sys.fsync(f->fd) != 0)
      record_sync_error(j, -errno, f->id);
    j->stats.syncs++;
    j->dirty_count--;
  }
  jm__close(f->fd);
  f->fd = -1;
  f->dirty = 0;
  f->id[0] = '\0';
}

static open_file *cache_slot(jm_journal *j, const char *id) {
  open_file *victim = NULL;
  for (int i = 0; i < FD_CACHE; i++) {
    open_file *f = &j->files[i];
    if (f->fd >= 0 && strcmp(f->id, id) == 0)
      return f;
    if (victim == NULL || (victim->fd >= 0 &&
                           (f->fd < 0 || f->used < victim->used)))
      victim = f; /* a free slot, else the least recently used */
  }
  evict(j, victim);
  return victim;
}

/* Nothing in dir but "." and ".."? */
static int dir_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return 0;
  struct dirent *de;
  int empty = 1;
  while (empty && (de = readdir(d)) != NULL)
    empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
  closedir(d);
  return empty;
}

static int ensure_dir(jm_journal *j, jm_error *err) {
  if (j->dir_ready)
    return 0;
  struct stat st;
  int created = stat(j->dir, &st) != 0;
  int rc = jm__mkdirs(j->dir);
  if (rc != 0)
    return jm__errno_f(err, -rc, "cannot create journal directory '%s'",
                       j->dir);
  /* Make the new journal/ entry durable.  Its creator does so before it
   * puts anything in it (jm__mkdirs syncs the parent of every directory it
   * creates): an empty journal/ may be one whose creator died before that
   * sync, so it is synced again. */
  if (!created && dir_empty(j->dir) && (rc = jm__fsync_dir(j->root)) != 0)
    return jm__errno_f(err, -rc, "cannot sync directory '%s'", j->root);
  j->dir_ready = 1;
  return 0;
}

/* Open (creating if needed) the file of `id` into slot f. */
static int open_into(jm_journal *j, open_file *f, const char *id,
                     const char *path, int *created, jm_error *err) {
  /* O_RDWR, not O_WRONLY: the torn-tail check preads the last byte.
   * O_NONBLOCK: a FIFO with the journal's name must not hang the open; it
   * is refused below (a write into it would be lost). */
  int flags = O_RDWR | O_APPEND | O_NOFOLLOW | O_NONBLOCK;
  *created = 0;
  int fd = jm__open(path, flags | O_CREAT | O_EXCL, 0600);
  if (fd == -EEXIST)
    fd = jm__open(path, flags, 0600);
  else if (fd >= 0)
    *created = 1;
  if (fd < 0) {
    if (fd == -ELOOP)
      return jm__errf(err, fd, "cannot open '%s': is a symbolic link", path);
    return jm__errno_f(err, -fd, "cannot open '%s'", path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    jm__close(fd);
    return jm__errf(err, -EINVAL, "cannot append to '%s': not a regular file",
                    path);
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl != -1)
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); /* blocking I/O again */
  /* A new file's entry is synced by its creator before anything is
   * written: an empty file may be one whose creator died before that sync,
   * and an event acknowledged in it must not vanish with its entry. */
  if (*created || st.st_size == 0) {
    int rc = jm__fsync_dir(j->dir);
    if (rc != 0) {
      jm__close(fd);
      return jm__errno_f(err, -rc, "cannot sync directory '%s'", j->dir);
    }
  }
  f->fd = fd;
  snprintf(f->id, sizeof f->id, "%s", id);
  f->dirty = 0;
  return 0;
}

static int lock_file(int fd) {
  while (flock(fd, LOCK_EX) != 0)
    if (errno != EINTR)
      return -errno;
  return 0;
}

/* Is the locked fd still the file at `path`? (not deleted, not replaced,
 * not moved away with a symlink to it left in its place: lstat, so a link
 * never matches and the reopen refuses it with O_NOFOLLOW) */
static int fd_is_path(int fd, const char *path) {
  struct stat a, b;
  if (fstat(fd, &a) != 0 || lstat(path, &b) != 0)
    return 0;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_nlink > 0;
}

/* Open or reuse the fd of `id`, locked, and known to be the live file. */
static int acquire(jm_journal *j, const char *id, const char *path,
                   open_file **out, int *created, jm_error *err) {
  open_file *f = cache_slot(j, id);
  *created = 0;
  for (int attempt = 0; attempt < 8; attempt++) {
    if (f->fd < 0) {
      int rc = open_into(j, f, id, path, created, err);
      if (rc == -ENOENT && j->dir_ready) {
        j->dir_ready = 0; /* journal/ was removed under us: recreate it */
        jm_error_clear(err);
        rc = ensure_dir(j, err);
        if (rc == 0)
          rc = open_into(j, f, id, path, created, err);
      }
      if (rc != 0)
        return rc;
    }
    int rc = lock_file(f->fd);
    if (rc != 0) {
      evict(j, f);
      return jm__errno_f(err, -rc, "cannot lock '%s'", path);
    }
    if (fd_is_path(f->fd, path)) {
      f->used = ++j->clock;
      *out = f;
      return 0;
    }
    flock(f->fd, LOCK_UN); /* replaced or deleted under us: reopen */
    evict(j, f);
  }
  return jm__errf(err, -EAGAIN, "cannot open '%s': it keeps being replaced",
                  path);
}

/* Building the line ------------------------------------------------------------- */

/* Fill/normalise ts, validate, and serialise.  On success *line is a
 * malloc'd "<json>\n" (the caller frees). */
static int build_line(jm_journal *j, const char *id, json_t *root, char **line,
                      size_t *len, char ts_out[JM_TS_LEN + 1], jm_error *err) {
  jm_bad bad;
  jm_event ev;
  json_t *ts = json_object_get(root, "ts");
  if (ts == NULL) {
    char now[JM_TS_LEN + 1];
    jm_ts_now(now);
    if (json_object_set_new(root, "ts", json_string(now)) != 0)
      return jm__errf(err, -ENOMEM, "out of memory");
  }
  if (jm__event_validate(root, id, &ev, &bad) != JM_EVENT_OK)
    return jm__errf(err, JM_EEVENT, "%s", bad.msg);
  memcpy(ts_out, ev.ts, sizeof ev.ts);
  if (json_object_set_new(root, "ts", json_string(ev.ts)) != 0)
    return jm__errf(err, -ENOMEM, "out of memory");
  char *s = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  size_t n = strlen(s);
  if (n > j->opt.max_line) {
    free(s);
    return jm__errf(err, JM_EEVENT, "event of %zu bytes exceeds the maximum "
                    "line length of %zu", n, j->opt.max_line);
  }
  char *out = malloc(n + 2); /* room for a leading LF and the final LF */
  if (out == NULL) {
    free(s);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  out[0] = '\n';
  memcpy(out + 1, s, n);
  out[n + 1] = '\n';
  free(s);
  *line = out;
  *len = n + 2;
  return 0;
}

/* The write itself --------------------------------------------------------------- */

static int undo(jm_journal *j, open_file *f, off_t size, const char *path,
                int cause, const char *what, jm_error *err) {
  int rc = jm__errno_f(err, -cause, "cannot %s '%s'", what, path);
  if (jm__sys.ftruncate(f->fd, size) != 0) {
    int t = errno;
    jm__errf(err, cause,
             "cannot %s '%s': %s; and truncating back to %lld bytes failed: "
             "%s",
             what, path, strerror(-cause), (long long)size, strerror(t));
  }
  (void)j;
  return rc;
}

static int write_locked(jm_journal *j, open_file *f, const char *path,
                        const char *line, size_t len, jm_append_info *info,
                        jm_error *err) {
  struct stat st;
  if (fstat(f->fd, &st) != 0)
    return jm__errno_f(err, errno, "cannot stat '%s'", path);
  off_t size = st.st_size;
  int torn = 0;
  if (size > 0) {
    char last;
    ssize_t r = jm__pread_full(f->fd, &last, 1, size - 1);
    if (r < 0)
      return jm__errno_f(err, (int)-r, "cannot read '%s'", path);
    torn = (r == 1 && last != '\n');
  }
  /* line[0] is a spare LF: start there only to close a torn tail. */
  const char *p = torn ? line : line + 1;
  size_t n = torn ? len : len - 1;
  size_t written = 0;
  int rc = jm__write_full(f->fd, p, n, &written);
  if (rc != 0)
    return undo(j, f, size, path, rc, "append to", err);
  if (j->opt.sync == JM_SYNC_ALWAYS) {
    j->stats.syncs++;
    if (jm__sys.fsync(f->fd) != 0)
      return undo(j, f, size, path, -errno, "sync", err);
  } else if (j->opt.sync == JM_SYNC_BATCH && !f->dirty) {
    f->dirty = 1;
    j->dirty_count++;
    pthread_cond_signal(&j->wake);
  }
  j->stats.appends++;
  if (info) {
    info->offset = (uint64_t)size + (torn ? 1 : 0);
    info->end = (uint64_t)size + n;
    info->repaired_tail = torn;
  }
  return 0;
}

static int start_syncer(jm_journal *j, jm_error *err) {
  if (j->syncer_started || j->opt.sync != JM_SYNC_BATCH)
    return 0;
  int rc = pthread_create(&j->syncer, NULL, syncer_main, j);
  if (rc != 0)
    return jm__errno_f(err, rc, "cannot start the batch sync thread");
  j->syncer_started = 1;
  return 0;
}

static int append_root(jm_journal *j, const char *id, json_t *root,
                       jm_append_info *info, jm_error *err) {
  int rc = jm_id_check(id, strlen(id), err);
  if (rc != 0)
    return rc;
  char *line = NULL, *path = NULL;
  size_t len = 0;
  jm_append_info tmp;
  if (info == NULL)
    info = &tmp;
  memset(info, 0, sizeof *info);
  rc = build_line(j, id, root, &line, &len, info->ts, err);
  if (rc != 0)
    goto out;
  path = jm_journal_path(j->root, id);
  if (path == NULL) {
    rc = jm__errf(err, -ENOMEM, "out of memory");
    goto out;
  }
  pthread_mutex_lock(&j->mu);
  rc = ensure_dir(j, err);
  if (rc == 0)
    rc = start_syncer(j, err);
  open_file *f = NULL;
  if (rc == 0)
    rc = acquire(j, id, path, &f, &info->created, err);
  if (rc == 0) {
    rc = write_locked(j, f, path, line, len, info, err);
    flock(f->fd, LOCK_UN);
  }
  pthread_mutex_unlock(&j->mu);
out:
  free(line);
  free(path);
  return rc;
}

int jm_journal_append(jm_journal *j, const char *conv_id, const char *json,
                      size_t len, jm_append_info *info, jm_error *err) {
  jm_bad bad;
  int oom;
  if (conv_id == NULL)
    return jm__errf(err, JM_EID, "invalid conversation id '': empty");
  int rc = jm_id_check(conv_id, strlen(conv_id), err);
  if (rc != 0)
    return rc;
  json_t *root = jm__event_load(json, len, j->opt.max_line, &bad, &oom);
  if (root == NULL)
    return oom ? jm__errf(err, -ENOMEM, "out of memory")
               : jm__errf(err, JM_EEVENT, "%s", bad.msg);
  rc = append_root(j, conv_id, root, info, err);
  json_decref(root);
  return rc;
}

int jm_journal_append_json(jm_journal *j, const char *conv_id,
                           const json_t *event, jm_append_info *info,
                           jm_error *err) {
  /* Through text, so an event built in memory meets exactly the checks a
   * line read back from disk will (depth, UTF-8, types). */
  char *s = json_dumps(event, JSON_COMPACT | JSON_ENCODE_ANY);
  if (s == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  int rc = jm_journal_append(j, conv_id, s, strlen(s), info, err);
  free(s);
  return rc;
}
