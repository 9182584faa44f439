/*
 * jobs.c - the daemon's SQLite work, run on libuv's thread pool.
 *
 * One job at a time owns the mirror connection (daemon.c schedules them),
 * so the loop thread never waits on SQLite and stays free for signals,
 * file events and the control socket.  Jobs are bounded:
 *   ingest     a list of dirty conversations, each ingested one slice
 *              (at most SLICE_BYTES / SLICE_EVENTS per transaction), and
 *              the list cut short after BUDGET_MS so that a huge backlog is
 *              worked through in many short jobs;
 *   reconcile  one scan of journal/ (a stat per file, nothing read);
 *   request    a control request: replay, verify, ingest (these may be
 *              long; jm_mirror_interrupt() cancels them at shutdown), or
 *              check_mirror (only the check every job starts with);
 *   index      a slice of the full-text index, only when nothing else
 *              waits (after a rebuild the index starts empty).
 * Results are written into the job and read back on the loop thread.
 */
#include "daemon_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SLICE_BYTES ((uint64_t)4 << 20)
#define SLICE_EVENTS 20000
#define BUDGET_MS 50
#define INDEX_ROWS 500 /* ~0.75 MB of content: tens of milliseconds */

static void run_ingest(jm__job *j) {
  jm__daemon *d = j->d;
  jm_ingest_limits lim = {SLICE_BYTES, SLICE_EVENTS};
  uint64_t t0 = jm__now_ms();
  if (j->defer_index) /* a big backlog: index it in bulk afterwards */
    jm_mirror_index_defer(d->m, NULL);
  for (size_t i = 0; i < j->n; i++) {
    jm__job_item *it = &j->items[i];
    jm_error err;
    jm_error_clear(&err);
    it->rc = jm_mirror_ingest(d->m, it->id, &lim, &it->res, &err);
    if (it->rc != 0)
      snprintf(it->msg, sizeof it->msg, "%s",
               err.msg[0] ? err.msg : jm_strerror(it->rc));
    j->n_done = i + 1;
    if (jm__now_ms() - t0 >= BUDGET_MS)
      break;
  }
}

static int grow(void **p, size_t *cap, size_t n, size_t size) {
  if (n < *cap)
    return 0;
  size_t c = *cap ? *cap * 2 : 256;
  void *q = realloc(*p, c * size);
  if (q == NULL)
    return -ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

static int on_file(void *ctx, const jm_file_status *f) {
  jm__job *j = ctx;
  if (grow((void **)&j->files, &j->capfiles, j->nfiles, sizeof *j->files))
    return -ENOMEM;
  jm_file_status *c = &j->files[j->nfiles];
  *c = *f;
  if ((c->id = jm__strdup(f->id)) == NULL)
    return -ENOMEM;
  j->nfiles++;
  return 0;
}

static void on_removed(void *ctx, const char *id) {
  jm__job *j = ctx;
  if (grow((void **)&j->removed, &j->capremoved, j->nremoved,
           sizeof *j->removed))
    return;
  if ((j->removed[j->nremoved] = jm__strdup(id)) != NULL)
    j->nremoved++;
}

/* Requests --------------------------------------------------------------------- */

static json_t *fail(jm__job *j) {
  return json_pack("{s:b,s:s}", "ok", 0, "error",
                   j->err.msg[0] ? j->err.msg : jm_strerror(j->rc));
}

/* The "ids" member as a C array (borrowed strings; NULL-free on error). */
static const char **ids_of(json_t *req, size_t *n) {
  json_t *ids = json_object_get(req, "ids");
  *n = json_array_size(ids);
  const char **v = calloc(*n ? *n : 1, sizeof *v);
  for (size_t i = 0; v && i < *n; i++)
    v[i] = json_string_value(json_array_get(ids, i));
  return v;
}

static json_t *do_replay(jm__job *j) {
  jm__daemon *d = j->d;
  if (json_is_true(json_object_get(j->r->req, "all"))) {
    jm_rebuild_stats st;
    j->rc = jm_mirror_rebuild(d->m, 0, NULL, NULL, &st, &j->err);
    if (j->rc)
      return fail(j);
    return json_pack("{s:b,s:I,s:I,s:I,s:I,s:f}", "ok", 1, "conversations",
                     (json_int_t)st.conversations, "events",
                     (json_int_t)st.events, "bad_lines",
                     (json_int_t)st.bad_lines, "bytes", (json_int_t)st.bytes,
                     "seconds", st.seconds);
  }
  size_t n;
  const char **ids = ids_of(j->r->req, &n);
  uint64_t events = 0, bad = 0;
  for (size_t i = 0; ids && i < n && j->rc == 0; i++) {
    jm_ingest_result r;
    j->rc = jm_mirror_replay(d->m, ids[i], 0, &r, &j->err);
    events += r.events;
    bad += r.bad_lines;
  }
  free(ids);
  if (j->rc)
    return fail(j);
  return json_pack("{s:b,s:I,s:I,s:I}", "ok", 1, "conversations",
                   (json_int_t)n, "events", (json_int_t)events, "bad_lines",
                   (json_int_t)bad);
}

typedef struct vcollect {
  json_t *items;
  int all;
  json_t *drift, *behind; /* ids, for repair */
} vcollect;

static int on_item(void *ctx, const jm_verify_item *it) {
  vcollect *v = ctx;
  static const char *const names[] = {"ok", "behind", "drift"};
  if (it->state == JM_VERIFY_DRIFT)
    json_array_append_new(v->drift, json_string(it->id));
  if (it->state == JM_VERIFY_BEHIND)
    json_array_append_new(v->behind, json_string(it->id));
  if (it->state != JM_VERIFY_OK || v->all)
    json_array_append_new(
        v->items,
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "conversation", it->id,
                  "state", names[it->state], "missing",
                  (json_int_t)it->missing, "extra", (json_int_t)it->extra,
                  "changed", (json_int_t)it->changed, "mirror_offset",
                  (json_int_t)it->mirror_offset, "file_offset",
                  (json_int_t)it->file_offset, "detail", it->detail));
  return 0;
}

