/*
 * jm_gen.c - a deterministic generator of realistic journals (benchmarks).
 *
 *   jm_gen ROOT CONVERSATIONS SEED [--big N]
 *
 * Writes ROOT/journal/<id>.jsonl for CONVERSATIONS conversations; the same
 * seed gives the same bytes on every machine (own PRNG, no rand()).  Shape:
 *   - messages per conversation: log-normal, median ~40, a long tail into
 *     the thousands (capped at 6000);
 *   - user messages tens to thousands of characters, assistant messages up
 *     to ~8,000; text mixes English, Korean, emoji, quotes, backslashes,
 *     tabs and newlines;
 *   - about a third of assistant messages are streamed: message.delta
 *     chunks (some with thinking) then message.end with usage; 1 in 200
 *     streams is left unfinished;
 *   - some edits, deletes, renames (conversation.updated) and unknown
 *     events;
 *   - timestamps move forward per conversation, conversations spread over
 *     a year.
 * --big N adds one conversation "bench-big" of exactly N complete messages
 * (the single-conversation replay figure).
 * Every line is built with jansson; prints "conversations events bytes".
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* splitmix64: small, fast, identical everywhere. */
static uint64_t rng_state;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static double unif(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }
/* log-normal with the given median and spread (sigma) */
static double lognorm(double median, double sigma) {
  double u1 = unif(), u2 = unif();
  if (u1 < 1e-12)
    u1 = 1e-12;
  double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
  return median * exp(sigma * z);
}

static const char *const en[] = {
  "the", "mirror", "journal", "database", "conversation", "stream", "append",
  "quick", "brown", "fox", "replay", "offset", "transaction", "memory",
  "assistant", "question", "answer", "because", "should", "would", "index",
  "search", "backup", "machine", "error", "value", "function", "return",
  "system", "daemon", "process", "line", "file", "write", "read", "code",
  "example", "option", "result", "time", "data", "model", "think", "about",
  "with", "from", "this", "that", "have", "will", "into", "more", "some",
};
static const char *const ko[] = {
  "안녕하세요", "한국어", "데이터베이스", "대화", "검색", "기억", "파일",
  "백업", "질문", "답변", "생각", "오늘", "내일", "프로그램", "시스템",
  "를", "은", "는", "이", "가", "에서", "으로", "합니다", "있어요",
};
static const char *const emoji[] = {"😀", "🎉", "👍", "🚀", "❤️", "🤔",
                                    "✨", "📚", "🔥", "🙏"};
static const char *const punct[] = {", ", ". ", "! ", "? ", " \"quoted\" ",
                                    " (aside) ", " path\\to\\file ", ":\n",
                                    ".\n\n", "\t", " - ", "; "};

/* Append about `chars` characters of mixed text to buf. */
static void text(char *buf, size_t cap, size_t chars) {
  size_t n = 0, c = 0;
  int korean = below(4) == 0; /* a quarter of messages lean Korean */
  buf[0] = '\0';
  while (c < chars && n + 64 < cap) {
    const char *w;
    uint64_t r = below(100);
    if (r < 3)
      w = emoji[below(10)];
    else if (r < 10)
      w = punct[below(12)];
    else if ((korean && r < 70) || (!korean && r < 16))
      w = ko[below(24)];
    else
      w = en[below(sizeof en / sizeof *en)];
    size_t len = strlen(w);
    memcpy(buf + n, w, len);
    n += len;
    c += len;
    if (r >= 10 && n + 1 < cap) {
      buf[n++] = ' ';
      c++;
    }
  }
  buf[n] = '\0';
}

typedef struct gen {
  FILE *f;
  const char *id;
  int64_t t_us;           /* the conversation's clock */
  uint64_t events, bytes;
  char *buf;              /* text scratch */
  size_t cap;
} gen;

static void ts(gen *g, char out[40]) {
  g->t_us += 1000 + (int64_t)below(3000000);
  time_t s = (time_t)(g->t_us / 1000000);
  struct tm tm;
  gmtime_r(&s, &tm);
  snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (int)(g->t_us % 1000000));
}

static void emit(gen *g, json_t *ev) {
  char t[40];
  ts(g, t);
  json_object_set_new(ev, "ts", json_string(t));
  char *s = json_dumps(ev, JSON_COMPACT);
  size_t n = strlen(s);
  fwrite(s, 1, n, g->f);
  fputc('\n', g->f);
  g->events++;
  g->bytes += n + 1;
  free(s);
  json_decref(ev);
}

static void msg_id(char out[32], uint64_t k) { snprintf(out, 32, "m%06llu", (unsigned long long)k); }

