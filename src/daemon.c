/*
 * daemon.c - jmirrord: keep the mirror within milliseconds of the journal.
 *
 * Start order (docs/daemon.md):
 *   1. open the mirror and take its writer lock, which doubles as the
 *      single-instance lock (a second daemon exits 1 naming the first's pid);
 *   2. watch journal/ with ONE non-recursive uv_fs_event (never one watch
 *      per file: on macOS each would cost a descriptor);
 *   3. reconcile: list journal/, compare each file's stat with what the
 *      mirror recorded, queue the changed ones (an unchanged file costs a
 *      stat, not a read); then ingest.
 *
 * Events are hints.  A named file is stat'ed and queued ("dirty"); an event
 * without a name queues a full reconcile.  Bursts coalesce naturally: while
 * a job runs, events only add to the dirty list, and the next job takes
 * everything that is dirty.  libuv drops inotify overflows and FSEvents
 * "dropped" flags silently, so a full reconcile also runs at start, on
 * SIGHUP and on a long timer (>= 10 minutes, unref'd: it never keeps the
 * loop alive and costs nothing in between).
 *
 * journal/ deleted (or replaced) under us: the watch reports its own name;
 * the daemon drops the watch, watches the root for journal/ to come back
 * (or, if the root is gone too, polls every 5 s as a last resort), then
 * resumes with a reconcile.  Nothing is removed from the mirror while
 * journal/ is missing: a restore in progress is not a deletion.
 *
 * Idle: no timers but the long reconcile one; nothing wakes the loop.
 * SIGTERM/SIGINT: stop taking work, interrupt the running job (its
 * transaction rolls back or has committed), close the mirror, exit 0.
 */
#include "daemon_int.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INGEST_BATCH 64
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 60000
#define ROOT_POLL_MS 5000

uint64_t jm__now_ms(void) { return uv_hrtime() / 1000000; }

/* Logging ---------------------------------------------------------------------- */

void jm__log(jm__daemon *d, int level, const char *fmt, ...) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  if (level > d->opt.log_level)
    return;
  char ts[JM_TS_LEN + 1];
  jm_ts_now(ts);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  for (char *p = msg; *p; p++)
    if (*p == '\n')
      *p = ' ';
  fprintf(stderr, "%s jmirrord[%ld] %s: %s\n", ts, (long)getpid(),
          names[level], msg);
  fflush(stderr);
}

/* The conversation table ---------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

static int table_grow(jm__daemon *d) {
  size_t nb = d->nbuckets ? d->nbuckets * 2 : 1024;
  jm__cstate **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < d->nbuckets; i++)
    for (jm__cstate *c = d->buckets[i], *next; c; c = next) {
      next = c->next;
      size_t k = hash_str(c->id) & (nb - 1);
      c->next = b[k];
      b[k] = c;
    }
  free(d->buckets);
  d->buckets = b;
  d->nbuckets = nb;
  return 0;
}

jm__cstate *jm__cstate_get(jm__daemon *d, const char *id, int create) {
  if (d->nbuckets) {
    for (jm__cstate *c = d->buckets[hash_str(id) & (d->nbuckets - 1)]; c;
         c = c->next)
      if (strcmp(c->id, id) == 0)
        return c;
  }
  if (!create)
    return NULL;
  if (d->ncstates >= d->nbuckets && table_grow(d) != 0)
    return NULL;
  jm__cstate *c = calloc(1, sizeof *c);
  if (c == NULL || (c->id = jm__strdup(id)) == NULL) {
    free(c);
    return NULL;
  }
  size_t k = hash_str(id) & (d->nbuckets - 1);
  c->next = d->buckets[k];
  d->buckets[k] = c;
  d->ncstates++;
  return c;
}

static void cstate_remove(jm__daemon *d, const char *id) {
  if (d->nbuckets == 0)
    return;
  jm__cstate **pp = &d->buckets[hash_str(id) & (d->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->id, id) == 0) {
      jm__cstate *c = *pp;
      if (c->dirty)
        return; /* still queued: the job will settle it */
      d->nfailing -= c->failed != 0;
      *pp = c->next;
      free(c->id);
      free(c);
      d->ncstates--;
      return;
    }
}

