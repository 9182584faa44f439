/*
 * test_mirror_ids.c - hostile conversation ids given to every public
 * jm_mirror_* call that takes one (include/jmirror/mirror.h):
 * jm_mirror_ingest, jm_mirror_replay, jm_mirror_catch_up (ids),
 * jm_mirror_verify (ids), jm_mirror_forget, jm_mirror_bad_lines.
 *
 * docs/journal.md, "Layout": an invalid id is refused by every entry point,
 * library included, with JM_EID and "invalid conversation id '<id>': ...",
 * and nothing is ever created from it.  Each call must refuse it so, name
 * the id in the message, leave the mirror's rows as they were, and create
 * or touch no file: the whole temp directory (the root and what lies
 * around it) is listed before and after, names, types, sizes and mtimes;
 * only the mirror's own files may change.  Canary journal files sit where
 * "../x" and "a/b" would lead, so a call that followed the id would fold
 * them into the mirror, which the row dump would show.
 */
#include "mtest.h"
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>

/* The hostile ids and what the message must show of each (id.c shows
 * bytes outside printable ASCII as \xNN, and a long id cut after 41). */
typedef struct hostile {
  const char *id;
  const char *shown;
} hostile;

static char long_id[4097], long_shown[64], over_id[130], over_shown[64];

static const hostile *hostile_ids(size_t *n) {
  memset(over_id, 'a', 129);
  over_id[129] = '\0';
  memset(long_id, 'b', 4096);
  long_id[4096] = '\0';
  snprintf(over_shown, sizeof over_shown, "'%.41s...'", over_id);
  snprintf(long_shown, sizeof long_shown, "'%.41s...'", long_id);
  static hostile h[] = {
      {"", "''"},
      {".", "'.'"},
      {"..", "'..'"},
      {"../x", "'../x'"},
      {"../../etc/passwd", "'../../etc/passwd'"},
      {"a/b", "'a/b'"},
      {"/etc/passwd", "'/etc/passwd'"},
      {"a\\b", "'a\\b'"},
      {".hidden", "'.hidden'"},
      {"Abc", "'Abc'"},
      {"a b", "'a b'"},
      {"a\x01z", "'a\\x01z'"},
      {"a\nb", "'a\\x0ab'"},
      {"\x1b[2J", "'\\x1b[2J'"},
      {"x\x7f", "'x\\x7f'"},
      {"\xc3\xa9", "'\\xc3\\xa9'"},
      {"caf\xc3\xa9", "'caf\\xc3\\xa9'"},
      {"\xff\xfe", "'\\xff\\xfe'"},
      {"c1\xe2\x80\x8b", "'c1\\xe2\\x80\\x8b'"}, /* zero-width space */
      {NULL, NULL},                            /* over_id */
      {NULL, NULL},                            /* long_id */
  };
  size_t k = sizeof h / sizeof h[0];
  h[k - 2] = (hostile){over_id, over_shown};
  h[k - 1] = (hostile){long_id, long_shown};
  *n = k;
  return h;
}

/* ------------------------------------------------------------------ */
/* A listing of a tree: one line per entry, "path type size mtime". */

static void list_into(mt_buf *b, const char *dir, const char *skip) {
  DIR *d = opendir(dir);
  if (d == NULL)
    return;
  struct dirent *de;
  /* readdir order is stable for an unchanged directory, but sort anyway:
   * collect the names first. */
  char **names = NULL;
  size_t n = 0, cap = 0;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      names = realloc(names, cap * sizeof *names);
      ASSERT(names != NULL);
    }
    names[n++] = strdup(de->d_name);
  }
  closedir(d);
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
      char *t = names[j];
      names[j] = names[j - 1];
      names[j - 1] = t;
    }
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    free(names[i]);
    if (strcmp(path, skip) == 0) {
      mt_printf(b, "%s (mirror: skipped)\n", path);
      continue;
    }
    struct stat st;
    ASSERT(lstat(path, &st) == 0);
    mt_printf(b, "%s %o %lld %lld.%09ld\n", path, (unsigned)st.st_mode,
              (long long)st.st_size, (long long)st.st_mtim.tv_sec,
              st.st_mtim.tv_nsec);
    if (S_ISDIR(st.st_mode))
      list_into(b, path, skip);
  }
  free(names);
}

