/*
 * search.c - substring search over message content.
 *
 * The index is FTS5 with the trigram tokenizer (migration 0003; why there).
 * A query is split on white space into words; every word must occur in the
 * message, as a substring, ASCII case-insensitively (Unicode only where
 * the index answers):
 *   - words of 3+ characters become quoted FTS5 phrases ("한국어" is the
 *     trigram "한국어"; "database" the phrase of its trigrams), ANDed;
 *     the trigram tokenizer folds Unicode case; results are ranked by
 *     bm25 and FTS5 makes the snippet;
 *   - shorter words cannot be looked up in a trigram index: they become
 *     LIKE filters on the candidates (bound parameters, % and _ escaped);
 *   - when every word is short, the messages themselves are scanned, newest
 *     first, and the snippet is cut here around the first occurrence.
 * Emoji are single code points, so an emoji alone is a short word: found
 * by scanning, correctly if slowly on a very large mirror.
 *
 * The index may be incomplete (settings.search_upto, migration 0003): rows
 * above the mark are scanned, every word as LIKE, so results are complete
 * while the index is being built (case folded for ASCII only there); they
 * rank after the indexed hits.
 *
 * Cost: ranking is bm25 among the newest 5,000 messages the index matches
 * (exact below that), snippets are made only for the rows returned, and a
 * scan goes newest first and stops at the limit.  A query for a word in
 * most messages therefore costs about the same as a rare one.  When the
 * filters applied after that cut (the conversation, deleted conversations,
 * short words) leave fewer results than the limit while the index had more
 * matches beyond the cut, the cut is widened eightfold and the query run
 * again, until the limit is met or nothing is left beyond it: a filter
 * never hides a match, it only costs more when it rejects most of them.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 16

typedef struct words {
  char *w[MAX_WORDS];
  size_t chars[MAX_WORDS]; /* code points */
  int n;
} words;

static size_t utf8_chars(const char *p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    c += ((unsigned char)p[i] & 0xC0) != 0x80;
  return c;
}

static int is_space(const unsigned char *p, size_t left, size_t *len) {
  *len = 1;
  if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
    return 1;
  if (left >= 3 && p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) {
    *len = 3; /* U+3000 IDEOGRAPHIC SPACE */
    return 1;
  }
  return 0;
}

static int split(const char *q, words *out) {
  memset(out, 0, sizeof *out);
  const unsigned char *p = (const unsigned char *)q;
  size_t n = strlen(q), i = 0, sl;
  while (i < n) {
    while (i < n && is_space(p + i, n - i, &sl))
      i += sl;
    size_t start = i;
    while (i < n && !is_space(p + i, n - i, &sl))
      i++;
    if (i == start)
      break;
    if (out->n == MAX_WORDS)
      return JM_EUSAGE;
    if ((out->w[out->n] = jm__strndup(q + start, i - start)) == NULL)
      return -ENOMEM;
    out->chars[out->n] = utf8_chars(q + start, i - start);
    out->n++;
  }
  return 0;
}

static void words_free(words *w) {
  for (int i = 0; i < w->n; i++)
    free(w->w[i]);
}

/* "%word%" with LIKE's wildcards and the escape character escaped. */
static char *like_pattern(const char *w) {
  jm__buf b = {0};
  jm__buf_append(&b, "%", 1);
  for (; *w; w++) {
    if (*w == '%' || *w == '_' || *w == '\\')
      jm__buf_append(&b, "\\", 1);
    jm__buf_append(&b, w, 1);
  }
  jm__buf_append(&b, "%", 1);
  return b.p;
}

/* FTS5 query: each long word a quoted phrase ('"' doubled), ANDed. */
static char *fts_query(const words *w) {
  jm__buf b = {0};
  for (int i = 0; i < w->n; i++) {
    if (w->chars[i] < 3)
      continue;
    jm__buf_append(&b, b.len ? " \"" : "\"", b.len ? 2 : 1);
    for (const char *p = w->w[i]; *p; p++) {
      jm__buf_append(&b, p, 1);
      if (*p == '"')
        jm__buf_append(&b, "\"", 1); /* FTS5 escapes a quote by doubling */
    }
    jm__buf_append(&b, "\"", 1);
  }
  return b.p;
}

/*
 * The SQL.  Parameters: ?3 the FTS query, ?4 the conversation (or NULL),
 * ?5 include deleted, ?6 the limit, ?7 the first word (scanned snippets are
 * cut around it), ?8/?9 the rowids to scan (not indexed yet, in range),
 * ?10/?11 a rowid range (the conversation's, or everything), ?12 the
 * candidate cap, ?(13+i) word i as a LIKE pattern.
 *
 * With long words: the newest ?12 messages FTS5 matches (it walks rowids
 * downwards without sorting), then the filters and the short words, ranked
 * by bm25 — exact when there are fewer matches, and a common word costs at
 * most ?12 rank computations instead of one per matching message.  UNION
 * ALL a scan of the rows not yet indexed (?8..?9, every word as LIKE).
 * Without long words: a scan, newest first, that stops at the limit.
 * Snippets are made afterwards, only for the rows returned.
 * Columns: 0 conversation, 1 id, 2 seq, 3 role, 4 created_at, 5 rank,
 * 6 content (scanned rows), 7 match position, 8 rowid, 9 from the index.
 */
