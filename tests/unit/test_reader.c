/*
 * test_reader.c - the incremental line reader (src/reader.c).
 *
 * The reader's promise is that framing does not depend on how the bytes
 * arrive: the daemon feeds whatever a read() returned, replay feeds big
 * blocks.  So the central test feeds one sample file (CRLF, blank lines, bad
 * lines, multi-byte UTF-8, a pending tail) at every 1- and 2-split position
 * and in random chunkings, and compares what comes out with an oracle that
 * frames the whole file naively.  Every chunk is copied into its own buffer
 * that is scribbled over and freed once the reader says NEED_MORE, so a
 * reader that kept a pointer into an old chunk gives wrong bytes (or an ASan
 * report) instead of passing by luck.
 */
#include "test.h"
#include "jmirror/jmirror.h"

#include <errno.h>
#include <sys/resource.h>

/* One line as the reader reported it. */
typedef struct rec {
  int status;
  uint64_t line, offset, end;
  char *raw; /* copy of out->raw, or NULL */
  size_t raw_len;
  int reason; /* bad.reason for JM_READ_BAD */
} rec;

typedef struct recs {
  rec *v;
  size_t n, cap;
} recs;

static void recs_push(recs *rs, const rec *r) {
  if (rs->n == rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 32;
    rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
    ASSERT(rs->v != NULL);
  }
  rs->v[rs->n++] = *r;
}

static void recs_free(recs *rs) {
  for (size_t i = 0; i < rs->n; i++)
    free(rs->v[i].raw);
  free(rs->v);
  memset(rs, 0, sizeof *rs);
}

static void rec_from(rec *r, int st, const jm_read *rd) {
  memset(r, 0, sizeof *r);
  r->status = st;
  r->line = rd->line;
  r->offset = rd->offset;
  r->end = rd->end;
  r->reason = st == JM_READ_BAD ? (int)rd->bad.reason : 0;
  if (rd->raw != NULL) {
    r->raw = malloc(rd->raw_len + 1);
    memcpy(r->raw, rd->raw, rd->raw_len);
    r->raw[rd->raw_len] = '\0';
    r->raw_len = rd->raw_len;
  }
}

/* When set (read_cuts), every byte fed is either consumed, up to the
 * offset just past the last LF handed out, or pending: offset + pending is
 * the number of bytes fed, after every call. */
static int g_check_fed;
static uint64_t g_fed;

/* Drain the reader into rs until NEED_MORE. */
static void drain(jm_reader *r, recs *rs) {
  jm_read rd;
  int st;
  for (;;) {
    st = jm_reader_next(r, &rd);
    if (g_check_fed)
      ASSERT_EQ(jm_reader_offset(r) + jm_reader_pending(r), g_fed);
    if (st == JM_READ_NEED_MORE)
      break;
    ASSERT(st == JM_READ_EVENT || st == JM_READ_BAD || st == JM_READ_LINE);
    if (st == JM_READ_EVENT)
      ASSERT(rd.event.root != NULL);
    rec x;
    rec_from(&x, st, &rd);
    recs_push(rs, &x);
  }
}

/* Feed a private copy of buf[0..n), drain, then scribble and free it. */
static void feed_chunk(jm_reader *r, const char *buf, size_t n, recs *rs) {
  g_fed += n;
  char *copy = malloc(n ? n : 1);
  memcpy(copy, buf, n);
  jm_reader_feed(r, copy, n);
  drain(r, rs);
  memset(copy, 'X', n);
  free(copy);
}

/* Feed data cut at the given positions (sorted, within [0, len]). */
static void read_cuts(jm_reader *r, const char *data, size_t len,
                      const size_t *cuts, size_t ncuts, recs *rs) {
  size_t at = 0;
  g_check_fed = 1;
  g_fed = jm_reader_offset(r) + jm_reader_pending(r);
  for (size_t i = 0; i <= ncuts; i++) {
    size_t to = i < ncuts ? cuts[i] : len;
    feed_chunk(r, data + at, to - at, rs);
    at = to;
  }
  g_check_fed = 0;
}

static void assert_recs_eq(const recs *want, const recs *got,
                           const char *what) {
  if (want->n != got->n)
    test_fail(__FILE__, __LINE__, "%s: %zu lines, want %zu", what, got->n,
              want->n);
  for (size_t i = 0; i < want->n; i++) {
    const rec *a = &want->v[i], *b = &got->v[i];
    if (a->status != b->status || a->line != b->line ||
        a->offset != b->offset || a->end != b->end || a->reason != b->reason ||
        a->raw_len != b->raw_len || (a->raw == NULL) != (b->raw == NULL) ||
        (a->raw && memcmp(a->raw, b->raw, a->raw_len) != 0))
      test_fail(__FILE__, __LINE__,
                "%s: record %zu differs: want (st %d, line %llu, off %llu, "
                "end %llu, reason %d, %zu bytes) got (st %d, line %llu, off "
                "%llu, end %llu, reason %d, %zu bytes \"%.60s\")",
                what, i, a->status, (unsigned long long)a->line,
                (unsigned long long)a->offset, (unsigned long long)a->end,
                a->reason, a->raw_len, b->status, (unsigned long long)b->line,
                (unsigned long long)b->offset, (unsigned long long)b->end,
                b->reason, b->raw_len, b->raw ? b->raw : "(null)");
  }
}

