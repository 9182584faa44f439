/*
 * store.c - the application's face: conversations and messages written to
 * the journal, read back from the mirror, healed on read.
 *
 * Write path: build the event with jansson, append it with the journal
 * writer (validated first, durable as the options say).  Without a daemon
 * nothing touches the mirror: the next read brings it up to date.  With
 * one, the write waits until the daemon has ingested it (see settle()).
 *
 * Read path, before answering about a conversation ("make current"):
 *   1. stat its file and compare with the source row the mirror recorded:
 *      equal means the mirror has read exactly this file: answer;
 *   2. otherwise the mirror is behind or has drifted: if jmirrord owns the
 *      mirror, ask it to ingest the conversation (it replays on drift) and
 *      wait at most wait_ms; if no daemon runs, take the writer lock for a
 *      moment and ingest it here.  Then answer.
 * Listing and search do the same for every conversation this store wrote
 * since its last read (read-your-writes) and every file whose stat differs
 * from what the mirror recorded (another process's writes).
 */
#include "mirror_int.h"
#include "jmirror/daemon.h"
#include "jmirror/store.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void jm_store_options_init(jm_store_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->sync = JM_SYNC_BATCH;
  opt->wait_ms = 5000;
}

int jm_store_open(jm_store **out, const char *root,
                  const jm_store_options *opt, jm_error *err) {
  *out = NULL;
  jm_store *s = calloc(1, sizeof *s);
  if (s == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  if (opt)
    s->opt = *opt;
  else
    jm_store_options_init(&s->opt);
  if (s->opt.wait_ms <= 0)
    s->opt.wait_ms = 5000;
  jm_journal_options jo;
  jm_journal_options_init(&jo);
  jo.sync = s->opt.sync;
  /* a damaged mirror is made anew: heal-on-read then refills it */
  jm_mirror_options mo = {.db_path = s->opt.db_path, .read_only = 0,
                          .max_line = 0, .recreate_damaged = 1};
  int rc;
  if ((s->root = jm__strdup(root)) == NULL)
    rc = jm__errf(err, -ENOMEM, "out of memory");
  else if ((rc = jm_journal_open(&s->j, root, &jo, err)) == 0)
    rc = jm_mirror_open(&s->m, root, &mo, err);
  if (rc != 0) {
    jm_store_close(s, NULL);
    return rc;
  }
  *out = s;
  return 0;
}

int jm_store_close(jm_store *s, jm_error *err) {
  if (s == NULL)
    return 0;
  int rc = jm_journal_close(s->j, err);
  jm_mirror_close(s->m);
  for (size_t i = 0; i < s->nwritten; i++)
    free(s->written[i]);
  free(s->written);
  free(s->root);
  free(s);
  return rc;
}

/* Making the mirror current ----------------------------------------------------- */

static int note_written(jm_store *s, const char *id) {
  for (size_t i = 0; i < s->nwritten; i++)
    if (strcmp(s->written[i], id) == 0)
      return 0;
  if (s->nwritten == s->capwritten) {
    size_t cap = s->capwritten ? s->capwritten * 2 : 8;
    char **w = realloc(s->written, cap * sizeof *w);
    if (w == NULL)
      return -ENOMEM;
    s->written = w;
    s->capwritten = cap;
  }
  if ((s->written[s->nwritten] = jm__strdup(id)) == NULL)
    return -ENOMEM;
  s->nwritten++;
  return 0;
}

static int daemon_owns(jm_store *s) {
  long pid;
  char who[64];
  return jm_mirror_lock_holder(s->m->db_path, &pid, who) == 1 &&
         strcmp(who, "jmirrord") == 0;
}

/* Ask jmirrord to ingest these conversations now (it replays on drift);
 * one request, bounded wait. */
static int via_daemon(jm_store *s, char **ids, size_t n, jm_error *err) {
  jm_client *c;
  int rc = jm_client_connect(s->m->db_path, s->opt.wait_ms, &c, err);
  if (rc != 0)
    return rc;
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(arr, json_string(ids[i]));
  json_t *req = json_pack("{s:s,s:o}", "cmd", "ingest", "ids", arr);
  char *line = req ? json_dumps(req, JSON_COMPACT) : NULL, *resp = NULL;
  json_decref(req);
  rc = line ? jm_client_request(c, line, &resp, s->opt.wait_ms, err)
            : jm__errf(err, -ENOMEM, "out of memory");
  free(line);
  jm_client_close(c);
  if (rc == JM_ETIMEDOUT)
    return jm__errf(err, rc, "jmirrord did not bring '%s'%s up to date "
                    "within %d ms", ids[0], n > 1 ? " and others" : "",
                    s->opt.wait_ms);
  if (rc != 0)
    return rc;
  json_t *r = json_loads(resp, 0, NULL);
  free(resp);
  if (!json_is_true(json_object_get(r, "ok"))) {
    const char *e = json_string_value(json_object_get(r, "error"));
    rc = jm__errf(err, JM_EPROTO, "jmirrord: %s", e ? e : "ingest failed");
  }
  json_decref(r);
  return rc;
}

/* No daemon: ingest here, under the writer lock for a moment. */
static int by_ourselves(jm_store *s, char **ids, size_t n, jm_error *err) {
  int rc = jm_mirror_lock(s->m, s->opt.wait_ms, "jmirror store", err);
  if (rc != 0)
    return rc;
  jm_catchup_stats st;
  rc = jm_mirror_catch_up(s->m, (const char *const *)ids, n, NULL, NULL, NULL,
                          &st, err);
  /* With no daemon to do it, grow an incomplete search index a little on
   * each catch-up (bounded: a few hundred rows). */
  jm_search_progress sp;
  if (rc == 0)
    jm_mirror_index_step(s->m, 500, &sp, NULL);
  jm_mirror_unlock(s->m);
  return rc;
}

/* Bring these conversations up to date (those that are not already). */
static int make_current(jm_store *s, char **ids, size_t n, jm_error *err) {
  char **stale = calloc(n ? n : 1, sizeof *stale);
  size_t k = 0;
  int rc = stale ? 0 : jm__errf(err, -ENOMEM, "out of memory");
  for (size_t i = 0; rc == 0 && i < n; i++) {
    int cur = jm__mirror_current(s->m, ids[i], err);
    if (cur < 0)
      rc = cur;
    else if (cur == 0)
      stale[k++] = ids[i];
  }
  for (int attempt = 0; rc == 0 && k > 0 && attempt < 2; attempt++) {
    rc = daemon_owns(s) ? via_daemon(s, stale, k, err)
                        : by_ourselves(s, stale, k, err);
    /* The daemon may have started or stopped in between: try the other. */
    if ((rc == JM_ELOCKED || rc == JM_ENODAEMON) && attempt == 0) {
      jm_error_clear(err);
      rc = 0;
      continue;
    }
    break;
  }
  free(stale);
  return rc;
}

int jm__store_current(jm_store *s, const char *id, jm_error *err) {
  char *one = (char *)id;
  return make_current(s, &one, 1, err);
}

static int collect_stale(void *ctx, const char *id) {
  return note_written(ctx, id);
}

/* Before a read across conversations (list, search): what this store wrote
 * (read-your-writes), and when no daemon runs, every file that changed
 * since the mirror read it (a stat each; nobody else would ingest them).
 * With a daemon, other processes' writes are its business: the store's
 * writes wait until it has ingested them (see append_event), so a write
 * through a store (or the jmirror command) is visible to every reader once
 * it returns. */
int jm__store_flush_written(jm_store *s, jm_error *err) {
  int rc = 0;
  if (!daemon_owns(s))
    rc = jm__mirror_stale(s->m, collect_stale, s, err);
  if (rc == 0 && s->nwritten > 0)
    rc = make_current(s, s->written, s->nwritten, err);
  if (rc == 0) {
    for (size_t k = 0; k < s->nwritten; k++)
      free(s->written[k]);
    s->nwritten = 0;
  }
  return rc;
}

/* Writes ------------------------------------------------------------------------ */

/* After a write: remember it (read-your-writes); with a daemon, wait until
 * it has ingested the write, so that other processes see it too once the
 * call returns.  When the daemon does not confirm, the store checks the
 * mirror itself: current after all (the answer was lost) is success; a
 * daemon gone or restarted (no answer, connection closed) is handled like
 * a read (ingest here when no daemon holds the mirror, or ask the new
 * one); a daemon that answered "timed out" is not asked again.  Otherwise
 * JM_ETIMEDOUT: the event IS in the journal, which is what counts, but
 * other processes may not see it yet — the caller must not write it again.
 * Bound: about 1 s (connect) + wait_ms + 2 s (reply), and when the daemon
 * went away another wait_ms for the writer lock or the new daemon. */
static int settle(jm_store *s, const char *id, const jm_append_info *info,
                  jm_error *err) {
  if (note_written(s, id) != 0)
    return jm__errf(err, -ENOMEM, "out of memory");
  if (!daemon_owns(s))
    return 0; /* readers heal on read: no one else would ingest it */
  jm_error why;
  jm_error_clear(&why);
  int rc = jm_daemon_wait(s->m->db_path, id, info->end, s->opt.wait_ms, &why);
  if (rc == 0 || jm__mirror_current(s->m, id, NULL) == 1)
    return 0;
  if (rc != JM_ETIMEDOUT) {
    jm_error_clear(&why);
    if (jm__store_current(s, id, &why) == 0)
      return 0;
  }
  return jm__errf(err, JM_ETIMEDOUT,
                  "'%s': the event is in the journal, but the mirror was not "
                  "confirmed to show it within %d ms (do not write it again): "
                  "%s", id, s->opt.wait_ms,
                  why.msg[0] ? why.msg : jm_strerror(rc));
}

static int exists(jm_store *s, const char *id) {
  char *p = jm_journal_path(s->root, id);
  struct stat st;
  int e = p && lstat(p, &st) == 0;
  free(p);
  return e;
}

/* Append `ev` (stolen) to `id`; the conversation must exist unless `create`. */
static int append_event(jm_store *s, const char *id, json_t *ev, int create,
                        jm_error *err) {
  int rc = jm_id_check(id, strlen(id), err);
  if (rc == 0 && ev == NULL)
    rc = jm__errf(err, -ENOMEM, "out of memory");
  if (rc == 0 && !create && !exists(s, id))
    rc = jm__errf(err, JM_ENOTFOUND, "no conversation '%s'", id);
  jm_append_info info;
  if (rc == 0)
    rc = jm_journal_append_json(s->j, id, ev, &info, err);
  if (rc == 0)
    rc = settle(s, id, &info, err);
  json_decref(ev);
  return rc;
}

/* Parse a JSON text member into ev[key] (NULL text: leave absent). */
static int set_json(json_t *ev, const char *key, const char *text,
                    jm_error *err) {
  if (text == NULL)
    return 0;
  json_error_t e;
  json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
  if (v == NULL)
    return jm__errf(err, JM_EEVENT, "member '%s' is not valid JSON: %s", key,
                    e.text);
  json_object_set_new(ev, key, v);
  return 0;
}

/* ev[key] = v (NULL: leave absent).  json_string() refuses text that is
 * not UTF-8: say so rather than drop the member. */
static int set_str(json_t *ev, const char *key, const char *v, jm_error *err) {
  if (v == NULL)
    return 0;
  json_t *j = json_string(v);
  if (j == NULL)
    return jm__errf(err, JM_EEVENT, "member '%s' is not valid UTF-8", key);
  json_object_set_new(ev, key, j);
  return 0;
}


/* Make the conversation's file, exclusively: of two creators of one id,
 * exactly one gets it (a check for the file, then an append, let both
 * succeed).  Its directory entry is synced by the append that follows. */
static int claim(jm_store *s, const char *id, jm_error *err) {
  char *dir = jm__path_join(s->root, "journal");
  char *p = jm_journal_path(s->root, id);
  int rc = dir && p ? jm__mkdirs(dir) : -ENOMEM;
  if (rc == -ENOMEM)
    rc = jm__errf(err, rc, "out of memory");
  else if (rc != 0)
    rc = jm__errno_f(err, -rc, "cannot create journal directory '%s'", dir);
  else {
    int fd = jm__open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd == -EEXIST || fd == -ELOOP)
      rc = jm__errf(err, -EEXIST, "conversation '%s' already exists", id);
    else if (fd < 0)
      rc = jm__errno_f(err, -fd, "cannot create '%s'", p);
    else
      jm__close(fd);
  }
  free(dir);
  free(p);
  return rc;
}