static char *build_sql(const words *w, int use_fts) {
  static const char filters[] =
      " AND (?4 IS NULL OR m.conversation_id = ?4)"
      " AND (?5 OR c.deleted_at IS NULL)";
  static const char scan[] =
      "SELECT m.conversation_id, m.id, m.seq, m.role, m.created_at, 0 AS r,"
      " m.content, instr(lower(m.content), lower(?7)), m.rowid AS rid, 0"
      " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
      " WHERE m.rowid BETWEEN ?8 AND ?9";
  jm__buf b = {0};
  if (use_fts) {
    jm__buf_printf(&b,
                   "SELECT * FROM (SELECT m.conversation_id, m.id, m.seq,"
                   " m.role, m.created_at, cand.r AS r, NULL, 0,"
                   " m.rowid AS rid, 1"
                   " FROM (SELECT rowid AS id, rank AS r FROM messages_fts"
                   " WHERE messages_fts MATCH ?3 AND rowid BETWEEN ?10 AND"
                   " ?11 ORDER BY rowid DESC LIMIT ?12) cand"
                   " JOIN messages m ON m.rowid = cand.id"
                   " JOIN conversations c ON c.id = m.conversation_id"
                   " WHERE 1%s", filters);
    for (int i = 0; i < w->n; i++)
      if (w->chars[i] < 3)
        jm__buf_printf(&b, " AND m.content LIKE ?%d ESCAPE '\\'", 13 + i);
    jm__buf_printf(&b, " UNION ALL %s%s", scan, filters);
  } else
    jm__buf_printf(&b, "SELECT * FROM (%s%s", scan, filters);
  for (int i = 0; i < w->n; i++)
    jm__buf_printf(&b, " AND m.content LIKE ?%d ESCAPE '\\'", 13 + i);
  /* A scan alone orders by rowid only, so that it can stop at the limit. */
  jm__buf_printf(&b, use_fts ? ") ORDER BY r, rid DESC LIMIT ?6"
                             : ") ORDER BY rid DESC LIMIT ?6");
  return b.p;
}

/* Byte offset of code point `chars` (0-based) in s[0..n). */
static size_t char_to_byte(const char *s, size_t n, size_t chars) {
  size_t i = 0;
  while (i < n && chars > 0) {
    i++;
    while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
      i++;
    chars--;
  }
  return i;
}

/* A snippet cut around the match at code point pos (1-based), len chars. */
static char *cut_snippet(const char *c, size_t n, size_t pos, size_t len,
                         const char *open, const char *close) {
  if (pos == 0)
    pos = 1;
  size_t before = pos > 31 ? pos - 31 : 0;
  size_t b0 = char_to_byte(c, n, before);
  size_t b1 = char_to_byte(c, n, pos - 1);
  size_t b2 = b1 + char_to_byte(c + b1, n - b1, len);
  size_t b3 = b2 + char_to_byte(c + b2, n - b2, 40);
  return jm__asprintf("%s%.*s%s%.*s%s%.*s%s", before ? "…" : "",
                      (int)(b1 - b0), c + b0, open, (int)(b2 - b1), c + b1,
                      close, (int)(b3 - b2), c + b2, b3 < n ? "…" : "");
}

static int read_hit(sqlite3_stmt *st, const words *w, const char *open,
                    const char *close, jm_search_hit *h, int64_t *rowid,
                    int *indexed) {
  int oom = 0;
  memset(h, 0, sizeof *h);
  h->conversation_id = jm__col_dup(st, 0, NULL, &oom);
  h->message_id = jm__col_dup(st, 1, NULL, &oom);
  h->seq = sqlite3_column_int64(st, 2);
  h->role = jm__col_dup(st, 3, NULL, &oom);
  h->created_at = jm__col_dup(st, 4, NULL, &oom);
  h->rank = sqlite3_column_double(st, 5);
  *rowid = sqlite3_column_int64(st, 8);
  *indexed = sqlite3_column_int(st, 9);
  if (!*indexed) { /* scanned: cut the snippet here */
    const char *c = (const char *)sqlite3_column_text(st, 6);
    size_t n = (size_t)sqlite3_column_bytes(st, 6);
    size_t pos = (size_t)sqlite3_column_int64(st, 7);
    h->snippet = cut_snippet(c ? c : "", n, pos, w->chars[0], open, close);
    oom |= h->snippet == NULL;
  }
  return oom ? -ENOMEM : 0;
}