/* ------------------------------------------------------------------ */
/* The sample and its oracle.                                           */

#define EV(extra)                                                            \
  "{\"type\":\"message\",\"id\":\"m1\",\"role\":\"user\",\"content\":"       \
  "\"" extra "\",\"ts\":\"2026-01-02T03:04:05Z\"}"

static const char sample[] =
    EV("h\xc3\xa9llo \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xf0\x9f\x98\x80")
    "\n"                                         /* 1 event, Unicode */
    EV("crlf") "\r\n"                            /* 2 event, CRLF */
    "\n"                                         /* 3 blank */
    " \t \r\n"                                   /* 4 blank */
    "{\"type\":\"message\"\n"                    /* 5 invalid_json */
    "[1,2]\r\n"                                  /* 6 not_object */
    "{\"a\":\"\xff\"}\n"                         /* 7 invalid_utf8 */
    EV("two crs") "\r\r\n"                       /* 8 one CR kept */
    "\r\n"                                       /* 9 blank */
    "{\"type\":\"x.future\",\"ts\":\"2026-01-02T03:04:05.123Z\"}\n" /* 10 */
    EV("\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \\\"quoted\\\" \\\\ \\u0000 "
       "\xe2\x80\xa8") "\n"                      /* 11 event, emoji, NUL */
    "{\"type\":\"message\",\"id\":\"m2\",\"role\":\"user\"," /* 12 missing */
    "\"ts\":\"2026-01-02T03:04:05Z\"}\n"
    "\r"                                         /* 13 lone CR, then: */
    "\n"
    " \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t"
    " \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t \t"
    "\r\r\n"                                    /* 14 blank, 82 bytes */
    "{\"type\":\"message\",\"id\":\"m3\""; /* pending tail, no LF */

#define SAMPLE_LEN (sizeof sample - 1)
#define SAMPLE_LINES 14

/* Frame the whole buffer naively: split on LF, drop one CR, skip blanks
 * (of any length: format section 2 skips every line of only spaces, tabs and
 * CR), too_long by length, classify the rest with jm_event_parse (or LINE). */
static void oracle(const char *data, size_t len, size_t max_line, int raw,
                   uint64_t first_line, uint64_t base, recs *rs) {
  uint64_t line = first_line;
  size_t at = 0;
  for (;;) {
    const char *nl = memchr(data + at, '\n', len - at);
    if (nl == NULL)
      break;
    size_t seg = (size_t)(nl - (data + at));
    size_t n = seg;
    if (n > 0 && data[at + n - 1] == '\r')
      n--;
    rec x;
    memset(&x, 0, sizeof x);
    x.line = ++line;
    x.offset = base + at;
    x.end = base + at + seg + 1;
    int blank = 1;
    for (size_t i = 0; i < n; i++)
      if (data[at + i] != ' ' && data[at + i] != '\t' && data[at + i] != '\r')
        blank = 0;
    if (blank) { /* blank whatever its length: not a bad line */
      at += seg + 1;
      continue;
    } else if (n > max_line) {
      x.status = JM_READ_BAD;
      x.reason = JM_BAD_TOO_LONG;
    } else {
      x.raw = malloc(n + 1);
      memcpy(x.raw, data + at, n);
      x.raw[n] = '\0';
      x.raw_len = n;
      if (raw) {
        x.status = JM_READ_LINE;
      } else {
        jm_event ev;
        jm_bad bad;
        int rc = jm_event_parse(data + at, n, NULL, max_line, &ev, &bad);
        ASSERT(rc >= 0);
        x.status = rc == JM_EVENT_OK ? JM_READ_EVENT : JM_READ_BAD;
        x.reason = rc == JM_EVENT_OK ? 0 : (int)bad.reason;
        if (rc == JM_EVENT_OK)
          jm_event_release(&ev);
      }
    }
    recs_push(rs, &x);
    at += seg + 1;
  }
}

static size_t tail_len(const char *data, size_t len) {
  size_t i = len;
  while (i > 0 && data[i - 1] != '\n')
    i--;
  return len - i;
}