/* The created event could not be written (refused, disk full): remove the
 * file claim() made, so that the id is free again — only while it is still
 * empty and nobody holds its writers' lock (a writer that locks it after
 * this finds the path gone and opens it anew: nothing of its is lost). */
static void unclaim(jm_store *s, const char *id) {
  char *p = jm_journal_path(s->root, id);
  int fd = p ? jm__open(p, O_RDONLY | O_NOFOLLOW, 0) : -1;
  struct stat a, b;
  if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &a) == 0 &&
      a.st_size == 0 && lstat(p, &b) == 0 && a.st_ino == b.st_ino &&
      a.st_dev == b.st_dev)
    unlink(p);
  if (fd >= 0)
    jm__close(fd); /* drops the lock */
  free(p);
}

int jm_store_create(jm_store *s, const char *id, const char *title,
                    const char *brain, const char *meta_json, char *id_out,
                    jm_error *err) {
  char gen[27];
  if (id == NULL) {
    if (jm__id_generate(gen) != 0)
      return jm__errf(err, -EIO, "cannot generate an id");
    id = gen;
  } else if (jm_id_check(id, strlen(id), err) != 0)
    return JM_EID;
  json_t *ev = json_pack("{s:s}", "type", "conversation.created");
  int rc = set_str(ev, "title", title, err);
  if (rc == 0)
    rc = set_str(ev, "brain", brain, err);
  if (rc == 0)
    rc = set_json(ev, "meta", meta_json, err);
  if (rc == 0)
    rc = claim(s, id, err);
  if (rc != 0) {
    json_decref(ev);
    return rc;
  }
  rc = append_event(s, id, ev, 1, err);
  if (rc != 0 && rc != JM_ETIMEDOUT) /* JM_ETIMEDOUT: written all the same */
    unclaim(s, id);
  if (rc == 0 && id_out)
    snprintf(id_out, JM_ID_MAX + 1, "%s", id);
  return rc;
}