static int verify_once(jm__job *j, const char **ids, size_t n, vcollect *v,
                       jm_verify_summary *sum) {
  v->items = json_array();
  v->drift = json_array();
  v->behind = json_array();
  return jm_mirror_verify(j->d->m, ids, n, 0, on_item, v, NULL, NULL, sum,
                          &j->err);
}

static void vcollect_free(vcollect *v) {
  json_decref(v->items);
  json_decref(v->drift);
  json_decref(v->behind);
}

static int repair(jm__job *j, vcollect *v) {
  size_t i;
  json_t *id;
  json_array_foreach(v->drift, i, id) {
    j->rc = jm_mirror_replay(j->d->m, json_string_value(id), 0, NULL, &j->err);
    if (j->rc)
      return j->rc;
  }
  jm_catchup_stats st;
  json_array_foreach(v->behind, i, id) {
    const char *s = json_string_value(id);
    j->rc = jm_mirror_catch_up(j->d->m, &s, 1, NULL, NULL, NULL, &st, &j->err);
    if (j->rc)
      return j->rc;
  }
  return 0;
}

static json_t *do_verify(jm__job *j) {
  size_t n;
  const char **ids = ids_of(j->r->req, &n);
  int do_repair = json_is_true(json_object_get(j->r->req, "repair"));
  vcollect v = {NULL, n > 0, NULL, NULL};
  jm_verify_summary sum, before = {0};
  j->rc = ids ? verify_once(j, ids, n, &v, &sum) : -ENOMEM;
  if (j->rc == 0 && do_repair && json_array_size(v.drift) +
                                         json_array_size(v.behind) > 0) {
    before = sum;
    if ((j->rc = repair(j, &v)) == 0) {
      vcollect_free(&v);
      j->rc = verify_once(j, ids, n, &v, &sum);
    }
  }
  free(ids);
  json_t *resp = j->rc ? fail(j)
                       : json_pack("{s:b,s:O,s:I,s:I,s:I,s:I,s:I}", "ok", 1,
                                   "conversations", v.items, "checked",
                                   (json_int_t)sum.checked, "ok_count",
                                   (json_int_t)sum.ok, "behind",
                                   (json_int_t)sum.behind, "drift",
                                   (json_int_t)sum.drift, "repaired",
                                   (json_int_t)(before.drift + before.behind));
  vcollect_free(&v);
  return resp;
}

static json_t *do_ingest(jm__job *j) {
  size_t n;
  const char **ids = ids_of(j->r->req, &n);
  jm_catchup_stats st;
  jm_ingest_limits lim = {SLICE_BYTES, SLICE_EVENTS};
  j->rc = ids ? jm_mirror_catch_up(j->d->m, ids, n, &lim, NULL, NULL, &st,
                                   &j->err)
              : -ENOMEM;
  free(ids);
  if (j->rc)
    return fail(j);
  return json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I}", "ok", 1, "files",
                   (json_int_t)st.files, "unchanged",
                   (json_int_t)st.unchanged, "ingested",
                   (json_int_t)st.ingested, "replayed",
                   (json_int_t)st.replayed, "removed", (json_int_t)st.removed,
                   "events", (json_int_t)st.events);
}

static void run_request(jm__job *j) {
  const char *cmd = json_string_value(json_object_get(j->r->req, "cmd"));
  if (strcmp(cmd, "replay") == 0)
    j->response = do_replay(j);
  else if (strcmp(cmd, "verify") == 0)
    j->response = do_verify(j);
  else if (strcmp(cmd, "check_mirror") == 0) /* check_mirror() ran first */
    j->response = json_pack("{s:b,s:b}", "ok", 1, "reopened", j->reopened);
  else
    j->response = do_ingest(j);
}

/* The mirror's file deleted or replaced under the daemon (the daemon would
 * go on writing to a file nobody else sees): open what is at the path now
 * and rebuild it from the journal, before the job runs.  A failure fails
 * the job (its conversations are retried by the timer). */
static int check_mirror(jm__job *j) {
  int r = jm_mirror_reopen_if_replaced(j->d->m, &j->err);
  if (r == 1) {
    j->reopened = 1;
    r = jm_mirror_rebuild(j->d->m, 0, NULL, NULL, &j->rebuilt, &j->err);
  }
  if (r >= 0)
    return 0;
  j->rc = r;
  if (j->kind == JM__JOB_REQUEST)
    j->response = fail(j);
  for (size_t i = 0; i < j->n; i++) { /* ingest: each item failed */
    j->items[i].rc = r;
    snprintf(j->items[i].msg, sizeof j->items[i].msg, "%s", j->err.msg);
  }
  j->n_done = j->n;
  return r;
}

void jm__job_run(uv_work_t *w) {
  jm__job *j = w->data;
  if (check_mirror(j) != 0)
    return;
  switch (j->kind) {
  case JM__JOB_INGEST:
    run_ingest(j);
    break;
  case JM__JOB_RECONCILE:
    j->rc = jm_mirror_changed(j->d->m, on_file, on_removed, j, &j->cst,
                              &j->err);
    break;
  case JM__JOB_REQUEST:
    run_request(j);
    break;
  case JM__JOB_INDEX:
    j->rc = jm_mirror_index_step(j->d->m, INDEX_ROWS, &j->sp, &j->err);
    break;
  }
}