static jm_reader *new_reader(size_t max_line, int raw) {
  jm_reader *r = jm_reader_new(NULL, max_line);
  ASSERT(r != NULL);
  jm_reader_set_raw(r, raw);
  return r;
}

/* After everything was fed: position and pending tail are right. */
static void assert_at_end(jm_reader *r, const char *data, size_t len,
                          uint64_t lines) {
  size_t tail = tail_len(data, len);
  ASSERT_EQ(jm_reader_pending(r), tail);
  ASSERT_EQ(jm_reader_offset(r), len - tail);
  ASSERT_EQ(jm_reader_line(r), lines);
}

/* ------------------------------------------------------------------ */

/* The oracle itself agrees with a hand count, so it cannot drift along
 * with a reader bug. */
static void test_sample_by_hand(void) {
  recs want = {0};
  oracle(sample, SAMPLE_LEN, JM_MAX_LINE_DEFAULT, 0, 0, 0, &want);
  static const struct {
    uint64_t line;
    int status, reason;
  } hand[] = {
      {1, JM_READ_EVENT, 0},
      {2, JM_READ_EVENT, 0},
      {5, JM_READ_BAD, JM_BAD_INVALID_JSON},
      {6, JM_READ_BAD, JM_BAD_NOT_OBJECT},
      {7, JM_READ_BAD, JM_BAD_INVALID_UTF8},
      {8, JM_READ_EVENT, 0}, /* "{...}\r": JSON whitespace after the CR */
      {10, JM_READ_EVENT, 0},
      {11, JM_READ_EVENT, 0},
      {12, JM_READ_BAD, JM_BAD_MISSING_MEMBER},
  };
  ASSERT_EQ(want.n, sizeof hand / sizeof hand[0]);
  for (size_t i = 0; i < want.n; i++) {
    ASSERT_EQ(want.v[i].line, hand[i].line);
    ASSERT_EQ(want.v[i].status, hand[i].status);
    ASSERT_EQ(want.v[i].reason, hand[i].reason);
  }
  recs_free(&want);
}

/* Fed whole, the reader gives exactly the oracle's lines; the pending tail
 * stays pending and surfaces only once its LF arrives. */
static void test_whole_matches_oracle(void) {
  for (int raw = 0; raw <= 1; raw++) {
    recs want = {0}, got = {0};
    oracle(sample, SAMPLE_LEN, JM_MAX_LINE_DEFAULT, raw, 0, 0, &want);
    jm_reader *r = new_reader(0, raw);
    feed_chunk(r, sample, SAMPLE_LEN, &got);
    assert_recs_eq(&want, &got, raw ? "whole raw" : "whole");
    assert_at_end(r, sample, SAMPLE_LEN, SAMPLE_LINES);
    /* Nothing more comes out without new bytes. */
    jm_read rd;
    ASSERT_EQ(jm_reader_next(r, &rd), JM_READ_NEED_MORE);
    ASSERT_EQ(jm_reader_pending(r), tail_len(sample, SAMPLE_LEN));
    /* The LF arrives: the tail becomes line 14 (a bad line: no "}"). */
    recs more = {0};
    feed_chunk(r, "}\n", 2, &more);
    ASSERT_EQ(more.n, 1);
    ASSERT_EQ(more.v[0].line, SAMPLE_LINES + 1);
    ASSERT_EQ(more.v[0].offset, SAMPLE_LEN - tail_len(sample, SAMPLE_LEN));
    ASSERT_EQ(more.v[0].end, SAMPLE_LEN + 2);
    ASSERT_EQ(jm_reader_pending(r), 0);
    ASSERT_EQ(jm_reader_offset(r), SAMPLE_LEN + 2);
    if (raw)
      ASSERT_MEM_EQ(more.v[0].raw, more.v[0].raw_len,
                    "{\"type\":\"message\",\"id\":\"m3\"}", 28);
    else
      ASSERT_EQ(more.v[0].reason, JM_BAD_MISSING_MEMBER);
    recs_free(&more);
    jm_reader_free(r);
    recs_free(&want);
    recs_free(&got);
  }
}

/* Every split into two and three chunks gives the same lines. */
static void check_all_splits(size_t max_line, int raw) {
  recs want = {0};
  oracle(sample, SAMPLE_LEN, max_line ? max_line : JM_MAX_LINE_DEFAULT, raw,
         0, 0, &want);
  for (size_t i = 0; i <= SAMPLE_LEN; i++) {
    recs got = {0};
    jm_reader *r = new_reader(max_line, raw);
    read_cuts(r, sample, SAMPLE_LEN, &i, 1, &got);
    assert_recs_eq(&want, &got, test_fmt("split at %zu", i));
    assert_at_end(r, sample, SAMPLE_LEN, SAMPLE_LINES);
    jm_reader_free(r);
    recs_free(&got);
  }
  for (size_t i = 0; i <= SAMPLE_LEN; i++)
    for (size_t k = i; k <= SAMPLE_LEN; k++) {
      size_t cuts[2] = {i, k};
      recs got = {0};
      jm_reader *r = new_reader(max_line, raw);
      read_cuts(r, sample, SAMPLE_LEN, cuts, 2, &got);
      assert_recs_eq(&want, &got, test_fmt("split at %zu,%zu", i, k));
      assert_at_end(r, sample, SAMPLE_LEN, SAMPLE_LINES);
      jm_reader_free(r);
      recs_free(&got);
    }
  recs_free(&want);
}

