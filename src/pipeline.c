/*
 * pipeline.c - parse on every core, fold and write on one thread, in order.
 *
 * JSON parsing is the dominant cost of a replay (jansson: ~100 MB/s per
 * core), SQLite takes one writer.  So files are cut into chunks of about
 * CHUNK bytes; worker threads claim chunks in order, parse and validate
 * their lines into compact records (strings copied into one arena per
 * chunk), and the calling thread folds the chunks strictly in order, so the
 * result is exactly that of reading each file front to back.
 *
 * Chunk boundaries: chunk i of a file owns the lines that *start* in
 * [i*CHUNK, (i+1)*CHUNK).  Its worker looks at the byte before its start:
 * unless that is an LF, it skips to just past the first LF (the line that
 * crosses the boundary belongs to the previous chunk, which reads on past
 * its nominal end to finish it).  Line numbers are relative within a chunk;
 * the writer adds the running count.  Bytes after the last LF below the
 * size snapshot are a pending tail and belong to no chunk.
 *
 * A file of one chunk (most files: up to CHUNK bytes) is also folded by
 * its worker when the sink takes folded files (sink->folded): the worker
 * applies its lines to a jm__fold of its own, with no loader, exactly as
 * the writer would have (a fold of at most CHUNK bytes never reaches the
 * writer's flush threshold, so the result is the same), and the writer
 * only writes the rows.  Longer files are folded by the writer in order:
 * their fold may flush to SQLite and read rows back, which only the writer
 * can do.
 *
 * Memory is bounded: a worker may not run more than WINDOW chunks ahead of
 * the writer, and each chunk holds about CHUNK bytes of records, or the
 * fold of a file of at most CHUNK bytes.
 */
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK ((uint64_t)1 << 20)
#define WINDOW_PER_WORKER 3
#define READ_SIZE (256 * 1024)

typedef struct pl_field {
  uint32_t off, len;
  uint8_t state;
} pl_field;

typedef struct pl_rec {
  uint64_t offset;          /* the line's first byte */
  uint64_t rel_line;        /* 1-based within the chunk */
  uint8_t bad;              /* 1: bad line (type = reason, f[0] = msg) */
  uint8_t type;             /* jm_event_type or jm_bad_reason */
  char ts[JM_TS_LEN];
  pl_field f[JM__F_COUNT];
} pl_rec;

typedef struct pl_chunk {
  int ready;                /* filled by a worker */
  int err;                  /* 0 or -errno */
  uint64_t lines;           /* physical lines starting in this chunk */
  uint64_t end;             /* just past the last LF of its lines, or 0 */
  uint64_t bytes;           /* bytes of its lines */
  pl_rec *recs;
  size_t nrecs, caprecs;
  jm__buf arena;
  int folded;               /* the whole file folded into `fold` */
  jm__fold fold;
  uint64_t events, bad;     /* lines folded, valid and bad */
} pl_chunk;

typedef struct jm__pipeline {
  jm__pl_file *files;
  size_t nfiles;
  uint32_t *chunk_file;     /* chunk index -> file index */
  uint32_t *chunk_no;       /* chunk index -> chunk number within its file */
  size_t nchunks;
  size_t max_line;
  int fold_small;           /* fold one-chunk files on the workers */
  pl_chunk *slots;          /* ring of `window` chunks */
  size_t window;
  pthread_mutex_t mu;
  pthread_cond_t ready;     /* a slot was filled */
  pthread_cond_t space;     /* the writer released a slot */
  size_t next_claim;        /* next chunk a worker may take */
  size_t consumed;          /* chunks the writer is done with */
  int stop;                 /* error or cancel: workers quit */
  pthread_t *threads;
  int nthreads;
} jm__pipeline;

/* Records ------------------------------------------------------------------ */

static int arena_put(pl_chunk *c, const char *p, size_t n, pl_field *f) {
  f->off = (uint32_t)c->arena.len;
  f->len = (uint32_t)n;
  return jm__buf_append(&c->arena, p, n);
}

