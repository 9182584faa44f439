/*
 * fuzz_fold.c - libFuzzer target: the fold.
 *
 * The input is a journal file; every valid line is folded (no mirror: the
 * fold starts empty, as a fresh replay does).  At the end the changed
 * messages are visited and checked: message_count equals the messages
 * present, every present message has content and a role, seq never exceeds
 * the line count, created_at <= updated_at, the conversation's timestamps
 * are ordered.  Nothing may crash, hang or leak.
 */
#include <stdlib.h>
#include <string.h>

#include "fold.h"
#include "internal.h"

typedef struct check {
  int64_t present;
  uint64_t lines;
} check;

static void fail(const char *what) {
  fprintf(stderr, "fuzz_fold: invariant broken: %s\n", what);
  abort();
}

static int visit(void *ctx, jm__msg *m) {
  check *c = ctx;
  if (!m->exists)
    return 0;
  c->present++;
  if (m->content.p == NULL && m->content.len != 0)
    fail("content");
  if (m->role < 0 || m->role > 3)
    fail("role");
  if (m->seq < 1 || (uint64_t)m->seq > c->lines)
    fail("seq");
  if (strcmp(m->created_at, m->updated_at) > 0)
    fail("message timestamps");
  return 0;
}

static int visit_bad(void *ctx, const jm__bad_rec *b) {
  check *c = ctx;
  if (b->line < 1 || b->line > c->lines)
    fail("bad line number");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  jm_reader *r = jm_reader_new("c1", 4096);
  if (r == NULL)
    return 0;
  jm__fold f;
  jm__fold_init(&f, NULL, NULL);
  jm_reader_feed(r, data, size);
  jm_read rd;
  int st;
  while ((st = jm_reader_next(r, &rd)) > 0) {
    if (st == JM_READ_BAD) {
      jm__fold_bad(&f, rd.line, rd.offset, rd.bad.reason, rd.bad.msg);
      continue;
    }
    jm__fev fev;
    char *tmp = NULL;
    if (jm__fev_from_event(&rd.event, rd.line, &fev, &tmp) == 0)
      jm__fold_apply(&f, &fev);
    free(tmp);
  }
  check c = {0, jm_reader_line(r)};
  jm__conv conv = f.conv;
  if (conv.created_at[0] && strcmp(conv.created_at, conv.updated_at) > 0)
    fail("conversation timestamps");
  if (jm__fold_flush(&f, visit, visit_bad, &c) == 0 &&
      c.present != conv.message_count)
    fail("message_count");
  jm__fold_release(&f);
  jm_reader_free(r);
  return 0;
}