/* FTS5's snippet of one indexed row: asked only for the rows returned. */
static int fts_snippet(jm_store *s, const char *match, int64_t rowid,
                       const char *open, const char *close, char **out) {
  sqlite3_stmt *st;
  *out = NULL;
  if (sqlite3_prepare_v2(s->m->db,
                         "SELECT snippet(messages_fts, 0, ?1, ?2, '…', 40)"
                         " FROM messages_fts WHERE messages_fts MATCH ?3"
                         " AND rowid = ?4",
                         -1, &st, NULL) != SQLITE_OK)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, open, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, close, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, match, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, rowid);
  int oom = 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    *out = jm__col_dup(st, 0, NULL, &oom);
  sqlite3_finalize(st);
  if (*out == NULL && !oom)
    *out = jm__strdup("");
  return *out ? 0 : -ENOMEM;
}

void jm_search_results_free(jm_search_results *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n; i++) {
    jm_search_hit *h = &r->items[i];
    free(h->conversation_id);
    free(h->message_id);
    free(h->role);
    free(h->snippet);
    free(h->created_at);
  }
  free(r->items);
  memset(r, 0, sizeof *r);
}

#define RANK_CANDIDATES 5000

/* Room for twice as many hits (the three arrays side by side). */
static int grow(jm_search_results *out, int64_t **rowids, int **indexed,
                size_t *have) {
  size_t n = *have ? *have * 2 : 32;
  jm_search_hit *items = realloc(out->items, n * sizeof *items);
  if (items == NULL)
    return -ENOMEM;
  out->items = items;
  int64_t *r = realloc(*rowids, n * sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  *rowids = r;
  int *x = realloc(*indexed, n * sizeof *x);
  if (x == NULL)
    return -ENOMEM;
  *indexed = x;
  *have = n;
  return 0;
}

static int run(jm_store *s, sqlite3_stmt *st, const words *w,
               const char *match, const jm_search_options *o, int64_t cap,
               jm_search_results *out, jm_error *err) {
  size_t limit = o->limit ? o->limit : 20;
  /* Grown as rows come: a huge limit costs only the rows there are. */
  size_t have = 0;
  int64_t *rowids = NULL;
  int *indexed = NULL;
  int rc = 0;
  const char *open = o->mark_open ? o->mark_open : "[";
  const char *close = o->mark_close ? o->mark_close : "]";
  sqlite3_bind_int64(st, 6, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
  sqlite3_bind_text(st, 7, w->w[0], -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 12, cap);
  int r = SQLITE_DONE;
  while (rc == 0 && out->n < limit && (r = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->n == have && (rc = grow(out, &rowids, &indexed, &have)) != 0) {
      rc = jm__errf(err, -ENOMEM, "out of memory");
      break;
    }
    size_t k = out->n++;
    if (read_hit(st, w, open, close, &out->items[k], &rowids[k],
                 &indexed[k]) != 0)
      rc = jm__errf(err, -ENOMEM, "out of memory");
  }
  if (rc == 0 && r != SQLITE_ROW && r != SQLITE_DONE)
    rc = jm__sql_err(s->m, err, "search failed");
  sqlite3_reset(st); /* done reading: the snippets query the index anew */
  for (size_t k = 0; rc == 0 && k < out->n; k++)
    if (indexed[k] &&
        fts_snippet(s, match, rowids[k], open, close,
                    &out->items[k].snippet) != 0)
      rc = jm__sql_err(s->m, err, "cannot make a snippet");
  free(rowids);
  free(indexed);
  return rc;
}

/* Did the index match at least `cap` messages in rowids [lo, hi]?  Then
 * the candidates were cut, and filters applied after the cut (the
 * conversation, deleted conversations, short words) may have dropped
 * matches that lie beyond it. */
static int saturated(jm_store *s, const char *match, int64_t lo, int64_t hi,
                     int64_t cap) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->m->db,
                         "SELECT count(*) FROM (SELECT rowid FROM messages_fts"
                         " WHERE messages_fts MATCH ?1 AND rowid BETWEEN ?2"
                         " AND ?3 ORDER BY rowid DESC LIMIT ?4)",
                         -1, &st, NULL) != SQLITE_OK)
    return 0;
  sqlite3_bind_text(st, 1, match, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, lo);
  sqlite3_bind_int64(st, 3, hi);
  sqlite3_bind_int64(st, 4, cap);
  int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_finalize(st);
  return n >= cap;
}

/* The rows to scan: above the index mark `upto`, within [lo, hi], as one
 * closed range.  Never "rowid > upto" with upto = 2^63-1 (a complete
 * index): SQLite cannot seek past the largest rowid and reads every row to
 * find none (0.7 s on the large benchmark corpus). */