static pl_rec *new_rec(pl_chunk *c) {
  if (c->nrecs == c->caprecs) {
    size_t cap = c->caprecs ? c->caprecs * 2 : 64;
    pl_rec *r = realloc(c->recs, cap * sizeof *r);
    if (r == NULL)
      return NULL;
    c->recs = r;
    c->caprecs = cap;
  }
  pl_rec *r = &c->recs[c->nrecs++];
  memset(r, 0, sizeof *r);
  return r;
}

static int record(pl_chunk *c, int status, jm_read *rd) {
  pl_rec *r = new_rec(c);
  if (r == NULL)
    return -ENOMEM;
  r->offset = rd->offset;
  r->rel_line = rd->line;
  if (status == JM_READ_BAD) {
    r->bad = 1;
    r->type = (uint8_t)rd->bad.reason;
    return arena_put(c, rd->bad.msg, strlen(rd->bad.msg), &r->f[0]);
  }
  jm__fev fev;
  char *tmp;
  int rc = jm__fev_from_event(&rd->event, rd->line, &fev, &tmp);
  r->type = (uint8_t)fev.type;
  memcpy(r->ts, fev.ts, JM_TS_LEN);
  for (int i = 0; rc == 0 && i < JM__F_COUNT; i++) {
    r->f[i].state = (uint8_t)fev.f[i].state;
    if (fev.f[i].state == JM_SET)
      rc = arena_put(c, fev.f[i].p, fev.f[i].n, &r->f[i]);
  }
  free(tmp);
  return rc;
}

/* Fold one line of a one-chunk file on the worker. */
static int fold_read(pl_chunk *c, int status, jm_read *rd) {
  if (status == JM_READ_BAD) {
    c->bad++;
    return jm__fold_bad(&c->fold, rd->line, rd->offset, rd->bad.reason,
                        rd->bad.msg);
  }
  jm__fev fev;
  char *tmp;
  int rc = jm__fev_from_event(&rd->event, rd->line, &fev, &tmp);
  if (rc == 0)
    rc = jm__fold_apply(&c->fold, &fev);
  free(tmp);
  c->events++;
  return rc;
}

/* Working one chunk -------------------------------------------------------------- */

/* Where the first line owned by chunk `no` starts; UINT64_MAX if none. */
static uint64_t chunk_start(int fd, uint32_t no, uint64_t size, int *err) {
  uint64_t start = (uint64_t)no * CHUNK;
  if (no == 0)
    return 0;
  uint64_t lim = start + CHUNK < size ? start + CHUNK : size;
  char buf[8192];
  uint64_t pos = start - 1; /* look at the byte before, then onwards */
  while (pos < lim) {
    size_t want = lim - pos < sizeof buf ? (size_t)(lim - pos) : sizeof buf;
    ssize_t n = jm__pread_full(fd, buf, want, (off_t)pos);
    if (n <= 0) {
      *err = n < 0 ? (int)n : 0;
      return UINT64_MAX;
    }
    char *nl = memchr(buf, '\n', (size_t)n);
    if (nl != NULL) {
      uint64_t s = pos + (uint64_t)(nl - buf) + 1;
      return s < lim ? s : UINT64_MAX;
    }
    pos += (uint64_t)n;
  }
  return UINT64_MAX;
}

