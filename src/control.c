/*
 * control.c - jmirrord's control socket: line-delimited JSON over a Unix
 * socket beside the database (<db>.sock, mode 0600).
 *
 * Requests, one JSON object per line (docs/daemon.md has the full table):
 *   {"cmd":"status"}
 *   {"cmd":"wait","id":ID,"offset":N,"timeout_ms":T}
 *   {"cmd":"replay","ids":[ID...]} | {"cmd":"replay","all":true}
 *   {"cmd":"verify","ids":[ID...],"repair":BOOL}
 *   {"cmd":"ingest","ids":[ID...]}
 *   {"cmd":"reconcile"}
 *   {"cmd":"check_mirror"}
 * Every response is one line with "ok": true, or "ok": false and "error".
 *
 * Hostile clients: a request line longer than MAX_REQUEST gets an error and
 * the connection is closed; garbage gets an error and the connection stays
 * usable; ids are checked like everywhere else; a client that disconnects
 * mid-request is remembered as gone (reference counts) and its answer is
 * dropped when the work finishes.  A client gets one answer per request,
 * in order: while one request is in flight, later lines wait unread.
 */
#include "daemon_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REQUEST (64 * 1024)

struct jm__client {
  uv_pipe_t pipe;
  jm__daemon *d;
  jm__client *prev, *next; /* d->clients, while the handle is open */
  jm__buf in;      /* bytes received and not yet handled */
  int refs;        /* the open handle + each request/waiter in flight */
  int closing;     /* handle closed or closing: answers are dropped */
  int busy;        /* a request is in flight: stop reading */
  int close_after; /* close once the pending answer is written */
  int paused;      /* reading stopped: MAX_REQUEST bytes wait behind `busy` */
};

typedef struct write_req {
  uv_write_t req;
  jm__client *client;
  char *data; /* owned */
} write_req;

static void handle_lines(jm__client *c);
static void resume_reading(jm__client *c);

/* Lifetime ------------------------------------------------------------------------ */

void jm__client_ref(jm__client *c) { c->refs++; }

void jm__client_unref(jm__client *c) {
  if (--c->refs > 0)
    return;
  jm__buf_release(&c->in);
  free(c);
}

int jm__client_alive(const jm__client *c) { return !c->closing; }

static void client_closed(uv_handle_t *h) { jm__client_unref(h->data); }

static void client_close(jm__client *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->prev)
    c->prev->next = c->next;
  else
    c->d->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->pipe, client_closed);
}

/* Answers --------------------------------------------------------------------------- */

static void write_done(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  jm__client *c = w->client;
  free(w->data);
  free(w);
  if (status < 0 || c->close_after)
    client_close(c);
  else if (!c->closing) {
    c->busy = 0;
    handle_lines(c); /* the next request, if one is waiting */
    resume_reading(c);
  }
  jm__client_unref(c);
}

void jm__respond(jm__client *c, json_t *resp) {
  if (resp == NULL)
    resp = json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory");
  char *s = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
  json_decref(resp);
  if (c->closing || s == NULL) {
    free(s);
    c->busy = 0;
    return;
  }
  size_t n = strlen(s);
  char *line = realloc(s, n + 2);
  write_req *w = line ? malloc(sizeof *w) : NULL;
  if (w == NULL) {
    free(line ? line : s);
    client_close(c);
    return;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  w->client = c;
  w->data = line;
  jm__client_ref(c);
  uv_buf_t buf = uv_buf_init(line, (unsigned)(n + 1));
  if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, write_done) != 0) {
    free(line);
    free(w);
    jm__client_unref(c);
    client_close(c);
  }
}

static void respond_error(jm__client *c, const char *fmt, ...)
    JM__PRINTF(2, 3);

static void respond_error(jm__client *c, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  jm__respond(c, json_pack("{s:b,s:s}", "ok", 0, "error", msg));
}

/* Requests ---------------------------------------------------------------------------- */