static void streamed(gen *g, const char *id, const char *parent) {
  size_t len = (size_t)lognorm(2300, 0.7);
  if (len > 8000)
    len = 8000;
  text(g->buf, g->cap, len);
  size_t n = strlen(g->buf), pos = 0;
  int first = 1, think = below(3) == 0;
  while (pos < n) {
    size_t step = 24 + below(72);
    if (pos + step > n)
      step = n - pos;
    while (pos + step < n && ((unsigned char)g->buf[pos + step] & 0xC0) == 0x80)
      step++; /* never cut inside a UTF-8 sequence */
    json_t *ev = json_pack("{s:s,s:s,s:s%}", "type", "message.delta", "id", id,
                           "text", g->buf + pos, step);
    if (first && parent)
      json_object_set_new(ev, "parent_id", json_string(parent));
    if (think && below(4) == 0)
      json_object_set_new(ev, "thinking", json_string("considering the next step… "));
    emit(g, ev);
    pos += step;
    first = 0;
  }
  if (below(200) == 0)
    return; /* an aborted turn: no message.end */
  emit(g, json_pack("{s:s,s:s,s:s,s:{s:I,s:I}}", "type", "message.end", "id",
                    id, "stop_reason", "end_turn", "usage", "input_tokens",
                    (json_int_t)below(5000), "output_tokens",
                    (json_int_t)(n / 4)));
}

static void complete(gen *g, const char *id, const char *role,
                     const char *parent, size_t len) {
  text(g->buf, g->cap, len);
  json_t *ev = json_pack("{s:s,s:s,s:s,s:s}", "type", "message", "id", id,
                         "role", role, "content", g->buf);
  if (parent)
    json_object_set_new(ev, "parent_id", json_string(parent));
  if (strcmp(role, "assistant") == 0 && below(5) == 0)
    json_object_set_new(ev, "meta", json_pack("{s:s,s:f}", "model", "bench-1",
                                              "temperature", 0.7));
  emit(g, ev);
}

static void conversation(gen *g, uint64_t nmsg, int plain) {
  char title[64];
  snprintf(title, sizeof title, "Conversation %s", g->id);
  emit(g, json_pack("{s:s,s:s,s:s}", "type", "conversation.created", "title",
                    title, "brain", below(3) ? "claude" : "local"));
  char prev[32] = "", id[32];
  for (uint64_t k = 0; k < nmsg; k++) {
    msg_id(id, k);
    int user = k % 2 == 0;
    const char *parent = prev[0] ? prev : NULL;
    if (user) {
      size_t len = (size_t)lognorm(260, 1.1);
      complete(g, id, below(50) ? "user" : "system", parent,
               len < 10 ? 10 : len > 4000 ? 4000 : len);
    } else if (!plain && below(3) == 0)
      streamed(g, id, parent);
    else {
      size_t len = (size_t)lognorm(2300, 0.7);
      complete(g, id, below(40) ? "assistant" : "tool", parent,
               len > 8000 ? 8000 : len);
    }
    if (!plain && k > 2 && below(100) == 0) { /* an edit of an earlier one */
      char e[32];
      msg_id(e, k - 1 - below(2));
      text(g->buf, g->cap, 100);
      emit(g, json_pack("{s:s,s:s,s:s}", "type", "message.edited", "id", e,
                        "content", g->buf));
    }
    if (!plain && k > 2 && below(200) == 0) {
      char d[32];
      msg_id(d, k - 2);
      emit(g, json_pack("{s:s,s:s}", "type", "message.deleted", "id", d));
    }
    if (!plain && below(50) == 0)
      emit(g, json_pack("{s:s,s:s}", "type", "conversation.updated", "title",
                        "Renamed conversation"));
    if (!plain && below(500) == 0)
      emit(g, json_pack("{s:s,s:s}", "type", "x.client.note", "note",
                        "forward compatible"));
    memcpy(prev, id, sizeof prev);
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: jm_gen ROOT CONVERSATIONS SEED [--big N]\n");
    return 2;
  }
  const char *root = argv[1];
  uint64_t n = strtoull(argv[2], NULL, 10);
  rng_state = strtoull(argv[3], NULL, 10);
  uint64_t big = argc >= 6 && strcmp(argv[4], "--big") == 0
                     ? strtoull(argv[5], NULL, 10)
                     : 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/journal", root);
  mkdir(root, 0700);
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    perror(path);
    return 1;
  }
  gen g = {0};
  g.cap = 16384;
  g.buf = malloc(g.cap);
  uint64_t events = 0, bytes = 0;
  int64_t year_us = 365LL * 86400 * 1000000;
  for (uint64_t i = 0; i <= n; i++) {
    if (i == n && big == 0)
      break;
    char id[64];
    if (i < n)
      snprintf(id, sizeof id, "c%06llu", (unsigned long long)i);
    else
      snprintf(id, sizeof id, "bench-big");
    snprintf(path, sizeof path, "%s/journal/%s.jsonl", root, id);
    g.f = fopen(path, "w");
    if (g.f == NULL) {
      perror(path);
      return 1;
    }
    g.id = id;
    g.t_us = 1735689600LL * 1000000 + (int64_t)below((uint64_t)year_us);
    g.events = g.bytes = 0;
    uint64_t m = i < n ? (uint64_t)lognorm(40, 1.2) : big;
    if (i < n && m > 6000)
      m = 6000;
    conversation(&g, m < 1 ? 1 : m, i == n);
    fclose(g.f);
    events += g.events;
    bytes += g.bytes;
  }
  printf("%llu %llu %llu\n", (unsigned long long)(n + (big ? 1 : 0)),
         (unsigned long long)events, (unsigned long long)bytes);
  free(g.buf);
  return 0;
}