static int work_chunk(jm__pipeline *p, size_t k, pl_chunk *c) {
  const jm__pl_file *f = &p->files[p->chunk_file[k]];
  uint32_t no = p->chunk_no[k];
  int fd = jm__open(f->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  if (fd < 0)
    return fd;
  int rc = 0;
  uint64_t nominal_end = ((uint64_t)no + 1) * CHUNK;
  uint64_t start = chunk_start(fd, no, f->size, &rc);
  jm_reader *r = NULL;
  char *buf = NULL;
  if (start == UINT64_MAX || start >= f->size)
    goto out; /* no line starts here */
  r = jm_reader_new(f->id, p->max_line);
  buf = malloc(READ_SIZE);
  if (r == NULL || buf == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  c->folded = p->fold_small && f->nchunks == 1;
  jm_reader_seek(r, start, 0);
  jm__reader_stop_at(r, nominal_end);
  uint64_t pos = start;
  int done = 0;
  while (!done && rc == 0 && pos < f->size) {
    size_t want = f->size - pos < READ_SIZE ? (size_t)(f->size - pos)
                                            : READ_SIZE;
    ssize_t n = jm__pread_full(fd, buf, want, (off_t)pos);
    if (n <= 0) {
      rc = n < 0 ? (int)n : 0;
      break;
    }
    pos += (uint64_t)n;
    jm_reader_feed(r, buf, (size_t)n);
    jm_read rd;
    int st;
    while (rc == 0 && (st = jm_reader_next(r, &rd)) != JM_READ_NEED_MORE)
      rc = st < 0 ? st : c->folded ? fold_read(c, st, &rd)
                                    : record(c, st, &rd);
    done = jm_reader_offset(r) >= nominal_end;
  }
  c->lines = jm_reader_line(r);
  c->end = c->lines ? jm_reader_offset(r) : 0;
  c->bytes = c->lines ? c->end - start : 0;
out:
  jm_reader_free(r);
  free(buf);
  jm__close(fd);
  return rc;
}

static void *worker_main(void *arg) {
  jm__pipeline *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!p->stop && p->next_claim < p->nchunks) {
    if (p->next_claim >= p->consumed + p->window) {
      pthread_cond_wait(&p->space, &p->mu);
      continue;
    }
    size_t k = p->next_claim++;
    pl_chunk *c = &p->slots[k % p->window];
    pthread_mutex_unlock(&p->mu);
    int rc = work_chunk(p, k, c);
    pthread_mutex_lock(&p->mu);
    c->err = rc;
    c->ready = 1;
    pthread_cond_broadcast(&p->ready);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Set-up and the writer's side ----------------------------------------------------- */

static int plan_chunks(jm__pipeline *p) {
  size_t n = 0;
  for (size_t i = 0; i < p->nfiles; i++) {
    uint64_t k = (p->files[i].size + CHUNK - 1) / CHUNK;
    p->files[i].nchunks = (uint32_t)(k ? k : 1);
    n += p->files[i].nchunks;
  }
  p->chunk_file = malloc((n ? n : 1) * sizeof *p->chunk_file);
  p->chunk_no = malloc((n ? n : 1) * sizeof *p->chunk_no);
  if (p->chunk_file == NULL || p->chunk_no == NULL)
    return -ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < p->nfiles; i++)
    for (uint32_t c = 0; c < p->files[i].nchunks; c++) {
      p->chunk_file[k] = (uint32_t)i;
      p->chunk_no[k++] = c;
    }
  p->nchunks = n;
  return 0;
}

static void slot_reset(pl_chunk *c) {
  c->ready = 0;
  c->err = 0;
  c->lines = c->end = c->bytes = 0;
  c->nrecs = 0;
  c->arena.len = 0;
  c->folded = 0;
  c->events = c->bad = 0;
  jm__fold_release(&c->fold); /* empty unless the sink failed first */
}

static void stop_workers(jm__pipeline *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->space);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  p->nthreads = 0;
}

static void pipeline_free(jm__pipeline *p) {
  if (p->threads)
    stop_workers(p);
  for (size_t i = 0; p->slots && i < p->window; i++) {
    free(p->slots[i].recs);
    jm__buf_release(&p->slots[i].arena);
    jm__fold_release(&p->slots[i].fold);
  }
  free(p->slots);
  free(p->threads);
  free(p->chunk_file);
  free(p->chunk_no);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->ready);
  pthread_cond_destroy(&p->space);
}