static void test_splits_parse(void) { check_all_splits(0, 0); }
static void test_splits_raw(void) { check_all_splits(0, 1); }
/* 60 bytes: the events become too_long, short bad lines stay; lines of
 * 60/61 content bytes and CRs straddle the limit at every split. */
static void test_splits_small_max(void) { check_all_splits(60, 0); }
static void test_splits_small_max_raw(void) { check_all_splits(60, 1); }

static uint64_t rng_state;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static void seed_rng(void) {
  const char *s = getenv("JM_TEST_SEED");
  rng_state = s ? strtoull(s, NULL, 0) : 0x9e3779b97f4a7c15ULL;
  if (rng_state == 0)
    rng_state = 1;
  fprintf(stderr, "# seed %llu\n", (unsigned long long)rng_state);
}

static void test_random_chunkings(void) {
  seed_rng();
  static const size_t maxes[] = {0, 20, 60, 61, 62, 120};
  for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++)
    for (int raw = 0; raw <= 1; raw++) {
      recs want = {0};
      oracle(sample, SAMPLE_LEN, maxes[m] ? maxes[m] : JM_MAX_LINE_DEFAULT,
             raw, 0, 0, &want);
      for (int iter = 0; iter < 300; iter++) {
        size_t cuts[SAMPLE_LEN + 1], n = 0, at = 0;
        size_t max_chunk = 1 + rnd() % (iter % 3 == 0 ? 4 : 80);
        for (;;) {
          at += rnd() % (max_chunk + 1); /* 0: an empty chunk now and then */
          if (at >= SAMPLE_LEN || n == SAMPLE_LEN)
            break;
          cuts[n++] = at;
        }
        recs got = {0};
        jm_reader *r = new_reader(maxes[m], raw);
        read_cuts(r, sample, SAMPLE_LEN, cuts, n, &got);
        assert_recs_eq(&want, &got,
                       test_fmt("max %zu raw %d iter %d", maxes[m], raw, iter));
        assert_at_end(r, sample, SAMPLE_LEN, SAMPLE_LINES);
        jm_reader_free(r);
        recs_free(&got);
      }
      recs_free(&want);
    }
}

/* While bytes arrive without an LF, nothing comes out and pending() counts
 * exactly the bytes after the last LF. */
static void test_pending_tail(void) {
  const char *line1 = "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\"}\n";
  const char *tail = "{\"type\":\"b\",\"ts\":\"2026-01-02T03:04:05Z\"}";
  jm_reader *r = new_reader(0, 0);
  ASSERT_EQ(jm_reader_pending(r), 0);
  recs got = {0};
  feed_chunk(r, line1, strlen(line1), &got);
  ASSERT_EQ(got.n, 1);
  for (size_t i = 0; i < strlen(tail); i++) {
    feed_chunk(r, tail + i, 1, &got);
    ASSERT_EQ(got.n, 1);
    ASSERT_EQ(jm_reader_pending(r), i + 1);
    ASSERT_EQ(jm_reader_offset(r), strlen(line1));
    ASSERT_EQ(jm_reader_line(r), 1);
  }
  feed_chunk(r, "\r", 1, &got); /* a CR is not an end of line */
  ASSERT_EQ(got.n, 1);
  ASSERT_EQ(jm_reader_pending(r), strlen(tail) + 1);
  feed_chunk(r, "\n", 1, &got);
  ASSERT_EQ(got.n, 2);
  ASSERT_EQ(got.v[1].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[1].line, 2);
  ASSERT_EQ(got.v[1].offset, strlen(line1));
  ASSERT_EQ(got.v[1].end, strlen(line1) + strlen(tail) + 2);
  ASSERT_MEM_EQ(got.v[1].raw, got.v[1].raw_len, tail, strlen(tail));
  ASSERT_EQ(jm_reader_pending(r), 0);
  recs_free(&got);
  jm_reader_free(r);
}