static void table_free(jm__daemon *d) {
  for (size_t i = 0; i < d->nbuckets; i++)
    for (jm__cstate *c = d->buckets[i], *next; c; c = next) {
      next = c->next;
      free(c->id);
      free(c);
    }
  free(d->buckets);
  d->buckets = NULL;
  d->nbuckets = d->ncstates = 0;
}

uint64_t jm__bytes_behind(jm__daemon *d) {
  uint64_t b = 0;
  for (size_t i = 0; i < d->nbuckets; i++)
    for (jm__cstate *c = d->buckets[i]; c; c = c->next)
      if (c->size > c->offset)
        b += c->size - c->offset;
  return b;
}

static void push_dirty(jm__daemon *d, jm__cstate *c) {
  if (c->dirty)
    return;
  c->dirty = 1;
  c->dnext = NULL;
  if (d->dirty_tail)
    d->dirty_tail->dnext = c;
  else
    d->dirty_head = c;
  d->dirty_tail = c;
}

static jm__cstate *pop_dirty(jm__daemon *d) {
  jm__cstate *c = d->dirty_head;
  if (c == NULL)
    return NULL;
  d->dirty_head = c->dnext;
  if (d->dirty_head == NULL)
    d->dirty_tail = NULL;
  c->dirty = 0;
  return c;
}

void jm__mark_dirty(jm__daemon *d, const char *id) {
  if (jm_id_check(id, strlen(id), NULL) != 0)
    return;
  char *path = jm_journal_path(d->root, id);
  struct stat st;
  int have = path && lstat(path, &st) == 0;
  free(path);
  if (have && !S_ISREG(st.st_mode)) {
    /* Not a journal file (a directory, FIFO, symlink...), as for the scan:
     * never opened (a FIFO would block the worker for good); the scan
     * counts it as ignored and drops the rows of a file it replaced. */
    jm__request_reconcile(d);
    cstate_remove(d, id); /* last: id may be that entry's own string */
    return;
  }
  jm__cstate *c = jm__cstate_get(d, id, 1);
  if (c == NULL) {
    d->want_reconcile = 1;
    return;
  }
  if (have)
    c->size = (uint64_t)st.st_size;
  push_dirty(d, c);
  jm__schedule(d);
}

void jm__request_reconcile(jm__daemon *d) {
  d->want_reconcile = 1;
  jm__schedule(d);
}

/* Waiters ----------------------------------------------------------------------- */

static void waiter_closed(uv_handle_t *h) {
  jm__waiter *w = h->data;
  jm__client_unref(w->client);
  free(w->id);
  free(w);
}