int jm_store_add_message(jm_store *s, const char *conv_id,
                         const jm_message_in *m, char *id_out, jm_error *err) {
  char gen[27];
  const char *mid = m->id;
  if (mid == NULL) {
    if (jm__id_generate(gen) != 0)
      return jm__errf(err, -EIO, "cannot generate an id");
    mid = gen;
  }
  size_t clen = m->content_len == SIZE_MAX && m->content
                    ? strlen(m->content)
                    : m->content_len;
  json_t *ev = json_pack("{s:s,s:s,s:s?,s:s%}", "type", "message", "id", mid,
                         "role", m->role, "content", m->content ? m->content : "",
                         m->content ? clen : (size_t)0);
  if (ev == NULL)
    return jm__errf(err, JM_EEVENT,
                    "message: role and content must be UTF-8 text");
  int rc = set_str(ev, "parent_id", m->parent_id, err);
  if (rc == 0)
    rc = set_str(ev, "brain", m->brain, err);
  if (rc == 0)
    rc = set_str(ev, "reasoning_level", m->reasoning_level, err);
  if (rc == 0)
    rc = set_str(ev, "thinking", m->thinking, err);
  if (rc == 0)
    rc = set_json(ev, "meta", m->meta_json, err);
  if (rc != 0) {
    json_decref(ev);
    return rc;
  }
  rc = append_event(s, conv_id, ev, 0, err);
  if (rc == 0 && id_out)
    snprintf(id_out, JM_MSG_ID_MAX + 1, "%s", mid);
  return rc;
}

int jm_store_rename(jm_store *s, const char *conv_id, const char *title,
                    jm_error *err) {
  json_t *ev = json_pack("{s:s,s:n}", "type", "conversation.updated",
                         "title");
  int rc = set_str(ev, "title", title, err);
  if (rc != 0) {
    json_decref(ev);
    return rc;
  }
  return append_event(s, conv_id, ev, 0, err);
}

int jm_store_delete(jm_store *s, const char *conv_id, jm_error *err) {
  return append_event(s, conv_id,
                      json_pack("{s:s}", "type", "conversation.deleted"), 0,
                      err);
}

int jm_store_restore(jm_store *s, const char *conv_id, jm_error *err) {
  return append_event(s, conv_id,
                      json_pack("{s:s}", "type", "conversation.restored"), 0,
                      err);
}

int jm_store_append(jm_store *s, const char *conv_id, const char *event_json,
                    jm_append_info *info, jm_error *err) {
  jm_append_info tmp;
  if (info == NULL)
    info = &tmp;
  int rc = jm_journal_append(s->j, conv_id, event_json, strlen(event_json),
                             info, err);
  if (rc == 0)
    rc = settle(s, conv_id, info, err);
  return rc;
}