/* Blank and bad lines count: an event after them has its physical number. */
static void test_line_numbers_count_everything(void) {
  const char *data = "\n\n \r\nnot json\n[]\n\t\n"
                     "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\"}\n";
  jm_reader *r = new_reader(0, 0);
  recs got = {0};
  feed_chunk(r, data, strlen(data), &got);
  ASSERT_EQ(got.n, 3);
  ASSERT_EQ(got.v[0].line, 4);
  ASSERT_EQ(got.v[0].offset, 5);
  ASSERT_EQ(got.v[0].reason, JM_BAD_INVALID_JSON);
  ASSERT_EQ(got.v[1].line, 5);
  ASSERT_EQ(got.v[1].reason, JM_BAD_NOT_OBJECT);
  ASSERT_EQ(got.v[2].line, 7);
  ASSERT_EQ(got.v[2].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[2].offset, 19);
  ASSERT_EQ(jm_reader_line(r), 7);
  recs_free(&got);
  jm_reader_free(r);
}

/* Exactly one trailing CR is dropped, in place and when assembled. */
static void test_trailing_cr(void) {
  const char *data = "a\r\nb\r\r\nc\rd\n\r\r\n";
  for (int split = 0; split <= 1; split++) {
    jm_reader *r = new_reader(0, 1);
    recs got = {0};
    if (split)
      for (size_t i = 0; i < strlen(data); i++)
        feed_chunk(r, data + i, 1, &got);
    else
      feed_chunk(r, data, strlen(data), &got);
    ASSERT_EQ(got.n, 3); /* "\r\r\n" is blank */
    ASSERT_MEM_EQ(got.v[0].raw, got.v[0].raw_len, "a", 1);
    ASSERT_MEM_EQ(got.v[1].raw, got.v[1].raw_len, "b\r", 2);
    ASSERT_MEM_EQ(got.v[2].raw, got.v[2].raw_len, "c\rd", 3);
    ASSERT_EQ(got.v[1].end, 7);
    ASSERT_EQ(jm_reader_line(r), 4);
    recs_free(&got);
    jm_reader_free(r);
  }
}

/* The maximum counts content: max bytes + CR is fine, max+1 is not, and a
 * second CR is content. */
static void test_too_long_boundaries(void) {
  char ok[40], over[40], ok_cr[40], cr2[40];
  memset(ok, 'x', 10);
  memcpy(ok + 10, "\n", 2);
  memset(over, 'x', 11);
  memcpy(over + 11, "\n", 2);
  memset(ok_cr, 'x', 10);
  memcpy(ok_cr + 10, "\r\n", 3);
  memset(cr2, 'x', 10);
  memcpy(cr2 + 10, "\r\r\n", 4);
  char data[200];
  snprintf(data, sizeof data, "%s%s%s%s", ok, over, ok_cr, cr2);
  size_t len = strlen(data);
  for (size_t chunk = 1; chunk <= len; chunk++) {
    jm_reader *r = new_reader(10, 1);
    recs got = {0};
    for (size_t at = 0; at < len; at += chunk)
      feed_chunk(r, data + at, at + chunk <= len ? chunk : len - at, &got);
    ASSERT_EQ(got.n, 4);
    ASSERT_EQ(got.v[0].status, JM_READ_LINE);
    ASSERT_EQ(got.v[0].raw_len, 10);
    ASSERT_EQ(got.v[1].status, JM_READ_BAD);
    ASSERT_EQ(got.v[1].reason, JM_BAD_TOO_LONG);
    ASSERT(got.v[1].raw == NULL);
    ASSERT_EQ(got.v[1].offset, 11);
    ASSERT_EQ(got.v[1].end, 23);
    ASSERT_EQ(got.v[2].status, JM_READ_LINE);
    ASSERT_EQ(got.v[2].raw_len, 10);
    ASSERT_EQ(got.v[3].status, JM_READ_BAD);
    ASSERT_EQ(got.v[3].reason, JM_BAD_TOO_LONG);
    ASSERT_EQ(got.v[3].offset, 35);
    ASSERT_EQ(got.v[3].end, len);
    recs_free(&got);
    jm_reader_free(r);
  }
}

/* A too-long line inside one chunk, then a good line in the same chunk. */
static void test_too_long_one_chunk(void) {
  size_t big = 100000;
  const char *next = "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\"}\n";
  char *data = malloc(big + 1 + strlen(next));
  memset(data, 'y', big);
  data[big] = '\n';
  memcpy(data + big + 1, next, strlen(next));
  size_t len = big + 1 + strlen(next);
  jm_reader *r = new_reader(100, 0);
  recs got = {0};
  feed_chunk(r, data, len, &got);
  ASSERT_EQ(got.n, 2);
  ASSERT_EQ(got.v[0].status, JM_READ_BAD);
  ASSERT_EQ(got.v[0].reason, JM_BAD_TOO_LONG);
  ASSERT_EQ(got.v[0].line, 1);
  ASSERT_EQ(got.v[0].offset, 0);
  ASSERT_EQ(got.v[0].end, big + 1);
  ASSERT_EQ(got.v[1].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[1].line, 2);
  ASSERT_EQ(got.v[1].offset, big + 1);
  ASSERT_EQ(got.v[1].end, len);
  ASSERT_MEM_EQ(got.v[1].raw, got.v[1].raw_len, next, strlen(next) - 1);
  recs_free(&got);
  jm_reader_free(r);
  free(data);
}