/* Hand each record of chunk c to the sink, with absolute line numbers. */
static int deliver(jm__pl_sink *sink, jm__pl_file *f, pl_chunk *c,
                   uint64_t base) {
  const char *a = c->arena.p;
  for (size_t i = 0; i < c->nrecs; i++) {
    const pl_rec *r = &c->recs[i];
    int rc;
    if (r->bad) {
      char msg[256];
      size_t n = r->f[0].len < sizeof msg - 1 ? r->f[0].len : sizeof msg - 1;
      memcpy(msg, a + r->f[0].off, n);
      msg[n] = '\0';
      rc = sink->bad(sink->ctx, f, base + r->rel_line, r->offset,
                     (jm_bad_reason)r->type, msg);
    } else {
      char ts[JM_TS_LEN + 1];
      memcpy(ts, r->ts, JM_TS_LEN);
      ts[JM_TS_LEN] = '\0';
      jm__fev ev = {(jm_event_type)r->type, ts, base + r->rel_line, {{0}}};
      for (int k = 0; k < JM__F_COUNT; k++) {
        ev.f[k].state = (jm_presence)r->f[k].state;
        if (ev.f[k].state == JM_SET) {
          ev.f[k].p = a + r->f[k].off;
          ev.f[k].n = r->f[k].len;
        }
      }
      rc = sink->event(sink->ctx, f, &ev);
    }
    if (rc)
      return rc;
  }
  return 0;
}

/* Give chunk k to the sink.  *skip names a file being skipped. */
static int write_chunk(jm__pipeline *p, jm__pl_sink *sink, size_t k,
                       pl_chunk *c, uint64_t *base, uint64_t *last_end,
                       size_t *skip) {
  size_t fi = p->chunk_file[k];
  jm__pl_file *f = &p->files[fi];
  int rc;
  if (fi == *skip)
    return 0;
  if (p->chunk_no[k] == 0) {
    *base = *last_end = 0;
    if (c->err == 0 && (rc = sink->begin(sink->ctx, f)) != 0)
      return rc;
  }
  if (c->err != 0) {
    rc = sink->io_error(sink->ctx, f, c->err, p->chunk_no[k] > 0);
    *skip = fi;
    return rc;
  }
  if (c->folded)
    rc = sink->folded(sink->ctx, f, &c->fold, c->events, c->bad);
  else
    rc = deliver(sink, f, c, *base);
  if (rc != 0)
    return rc;
  *base += c->lines;
  if (c->end)
    *last_end = c->end;
  if (sink->progress)
    sink->progress(sink->ctx, c->bytes);
  if (p->chunk_no[k] + 1 == f->nchunks)
    return sink->end(sink->ctx, f, *last_end, *base);
  return 0;
}

static int write_all(jm__pipeline *p, jm__pl_sink *sink) {
  uint64_t base = 0, last_end = 0;
  size_t skip = SIZE_MAX;
  for (size_t k = 0; k < p->nchunks; k++) {
    pl_chunk *c = &p->slots[k % p->window];
    pthread_mutex_lock(&p->mu);
    while (!c->ready)
      pthread_cond_wait(&p->ready, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (sink->canceled && sink->canceled(sink->ctx))
      return JM_ECANCELED;
    int rc = write_chunk(p, sink, k, c, &base, &last_end, &skip);
    if (rc != 0)
      return rc;
    pthread_mutex_lock(&p->mu);
    slot_reset(c);
    p->consumed++;
    pthread_cond_broadcast(&p->space);
    pthread_mutex_unlock(&p->mu);
  }
  return 0;
}

int jm__pipeline_run(jm__pl_file *files, size_t nfiles, int threads,
                     size_t max_line, jm__pl_sink *sink) {
  jm__pipeline p;
  memset(&p, 0, sizeof p);
  p.files = files;
  p.nfiles = nfiles;
  p.max_line = max_line;
  p.fold_small = sink->folded != NULL;
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.ready, NULL);
  pthread_cond_init(&p.space, NULL);
  if (threads < 1)
    threads = 1;
  p.window = (size_t)threads * WINDOW_PER_WORKER;
  int rc = plan_chunks(&p);
  p.slots = calloc(p.window, sizeof *p.slots);
  p.threads = calloc((size_t)threads, sizeof *p.threads);
  if (rc != 0 || p.slots == NULL || p.threads == NULL) {
    pipeline_free(&p);
    return -ENOMEM;
  }
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&p.threads[i], NULL, worker_main, &p) != 0)
      break;
    p.nthreads++;
  }
  if (p.nthreads == 0) {
    pipeline_free(&p);
    return -EAGAIN;
  }
  rc = write_all(&p, sink);
  pipeline_free(&p);
  return rc;
}
