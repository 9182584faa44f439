/*
 * search.c - substring search over message content.
 *
 * The index is FTS5 with the trigram tokenizer (migration 0003; why there).
 * A query is split on white space into words; every word must occur in the
 * message, as a substring, ASCII case-insensitively:
 *   - words of 3+ characters become quoted FTS5 phrases ("한국어" is the
 *     trigram "한국어"; "database" the phrase of its trigrams), ANDed;
 *     results are ranked by bm25 and FTS5 makes the snippet;
 *   - shorter words cannot be looked up in a trigram index: they become
 *     LIKE filters on the candidates (bound parameters, % and _ escaped);
 *   - when every word is short, the messages themselves are scanned, newest
 *     first, and the snippet is cut here around the first occurrence.
 * Emoji are single code points, so an emoji alone is a short word: found
 * by scanning, correctly if slowly on a very large mirror.
 *
 * The index may be incomplete (settings.search_upto, migration 0003): rows
 * above the mark are scanned, every word as LIKE, so results are complete
 * while the index is being built; they rank after the indexed hits.
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
 * The SQL.  Parameters: ?1/?2 the marks, ?3 the FTS query, ?4 the
 * conversation (or NULL), ?5 include deleted, ?6 the limit, ?7 the first
 * word (snippets cut here), ?8 search_upto, ?(9+i) word i as a LIKE
 * pattern.  With long words: FTS5 over the indexed rows (rowid <= ?8),
 * short words as LIKE filters, UNION ALL a scan of the rows not yet indexed
 * (rowid > ?8, every word as LIKE), best rank first.  Without: one scan.
 */
static char *build_sql(const words *w, int use_fts) {
  static const char filters[] =
      " AND (?4 IS NULL OR m.conversation_id = ?4)"
      " AND (?5 OR c.deleted_at IS NULL)";
  static const char scan[] =
      "SELECT m.conversation_id, m.id, m.seq, m.role, NULL AS snip,"
      " m.created_at, 0 AS r, m.content, instr(lower(m.content), lower(?7))"
      " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
      " WHERE m.rowid > ?8";
  jm__buf b = {0};
  if (use_fts) {
    jm__buf_printf(&b,
                   "SELECT * FROM (SELECT m.conversation_id, m.id, m.seq,"
                   " m.role, snippet(messages_fts, 0, ?1, ?2, '…', 40) AS snip,"
                   " m.created_at, bm25(messages_fts) AS r, NULL, 0"
                   " FROM messages_fts"
                   " JOIN messages m ON m.rowid = messages_fts.rowid"
                   " JOIN conversations c ON c.id = m.conversation_id"
                   " WHERE messages_fts MATCH ?3%s", filters);
    for (int i = 0; i < w->n; i++)
      if (w->chars[i] < 3)
        jm__buf_printf(&b, " AND m.content LIKE ?%d ESCAPE '\\'", 9 + i);
    jm__buf_printf(&b, " UNION ALL %s%s", scan, filters);
  } else
    jm__buf_printf(&b, "SELECT * FROM (%s%s", scan, filters);
  for (int i = 0; i < w->n; i++)
    jm__buf_printf(&b, " AND m.content LIKE ?%d ESCAPE '\\'", 9 + i);
  jm__buf_printf(&b, ") ORDER BY 7, 6 DESC, 3 DESC LIMIT ?6");
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
                    const char *close, jm_search_hit *h) {
  int oom = 0;
  memset(h, 0, sizeof *h);
  h->conversation_id = jm__col_dup(st, 0, NULL, &oom);
  h->message_id = jm__col_dup(st, 1, NULL, &oom);
  h->seq = sqlite3_column_int64(st, 2);
  h->role = jm__col_dup(st, 3, NULL, &oom);
  h->created_at = jm__col_dup(st, 5, NULL, &oom);
  h->rank = sqlite3_column_double(st, 6);
  if (sqlite3_column_type(st, 4) != SQLITE_NULL)
    h->snippet = jm__col_dup(st, 4, NULL, &oom);
  else {
    const char *c = (const char *)sqlite3_column_text(st, 7);
    size_t n = (size_t)sqlite3_column_bytes(st, 7);
    size_t pos = (size_t)sqlite3_column_int64(st, 8);
    h->snippet = cut_snippet(c ? c : "", n, pos, w->chars[0], open, close);
    oom |= h->snippet == NULL;
  }
  return oom ? -ENOMEM : 0;
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

static int run(jm_store *s, sqlite3_stmt *st, const words *w,
               const jm_search_options *o, jm_search_results *out,
               jm_error *err) {
  size_t limit = o->limit ? o->limit : 20;
  out->items = calloc(limit, sizeof *out->items);
  if (out->items == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  const char *open = o->mark_open ? o->mark_open : "[";
  const char *close = o->mark_close ? o->mark_close : "]";
  sqlite3_bind_text(st, 1, open, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, close, -1, SQLITE_STATIC);
  if (o->conversation_id)
    sqlite3_bind_text(st, 4, o->conversation_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 5, o->include_deleted != 0);
  sqlite3_bind_int64(st, 6, (sqlite3_int64)limit);
  sqlite3_bind_text(st, 7, w->w[0], -1, SQLITE_STATIC);
  int r;
  while ((r = sqlite3_step(st)) == SQLITE_ROW && out->n < limit)
    if (read_hit(st, w, open, close, &out->items[out->n++]) != 0)
      return jm__errf(err, -ENOMEM, "out of memory");
  if (r != SQLITE_ROW && r != SQLITE_DONE)
    return jm__sql_err(s->m, err, "search failed");
  return 0;
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
    sqlite3_bind_text(st, 9 + i, pats[i], -1, SQLITE_STATIC);
  }
  if (rc == 0) {
    sqlite3_bind_int64(st, 8, upto);
    if (match)
      sqlite3_bind_text(st, 3, match, -1, SQLITE_STATIC);
  }
  if (rc == 0)
    rc = run(s, st, &w, &o, out, err);
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