static long max_rss_kib(void) {
  struct rusage ru;
  ASSERT_OK(getrusage(RUSAGE_SELF, &ru));
  return ru.ru_maxrss; /* KiB on Linux; bytes on macOS (only grows more) */
}

/* A 256 MiB line fed in 64 KiB chunks with a 100-byte maximum: reported
 * once as too_long with the right offsets, the reader keeps no copy of it
 * (peak RSS grows by far less than the line), and the next line is read
 * correctly. */
static void test_too_long_many_chunks(void) {
  const size_t chunk = 64 * 1024, big = (size_t)256 * 1024 * 1024;
  const char *next = "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\"}\n";
  char *buf = malloc(chunk);
  memset(buf, 'z', chunk);
  jm_reader *r = new_reader(100, 0);
  recs got = {0};
  feed_chunk(r, "{\"a\":1}\n", 8, &got); /* the long line starts at 8 */
  ASSERT_EQ(got.n, 1);
  long before = max_rss_kib();
  for (size_t at = 0; at < big; at += chunk) {
    jm_reader_feed(r, buf, chunk); /* the same buffer, rewritten each time */
    drain(r, &got);
    ASSERT_EQ(got.n, 1);
    ASSERT_EQ(jm_reader_pending(r), at + chunk);
    ASSERT_EQ(jm_reader_offset(r), 8);
  }
  long grown = max_rss_kib() - before;
  fprintf(stderr, "# peak RSS grew by %ld KiB over a %zu MiB line\n", grown,
          big >> 20);
  ASSERT(grown < 32 * 1024);
  /* The line ends mid-chunk; the next line follows in the same chunk. */
  size_t n = strlen(next);
  memcpy(buf, "zz\n", 3);
  memcpy(buf + 3, next, n);
  feed_chunk(r, buf, 3 + n, &got);
  ASSERT_EQ(got.n, 3);
  ASSERT_EQ(got.v[1].status, JM_READ_BAD);
  ASSERT_EQ(got.v[1].reason, JM_BAD_TOO_LONG);
  ASSERT_EQ(got.v[1].line, 2);
  ASSERT_EQ(got.v[1].offset, 8);
  ASSERT_EQ(got.v[1].end, 8 + big + 3);
  ASSERT_EQ(got.v[2].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[2].line, 3);
  ASSERT_EQ(got.v[2].offset, 8 + big + 3);
  ASSERT_EQ(got.v[2].end, 8 + big + 3 + n);
  ASSERT_MEM_EQ(got.v[2].raw, got.v[2].raw_len, next, n - 1);
  ASSERT_EQ(jm_reader_pending(r), 0);
  /* And a short line spanning chunks right after is assembled again. */
  feed_chunk(r, next, 10, &got);
  feed_chunk(r, next + 10, n - 10, &got);
  ASSERT_EQ(got.n, 4);
  ASSERT_EQ(got.v[3].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[3].line, 4);
  ASSERT_MEM_EQ(got.v[3].raw, got.v[3].raw_len, next, n - 1);
  recs_free(&got);
  jm_reader_free(r);
  free(buf);
}

/* A blank line longer than the maximum is still blank: skipped and
 * counted, not too_long; whether it lies in one chunk or spans many. */
static void test_long_blank_line(void) {
  const size_t big = 1 << 20, chunk = 4096;
  const char *next = "x\n";
  char *data = malloc(big + 8);
  for (size_t i = 0; i < big; i++)
    data[i] = " \t\r"[i % 3];
  memcpy(data + big, "\n", 1);
  memcpy(data + big + 1, next, 2);
  size_t len = big + 3;
  for (int whole = 0; whole <= 1; whole++) {
    jm_reader *r = new_reader(100, 1);
    recs got = {0};
    for (size_t at = 0; at < len; at += whole ? len : chunk)
      feed_chunk(r, data + at, whole || at + chunk > len ? len - at : chunk,
                 &got);
    ASSERT_EQ(got.n, 1);
    ASSERT_EQ(got.v[0].status, JM_READ_LINE);
    ASSERT_EQ(got.v[0].line, 2);
    ASSERT_EQ(got.v[0].offset, big + 1);
    ASSERT_MEM_EQ(got.v[0].raw, got.v[0].raw_len, "x", 1);
    recs_free(&got);
    jm_reader_free(r);
  }
  /* One non-blank byte anywhere makes it too_long again. */
  data[big / 2] = 'y';
  jm_reader *r = new_reader(100, 1);
  recs got = {0};
  for (size_t at = 0; at < len; at += chunk)
    feed_chunk(r, data + at, at + chunk > len ? len - at : chunk, &got);
  ASSERT_EQ(got.n, 2);
  ASSERT_EQ(got.v[0].status, JM_READ_BAD);
  ASSERT_EQ(got.v[0].reason, JM_BAD_TOO_LONG);
  ASSERT_EQ(got.v[1].line, 2);
  recs_free(&got);
  jm_reader_free(r);
  free(data);
}