static char *listing(const char *top, const char *mirror_dir) {
  mt_buf b = {0};
  list_into(&b, top, mirror_dir);
  mt_put(&b, "", 1);
  return b.p;
}

/* ------------------------------------------------------------------ */

/* The refusal every call must give. */
static void refused_at(int line, const char *call, const hostile *h, int rc,
                       const jm_error *err) {
  char shown[80];
  snprintf(shown, sizeof shown, "%.60s", h->shown);
  if (rc != JM_EID)
    test_fail(__FILE__, line, "%s(%s): rc %d (%s), want JM_EID; msg \"%s\"",
              call, shown, rc, jm_strerror(rc), err->msg);
  if (err->code != JM_EID)
    test_fail(__FILE__, line, "%s(%s): err.code %d, want JM_EID", call, shown,
              err->code);
  if (strncmp(err->msg, "invalid conversation id ", 24) != 0 ||
      strstr(err->msg, h->shown) == NULL)
    test_fail(__FILE__, line, "%s(%s): message \"%s\" does not name the id",
              call, shown, err->msg);
  for (const char *p = err->msg; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
      test_fail(__FILE__, line, "%s(%s): raw byte 0x%02x in the message",
                call, shown, (unsigned char)*p);
}
#define REFUSED(call, h, rc, err) refused_at(__LINE__, call, h, rc, err)

static int count_verified(void *ctx, const jm_verify_item *it) {
  (void)it;
  (*(int *)ctx)++;
  return 0;
}

static void test_hostile_ids_refused_everywhere(void) {
  const char *top = test_tmpdir();
  const char *root = mt_root("root");
  /* A real conversation with a bad line, and canaries where a hostile id
   * would lead: root/x.jsonl ("../x"), journal/a/b.jsonl ("a/b"), and
   * <tmp>/x.jsonl one level further up. */
  mt_buf b = {0};
  mt_line(&b, "{'type':'message','ts':'2026-01-01T00:00:00Z','id':'m1',"
              "'role':'user','content':'hi'}");
  mt_line(&b, "{oops");
  mt_write(root, "c1", b.p, b.len);
  const char *canary =
      "{\"type\":\"message\",\"ts\":\"2026-01-01T00:00:01Z\",\"id\":\"evil\","
      "\"role\":\"user\",\"content\":\"must never be read\"}\n";
  test_write_file(test_fmt("%s/x.jsonl", root), canary, strlen(canary));
  test_write_file(test_fmt("%s/x.jsonl", top), canary, strlen(canary));
  ASSERT(mkdir(test_fmt("%s/journal/a", root), 0700) == 0);
  test_write_file(test_fmt("%s/journal/a/b.jsonl", root), canary,
                  strlen(canary));

  jm_mirror *m = mt_open(root, NULL, 0);
  mt_ingest(m, "c1", NULL);
  const char *db = jm_mirror_db_path(m);
  char *rows = mt_dump(db);
  const char *mirror_dir = test_fmt("%s/mirror", root);
  char *before = listing(top, mirror_dir);

  size_t n;
  const hostile *hs = hostile_ids(&n);
  int calls = 0;
  for (size_t i = 0; i < n; i++) {
    const hostile *h = &hs[i];
    jm_error err;
    jm_ingest_result res;

    jm_error_clear(&err);
    REFUSED("jm_mirror_ingest", h, jm_mirror_ingest(m, h->id, NULL, &res, &err),
            &err);
    ASSERT_EQ(res.events + res.bad_lines + res.removed + res.replayed, 0);

    jm_error_clear(&err);
    REFUSED("jm_mirror_replay", h, jm_mirror_replay(m, h->id, 1, &res, &err),
            &err);
    ASSERT_EQ(res.events + res.bad_lines + res.removed, 0);

    const char *one[] = {h->id};
    const char *mixed[] = {"c1", h->id};
    jm_catchup_stats st;
    jm_error_clear(&err);
    REFUSED("jm_mirror_catch_up", h,
            jm_mirror_catch_up(m, one, 1, NULL, NULL, NULL, &st, &err), &err);
    ASSERT_EQ(st.events + st.bad_lines + st.removed + st.replayed, 0);
    jm_error_clear(&err);
    REFUSED("jm_mirror_catch_up(c1, id)", h,
            jm_mirror_catch_up(m, mixed, 2, NULL, NULL, NULL, &st, &err), &err);

    int seen = 0;
    jm_verify_summary sum;
    jm_error_clear(&err);
    REFUSED("jm_mirror_verify", h,
            jm_mirror_verify(m, one, 1, 1, count_verified, &seen, NULL, NULL,
                             &sum, &err),
            &err);
    jm_error_clear(&err);
    REFUSED("jm_mirror_verify(c1, id)", h,
            jm_mirror_verify(m, mixed, 2, 1, count_verified, &seen, NULL,
                             NULL, &sum, &err),
            &err);
    ASSERT_EQ(seen, 0);

    jm_error_clear(&err);
    REFUSED("jm_mirror_forget", h, jm_mirror_forget(m, h->id, &err), &err);

    jm_bad_line_iter *it = (jm_bad_line_iter *)&it; /* must be reset */
    jm_error_clear(&err);
    REFUSED("jm_mirror_bad_lines", h, jm_mirror_bad_lines(m, h->id, &it, &err),
            &err);
    ASSERT(it == NULL);
    calls += 9;
  }
  /* Nothing created, touched or removed anywhere but in mirror/, and no
   * row changed: the canaries were never read. */
  char *after = listing(top, mirror_dir);
  if (strcmp(before, after) != 0)
    test_fail(__FILE__, __LINE__, "files changed:\n--- before\n%s--- after\n%s",
              before, after);
  char *rows_after = mt_dump(db);
  MT_SAME(rows, rows_after, "before", "after the hostile calls");
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages WHERE id = 'evil'"), 0);
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM conversations"), 1);
  ASSERT(calls == (int)n * 9);

  /* The handle still works for a valid id. */
  jm_bad_line_iter *it;
  jm_error err;
  jm_bad_line bl;
  ASSERT_OK(jm_mirror_bad_lines(m, "c1", &it, &err));
  ASSERT_EQ(jm_bad_line_next(it, &bl), 1);
  ASSERT_EQ(bl.line, 2);
  ASSERT_EQ(jm_bad_line_next(it, &bl), 0);
  jm_bad_line_iter_free(it);
  ASSERT_EQ(mt_verify_ok(m), 1);
  free(rows);
  free(rows_after);
  free(before);
  free(after);
  mt_buf_free(&b);
  jm_mirror_close(m);
}

/* NULL for bad_lines means "every conversation", not a hostile id; the
 * all-conversations forms of catch_up and verify (n_ids 0) never see the
 * canaries either: their names are not valid ids. */
static void test_listing_forms_ignore_canaries(void) {
  const char *root = mt_root("root");
  mt_buf b = {0};
  mt_line(&b, "{oops");
  mt_write(root, "c1", b.p, b.len);
  const char *canary =
      "{\"type\":\"message\",\"ts\":\"2026-01-01T00:00:01Z\",\"id\":\"evil\","
      "\"role\":\"user\",\"content\":\"x\"}\n";
  test_write_file(test_fmt("%s/journal/Evil.jsonl", root), canary,
                  strlen(canary));
  test_write_file(test_fmt("%s/journal/.x.jsonl", root), canary,
                  strlen(canary));
  jm_mirror *m = mt_open(root, NULL, 0);
  jm_catchup_stats st;
  jm_error err;
  ASSERT_OK(jm_mirror_catch_up(m, NULL, 0, NULL, NULL, NULL, &st, &err));
  ASSERT_EQ(st.files, 1);
  ASSERT_EQ(st.ignored_files, 2);
  jm_bad_line_iter *it;
  jm_bad_line bl;
  ASSERT_OK(jm_mirror_bad_lines(m, NULL, &it, &err));
  ASSERT_EQ(jm_bad_line_next(it, &bl), 1);
  ASSERT_STR_EQ(bl.conversation_id, "c1");
  ASSERT_EQ(jm_bad_line_next(it, &bl), 0);
  jm_bad_line_iter_free(it);
  ASSERT_EQ(mt_verify_ok(m), 1);
  ASSERT_EQ(mt_qi(jm_mirror_db_path(m), "SELECT count(*) FROM messages"), 0);
  mt_buf_free(&b);
  jm_mirror_close(m);
}

static const test_case cases[] = {
    TEST_CASE(test_hostile_ids_refused_everywhere),
    TEST_CASE(test_listing_forms_ignore_canaries),
    {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