json_t *jm__status_json(jm__daemon *d) {
  /* Status must not describe a mirror nobody else sees: if its file was
   * deleted or replaced, say so and have the next job rebuild it. */
  int replaced = jm__mirror_replaced(d);
  if (replaced)
    jm__request_reconcile(d);
  const char *busy = NULL;
  if (d->job)
    busy = d->job->kind == JM__JOB_INGEST      ? "ingest"
           : d->job->kind == JM__JOB_RECONCILE ? "reconcile"
           : d->job->kind == JM__JOB_INDEX     ? "search index"
                                               : "request";
  size_t queued = 0;
  for (jm__cstate *c = d->dirty_head; c; c = c->dnext)
    queued++;
  return json_pack(
      "{s:b,s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s?,s:s?,s:b,"
      "s:b,s:b}",
      "ok",
      1, "pid", (int)getpid(), "root", d->root, "mirror", d->db_path,
      "uptime_s", (json_int_t)((jm__now_ms() - d->start_ms) / 1000),
      "files_tracked", (json_int_t)d->ncstates, "bytes_behind",
      (json_int_t)jm__bytes_behind(d), "queued", (json_int_t)queued,
      "events_ingested", (json_int_t)d->events, "bad_lines",
      (json_int_t)d->bad_lines, "ignored_files",
      (json_int_t)d->ignored_files, "replays", (json_int_t)d->replays, "drift_replays",
      (json_int_t)d->drift_replays,
      "last_error", d->last_error[0] ? d->last_error : NULL, "busy", busy,
      "journal_present", d->watch != NULL, "search_index_complete",
      d->index_done, "mirror_replaced", replaced);
}

/* Check "ids": an array of valid conversation ids (may be required). */
static int check_ids(jm__client *c, json_t *req, int required) {
  json_t *ids = json_object_get(req, "ids");
  if (ids == NULL && !required)
    return 0;
  if (!json_is_array(ids) || (required && json_array_size(ids) == 0)) {
    respond_error(c, "'ids' must be a non-empty array of conversation ids");
    return -1;
  }
  size_t i;
  json_t *v;
  json_array_foreach(ids, i, v) {
    jm_error err;
    if (!json_is_string(v)) {
      respond_error(c, "'ids' must hold strings");
      return -1;
    }
    if (jm_id_check(json_string_value(v), json_string_length(v), &err) != 0) {
      respond_error(c, "%s", err.msg);
      return -1;
    }
  }
  return 0;
}

static void do_wait(jm__client *c, json_t *req) {
  json_t *id = json_object_get(req, "id");
  json_t *off = json_object_get(req, "offset");
  json_t *to = json_object_get(req, "timeout_ms");
  jm_error err;
  if (!json_is_string(id) ||
      jm_id_check(json_string_value(id), json_string_length(id), &err) != 0) {
    respond_error(c, "%s", json_is_string(id) ? err.msg
                                              : "'id' must be a string");
    return;
  }
  if (!json_is_integer(off) || json_integer_value(off) < 0 ||
      (to != NULL && !json_is_integer(to))) {
    respond_error(c, "'offset' and 'timeout_ms' must be integers");
    return;
  }
  json_int_t t = to ? json_integer_value(to) : 5000;
  if (t < 0 || t > 600000)
    t = 600000;
  jm__add_waiter(c->d, c, json_string_value(id),
                 (uint64_t)json_integer_value(off), (int)t);
}

static void queue_request(jm__client *c, json_t *req) {
  jm__request *r = calloc(1, sizeof *r);
  if (r == NULL) {
    respond_error(c, "out of memory");
    return;
  }
  r->client = c;
  r->req = json_incref(req);
  jm__client_ref(c);
  jm__enqueue_request(c->d, r);
}

static void dispatch(jm__client *c, json_t *req) {
  const char *cmd = json_string_value(json_object_get(req, "cmd"));
  jm__daemon *d = c->d;
  if (cmd == NULL)
    respond_error(c, "request needs a string member 'cmd'");
  else if (strcmp(cmd, "status") == 0)
    jm__respond(c, jm__status_json(d));
  else if (strcmp(cmd, "wait") == 0)
    do_wait(c, req);
  else if (strcmp(cmd, "reconcile") == 0) {
    jm__request_reconcile(d);
    jm__respond(c, json_pack("{s:b}", "ok", 1));
  } else if (strcmp(cmd, "replay") == 0) {
    int all = json_is_true(json_object_get(req, "all"));
    if (check_ids(c, req, !all) == 0)
      queue_request(c, req);
  } else if (strcmp(cmd, "verify") == 0) {
    if (check_ids(c, req, 0) == 0)
      queue_request(c, req);
  } else if (strcmp(cmd, "check_mirror") == 0) {
    queue_request(c, req); /* the job's own check does the work */
  } else if (strcmp(cmd, "ingest") == 0) {
    if (check_ids(c, req, 0) == 0)
      queue_request(c, req);
  } else
    respond_error(c, "unknown command '%.40s'", cmd);
}

static void handle_line(jm__client *c, const char *line, size_t n) {
  json_error_t e;
  json_t *req = json_loadb(line, n, JSON_REJECT_DUPLICATES, &e);
  c->busy = 1; /* exactly one answer follows */
  if (req == NULL)
    respond_error(c, "request is not valid JSON: %s", e.text);
  else if (!json_is_object(req))
    respond_error(c, "request must be a JSON object");
  else
    dispatch(c, req);
  json_decref(req);
}