/* An overlong partial line is pending, never a line. */
static void test_too_long_pending(void) {
  jm_reader *r = new_reader(10, 0);
  recs got = {0};
  feed_chunk(r, "xxxxxxxxxxxxxxxxxxxxxxxxx", 25, &got);
  feed_chunk(r, "yyyyy", 5, &got);
  ASSERT_EQ(got.n, 0);
  ASSERT_EQ(jm_reader_pending(r), 30);
  ASSERT_EQ(jm_reader_line(r), 0);
  recs_free(&got);
  jm_reader_free(r);
}

/* Seeking to each line boundary and feeding the rest (split at random)
 * gives the suffix of the whole file's lines, with the same numbers. */
static void test_seek_resumes(void) {
  seed_rng();
  for (int raw = 0; raw <= 1; raw++) {
    recs all = {0};
    oracle(sample, SAMPLE_LEN, JM_MAX_LINE_DEFAULT, raw, 0, 0, &all);
    uint64_t line = 0;
    for (size_t off = 0; off <= SAMPLE_LEN; off++) {
      if (off > 0 && sample[off - 1] != '\n')
        continue;
      if (off > 0)
        line++;
      recs want = {0}, got = {0};
      for (size_t i = 0; i < all.n; i++)
        if (all.v[i].offset >= off) {
          rec x = all.v[i];
          x.raw = NULL;
          if (all.v[i].raw) {
            x.raw = malloc(x.raw_len + 1);
            memcpy(x.raw, all.v[i].raw, x.raw_len + 1);
          }
          recs_push(&want, &x);
        }
      /* A reader in some earlier state: mid-line, with a line read. */
      jm_reader *r = new_reader(0, raw);
      feed_chunk(r, "[0]\n", 4, &got);
      ASSERT_EQ(got.n, 1);
      recs_free(&got);
      feed_chunk(r, "{\"partial\":", 11, &got);
      ASSERT_EQ(got.n, 0);
      jm_reader_seek(r, off, line);
      ASSERT_EQ(jm_reader_offset(r), off);
      ASSERT_EQ(jm_reader_line(r), line);
      ASSERT_EQ(jm_reader_pending(r), 0);
      size_t cut = off + rnd() % (SAMPLE_LEN - off + 1);
      size_t cuts[1] = {cut - off};
      read_cuts(r, sample + off, SAMPLE_LEN - off, cuts, 1, &got);
      assert_recs_eq(&want, &got, test_fmt("seek to %zu", off));
      assert_at_end(r, sample, SAMPLE_LEN, SAMPLE_LINES);
      jm_reader_free(r);
      recs_free(&want);
      recs_free(&got);
    }
    recs_free(&all);
  }
}

/* seek() also clears an overlong state: the next line is not too_long. */
static void test_seek_clears_overlong(void) {
  jm_reader *r = new_reader(10, 1);
  recs got = {0};
  feed_chunk(r, "0123456789012345678901234567890", 31, &got);
  ASSERT_EQ(jm_reader_pending(r), 31);
  jm_reader_seek(r, 1000, 50);
  feed_chunk(r, "short\n", 6, &got);
  ASSERT_EQ(got.n, 1);
  ASSERT_EQ(got.v[0].status, JM_READ_LINE);
  ASSERT_EQ(got.v[0].line, 51);
  ASSERT_EQ(got.v[0].offset, 1000);
  ASSERT_EQ(got.v[0].end, 1006);
  ASSERT_MEM_EQ(got.v[0].raw, got.v[0].raw_len, "short", 5);
  recs_free(&got);
  jm_reader_free(r);
}

/* Raw mode frames without parsing: any non-blank line is a LINE with its
 * bytes, too_long is still BAD; switching back parses again. */