static void scan_range(int64_t upto, int64_t lo, int64_t hi, int64_t *from,
                       int64_t *to) {
  if (upto >= hi) { /* everything in range is indexed */
    *from = 1;
    *to = 0;
    return;
  }
  *from = upto + 1 > lo ? upto + 1 : lo;
  *to = hi;
}

/* The rowid range to search: one conversation's rows, or everything. */
static void rowid_range(jm_store *s, const char *conv, int64_t *lo,
                        int64_t *hi) {
  *lo = 0;
  *hi = INT64_MAX;
  sqlite3_stmt *st;
  if (conv == NULL ||
      sqlite3_prepare_v2(s->m->db,
                         "SELECT min(rowid), max(rowid) FROM messages WHERE "
                         "conversation_id = ?1",
                         -1, &st, NULL) != SQLITE_OK)
    return;
  sqlite3_bind_text(st, 1, conv, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW &&
      sqlite3_column_type(st, 0) != SQLITE_NULL) {
    *lo = sqlite3_column_int64(st, 0);
    *hi = sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
}

int jm_store_search(jm_store *s, const char *query,
                    const jm_search_options *opt, jm_search_results *out,
                    jm_error *err) {
  memset(out, 0, sizeof *out);
  jm_search_options o = {0};
  if (opt)
    o = *opt;
  if (o.conversation_id &&
      jm_id_check(o.conversation_id, strlen(o.conversation_id), err) != 0)
    return JM_EID;
  words w;
  int rc = split(query, &w);
  if (rc == JM_EUSAGE)
    rc = jm__errf(err, rc, "search query has more than %d words", MAX_WORDS);
  else if (rc == 0 && w.n == 0)
    rc = jm__errf(err, JM_EUSAGE, "empty search query");
  else if (rc != 0)
    rc = jm__errf(err, rc, "out of memory");
  if (rc == 0 && o.conversation_id) /* healed first, like a read of it */
    rc = jm__store_current(s, o.conversation_id, err);
  if (rc == 0 && o.conversation_id)
    rc = jm__store_exists(s, o.conversation_id, err);
  if (rc == 0)
    rc = jm__store_flush_written(s, err);
  int use_fts = 0;
  for (int i = 0; rc == 0 && i < w.n; i++)
    use_fts |= w.chars[i] >= 3;
  int64_t upto = 0;
  if (rc == 0 && jm__search_upto(s->m, &upto) != 0)
    rc = jm__sql_err(s->m, err, "cannot read search index state");
  if (!use_fts)
    upto = 0; /* one scan over everything */
  char *sql = rc ? NULL : build_sql(&w, use_fts);
  char *match = rc || !use_fts ? NULL : fts_query(&w);
  char *pats[MAX_WORDS] = {0};
  sqlite3_stmt *st = NULL;
  if (rc == 0 &&
      sqlite3_prepare_v2(s->m->db, sql, -1, &st, NULL) != SQLITE_OK)
    rc = jm__sql_err(s->m, err, "cannot prepare search");
  for (int i = 0; rc == 0 && i < w.n; i++) {
    pats[i] = like_pattern(w.w[i]);
    sqlite3_bind_text(st, 13 + i, pats[i], -1, SQLITE_STATIC);
  }
  int64_t lo = 0, hi = INT64_MAX;
  if (rc == 0) {
    rowid_range(s, o.conversation_id, &lo, &hi);
    int64_t from, to;
    scan_range(upto, lo, hi, &from, &to);
    sqlite3_bind_int64(st, 8, from);
    sqlite3_bind_int64(st, 9, to);
    sqlite3_bind_int64(st, 10, lo);
    sqlite3_bind_int64(st, 11, hi);
    if (o.conversation_id)
      sqlite3_bind_text(st, 4, o.conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, o.include_deleted != 0);
    if (match)
      sqlite3_bind_text(st, 3, match, -1, SQLITE_STATIC);
  }
  /* Too few results from cut candidates: widen the cut, until the limit is
   * met or the index has no more matches in range. */
  size_t limit = o.limit ? o.limit : 20;
  for (int64_t cap = RANK_CANDIDATES; rc == 0; cap *= 8) {
    rc = run(s, st, &w, match, &o, cap, out, err);
    if (rc != 0 || !use_fts || out->n >= limit || cap > INT64_MAX / 8 ||
        !saturated(s, match, lo, hi, cap))
      break;
    jm_search_results_free(out);
    sqlite3_reset(st);
  }
  s->search_steps =
      st ? sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 0) : 0;
  sqlite3_finalize(st);
  for (int i = 0; i < MAX_WORDS; i++)
    free(pats[i]);
  free(sql);
  free(match);
  words_free(&w);
  if (rc != 0)
    jm_search_results_free(out);
  return rc;
}