static void handle_lines(jm__client *c) {
  while (!c->busy && !c->closing && c->in.len > 0) {
    char *nl = memchr(c->in.p, '\n', c->in.len);
    if (nl == NULL)
      break;
    size_t n = (size_t)(nl - c->in.p);
    char *line = jm__strndup(c->in.p, n);
    memmove(c->in.p, nl + 1, c->in.len - n - 1);
    c->in.len -= n + 1;
    if (line == NULL) {
      client_close(c);
      return;
    }
    if (n > 0 && line[n - 1] == '\r')
      line[--n] = '\0';
    if (n > 0)
      handle_line(c, line, n);
    free(line);
  }
}

/* Reading ------------------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  jm__client *c = h->data;
  (void)suggested;
  if (jm__buf_reserve(&c->in, 16384) != 0) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = c->in.p + c->in.len;
  buf->len = 16384;
}

/* No request in flight and more than MAX_REQUEST bytes without a newline:
 * answer with an error and hang up.  1 if it did. */
static int too_long(jm__client *c) {
  if (c->busy || c->closing || c->in.len <= MAX_REQUEST ||
      memchr(c->in.p, '\n', c->in.len) != NULL)
    return 0;
  uv_read_stop((uv_stream_t *)&c->pipe);
  c->in.len = 0;
  c->close_after = 1;
  c->busy = 1;
  respond_error(c, "request longer than %d bytes", MAX_REQUEST);
  return 1;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  jm__client *c = s->data;
  (void)buf;
  if (n < 0) { /* EOF or error: the client went away */
    client_close(c);
    return;
  }
  c->in.len += (size_t)n;
  handle_lines(c);
  if (too_long(c))
    return;
  /* Lines behind a request in flight wait in the kernel, not here, once
   * MAX_REQUEST bytes are buffered: a client that sends and never reads
   * its answers cannot grow the daemon's memory. */
  if (c->busy && !c->closing && c->in.len > MAX_REQUEST) {
    uv_read_stop(s);
    c->paused = 1;
  }
}

/* After an answer: read again once the buffer has drained. */
static void resume_reading(jm__client *c) {
  if (too_long(c) || !c->paused || c->closing || c->in.len > MAX_REQUEST)
    return;
  c->paused = 0;
  if (uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb) != 0)
    client_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  jm__daemon *d = server->data;
  if (status < 0 || d->stopping)
    return;
  jm__client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->d = d;
  c->refs = 1;
  uv_pipe_init(d->loop, &c->pipe, 0);
  c->pipe.data = c;
  c->next = d->clients;
  if (d->clients)
    d->clients->prev = c;
  d->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb) != 0) {
    client_close(c);
    return;
  }
}

int jm__control_start(jm__daemon *d, jm_error *err) {
  d->sock_path = jm_mirror_sibling(d->db_path, ".sock");
  if (d->sock_path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  /* Some libuv versions cut a long path short and bind there, outside the
   * mirror's directory, where no client looks: refuse it as clients do. */
  struct sockaddr_un sa;
  if (strlen(d->sock_path) >= sizeof sa.sun_path)
    return jm__errf(err, -ENAMETOOLONG,
                    "control socket path '%s' is too long for a Unix socket "
                    "(%zu bytes at most); use a shorter --mirror path",
                    d->sock_path, sizeof sa.sun_path - 1);
  /* We hold the writer lock, so no other daemon serves this mirror: a
   * socket file left here is stale. */
  unlink(d->sock_path);
  uv_pipe_init(d->loop, &d->server, 0);
  d->server.data = d;
  d->server_open = 1;
  int rc = uv_pipe_bind(&d->server, d->sock_path);
  if (rc == 0) {
    chmod(d->sock_path, 0600);
    rc = uv_listen((uv_stream_t *)&d->server, 64, on_connection);
  }
  if (rc != 0)
    return jm__errf(err, rc == UV_ENAMETOOLONG ? -ENAMETOOLONG : JM_EPROTO,
                    "cannot listen on control socket '%s': %s", d->sock_path,
                    uv_strerror(rc));
  return 0;
}

static void server_closed(uv_handle_t *h) { (void)h; }

void jm__control_stop(jm__daemon *d) {
  if (!d->server_open)
    return;
  d->server_open = 0;
  uv_close((uv_handle_t *)&d->server, server_closed);
  if (d->sock_path)
    unlink(d->sock_path);
  while (d->clients)
    client_close(d->clients);
}