static void waiter_unlink(jm__daemon *d, jm__waiter *w) {
  for (jm__waiter **pp = &d->waiters; *pp; pp = &(*pp)->next)
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_timeout(uv_timer_t *t) {
  jm__waiter *w = t->data;
  jm__cstate *c = jm__cstate_get(w->d, w->id, 0);
  jm__respond(w->client,
              json_pack("{s:b,s:s,s:I}", "ok", 0, "error", "timed out",
                        "offset", (json_int_t)(c ? c->offset : 0)));
  waiter_unlink(w->d, w);
}

static void check_waiters(jm__daemon *d, const char *id, int all) {
  for (jm__waiter *w = d->waiters, *next; w; w = next) {
    next = w->next;
    if (!all && strcmp(w->id, id) != 0)
      continue;
    jm__cstate *c = jm__cstate_get(d, w->id, 0);
    if (c && c->offset >= w->offset) {
      jm__respond(w->client, json_pack("{s:b,s:I}", "ok", 1, "offset",
                                       (json_int_t)c->offset));
      waiter_unlink(d, w);
    }
  }
}

void jm__add_waiter(jm__daemon *d, jm__client *cl, const char *id,
                    uint64_t offset, int timeout_ms) {
  jm__cstate *c = jm__cstate_get(d, id, 1);
  if (c && c->offset >= offset) {
    jm__respond(cl, json_pack("{s:b,s:I}", "ok", 1, "offset",
                              (json_int_t)c->offset));
    return;
  }
  jm__waiter *w = calloc(1, sizeof *w);
  if (w == NULL || (w->id = jm__strdup(id)) == NULL) {
    free(w);
    jm__respond(cl, json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory"));
    return;
  }
  w->client = cl;
  jm__client_ref(cl);
  w->offset = offset;
  w->d = d;
  uv_timer_init(d->loop, &w->timer);
  w->timer.data = w;
  uv_timer_start(&w->timer, waiter_timeout,
                 timeout_ms > 0 ? (uint64_t)timeout_ms : 1, 0);
  w->next = d->waiters;
  d->waiters = w;
  jm__mark_dirty(d, id); /* the caller just wrote: do not wait for inotify */
}

/* Jobs: starting and finishing ---------------------------------------------------- */

static void job_free(jm__job *j) {
  for (size_t i = 0; i < j->n; i++)
    free(j->items[i].id);
  free(j->items);
  for (size_t i = 0; i < j->nfiles; i++)
    free((char *)j->files[i].id);
  free(j->files);
  for (size_t i = 0; i < j->nremoved; i++)
    free(j->removed[i]);
  free(j->removed);
  json_decref(j->response);
  free(j);
}

static void retry_fire(uv_timer_t *t) {
  jm__daemon *d = t->data;
  for (size_t i = 0; i < d->nbuckets; i++)
    for (jm__cstate *c = d->buckets[i], *next; c; c = next) {
      next = c->next; /* mark_dirty drops an entry that is no file */
      if (c->failed)
        jm__mark_dirty(d, c->id);
    }
  jm__schedule(d);
}

static void note_failure(jm__daemon *d, const char *id, const char *msg) {
  snprintf(d->last_error, sizeof d->last_error, "%s", msg);
  jm__cstate *c = id[0] ? jm__cstate_get(d, id, 1) : NULL;
  if (c && !c->failed) {
    c->failed = 1;
    d->nfailing++;
  }
  if (!uv_is_active((uv_handle_t *)&d->retry_timer)) {
    d->retry_ms = d->retry_ms ? d->retry_ms * 2 : RETRY_MIN_MS;
    if (d->retry_ms > RETRY_MAX_MS)
      d->retry_ms = RETRY_MAX_MS;
    jm__log(d, JM_LOG_ERROR, "%s (retrying in %u ms)", msg, d->retry_ms);
    uv_timer_start(&d->retry_timer, retry_fire, d->retry_ms, 0);
  }
}

static void finish_ingest(jm__daemon *d, jm__job *j) {
  for (size_t i = 0; i < j->n; i++) {
    jm__job_item *it = &j->items[i];
    jm__cstate *c = jm__cstate_get(d, it->id, 1);
    if (i >= j->n_done) { /* out of budget: next job */
      if (c)
        push_dirty(d, c);
      continue;
    }
    if (it->rc != 0) {
      if (it->rc != JM_ECANCELED)
        note_failure(d, it->id, it->msg);
      continue;
    }
    if (c && c->failed) {
      c->failed = 0;
      d->nfailing--;
    }
    d->events += it->res.events;
    d->bad_lines += it->res.bad_lines;
    if (!it->res.unchanged)
      d->ingests++;
    d->drift_replays += it->res.replayed != 0;
    if (it->res.replayed)
      jm__log(d, JM_LOG_WARN, "'%s' changed under the mirror (%s): replayed",
              it->id, it->res.why);
    if (it->res.removed) {
      jm__log(d, JM_LOG_INFO, "'%s' is gone from journal/: rows removed",
              it->id);
      if (c)
        c->offset = c->size = 0;
      cstate_remove(d, it->id);
      continue;
    }
    if (it->res.events || it->res.bad_lines)
      jm__log(d, JM_LOG_DEBUG, "ingested '%s': %llu events, %llu bad lines",
              it->id, (unsigned long long)it->res.events,
              (unsigned long long)it->res.bad_lines);
    if (c) {
      c->offset = it->res.offset;
      if (it->res.file_size > c->size)
        c->size = it->res.file_size;
      if (it->res.more)
        push_dirty(d, c);
    }
    check_waiters(d, it->id, 0);
  }
  /* The back-off starts over only once no conversation is failing: other
   * files ingesting fine must not reset it, or one unreadable file would
   * be retried (and logged) every RETRY_MIN_MS while they are written. */
  if (d->nfailing == 0)
    d->retry_ms = 0;
}

static void journal_missing(jm__daemon *d);

static void finish_reconcile(jm__daemon *d, jm__job *j) {
  if (j->rc == -ENOENT) {
    journal_missing(d);
    return;
  }
  if (j->rc != 0) {
    note_failure(d, "", j->err.msg);
    d->want_reconcile = 1; /* the retry timer will schedule it again */
    return;
  }
  size_t changed = 0;
  for (size_t i = 0; i < j->nfiles; i++) {
    jm__cstate *c = jm__cstate_get(d, j->files[i].id, 1);
    if (c == NULL)
      continue;
    c->size = j->files[i].size;
    if (!c->dirty)
      c->offset = j->files[i].offset;
    if (j->files[i].changed) {
      push_dirty(d, c);
      changed++;
    }
  }
  for (size_t i = 0; i < j->nremoved; i++)
    cstate_remove(d, j->removed[i]);
  d->ignored_files = j->cst.ignored_files;
  if (jm__bytes_behind(d) > JM__DEFER_INDEX_BYTES) {
    d->defer_index = 1; /* the next ingest job defers the search index */
    d->index_done = 0;
  }
  jm__log(d, JM_LOG_INFO,
          "reconciled %zu files in %.0f ms: %zu changed, %zu removed, %llu "
          "ignored",
          j->nfiles, j->cst.seconds * 1000, changed, j->nremoved,
          (unsigned long long)j->cst.ignored_files);
  check_waiters(d, NULL, 1);
}

static void finish_index(jm__daemon *d, jm__job *j) {
  jm__log(d, JM_LOG_DEBUG, "search index: rc %d, upto %lld of %lld%s", j->rc,
          (long long)j->sp.upto, (long long)j->sp.max_rowid,
          j->sp.done ? ", complete" : "");
  if (j->rc != 0) {
    if (j->rc != JM_ECANCELED)
      note_failure(d, "", j->err.msg);
    return;
  }
  if (j->sp.done && !d->index_done)
    jm__log(d, JM_LOG_INFO, "search index complete");
  d->index_done = j->sp.done;
}

static void finish_request(jm__daemon *d, jm__job *j) {
  if (j->rc != 0 && j->rc != JM_ECANCELED)
    snprintf(d->last_error, sizeof d->last_error, "%s", j->err.msg);
  const char *cmd = json_string_value(json_object_get(j->r->req, "cmd"));
  if (j->rc == 0 && strcmp(cmd, "replay") == 0) {
    d->replays++;
    d->want_reconcile = 1; /* refresh offsets from the rebuilt rows */
    d->index_done = 0;     /* a rebuilt mirror's index starts empty */
  }
  jm__respond(j->r->client, j->response);
  j->response = NULL;
  jm__client_unref(j->r->client);
  json_decref(j->r->req);
  free(j->r);
}

static void shutdown_finish(jm__daemon *d);

/* Loop thread, while no job runs: which files the connection has open. */
static void note_mirror_files(jm__daemon *d) {
  d->db_dev = (uint64_t)d->m->db_dev;
  d->db_ino = (uint64_t)d->m->db_ino;
  d->wal_ino = (uint64_t)d->m->wal_ino;
}

/* Does the mirror's path (or its -wal's) name another file than the one the
 * daemon has open: deleted, or replaced?  A stat or two, on the loop thread;
 * the job that runs next reopens and rebuilds it (jobs.c, check_mirror). */
int jm__mirror_replaced(jm__daemon *d) {
  struct stat st;
  if (stat(d->db_path, &st) != 0 || (uint64_t)st.st_dev != d->db_dev ||
      (uint64_t)st.st_ino != d->db_ino)
    return 1;
  if (d->wal_ino == 0) /* no -wal known yet */
    return 0;
  char *wal = jm_mirror_sibling(d->db_path, "-wal");
  if (wal == NULL)
    return 0;
  int r = stat(wal, &st);
  free(wal);
  if (r != 0)
    return errno == ENOENT;
  return (uint64_t)st.st_ino != d->wal_ino;
}

static void job_after(uv_work_t *w, int status) {
  jm__job *j = w->data;
  jm__daemon *d = j->d;
  (void)status;
  d->job = NULL;
  note_mirror_files(d);
  if (j->reopened) {
    jm__log(d, JM_LOG_WARN,
            "mirror '%s' was deleted or replaced under jmirrord: reopened "
            "and rebuilt from the journal (%llu conversations, %llu events)",
            d->db_path, (unsigned long long)j->rebuilt.conversations,
            (unsigned long long)j->rebuilt.events);
    d->want_reconcile = 1; /* offsets from the rebuilt rows */
    d->index_done = 0;     /* a rebuilt mirror's index starts empty */
  }
  switch (j->kind) {
  case JM__JOB_INGEST:
    finish_ingest(d, j);
    break;
  case JM__JOB_RECONCILE:
    finish_reconcile(d, j);
    break;
  case JM__JOB_REQUEST:
    finish_request(d, j);
    break;
  case JM__JOB_INDEX:
    finish_index(d, j);
    break;
  }
  job_free(j);
  if (d->stopping)
    shutdown_finish(d);
  else
    jm__schedule(d);
}

static void start_job(jm__daemon *d, jm__job *j) {
  j->d = d;
  j->work.data = j;
  d->job = j;
  int rc = uv_queue_work(d->loop, &j->work, jm__job_run, job_after);
  if (rc != 0) {
    d->job = NULL;
    jm__log(d, JM_LOG_ERROR, "cannot queue work: %s", uv_strerror(rc));
    job_free(j);
  }
}

static jm__job *ingest_job(jm__daemon *d) {
  jm__job *j = calloc(1, sizeof *j);
  if (j == NULL || (j->items = calloc(INGEST_BATCH, sizeof *j->items)) == NULL) {
    free(j);
    return NULL;
  }
  j->kind = JM__JOB_INGEST;
  j->defer_index = d->defer_index;
  d->defer_index = 0;
  jm__cstate *c;
  while (j->n < INGEST_BATCH && (c = pop_dirty(d)) != NULL)
    if ((j->items[j->n].id = jm__strdup(c->id)) != NULL)
      j->n++;
  return j;
}

void jm__schedule(jm__daemon *d) {
  if (d->job != NULL || d->stopping)
    return;
  jm__job *j = NULL;
  if (d->req_head != NULL) {
    j = calloc(1, sizeof *j);
    if (j == NULL)
      return;
    j->kind = JM__JOB_REQUEST;
    j->r = d->req_head;
    d->req_head = j->r->next;
    if (d->req_head == NULL)
      d->req_tail = NULL;
  } else if (d->want_reconcile && d->watch != NULL) {
    d->want_reconcile = 0;
    if ((j = calloc(1, sizeof *j)) == NULL)
      return;
    j->kind = JM__JOB_RECONCILE;
  } else if (d->dirty_head != NULL && d->watch != NULL) {
    /* Not while journal/ is missing: every file would look deleted and
     * lose its rows.  The dirty list waits for the reconcile on return. */
    if ((j = ingest_job(d)) == NULL)
      return;
  } else if (!d->index_done && d->watch != NULL &&
             !uv_is_active((uv_handle_t *)&d->retry_timer)) {
    if ((j = calloc(1, sizeof *j)) == NULL)
      return;
    j->kind = JM__JOB_INDEX; /* idle: grow the search index a little */
  } else
    return;
  start_job(d, j);
}

void jm__enqueue_request(jm__daemon *d, jm__request *r) {
  r->next = NULL;
  if (d->req_tail)
    d->req_tail->next = r;
  else
    d->req_head = r;
  d->req_tail = r;
  jm__schedule(d);
}

/* Watching ------------------------------------------------------------------------- */

static void watch_closed(uv_handle_t *h) { free(h); }

static void drop_watch(uv_fs_event_t **w) {
  if (*w == NULL)
    return;
  uv_fs_event_stop(*w);
  uv_close((uv_handle_t *)*w, watch_closed);
  *w = NULL;
}

static int id_of(const char *name, char id[JM_ID_MAX + 1]) {
  size_t n = strlen(name);
  if (n <= 6 || strcmp(name + n - 6, ".jsonl") != 0 || n - 6 > JM_ID_MAX)
    return 0;
  if (jm_id_check(name, n - 6, NULL) != 0)
    return 0;
  memcpy(id, name, n - 6);
  id[n - 6] = '\0';
  return 1;
}

static int start_watch(jm__daemon *d);

/* Is journal/ still the directory we watch? */
static void check_journal(jm__daemon *d) {
  struct stat st;
  if (stat(d->journal_dir, &st) != 0) {
    journal_missing(d);
    return;
  }
  if ((uint64_t)st.st_ino != d->journal_ino ||
      (uint64_t)st.st_dev != d->journal_dev) {
    jm__log(d, JM_LOG_WARN, "journal directory '%s' was replaced; watching "
            "the new one", d->journal_dir);
    drop_watch(&d->watch);
    if (start_watch(d) == 0)
      jm__request_reconcile(d);
    else
      journal_missing(d);
  }
}

static void on_journal_event(uv_fs_event_t *h, const char *name, int events,
                             int status) {
  jm__daemon *d = h->data;
  (void)events;
  if (d->stopping || h != d->watch)
    return;
  char id[JM_ID_MAX + 1];
  if (status < 0) {
    jm__log(d, JM_LOG_WARN, "watch on '%s' failed: %s", d->journal_dir,
            uv_strerror(status));
    check_journal(d);
  } else if (name == NULL)
    jm__request_reconcile(d); /* no name: anything may have changed */
  else if (id_of(name, id))
    jm__mark_dirty(d, id);
  else if (strcmp(name, "journal") == 0)
    check_journal(d); /* our own directory: look again */
  else if (events & UV_RENAME) {
    /* Another name came or went: a rename may have replaced journal/, and
     * the ignored names that status counts are only seen by a scan. */
    check_journal(d);
    jm__request_reconcile(d);
  }
}

static int start_watch(jm__daemon *d) {
  struct stat st;
  if (stat(d->journal_dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return -ENOENT;
  uv_fs_event_t *w = malloc(sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  uv_fs_event_init(d->loop, w);
  w->data = d;
  int rc = uv_fs_event_start(w, on_journal_event, d->journal_dir, 0);
  if (rc != 0) {
    uv_close((uv_handle_t *)w, watch_closed);
    return rc;
  }
  d->watch = w;
  d->journal_ino = (uint64_t)st.st_ino;
  d->journal_dev = (uint64_t)st.st_dev;
  return 0;
}

static void resume_if_back(jm__daemon *d) {
  if (start_watch(d) != 0)
    return;
  drop_watch(&d->root_watch);
  uv_timer_stop(&d->poll_timer);
  jm__log(d, JM_LOG_WARN, "journal directory '%s' is back; resuming",
          d->journal_dir);
  jm__request_reconcile(d);
}

static void on_root_event(uv_fs_event_t *h, const char *name, int events,
                          int status) {
  jm__daemon *d = h->data;
  (void)name;
  (void)events;
  (void)status;
  if (!d->stopping && h == d->root_watch)
    resume_if_back(d);
}

static void on_poll(uv_timer_t *t) {
  jm__daemon *d = t->data;
  resume_if_back(d);
  if (d->watch == NULL && d->root_watch == NULL) {
    /* the root may be back even if journal/ is not: watch it then */
    uv_fs_event_t *w = malloc(sizeof *w);
    if (w == NULL)
      return;
    uv_fs_event_init(d->loop, w);
    w->data = d;
    if (uv_fs_event_start(w, on_root_event, d->root, 0) == 0) {
      d->root_watch = w;
      uv_timer_stop(&d->poll_timer);
    } else
      uv_close((uv_handle_t *)w, watch_closed);
  }
}

static void journal_missing(jm__daemon *d) {
  if (d->watch == NULL && (d->root_watch || uv_is_active((uv_handle_t *)&d->poll_timer)))
    return; /* already waiting */
  drop_watch(&d->watch);
  jm__log(d, JM_LOG_WARN, "journal directory '%s' is missing; waiting for it "
          "(the mirror is left as it is)", d->journal_dir);
  uv_fs_event_t *w = malloc(sizeof *w);
  if (w != NULL) {
    uv_fs_event_init(d->loop, w);
    w->data = d;
    if (uv_fs_event_start(w, on_root_event, d->root, 0) == 0) {
      d->root_watch = w;
      resume_if_back(d); /* it may have come back already */
      return;
    }
    uv_close((uv_handle_t *)w, watch_closed);
  }
  jm__log(d, JM_LOG_WARN, "cannot watch the root '%s' either; checking every "
          "%d s", d->root, ROOT_POLL_MS / 1000);
  uv_timer_start(&d->poll_timer, on_poll, ROOT_POLL_MS, ROOT_POLL_MS);
}

/* Signals and life cycle --------------------------------------------------------------- */

static void close_cb_noop(uv_handle_t *h) { (void)h; }

static void shutdown_finish(jm__daemon *d) {
  /* Pending requests never started: tell their clients. */
  while (d->req_head) {
    jm__request *r = d->req_head;
    d->req_head = r->next;
    jm__respond(r->client, json_pack("{s:b,s:s}", "ok", 0, "error",
                                     "daemon is shutting down"));
    jm__client_unref(r->client);
    json_decref(r->req);
    free(r);
  }
  d->req_tail = NULL;
  while (d->waiters)
    waiter_unlink(d, d->waiters);
  jm__control_stop(d);
  drop_watch(&d->watch);
  drop_watch(&d->root_watch);
  uv_handle_t *hs[] = {(uv_handle_t *)&d->reconcile_timer,
                       (uv_handle_t *)&d->retry_timer,
                       (uv_handle_t *)&d->poll_timer,
                       (uv_handle_t *)&d->sig_term,
                       (uv_handle_t *)&d->sig_int,
                       (uv_handle_t *)&d->sig_hup};
  for (size_t i = 0; i < JM__ARRAY_LEN(hs); i++)
    if (!uv_is_closing(hs[i]))
      uv_close(hs[i], close_cb_noop);
}

static void on_stop_signal(uv_signal_t *s, int signum) {
  jm__daemon *d = s->data;
  if (d->stopping)
    return;
  d->stopping = 1;
  jm__log(d, JM_LOG_INFO, "%s: shutting down",
          signum == SIGTERM ? "SIGTERM" : "SIGINT");
  if (d->job != NULL)
    jm_mirror_interrupt(d->m); /* the job finishes or rolls back, then */
  else                         /* job_after calls shutdown_finish */
    shutdown_finish(d);
}

static void on_hup(uv_signal_t *s, int signum) {
  jm__daemon *d = s->data;
  (void)signum;
  jm__log(d, JM_LOG_INFO, "SIGHUP: reconciling");
  if (d->watch == NULL)
    resume_if_back(d);
  jm__request_reconcile(d);
}

static void on_reconcile_timer(uv_timer_t *t) {
  jm__request_reconcile(t->data);
}

/* Set-up ------------------------------------------------------------------------------- */

static int open_mirror(jm__daemon *d, jm_error *err) {
  jm_mirror_options mo = {.db_path = d->opt.db_path, .read_only = 0,
                          .max_line = d->opt.max_line, .recreate_damaged = 1};
  int rc = jm_mirror_open(&d->m, d->root, &mo, err);
  if (rc != 0)
    return rc;
  if (jm_mirror_recreated(d->m))
    jm__log(d, JM_LOG_WARN,
            "mirror '%s' was damaged (not a readable database): set aside "
            "as '%s.damaged'; ingesting every journal file anew",
            jm_mirror_db_path(d->m), jm_mirror_db_path(d->m));
  d->db_path = jm__strdup(jm_mirror_db_path(d->m));
  note_mirror_files(d);
  long pid = 0;
  char who[64] = "";
  if (jm_mirror_lock_holder(d->db_path, &pid, who) == 1 &&
      strcmp(who, "jmirrord") == 0)
    return jm__errf(err, JM_ELOCKED,
                    "another jmirrord (pid %ld) is already running on mirror "
                    "'%s'", pid, d->db_path);
  /* A tool holding the lock briefly (replay, verify --repair): wait. */
  rc = jm_mirror_lock(d->m, 30000, "jmirrord", err);
  if (rc == JM_ELOCKED && jm_mirror_lock_holder(d->db_path, &pid, who) == 1 &&
      strcmp(who, "jmirrord") == 0)
    rc = jm__errf(err, JM_ELOCKED,
                  "another jmirrord (pid %ld) is already running on mirror "
                  "'%s'", pid, d->db_path);
  return rc;
}

static int setup_handles(jm__daemon *d) {
  uv_timer_init(d->loop, &d->reconcile_timer);
  uv_timer_init(d->loop, &d->retry_timer);
  uv_timer_init(d->loop, &d->poll_timer);
  d->reconcile_timer.data = d->retry_timer.data = d->poll_timer.data = d;
  unsigned secs = d->opt.reconcile_s < 600 ? 600 : d->opt.reconcile_s;
  uv_timer_start(&d->reconcile_timer, on_reconcile_timer,
                 (uint64_t)secs * 1000, (uint64_t)secs * 1000);
  uv_unref((uv_handle_t *)&d->reconcile_timer);
  uv_signal_init(d->loop, &d->sig_term);
  uv_signal_init(d->loop, &d->sig_int);
  uv_signal_init(d->loop, &d->sig_hup);
  d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
  uv_signal_start(&d->sig_term, on_stop_signal, SIGTERM);
  uv_signal_start(&d->sig_int, on_stop_signal, SIGINT);
  uv_signal_start(&d->sig_hup, on_hup, SIGHUP);
  return 0;
}

static void daemon_free(jm__daemon *d) {
  jm_mirror_close(d->m);
  table_free(d);
  free(d->root);
  free(d->journal_dir);
  free(d->db_path);
  free(d->sock_path);
}

int jm_daemon_run(const jm_daemon_options *opt, jm_error *err) {
  jm__daemon d;
  memset(&d, 0, sizeof d);
  d.opt = *opt;
  d.loop = uv_default_loop();
  d.start_ms = jm__now_ms();
  d.root = jm__strdup(opt->root);
  d.journal_dir = jm__path_join(opt->root, "journal");
  if (!d.root || !d.journal_dir) {
    daemon_free(&d);
    return jm__errf(err, -ENOMEM, "out of memory");
  }
  signal(SIGPIPE, SIG_IGN);
  int rc = jm__mkdirs(d.journal_dir);
  if (rc != 0) {
    jm__errno_f(err, -rc, "cannot create journal directory '%s'",
                d.journal_dir);
    daemon_free(&d);
    return rc;
  }
  if ((rc = open_mirror(&d, err)) != 0) {
    daemon_free(&d);
    return rc;
  }
  setup_handles(&d);
  if ((rc = jm__control_start(&d, err)) != 0) {
    shutdown_finish(&d);
    uv_run(d.loop, UV_RUN_DEFAULT);
    daemon_free(&d);
    return rc;
  }
  if (start_watch(&d) != 0)
    journal_missing(&d);
  jm__log(&d, JM_LOG_INFO, "watching '%s', mirror '%s'", d.journal_dir,
          d.db_path);
  jm__request_reconcile(&d);
  uv_run(d.loop, UV_RUN_DEFAULT);
  jm__log(&d, JM_LOG_INFO, "stopped");
  daemon_free(&d);
  uv_loop_close(d.loop);
  return d.exit_code;
}