static void test_raw_mode(void) {
  const char *data = "not json\n\xff\xfe\n\n[1]\r\n"
                     "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\"}\n"
                     "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef"
                     "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef\n"
                     "[2]\n";
  jm_reader *r = new_reader(100, 1);
  recs got = {0};
  feed_chunk(r, data, strlen(data), &got);
  ASSERT_EQ(got.n, 6);
  ASSERT_EQ(got.v[0].status, JM_READ_LINE);
  ASSERT_MEM_EQ(got.v[0].raw, got.v[0].raw_len, "not json", 8);
  ASSERT_EQ(got.v[1].status, JM_READ_LINE);
  ASSERT_MEM_EQ(got.v[1].raw, got.v[1].raw_len, "\xff\xfe", 2);
  ASSERT_EQ(got.v[2].status, JM_READ_LINE);
  ASSERT_EQ(got.v[2].line, 4);
  ASSERT_MEM_EQ(got.v[2].raw, got.v[2].raw_len, "[1]", 3);
  ASSERT_EQ(got.v[3].status, JM_READ_LINE);
  ASSERT_EQ(got.v[4].status, JM_READ_BAD);
  ASSERT_EQ(got.v[4].reason, JM_BAD_TOO_LONG);
  ASSERT_EQ(got.v[5].status, JM_READ_LINE);
  recs_free(&got);
  jm_reader_free(r);

  r = new_reader(10, 1);
  got = (recs){0};
  feed_chunk(r, "[1]\n", 4, &got);
  jm_reader_set_raw(r, 0);
  feed_chunk(r, "[2]\n", 4, &got);
  ASSERT_EQ(got.n, 2);
  ASSERT_EQ(got.v[0].status, JM_READ_LINE);
  ASSERT_EQ(got.v[1].status, JM_READ_BAD);
  ASSERT_EQ(got.v[1].reason, JM_BAD_NOT_OBJECT);
  ASSERT_EQ(got.v[1].line, 2);
  recs_free(&got);
  jm_reader_free(r);
}

/* The conversation_id check uses the reader's id. */
static void test_conv_id_check(void) {
  const char *data =
      "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\",\"conversation_id\":\"c1\"}\n"
      "{\"type\":\"a\",\"ts\":\"2026-01-02T03:04:05Z\",\"conversation_id\":\"c2\"}\n";
  jm_reader *r = jm_reader_new("c1", 0);
  ASSERT(r != NULL);
  recs got = {0};
  feed_chunk(r, data, strlen(data), &got);
  ASSERT_EQ(got.n, 2);
  ASSERT_EQ(got.v[0].status, JM_READ_EVENT);
  ASSERT_EQ(got.v[1].status, JM_READ_BAD);
  ASSERT_EQ(got.v[1].reason, JM_BAD_CONVERSATION_MISMATCH);
  recs_free(&got);
  jm_reader_free(r);
}

/* An event handed out stays valid until the next call, and its fields are
 * those of the line. */
static void test_event_fields(void) {
  jm_reader *r = new_reader(0, 0);
  jm_reader_feed(r, sample, SAMPLE_LEN);
  jm_read rd;
  ASSERT_EQ(jm_reader_next(r, &rd), JM_READ_EVENT);
  ASSERT_EQ(rd.event.type, JM_EV_MESSAGE);
  ASSERT_STR_EQ(rd.event.ts, "2026-01-02T03:04:05.000000Z");
  ASSERT_MEM_EQ(rd.event.content.p, rd.event.content.n,
                "h\xc3\xa9llo \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
                "\xf0\x9f\x98\x80",
                strlen("h\xc3\xa9llo \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
                       "\xf0\x9f\x98\x80"));
  ASSERT_EQ(jm_reader_next(r, &rd), JM_READ_EVENT);
  ASSERT_MEM_EQ(rd.event.content.p, rd.event.content.n, "crlf", 4);
  jm_reader_free(r);
}

static const test_case cases[] = {
    TEST_CASE(test_sample_by_hand),
    TEST_CASE(test_whole_matches_oracle),
    TEST_CASE_T(test_splits_parse, 600),
    TEST_CASE_T(test_splits_raw, 600),
    TEST_CASE_T(test_splits_small_max, 600),
    TEST_CASE_T(test_splits_small_max_raw, 600),
    TEST_CASE_T(test_random_chunkings, 300),
    TEST_CASE(test_pending_tail),
    TEST_CASE(test_line_numbers_count_everything),
    TEST_CASE(test_trailing_cr),
    TEST_CASE(test_too_long_boundaries),
    TEST_CASE(test_too_long_one_chunk),
    TEST_CASE_T(test_too_long_many_chunks, 300),
    TEST_CASE(test_too_long_pending),
    TEST_CASE(test_long_blank_line),
    TEST_CASE(test_seek_resumes),
    TEST_CASE(test_seek_clears_overlong),
    TEST_CASE(test_raw_mode),
    TEST_CASE(test_conv_id_check),
    TEST_CASE(test_event_fields),
    {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
