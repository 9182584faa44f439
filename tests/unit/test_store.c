/*
 * test_store.c - the store API (include/jmirror/store.h) as an application
 * uses it: writes through the journal, reads from the mirror, read-your-
 * writes without a daemon, healing on read, parent healing, pagination,
 * search.
 *
 * Every case works on a fresh root in the case's temp directory, with no
 * daemon: the store ingests under the writer lock itself.  Rows are checked
 * through the API; the mirror is only touched directly to break it.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "mtest.h"
#include "store_int.h"
#include "test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

static jm_error E;

/* expr must return 0; otherwise show the code and the error's message. */
#define OK(expr)                                                              \
  do {                                                                        \
    jm_error_clear(&E);                                                       \
    int r_ = (expr);                                                          \
    if (r_ != 0)                                                              \
      test_fail(__FILE__, __LINE__, "%s: returned %d (%s): %s", #expr, r_,    \
                jm_strerror(r_), E.msg);                                      \
  } while (0)

/* expr must fail with `code` and say why in E.msg. */
#define FAILS(code, expr)                                                     \
  do {                                                                        \
    jm_error_clear(&E);                                                       \
    int r_ = (expr);                                                          \
    if (r_ != (code))                                                         \
      test_fail(__FILE__, __LINE__, "%s: returned %d (%s), expected %s (%d)", \
                #expr, r_, jm_strerror(r_), #code, (int)(code));              \
    if (E.msg[0] == '\0' || strchr(E.msg, '\n'))                              \
      test_fail(__FILE__, __LINE__, "%s: message '%s' is not one line",      \
                #expr, E.msg);                                                \
  } while (0)

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A fresh root that does not exist yet (the store creates it). */
static const char *fresh_root(const char *name) {
  static char bufs[8][1024];
  static int next;
  char *r = bufs[next++ % 8];
  snprintf(r, sizeof bufs[0], "%s/%s", test_tmpdir(), name);
  return r;
}

static jm_store *store_open(const char *root) {
  jm_store_options o;
  jm_store_options_init(&o);
  o.sync = JM_SYNC_NONE;
  jm_store *s = NULL;
  OK(jm_store_open(&s, root, &o, &E));
  ASSERT(s != NULL);
  return s;
}

static void store_close(jm_store *s) { OK(jm_store_close(s, &E)); }

static const char *db_of(const char *root) {
  return test_fmt("%s/mirror/mirror.db", root);
}

/* Run SQL on the mirror through a connection of our own. */
static void db_exec(const char *root, const char *sql) {
  sqlite3 *h;
  ASSERT_EQ(sqlite3_open(db_of(root), &h), SQLITE_OK);
  sqlite3_busy_timeout(h, 10000);
  char *msg = NULL;
  if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK)
    test_fail(__FILE__, __LINE__, "%s: %s", sql, msg);
  ASSERT(sqlite3_changes(h) > 0);
  sqlite3_close(h);
}

static long long fsize(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Entries in a directory (without . and ..); -1 if it is missing. */
static int dir_count(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

/* An allocation failure, injected where it matters: while fail_realloc_at
 * is set, a realloc of exactly that many bytes fails (nothing else does).
 * Linux without sanitizers only: their allocator cannot be mixed with the
 * C library's. */
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
#define CAN_FAIL_REALLOC 1
static size_t fail_realloc_at;

void *realloc(void *p, size_t n) {
  static void *(*real)(void *, size_t);
  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "realloc");
  if (fail_realloc_at != 0 && n == fail_realloc_at) {
    errno = ENOMEM;
    return NULL;
  }
  return real(p, n);
}
#else
#define CAN_FAIL_REALLOC 0
#endif

/* Add a message; returns its id (static, rotating). */
static const char *add(jm_store *s, const char *conv, const char *id,
                       const char *role, const char *content,
                       const char *parent) {
  static char ids[4][JM_MSG_ID_MAX + 1];
  static int k;
  char *out = ids[k++ % 4];
  jm_message_in m = {0};
  m.id = id;
  m.role = role;
  m.content = content;
  m.content_len = SIZE_MAX;
  m.parent_id = parent;
  OK(jm_store_add_message(s, conv, &m, out, &E));
  return out;
}

static void append(jm_store *s, const char *conv, const char *json) {
  mt_buf b = {0};
  mt_puts(&b, json);
  for (size_t i = 0; i < b.len; i++)
    if (b.p[i] == '\'')
      b.p[i] = '"';
  OK(jm_store_append(s, conv, b.p, NULL, &E));
  mt_buf_free(&b);
}

static void msgs_all(jm_store *s, const char *conv, jm_message_list *l) {
  OK(jm_store_messages(s, conv, 0, 100000, l, &E));
  ASSERT_EQ(l->next_after, -1);
}

static void list_all(jm_store *s, int include_deleted,
                     jm_conversation_list *l) {
  jm_list_options o = {NULL, include_deleted, 100000, NULL};
  OK(jm_store_list(s, &o, l, &E));
  ASSERT(l->next_cursor == NULL);
}

static const jm_conversation *find_conv(const jm_conversation_list *l,
                                        const char *id) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->items[i].id, id) == 0)
      return &l->items[i];
  return NULL;
}

/* Seed exercise ----------------------------------------------------------------- */

static int crockford(const char *id) {
  for (const char *p = id; *p; p++)
    if (!strchr("0123456789abcdefghjkmnpqrstvwxyz", *p))
      return 0;
  return 1;
}

/* Milliseconds in the first 10 characters of a generated id. */
static uint64_t id_ms(const char *id) {
  static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";
  uint64_t ms = 0;
  for (int i = 0; i < 10; i++)
    ms = ms << 5 | (uint64_t)(strchr(b32, id[i]) - b32);
  return ms;
}

static uint64_t wall_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void test_seed_exercise(void) {
  const char *root = fresh_root("seed");
  jm_store *s = store_open(root);
  char id[JM_ID_MAX + 1];
  OK(jm_store_create(s, "chat-1", "Hello", "claude", "{\"k\": [1, 2.5]}", id,
                     &E));
  ASSERT_STR_EQ(id, "chat-1");
  ASSERT(fsize(mt_jpath(root, "chat-1")) > 0);

  /* Generated ids: valid, 26 Crockford characters, time and order. */
  uint64_t t0 = wall_ms();
  char gen[2][JM_ID_MAX + 1];
  OK(jm_store_create(s, NULL, "second", NULL, NULL, gen[0], &E));
  OK(jm_store_create(s, NULL, NULL, NULL, NULL, gen[1], &E));
  uint64_t t1 = wall_ms();
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(strlen(gen[i]), 26);
    ASSERT_OK(jm_id_check(gen[i], 26, NULL));
    ASSERT(crockford(gen[i]));
    ASSERT(id_ms(gen[i]) >= t0 && id_ms(gen[i]) <= t1);
    ASSERT(fsize(mt_jpath(root, gen[i])) > 0);
  }
  ASSERT(strcmp(gen[0], gen[1]) < 0);

  /* Messages: user then assistant; content byte-exact with NUL. */
  static const char body[] = "안녕하세요 👋 \0 NUL inside\n\ttab, \"quote\" "
                             "🇰🇷 e\xcc\x81";
  jm_message_in u = {0};
  u.role = "user";
  u.content = body;
  u.content_len = sizeof body - 1;
  u.brain = "claude";
  u.meta_json = "{\"lang\":\"ko\"}";
  char mid[2][JM_MSG_ID_MAX + 1];
  OK(jm_store_add_message(s, "chat-1", &u, mid[0], &E));
  ASSERT_EQ(strlen(mid[0]), 26);
  jm_message_in a = {0};
  a.id = "a1";
  a.role = "assistant";
  a.content = "Hi! 반가워요 🙂";
  a.content_len = SIZE_MAX;
  a.parent_id = mid[0];
  a.reasoning_level = "high";
  a.thinking = "the user greets me";
  OK(jm_store_add_message(s, "chat-1", &a, mid[1], &E));
  ASSERT_STR_EQ(mid[1], "a1");

  jm_conversation_list l;
  list_all(s, 0, &l);
  ASSERT_EQ(l.n, 3);
  const jm_conversation *c = find_conv(&l, "chat-1");
  ASSERT(c != NULL);
  ASSERT_STR_EQ(c->title, "Hello");
  ASSERT_STR_EQ(c->brain, "claude");
  ASSERT_STR_EQ(c->meta, "{\"k\":[1,2.5]}");
  ASSERT_EQ(c->message_count, 2);
  ASSERT_EQ(c->bad_lines, 0);
  ASSERT(c->deleted_at == NULL && c->created_at && c->updated_at);
  ASSERT(strcmp(c->created_at, c->updated_at) < 0);
  /* chat-1 was written last: it is first. */
  ASSERT_STR_EQ(l.items[0].id, "chat-1");
  ASSERT_STR_EQ(find_conv(&l, gen[0])->title, "second");
  ASSERT(find_conv(&l, gen[1])->title == NULL);
  ASSERT_EQ(find_conv(&l, gen[1])->message_count, 0);
  jm_conversation_list_free(&l);

  jm_message_list ml;
  msgs_all(s, "chat-1", &ml);
  ASSERT_EQ(ml.n, 2);
  jm_message *m0 = &ml.items[0], *m1 = &ml.items[1];
  ASSERT_STR_EQ(m0->id, mid[0]);
  ASSERT_STR_EQ(m0->role, "user");
  ASSERT_MEM_EQ(m0->content, m0->content_len, body, sizeof body - 1);
  ASSERT_EQ(m0->content[m0->content_len], '\0');
  ASSERT_STR_EQ(m0->brain, "claude");
  ASSERT_STR_EQ(m0->meta, "{\"lang\":\"ko\"}");
  ASSERT(m0->parent_id == NULL && m0->parent_id_written == NULL);
  ASSERT(m0->thinking == NULL && m0->thinking_len == 0);
  ASSERT_STR_EQ(m0->status, "complete");
  ASSERT(m0->seq < m1->seq);
  ASSERT_STR_EQ(m1->role, "assistant");
  ASSERT_STR_EQ(m1->content, "Hi! 반가워요 🙂");
  ASSERT_EQ(m1->content_len, strlen("Hi! 반가워요 🙂"));
  ASSERT_STR_EQ(m1->parent_id, mid[0]);
  ASSERT_STR_EQ(m1->parent_id_written, mid[0]);
  ASSERT_STR_EQ(m1->reasoning_level, "high");
  ASSERT_STR_EQ(m1->thinking, "the user greets me");
  ASSERT_EQ(m1->thinking_len, strlen("the user greets me"));
  ASSERT(m1->created_at && m1->updated_at && m1->edited_at == NULL);
  jm_message_list_free(&ml);

  /* get */
  jm_conversation g;
  OK(jm_store_get(s, "chat-1", &g, &E));
  ASSERT_STR_EQ(g.id, "chat-1");
  ASSERT_EQ(g.message_count, 2);
  jm_conversation_free(&g);
  FAILS(JM_ENOTFOUND, jm_store_get(s, "nope", &g, &E));

  /* rename, then clear the title */
  OK(jm_store_rename(s, "chat-1", "Renamed 제목", &E));
  OK(jm_store_get(s, "chat-1", &g, &E));
  ASSERT_STR_EQ(g.title, "Renamed 제목");
  jm_conversation_free(&g);
  OK(jm_store_rename(s, gen[0], NULL, &E));
  OK(jm_store_get(s, gen[0], &g, &E));
  ASSERT(g.title == NULL);
  jm_conversation_free(&g);

  /* delete: hidden from list, visible with include_deleted; restore */
  OK(jm_store_delete(s, "chat-1", &E));
  list_all(s, 0, &l);
  ASSERT_EQ(l.n, 2);
  ASSERT(find_conv(&l, "chat-1") == NULL);
  jm_conversation_list_free(&l);
  list_all(s, 1, &l);
  ASSERT_EQ(l.n, 3);
  ASSERT(find_conv(&l, "chat-1")->deleted_at != NULL);
  jm_conversation_list_free(&l);
  OK(jm_store_get(s, "chat-1", &g, &E)); /* get still finds it */
  ASSERT(g.deleted_at != NULL);
  jm_conversation_free(&g);
  msgs_all(s, "chat-1", &ml); /* and its messages */
  ASSERT_EQ(ml.n, 2);
  jm_message_list_free(&ml);
  OK(jm_store_restore(s, "chat-1", &E));
  list_all(s, 0, &l);
  ASSERT_EQ(l.n, 3);
  ASSERT(find_conv(&l, "chat-1")->deleted_at == NULL);
  ASSERT_EQ(find_conv(&l, "chat-1")->message_count, 2);
  jm_conversation_list_free(&l);
  store_close(s);

  /* Files are private. */
  struct stat st;
  ASSERT_OK(stat(mt_jpath(root, "chat-1"), &st));
  ASSERT_EQ(st.st_mode & 0777, 0600);
  ASSERT_OK(stat(test_fmt("%s/journal", root), &st));
  ASSERT_EQ(st.st_mode & 0777, 0700);
}

/* Ids generated one after the other sort in creation order, even within
 * one millisecond. */
static void test_generated_ids_ordered(void) {
  const char *root = fresh_root("ids");
  jm_store *s = store_open(root);
  enum { N = 300 };
  static char ids[N][JM_ID_MAX + 1];
  static char mids[N][JM_MSG_ID_MAX + 1];
  OK(jm_store_create(s, NULL, NULL, NULL, NULL, ids[0], &E));
  for (int i = 1; i < N; i++) {
    OK(jm_store_create(s, NULL, NULL, NULL, NULL, ids[i], &E));
    if (strcmp(ids[i - 1], ids[i]) >= 0)
      test_fail(__FILE__, __LINE__, "id %d '%s' does not sort after '%s'", i,
                ids[i], ids[i - 1]);
  }
  jm_message_in m = {0};
  m.role = "user";
  m.content = "x";
  m.content_len = 1;
  for (int i = 0; i < N; i++) {
    OK(jm_store_add_message(s, ids[0], &m, mids[i], &E));
    if (i && strcmp(mids[i - 1], mids[i]) >= 0)
      test_fail(__FILE__, __LINE__, "message id %d '%s' <= '%s'", i, mids[i],
                mids[i - 1]);
  }
  /* A second store in the same process continues the order. */
  jm_store *s2 = store_open(root);
  char next[JM_ID_MAX + 1];
  OK(jm_store_create(s2, NULL, NULL, NULL, NULL, next, &E));
  ASSERT(strcmp(ids[N - 1], next) < 0);
  store_close(s2);
  store_close(s);
}

/* Errors ------------------------------------------------------------------------ */

static void test_errors(void) {
  const char *root = fresh_root("err");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "c1", "t", NULL, NULL, NULL, &E));
  char j[1100];
  snprintf(j, sizeof j, "%s/journal", root);
  char big[200];
  memset(big, 'a', 129);
  big[129] = '\0';
  const char *bad[] = {"",    ".",    "..",       "a/b",      "../x",
                       "Abc", "a b",  ".hidden",  "x\x01",    "caf\xc3\xa9",
                       big,   "a\\b", "con:x",    "/etc/passwd"};
  char out[JM_ID_MAX + 1];
  jm_message_in m = {0};
  m.role = "user";
  m.content = "hi";
  m.content_len = SIZE_MAX;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *id = bad[i];
    FAILS(JM_EID, jm_store_create(s, id, "t", NULL, NULL, out, &E));
    FAILS(JM_EID, jm_store_add_message(s, id, &m, out, &E));
    FAILS(JM_EID, jm_store_rename(s, id, "t", &E));
    FAILS(JM_EID, jm_store_delete(s, id, &E));
    FAILS(JM_EID, jm_store_restore(s, id, &E));
    FAILS(JM_EID, jm_store_append(s, id, "{\"type\":\"x\"}", NULL, &E));
    jm_conversation c;
    FAILS(JM_EID, jm_store_get(s, id, &c, &E));
    jm_message_list ml;
    FAILS(JM_EID, jm_store_messages(s, id, 0, 0, &ml, &E));
    ASSERT(ml.n == 0 && ml.items == NULL);
    jm_search_options so = {0};
    so.conversation_id = id;
    jm_search_results r;
    FAILS(JM_EID, jm_store_search(s, "hello", &so, &r, &E));
  }
  /* Nothing was created, in journal/ or anywhere else. */
  ASSERT_EQ(dir_count(j), 1);
  ASSERT_EQ(dir_count(root), 2); /* journal, mirror */
  ASSERT_EQ(fsize(test_fmt("%s/a", root)), -1);

  /* Adding to, renaming, deleting a missing conversation. */
  FAILS(JM_ENOTFOUND, jm_store_add_message(s, "missing", &m, out, &E));
  ASSERT_STR_CONTAINS(E.msg, "missing");
  FAILS(JM_ENOTFOUND, jm_store_rename(s, "missing", "t", &E));
  FAILS(JM_ENOTFOUND, jm_store_delete(s, "missing", &E));
  FAILS(JM_ENOTFOUND, jm_store_restore(s, "missing", &E));
  ASSERT_EQ(fsize(mt_jpath(root, "missing")), -1);
  ASSERT_EQ(dir_count(j), 1);

  /* Creating one that exists: nothing appended. */
  long long size = fsize(mt_jpath(root, "c1"));
  FAILS(-EEXIST, jm_store_create(s, "c1", "again", NULL, NULL, out, &E));
  ASSERT_EQ(fsize(mt_jpath(root, "c1")), size);

  /* Invalid events: refused, nothing written. */
  jm_message_in bad_role = m;
  bad_role.role = "robot";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_role, out, &E));
  bad_role.role = "User";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_role, out, &E));
  bad_role.role = NULL;
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_role, out, &E));
  jm_message_in bad_meta = m;
  bad_meta.meta_json = "{\"a\":";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_meta, out, &E));
  bad_meta.meta_json = "{\"a\":1,\"a\":2}";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_meta, out, &E));
  jm_message_in bad_utf8 = m;
  bad_utf8.content = "\xff\xfe";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_utf8, out, &E));
  jm_message_in bad_mid = m;
  bad_mid.id = "";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_mid, out, &E));
  char long_mid[300];
  memset(long_mid, 'm', 257);
  long_mid[257] = '\0';
  bad_mid.id = long_mid;
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_mid, out, &E));
  /* Optional members that are not UTF-8 are refused, not dropped. */
  jm_message_in bad_opt = m;
  bad_opt.parent_id = "p\xc0";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_opt, out, &E));
  bad_opt = m;
  bad_opt.thinking = "t\xff";
  FAILS(JM_EEVENT, jm_store_add_message(s, "c1", &bad_opt, out, &E));
  FAILS(JM_EEVENT, jm_store_rename(s, "c1", "bad \xff title", &E));
  FAILS(JM_EEVENT, jm_store_append(s, "c1", "{\"type\":\"message\"}", NULL,
                                   &E));
  FAILS(JM_EEVENT, jm_store_append(s, "c1", "not json", NULL, &E));
  ASSERT_EQ(fsize(mt_jpath(root, "c1")), size);

  FAILS(JM_EEVENT, jm_store_create(s, "c2", "t", NULL, "[1,", out, &E));
  FAILS(JM_EEVENT, jm_store_create(s, "c2", "t\xff", NULL, NULL, out, &E));
  FAILS(JM_EEVENT, jm_store_create(s, "c2", "t", "b\xff", NULL, out, &E));
  ASSERT_EQ(fsize(mt_jpath(root, "c2")), -1);
  ASSERT_EQ(dir_count(j), 1);

  /* The conversation is as it was. */
  jm_message_list ml;
  msgs_all(s, "c1", &ml);
  ASSERT_EQ(ml.n, 0);
  jm_message_list_free(&ml);
  jm_conversation c;
  OK(jm_store_get(s, "c1", &c, &E));
  ASSERT_STR_EQ(c.title, "t");
  ASSERT_EQ(c.bad_lines, 0);
  jm_conversation_free(&c);
  store_close(s);
}

/* Read-your-writes without a daemon ------------------------------------------------ */

static void test_read_your_writes(void) {
  const char *root = fresh_root("ryw");
  jm_store *a = store_open(root);
  jm_store *b = store_open(root); /* as another process would */
  jm_conversation_list l;
  list_all(b, 0, &l); /* b has read the mirror before a writes */
  ASSERT_EQ(l.n, 0);
  jm_conversation_list_free(&l);

  OK(jm_store_create(a, "c1", "one", NULL, NULL, NULL, &E));
  add(a, "c1", "m1", "user", "first words", NULL);
  list_all(a, 0, &l);
  ASSERT_EQ(l.n, 1);
  ASSERT_EQ(l.items[0].message_count, 1);
  jm_conversation_list_free(&l);
  list_all(b, 0, &l); /* b wrote nothing: it catches up the stale file */
  ASSERT_EQ(l.n, 1);
  ASSERT_EQ(l.items[0].message_count, 1);
  jm_conversation_list_free(&l);

  /* Each read kind, right after a write. */
  for (int i = 0; i < 20; i++) {
    char id[16], text[64];
    snprintf(id, sizeof id, "r%d", i);
    snprintf(text, sizeof text, "roundtrip%dzz", i);
    add(a, "c1", id, "assistant", text, NULL);
    jm_store *r = i % 2 ? a : b;
    jm_message_list ml;
    OK(jm_store_messages(r, "c1", 0, 0, &ml, &E));
    ASSERT_EQ(ml.n, 2 * (size_t)i + 2); /* m1, r0..ri, s0..s(i-1) */
    ASSERT_STR_EQ(ml.items[ml.n - 1].content, text);
    jm_message_list_free(&ml);
    jm_conversation g;
    OK(jm_store_get(r == a ? b : a, "c1", &g, &E));
    ASSERT_EQ(g.message_count, 2 * i + 2);
    jm_conversation_free(&g);
    add(b, "c1", test_fmt("s%d", i), "user", text, NULL);
    jm_search_results sr;
    OK(jm_store_search(a, text, NULL, &sr, &E));
    ASSERT_EQ(sr.n, 2);
    jm_search_results_free(&sr);
  }

  /* A write by another process: a forked writer with its own store. */
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    jm_store *w;
    jm_store_options o;
    jm_store_options_init(&o);
    int rc = jm_store_open(&w, root, &o, NULL);
    if (rc == 0)
      rc = jm_store_create(w, "fromchild", "child", NULL, NULL, NULL, NULL);
    if (rc == 0)
      rc = jm_store_append(w, "c1",
                           "{\"type\":\"message\",\"id\":\"k1\",\"role\":"
                           "\"user\",\"content\":\"from the child\"}",
                           NULL, NULL);
    if (w)
      jm_store_close(w, NULL);
    _exit(rc == 0 ? 0 : 1);
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  list_all(a, 0, &l);
  ASSERT_EQ(l.n, 2);
  ASSERT_STR_EQ(l.items[0].id, "c1"); /* k1 came after fromchild */
  ASSERT_STR_EQ(l.items[1].id, "fromchild");
  ASSERT_STR_EQ(find_conv(&l, "c1")->title, "one");
  ASSERT_EQ(find_conv(&l, "c1")->message_count, 42);
  jm_conversation_list_free(&l);
  jm_search_results sr;
  OK(jm_store_search(b, "from the child", NULL, &sr, &E));
  ASSERT_EQ(sr.n, 1);
  ASSERT_STR_EQ(sr.items[0].message_id, "k1");
  jm_search_results_free(&sr);

  /* A file removed behind the store's back: gone from every read. */
  ASSERT_OK(unlink(mt_jpath(root, "fromchild")));
  list_all(b, 1, &l);
  ASSERT_EQ(l.n, 1);
  ASSERT_STR_EQ(l.items[0].id, "c1");
  jm_conversation_list_free(&l);
  jm_conversation g;
  FAILS(JM_ENOTFOUND, jm_store_get(a, "fromchild", &g, &E));

  store_close(a);
  store_close(b);
  /* Nobody holds the writer lock now. */
  long holder;
  char who[64];
  ASSERT_EQ(jm_mirror_lock_holder(db_of(root), &holder, who), 0);
}

/* A store whose mirror is locked by someone else (not jmirrord) for longer
 * than wait_ms: the read fails with JM_ELOCKED rather than answering from a
 * mirror that is behind. */
static void test_read_locked_mirror(void) {
  const char *root = fresh_root("locked");
  jm_store_options o;
  jm_store_options_init(&o);
  o.sync = JM_SYNC_NONE;
  o.wait_ms = 200;
  jm_store *s;
  OK(jm_store_open(&s, root, &o, &E));
  OK(jm_store_create(s, "c1", NULL, NULL, NULL, NULL, &E));
  jm_message_list ml;
  msgs_all(s, "c1", &ml);
  jm_message_list_free(&ml);
  jm_mirror *m;
  jm_mirror_options mo = {.db_path = NULL, .read_only = 0, .max_line = 0};
  OK(jm_mirror_open(&m, root, &mo, &E));
  OK(jm_mirror_lock(m, 0, "jmirror replay", &E));
  add(s, "c1", "m1", "user", "hello", NULL);
  double t0 = now_s();
  FAILS(JM_ELOCKED, jm_store_messages(s, "c1", 0, 0, &ml, &E));
  ASSERT(now_s() - t0 < 5.0);
  jm_mirror_unlock(m);
  jm_mirror_close(m);
  msgs_all(s, "c1", &ml);
  ASSERT_EQ(ml.n, 1);
  jm_message_list_free(&ml);
  store_close(s);
}

/* Writes while jmirrord holds the mirror ------------------------------------ */

static jm_store *store_open_wait(const char *root, int wait_ms) {
  jm_store_options o;
  jm_store_options_init(&o);
  o.sync = JM_SYNC_NONE;
  o.wait_ms = wait_ms;
  jm_store *s = NULL;
  OK(jm_store_open(&s, root, &o, &E));
  return s;
}

/* The mirror is held as "jmirrord" but no daemon answers: the write is in
 * the journal, and the store says that the mirror was not confirmed to show
 * it (JM_ETIMEDOUT) rather than claim every reader sees it. */
static void test_write_unconfirmed(void) {
  const char *root = fresh_root("unconfirmed");
  jm_store *s = store_open_wait(root, 300);
  OK(jm_store_create(s, "c1", NULL, NULL, NULL, NULL, &E));
  jm_mirror *m;
  jm_mirror_options mo = {.db_path = NULL, .read_only = 0, .max_line = 0};
  OK(jm_mirror_open(&m, root, &mo, &E));
  OK(jm_mirror_lock(m, 0, "jmirrord", &E));
  const char *path = test_fmt("%s/journal/c1.jsonl", root);
  long long before = fsize(path);
  jm_message_in in = {.id = "m1", .role = "user", .content = "hello",
                      .content_len = SIZE_MAX};
  double t0 = now_s();
  FAILS(JM_ETIMEDOUT, jm_store_add_message(s, "c1", &in, NULL, &E));
  ASSERT(now_s() - t0 < 1 + 0.3 + 2 + 0.3 + 1); /* the documented bound */
  ASSERT(strstr(E.msg, "'c1'") && strstr(E.msg, "in the journal"));
  ASSERT(fsize(path) > before);
  jm_mirror_unlock(m);
  jm_mirror_close(m);
  jm_message_list ml;
  msgs_all(s, "c1", &ml); /* the write is there, once */
  ASSERT_EQ(ml.n, 1);
  jm_message_list_free(&ml);
  store_close(s);
}

/* A stand-in for jmirrord that holds the mirror, takes one request and goes
 * away without answering (the lock first, then the connection). */
static void vanishing_daemon(const char *root, int ready) {
  jm_mirror *m;
  jm_mirror_options mo = {.db_path = NULL, .read_only = 0, .max_line = 0};
  jm_error e;
  if (jm_mirror_open(&m, root, &mo, &e) != 0 ||
      jm_mirror_lock(m, 0, "jmirrord", &e) != 0)
    _exit(3);
  char *sock = jm_mirror_sibling(db_of(root), ".sock");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(l, 4) != 0 || write(ready, "x", 1) != 1)
    _exit(3);
  int c = accept(l, NULL, NULL);
  char buf[512];
  if (c < 0 || read(c, buf, sizeof buf) <= 0)
    _exit(3);
  jm_mirror_unlock(m);
  unlink(sock);
  _exit(0);
}

/* The daemon goes away while a write waits for it: the store ingests the
 * write itself, so the mirror shows it when the call returns. */
static void test_write_daemon_gone(void) {
  const char *root = fresh_root("gone");
  jm_store *s = store_open_wait(root, 2000);
  OK(jm_store_create(s, "c1", NULL, NULL, NULL, NULL, &E));
  jm_message_list ml;
  msgs_all(s, "c1", &ml);
  jm_message_list_free(&ml);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  if (pid == 0)
    vanishing_daemon(root, ready[1]);
  char x;
  ASSERT_EQ(read(ready[0], &x, 1), 1);
  add(s, "c1", "m1", "user", "hello", NULL);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  ASSERT_EQ(mt_qi(db_of(root), "SELECT count(*) FROM messages WHERE id = "
                               "'m1'"), 1);
  store_close(s);
}

/* Healing after drift --------------------------------------------------------------- */

static void expect_msgs(jm_store *s, const char *conv, int n,
                        const char *const *ids, const char *const *contents) {
  jm_message_list ml;
  msgs_all(s, conv, &ml);
  if (ml.n != (size_t)n)
    test_fail(__FILE__, __LINE__, "%s: %zu messages, expected %d", conv, ml.n,
              n);
  for (int i = 0; i < n; i++) {
    ASSERT_STR_EQ(ml.items[i].id, ids[i]);
    ASSERT_STR_EQ(ml.items[i].content, contents[i]);
  }
  jm_message_list_free(&ml);
}

static void test_heal_after_drift(void) {
  const char *root = fresh_root("heal");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "d1", "drift", NULL, NULL, NULL, &E));
  const char *ids[] = {"m1", "m2", "m3", "m4", "m5"};
  const char *words[] = {"one", "two", "three", "four", "five"};
  for (int i = 0; i < 5; i++)
    add(s, "d1", ids[i], "user", words[i], NULL);
  expect_msgs(s, "d1", 5, ids, words);
  char *orig = test_read_file(mt_jpath(root, "d1"), NULL);
  ASSERT(orig != NULL);

  /* 1. Break rows in the mirror AND truncate the file to 3 lines. */
  db_exec(root, "UPDATE messages SET content = 'BROKEN' WHERE id = 'm2'");
  db_exec(root, "DELETE FROM messages WHERE id = 'm1'");
  db_exec(root, "INSERT INTO messages (conversation_id, id, seq, role, "
                "content, status, created_at, updated_at) VALUES ('d1', "
                "'ghost', 99, 'user', 'ghost', 'complete', 'x', 'x')");
  char p[1100];
  snprintf(p, sizeof p, "%s", mt_jpath(root, "d1"));
  char *nl = orig;
  for (int i = 0; i < 3; i++)
    nl = strchr(nl, '\n') + 1;
  ASSERT_OK(truncate(p, nl - orig));
  expect_msgs(s, "d1", 2, ids, words);
  jm_conversation c;
  OK(jm_store_get(s, "d1", &c, &E));
  ASSERT_EQ(c.message_count, 2);
  jm_conversation_free(&c);

  /* 2. Replace the file with another one (rename over it). */
  db_exec(root, "UPDATE messages SET content = 'BROKEN' WHERE id = 'm1'");
  mt_buf b = {0};
  mt_line(&b, "{'type':'conversation.created','ts':'2030-01-01T00:00:00Z',"
              "'title':'other'}");
  mt_line(&b, "{'type':'message','ts':'2030-01-01T00:00:01Z','id':'x1',"
              "'role':'user','content':'replaced one'}");
  mt_line(&b, "{'type':'message','ts':'2030-01-01T00:00:02Z','id':'m1',"
              "'role':'assistant','content':'replaced two'}");
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s/journal/d1.tmp", root);
  test_write_file(tmp, b.p, b.len);
  ASSERT_OK(rename(tmp, p));
  const char *rid[] = {"x1", "m1"};
  const char *rc[] = {"replaced one", "replaced two"};
  expect_msgs(s, "d1", 2, rid, rc);
  OK(jm_store_get(s, "d1", &c, &E));
  ASSERT_STR_EQ(c.title, "other");
  ASSERT_STR_EQ(c.updated_at, "2030-01-01T00:00:02.000000Z");
  jm_conversation_free(&c);

  /* 3. Same size, rewritten in place in the middle (and the row broken).
   * The mtime is set explicitly, as a later write would leave it, so the
   * test does not depend on the file system's timestamp granularity. */
  db_exec(root, "UPDATE messages SET content = 'BROKEN' WHERE id = 'x1'");
  char *at = strstr(b.p, "replaced one");
  memcpy(at, "REPLACED ONE", 12);
  int fd = open(p, O_WRONLY);
  ASSERT(fd >= 0);
  ASSERT_EQ(pwrite(fd, at, 12, at - b.p), 12);
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1700000000, 123}};
  ASSERT_OK(futimens(fd, ts));
  close(fd);
  const char *rc3[] = {"REPLACED ONE", "replaced two"};
  expect_msgs(s, "d1", 2, rid, rc3);

  /* 4. The original file back, plus a line appended later. */
  test_write_file(tmp, orig, strlen(orig));
  ASSERT_OK(rename(tmp, p));
  add(s, "d1", "m6", "user", "six", NULL);
  const char *ids6[] = {"m1", "m2", "m3", "m4", "m5", "m6"};
  const char *words6[] = {"one", "two", "three", "four", "five", "six"};
  expect_msgs(s, "d1", 6, ids6, words6);

  /* The healed mirror is what the journal says, row for row. */
  jm_mirror *m;
  jm_mirror_options mo = {.db_path = NULL, .read_only = 0, .max_line = 0};
  OK(jm_mirror_open(&m, root, &mo, &E));
  ASSERT_EQ(mt_verify_ok(m), 1);
  jm_mirror_close(m);
  mt_buf_free(&b);
  free(orig);
  store_close(s);
}

/* Parent healing (format section 4) --------------------------------------------------- */

static void test_parent_healing(void) {
  const char *root = fresh_root("parent");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "p1", NULL, NULL, NULL, NULL, &E));
  add(s, "p1", "m1", "user", "1", "ghost");      /* first, dangling -> NULL */
  add(s, "p1", "m2", "assistant", "2", NULL);    /* null stays null */
  add(s, "p1", "m3", "user", "3", "m3");         /* itself -> m2 */
  add(s, "p1", "m4", "assistant", "4", "gone");  /* missing -> m3 */
  add(s, "p1", "m5", "user", "5", "m1");         /* valid, kept */
  add(s, "p1", "x", "user", "doomed", NULL);
  append(s, "p1", "{'type':'message.deleted','id':'x'}");
  add(s, "p1", "m6", "assistant", "6", "x");     /* deleted -> m5 */
  add(s, "p1", "m7", "user", "7", "m8");         /* later, present: kept */
  add(s, "p1", "m8", "assistant", "8", "m7");
  add(s, "p1", "m9", "user", "9", "M1");         /* case differs: missing */
  static const struct {
    const char *id, *healed, *written;
  } want[] = {
      {"m1", NULL, "ghost"}, {"m2", NULL, NULL},   {"m3", "m2", "m3"},
      {"m4", "m3", "gone"},  {"m5", "m1", "m1"},   {"m6", "m5", "x"},
      {"m7", "m8", "m8"},    {"m8", "m7", "m7"},   {"m9", "m8", "M1"},
  };
  const size_t n = sizeof want / sizeof want[0];
  /* All at once, then one message per page: the same answers. */
  for (size_t page = 0; page < 2; page++) {
    jm_message_list ml;
    int64_t after = 0;
    for (size_t i = 0; i < n; i++) {
      if (page == 0 && i == 0) {
        OK(jm_store_messages(s, "p1", 0, 0, &ml, &E));
        ASSERT_EQ(ml.n, n);
      } else if (page == 1) {
        OK(jm_store_messages(s, "p1", after, 1, &ml, &E));
        ASSERT_EQ(ml.n, 1);
      }
      const jm_message *m = page == 0 ? &ml.items[i] : &ml.items[0];
      ASSERT_STR_EQ(m->id, want[i].id);
      if (want[i].healed)
        ASSERT_STR_EQ(m->parent_id, want[i].healed);
      else if (m->parent_id != NULL)
        test_fail(__FILE__, __LINE__, "%s: parent '%s', expected NULL", m->id,
                  m->parent_id);
      if (want[i].written)
        ASSERT_STR_EQ(m->parent_id_written, want[i].written);
      else
        ASSERT(m->parent_id_written == NULL);
      if (page == 1) {
        after = ml.next_after;
        ASSERT_EQ(after, i + 1 < n ? m->seq : -1);
        jm_message_list_free(&ml);
      }
    }
    if (page == 0)
      jm_message_list_free(&ml);
  }
  /* Deleting the parent re-heals on the next read; re-creating it
   * restores the written parent. */
  append(s, "p1", "{'type':'message.deleted','id':'m1'}");
  jm_message_list ml;
  msgs_all(s, "p1", &ml);
  ASSERT_EQ(ml.n, n - 1);
  ASSERT(ml.items[0].parent_id == NULL); /* m2 */
  ASSERT_STR_EQ(ml.items[3].id, "m5");
  ASSERT_STR_EQ(ml.items[3].parent_id, "m4");
  ASSERT_STR_EQ(ml.items[3].parent_id_written, "m1");
  jm_message_list_free(&ml);
  add(s, "p1", "m1", "user", "again", NULL);
  msgs_all(s, "p1", &ml);
  ASSERT_STR_EQ(ml.items[3].parent_id, "m1");
  jm_message_list_free(&ml);
  store_close(s);
}

/* Pagination ------------------------------------------------------------------------ */

static void test_messages_pagination(void) {
  const char *root = fresh_root("mpage");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "c", NULL, NULL, NULL, NULL, &E));
  enum { N = 10 };
  for (int i = 0; i < N; i++)
    add(s, "c", test_fmt("m%02d", i), i % 2 ? "assistant" : "user",
        test_fmt("text %d", i), NULL);
  for (size_t limit = 1; limit <= N + 1; limit++) {
    int64_t after = 0;
    int seen = 0, pages = 0;
    for (;;) {
      jm_message_list ml;
      OK(jm_store_messages(s, "c", after, limit, &ml, &E));
      pages++;
      ASSERT(ml.n <= limit);
      for (size_t i = 0; i < ml.n; i++, seen++) {
        ASSERT_STR_EQ(ml.items[i].id, test_fmt("m%02d", seen));
        ASSERT(ml.items[i].seq > after);
      }
      int64_t next = ml.next_after;
      if (next >= 0)
        ASSERT_EQ(next, ml.items[ml.n - 1].seq);
      else
        ASSERT_EQ(seen, N);
      jm_message_list_free(&ml);
      if (next < 0)
        break;
      after = next;
    }
    ASSERT_EQ(seen, N);
    ASSERT_EQ(pages, (N + (int)limit - 1) / (int)limit);
  }
  /* Past the end, a missing conversation. */
  jm_message_list ml;
  OK(jm_store_messages(s, "c", 1000, 5, &ml, &E));
  ASSERT_EQ(ml.n, 0);
  ASSERT_EQ(ml.next_after, -1);
  jm_message_list_free(&ml);
  /* A conversation that does not exist is not an empty one. */
  ASSERT_EQ(jm_store_messages(s, "none", 0, 5, &ml, &E), JM_ENOTFOUND);
  ASSERT_STR_CONTAINS(E.msg, "no conversation 'none'");
  ASSERT_EQ(ml.n, 0);
  store_close(s);
}

/* Memory running out while a page of messages grows: an error, never a
 * shorter page that looks like the whole conversation. */
static void test_messages_out_of_memory(void) {
#if CAN_FAIL_REALLOC
  const char *root = fresh_root("oom");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "c1", NULL, NULL, NULL, NULL, &E));
  for (int i = 0; i < 100; i++)
    add(s, "c1", NULL, "user", "x", NULL);
  jm_message_list ml;
  msgs_all(s, "c1", &ml);
  ASSERT_EQ(ml.n, 100);
  jm_message_list_free(&ml);
  fail_realloc_at = 128 * sizeof(jm_message); /* the growth past 64 */
  FAILS(-ENOMEM, jm_store_messages(s, "c1", 0, 1000, &ml, &E));
  fail_realloc_at = 0;
  ASSERT_STR_CONTAINS(E.msg, "'c1'");
  ASSERT_EQ(ml.n, 0);
  OK(jm_store_messages(s, "c1", 0, 1000, &ml, &E));
  ASSERT_EQ(ml.n, 100);
  jm_message_list_free(&ml);
  store_close(s);
#else
  printf("# skipped: realloc cannot be made to fail in this build\n");
#endif
}

static void test_list_pagination(void) {
  const char *root = mt_root("lpage");
  /* Hand-written files: controlled times, ties broken by id, a file with
   * no valid line (updated_at NULL, oldest of all), deleted ones, brains. */
  enum { N = 23 };
  for (int i = 0; i < N; i++) {
    mt_buf b = {0};
    mt_printf(&b,
              "{\"type\":\"conversation.created\",\"ts\":\"2020-01-01T00:00:"
              "%02dZ\"%s}\n",
              i / 3, i % 2 ? ",\"brain\":\"odd\"" : "");
    if (i % 5 == 4)
      mt_printf(&b, "{\"type\":\"conversation.deleted\",\"ts\":\"2020-01-01T"
                    "00:00:%02dZ\"}\n", i / 3);
    mt_write(root, test_fmt("c%02d", i), b.p, b.len);
    mt_buf_free(&b);
  }
  mt_write(root, "empty", "not json\n", 9);
  jm_store *s = store_open(root);

  /* The expected order, computed here: (updated_at, id) descending. */
  for (int variant = 0; variant < 4; variant++) {
    int deleted = variant & 1;
    const char *brain = variant & 2 ? "odd" : NULL;
    static char names[N][8];
    const char *expect[N + 1];
    int ne = 0;
    for (int t = N / 3; t >= 0; t--)
      for (int i = N - 1; i >= 0; i--)
        if (i / 3 == t && (deleted || i % 5 != 4) && (!brain || i % 2)) {
          snprintf(names[i], sizeof names[i], "c%02d", i);
          expect[ne++] = names[i];
        }
    if (!brain)
      expect[ne++] = "empty";
    for (size_t limit = 1; limit <= 8; limit++) {
      jm_list_options o = {brain, deleted, limit, NULL};
      char *cursor = NULL;
      int got = 0;
      for (;;) {
        jm_conversation_list l;
        o.cursor = cursor;
        OK(jm_store_list(s, &o, &l, &E));
        ASSERT(l.n <= limit);
        for (size_t i = 0; i < l.n; i++, got++) {
          ASSERT(got < ne);
          if (strcmp(l.items[i].id, expect[got]) != 0)
            test_fail(__FILE__, __LINE__,
                      "variant %d limit %zu: item %d is %s, expected %s",
                      variant, limit, got, l.items[i].id, expect[got]);
          if (brain)
            ASSERT_STR_EQ(l.items[i].brain, brain);
        }
        free(cursor);
        cursor = l.next_cursor ? strdup(l.next_cursor) : NULL;
        if (cursor)
          ASSERT_EQ(l.n, limit);
        jm_conversation_list_free(&l);
        if (cursor == NULL)
          break;
      }
      ASSERT_EQ(got, ne);
    }
  }
  /* limit 0 is 50. */
  jm_conversation_list l;
  jm_list_options o = {NULL, 1, 0, NULL};
  OK(jm_store_list(s, &o, &l, &E));
  ASSERT_EQ(l.n, N + 1);
  ASSERT(l.next_cursor == NULL);
  ASSERT(l.items[N].updated_at == NULL);
  ASSERT_EQ(l.items[N].bad_lines, 1);
  jm_conversation_list_free(&l);
  /* A brain nobody has. */
  o.brain = "nobody";
  OK(jm_store_list(s, &o, &l, &E));
  ASSERT_EQ(l.n, 0);
  ASSERT(l.next_cursor == NULL);
  jm_conversation_list_free(&l);

  /* Invalid cursors. */
  const char *bad[] = {"zz", "abc", "", "6162", "1f", "1f41",
                       "41421f2e2e", "0g"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    jm_list_options b = {NULL, 0, 5, bad[i]};
    FAILS(JM_EUSAGE, jm_store_list(s, &b, &l, &E));
    ASSERT(l.n == 0 && l.items == NULL);
  }
  char huge[2100];
  memset(huge, 'a', 2048);
  huge[2048] = '\0';
  jm_list_options b = {NULL, 0, 5, huge};
  FAILS(JM_EUSAGE, jm_store_list(s, &b, &l, &E));
  store_close(s);
}

/* 10,000 conversations paged while others are created ------------------------------- */

enum { BIG = 10000, PAGE = 97 };

static void ts_of(int i, char out[32]) {
  time_t t = 978307200 + i / 7; /* 2001-01-01, seven per second: ties */
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * The writer, in a process of its own: for every byte read from `go` (the
 * reader sends one per page it fetches, and does not wait), two new
 * conversations, each with a message: one created now (newer than every
 * original: it lands before the reader's cursor), one imported with a ts
 * inside the originals' range (it may land on either side of the cursor).
 * Every fourth is read back at once, so the writer also ingests and
 * competes with the reader for the mirror's writer lock.  At EOF on `go` it
 * writes how many it made to `report`.  Never asserts: test_fail in this
 * process would remove the temp dir under the reader.
 */
static void writer(const char *root, int go, int report) {
  jm_store *w;
  jm_store_options o;
  jm_store_options_init(&o);
  o.sync = JM_SYNC_NONE;
  int rc = jm_store_open(&w, root, &o, NULL), n = 0;
  char x;
  mt_rng r = {42};
  while (rc == 0 && read(go, &x, 1) == 1) {
    for (int k = 0; rc == 0 && k < 2; k++, n++) {
      char id[JM_ID_MAX + 1], mid[JM_MSG_ID_MAX + 1];
      jm_message_in m = {0};
      m.role = "user";
      m.content = "new message";
      m.content_len = SIZE_MAX;
      if (k == 0) {
        rc = jm_store_create(w, NULL, "new", n % 3 ? NULL : "b3", NULL, id,
                             NULL);
        if (rc == 0)
          rc = jm_store_add_message(w, id, &m, mid, NULL);
      } else {
        char ts[32], ev[256];
        ts_of((int)mt_below(&r, BIG), ts);
        snprintf(id, sizeof id, "imported-%d", n);
        snprintf(ev, sizeof ev, "{\"type\":\"conversation.created\","
                 "\"ts\":\"%s\"%s}", ts, n % 3 ? "" : ",\"brain\":\"b3\"");
        rc = jm_store_append(w, id, ev, NULL, NULL);
        snprintf(ev, sizeof ev, "{\"type\":\"message\",\"ts\":\"%s\","
                 "\"id\":\"m\",\"role\":\"user\",\"content\":\"x\"}", ts);
        if (rc == 0)
          rc = jm_store_append(w, id, ev, NULL, NULL);
      }
      jm_conversation c;
      if (rc == 0 && n % 4 == 0 && (rc = jm_store_get(w, id, &c, NULL)) == 0)
        jm_conversation_free(&c);
    }
  }
  jm_store_close(w, NULL);
  if (write(report, &n, sizeof n) != sizeof n)
    rc = -1;
  _exit(rc == 0 ? 0 : 1);
}

static int go_fd = -1;

static int orig_index(const char *id) {
  if (id[0] != 'o' || strlen(id) != 6)
    return -1;
  return atoi(id + 1);
}

/* Page through everything; returns the pages; checks order. */
static int page_all(jm_store *s, const char *brain, int deleted,
                    unsigned char *seen, int *others) {
  jm_list_options o = {brain, deleted, PAGE, NULL};
  char *cursor = NULL, *last_upd = NULL, *last_id = NULL;
  int pages = 0;
  *others = 0;
  do {
    jm_conversation_list l;
    o.cursor = cursor;
    OK(jm_store_list(s, &o, &l, &E));
    pages++;
    ASSERT(l.n <= PAGE);
    ASSERT_EQ(write(go_fd, "x", 1), 1); /* the writer makes two more */
    for (size_t i = 0; i < l.n; i++) {
      const jm_conversation *c = &l.items[i];
      const char *u = c->updated_at ? c->updated_at : "";
      if (last_id) {
        int cmp = strcmp(u, last_upd);
        if (cmp > 0 || (cmp == 0 && strcmp(c->id, last_id) >= 0))
          test_fail(__FILE__, __LINE__, "page %d: (%s, %s) after (%s, %s)",
                    pages, u, c->id, last_upd, last_id);
      }
      free(last_upd);
      free(last_id);
      last_upd = strdup(u);
      last_id = strdup(c->id);
      int k = orig_index(c->id);
      if (k < 0) {
        ++*others;
        continue;
      }
      if (seen[k]++)
        test_fail(__FILE__, __LINE__, "page %d: %s seen twice", pages, c->id);
      if (brain)
        ASSERT_STR_EQ(c->brain, brain);
    }
    free(cursor);
    cursor = l.next_cursor ? strdup(l.next_cursor) : NULL;
    jm_conversation_list_free(&l);
  } while (cursor);
  free(last_upd);
  free(last_id);
  return pages;
}

static void test_list_10k_concurrent(void) {
  const char *root = mt_root("big");
  double t0 = now_s();
  for (int i = 0; i < BIG; i++) {
    char ts[32], line[512];
    ts_of(i, ts);
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"conversation.created\",\"ts\":\"%s\","
                     "\"title\":\"o%05d\"%s}\n"
                     "{\"type\":\"message\",\"ts\":\"%s\",\"id\":\"m\","
                     "\"role\":\"user\",\"content\":\"hello %d\"}\n%s",
                     ts, i, i % 3 == 0 ? ",\"brain\":\"b3\"" : "", ts, i,
                     i % 10 == 9 ? "{\"type\":\"conversation.deleted\"}\n"
                                 : "");
    if (i % 10 == 9) { /* a deleted one: its ts too, to keep the order */
      n -= (int)strlen("{\"type\":\"conversation.deleted\"}\n");
      n += snprintf(line + n, sizeof line - (size_t)n,
                    "{\"type\":\"conversation.deleted\",\"ts\":\"%s\"}\n", ts);
    }
    int fd = open(mt_jpath(root, test_fmt("o%05d", i)),
                  O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, line, (size_t)n), n);
    close(fd);
  }
  double t_files = now_s() - t0;
  t0 = now_s();
  jm_mirror *m = mt_open(root, NULL, 0);
  jm_catchup_stats st;
  OK(jm_mirror_catch_up(m, NULL, 0, NULL, NULL, NULL, &st, &E));
  ASSERT_EQ(st.files, BIG);
  ASSERT_EQ(st.bad_lines, 0);
  jm_mirror_unlock(m);
  jm_mirror_close(m);
  double t_catchup = now_s() - t0;

  int go[2], report[2];
  ASSERT_OK(pipe(go));
  ASSERT_OK(pipe(report));
  fflush(NULL);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    close(go[1]);
    close(report[0]);
    writer(root, go[0], report[1]);
  }
  close(go[0]);
  close(report[1]);
  go_fd = go[1];
  signal(SIGPIPE, SIG_IGN); /* a writer that died: EPIPE, not a kill */

  jm_store *s = store_open(root);
  unsigned char *seen = calloc(BIG, 1);
  int others[2], pages[2];
  double tp[2];
  static const struct {
    const char *brain;
    int deleted;
  } pass[2] = {{NULL, 0}, {"b3", 1}};
  for (int p = 0; p < 2; p++) {
    memset(seen, 0, BIG);
    t0 = now_s();
    pages[p] = page_all(s, pass[p].brain, pass[p].deleted, seen, &others[p]);
    tp[p] = now_s() - t0;
    for (int i = 0; i < BIG; i++) {
      int want = (pass[p].deleted || i % 10 != 9) &&
                 (!pass[p].brain || i % 3 == 0);
      if (seen[i] != want)
        test_fail(__FILE__, __LINE__, "pass %d: o%05d seen %d times, expected "
                  "%d", p, i, seen[i], want);
    }
  }
  close(go[1]);
  go_fd = -1;
  int made = 0, status;
  ASSERT_EQ(read(report[0], &made, sizeof made), (ssize_t)sizeof made);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT(made > 0);

  /* Everything the writer made is there afterwards. */
  jm_conversation_list l;
  list_all(s, 1, &l);
  ASSERT_EQ(l.n, (size_t)BIG + (size_t)made);
  jm_conversation_list_free(&l);
  printf("# 10k: files %.2f s, catch-up %.2f s; paging (limit %d) %.2f s / "
         "%d pages, %.2f s / %d pages (brain, deleted included); %d "
         "conversations created meanwhile (%d, %d seen while paging)\n",
         t_files, t_catchup, PAGE, tp[0], pages[0], tp[1], pages[1], made,
         others[0], others[1]);
  free(seen);
  store_close(s);
  close(report[0]);
}

/* Search ----------------------------------------------------------------------------- */

static jm_search_results R;

static size_t search(jm_store *s, const char *q, const char *conv,
                     int deleted) {
  jm_search_results_free(&R);
  jm_search_options o = {conv, 50, NULL, NULL, deleted};
  OK(jm_store_search(s, q, &o, &R, &E));
  return R.n;
}

static int hit(const char *msg_id) {
  for (size_t i = 0; i < R.n; i++)
    if (strcmp(R.items[i].message_id, msg_id) == 0)
      return 1;
  return 0;
}

/* Exactly these message ids (any order), NULL-terminated. */
static void hits_are_at(int line, const char *q, ...) {
  va_list ap;
  va_start(ap, q);
  size_t n = 0;
  for (const char *id = va_arg(ap, const char *); id;
       id = va_arg(ap, const char *), n++)
    if (!hit(id))
      test_fail(__FILE__, line, "search '%s' misses %s (%zu hits)", q, id,
                R.n);
  va_end(ap);
  if (R.n != n) {
    mt_buf b = {0};
    for (size_t i = 0; i < R.n; i++)
      mt_printf(&b, " %s", R.items[i].message_id);
    test_fail(__FILE__, line, "search '%s': %zu hits (%s), expected %zu", q,
              R.n, b.p, n);
  }
}

#define EXPECT(s, q, ...)                                                     \
  do {                                                                        \
    search(s, q, NULL, 0);                                                    \
    hits_are_at(__LINE__, q, __VA_ARGS__, (const char *)NULL);                \
  } while (0)

static void test_search(void) {
  const char *root = fresh_root("search");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "en", NULL, NULL, NULL, NULL, &E));
  OK(jm_store_create(s, "ko", NULL, NULL, NULL, NULL, &E));
  OK(jm_store_create(s, "sym", NULL, NULL, NULL, NULL, &E));
  add(s, "en", "e1", "user", "The quick brown fox jumps over the lazy dog",
      NULL);
  add(s, "en", "e2", "assistant", "Quick thinking saves the day", NULL);
  add(s, "en", "e3", "user",
      "This is a long sentence that happens to mention a database only once, "
      "among very many other words that have nothing to do with it at all",
      NULL);
  add(s, "en", "e4", "assistant", "database DATABASE Database", NULL);
  add(s, "en", "e5", "user", "a fox", NULL);
  add(s, "ko", "k1", "user", "저는 한국어를 공부합니다", NULL);
  add(s, "ko", "k2", "assistant", "한국 음식은 맛있어요 👋", NULL);
  add(s, "ko", "k3", "user", "대한민국 만세", NULL);
  add(s, "ko", "k4", "user", "hello 👋 world 👨‍👩‍👧 family", NULL);
  add(s, "sym", "s1", "user", "they say \"hi\" to you", NULL);
  add(s, "sym", "s2", "user", "50% off, 100% sure", NULL);
  add(s, "sym", "s3", "user", "snake_case and a\\path", NULL);
  add(s, "sym", "s4", "user", "it's o'clock", NULL);
  add(s, "sym", "s5", "user", "500 plain abc", NULL);
  add(s, "sym", "s6", "user", "NEAR(quick fox) AND NOT col:val * ^x", NULL);

  /* English: case-insensitive, substring, AND, ranking. */
  EXPECT(s, "quick", "e1", "e2", "s6");
  EXPECT(s, "QUICK", "e1", "e2", "s6");
  EXPECT(s, "quick fox", "e1", "s6");
  EXPECT(s, "fox", "e1", "e5", "s6");
  EXPECT(s, "FOX JUMPS", "e1");
  EXPECT(s, "uic", "e1", "e2", "s6"); /* inside a word */
  EXPECT(s, "quick zebra", NULL);
  EXPECT(s, "zebra", NULL);
  ASSERT_EQ(search(s, "database", NULL, 0), 2);
  ASSERT_STR_EQ(R.items[0].message_id, "e4"); /* denser, shorter first */
  ASSERT_STR_EQ(R.items[1].message_id, "e3");
  ASSERT(R.items[0].rank < R.items[1].rank);
  ASSERT_STR_EQ(R.items[0].conversation_id, "en");
  ASSERT_STR_EQ(R.items[0].role, "assistant");
  ASSERT(R.items[0].seq > 0 && R.items[0].created_at != NULL);
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[database]");
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[DATABASE]");
  ASSERT_STR_CONTAINS(R.items[1].snippet, "[database]");
  /* Short words (LIKE, ASCII case-insensitive). */
  EXPECT(s, "FO", "e1", "e5", "s6");
  EXPECT(s, "fo la", "e1");
  EXPECT(s, "brown fo", "e1");
  EXPECT(s, "brown xq", NULL);

  /* Korean: a 3-syllable substring of a word with a particle; 2 syllables
   * through the short path. */
  EXPECT(s, "한국어", "k1");
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[한국어]를");
  EXPECT(s, "한국", "k1", "k2");
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[한국]");
  EXPECT(s, "민국", "k3");
  EXPECT(s, "대한민국", "k3");
  EXPECT(s, "한국 음식", "k2");
  EXPECT(s, "공부합니다 저는", "k1");
  EXPECT(s, "한국어를 fox", NULL);
  /* Emoji alone and mixed; a ZWJ family (5 code points: the index). */
  EXPECT(s, "👋", "k2", "k4");
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[👋]");
  EXPECT(s, "hello 👋", "k4");
  EXPECT(s, "👋 맛있어요", "k2");
  EXPECT(s, "👨‍👩‍👧", "k4");
  EXPECT(s, "👨‍👩‍👧 👋", "k4");
  EXPECT(s, "🙂", NULL);

  /* Quotes, LIKE wildcards, backslash, FTS syntax: literal, no error. */
  EXPECT(s, "\"", "s1");
  EXPECT(s, "\"hi\"", "s1");
  EXPECT(s, "say \"hi\"", "s1");
  EXPECT(s, "\"unterminated", NULL);
  EXPECT(s, "\"\"\"", NULL);
  EXPECT(s, "%", "s2");
  EXPECT(s, "0%", "s2");
  EXPECT(s, "50%", "s2");
  EXPECT(s, "%%", NULL);
  EXPECT(s, "_", "s3");
  EXPECT(s, "e_c", "s3");
  EXPECT(s, "\\", "s3");
  EXPECT(s, "a\\p", "s3");
  EXPECT(s, "\\\\", NULL);
  EXPECT(s, "'", "s4");
  EXPECT(s, "it's", "s4");
  EXPECT(s, "o'c", "s4");
  EXPECT(s, "'; DROP TABLE messages; --", NULL);
  EXPECT(s, "NEAR(quick", "s6");
  EXPECT(s, "AND", "s3", "s6");
  EXPECT(s, "NOT col:val", "s6");
  EXPECT(s, "*", "s6");
  EXPECT(s, "^x", "s6");
  EXPECT(s, "quick*", NULL);
  EXPECT(s, "-fox", NULL);
  EXPECT(s, "(x)", NULL);
  EXPECT(s, "500", "s5");
  EXPECT(s, "00", "s2", "s5");

  /* Conversation filter. */
  search(s, "fox", "en", 0);
  hits_are_at(__LINE__, "fox in en", "e1", "e5", (const char *)NULL);
  search(s, "👋", "ko", 0);
  hits_are_at(__LINE__, "👋 in ko", "k2", "k4", (const char *)NULL);
  search(s, "👋", "en", 0);
  hits_are_at(__LINE__, "👋 in en", (const char *)NULL);
  /* A conversation that does not exist is said so, not searched empty. */
  jm_search_results_free(&R);
  jm_search_options nosuch = {.conversation_id = "nosuch"};
  FAILS(JM_ENOTFOUND, jm_store_search(s, "fox", &nosuch, &R, &E));
  ASSERT(strstr(E.msg, "'nosuch'") != NULL);
  FAILS(JM_ENOTFOUND, jm_store_search(s, "fo", &nosuch, &R, &E));

  /* Deleted conversations: hidden unless asked for. */
  OK(jm_store_delete(s, "en", &E));
  EXPECT(s, "fox", "s6");
  EXPECT(s, "fo", "s6");
  search(s, "fox", NULL, 1);
  hits_are_at(__LINE__, "fox deleted", "e1", "e5", "s6", (const char *)NULL);
  search(s, "fo", NULL, 1);
  hits_are_at(__LINE__, "fo deleted", "e1", "e5", "s6", (const char *)NULL);
  search(s, "fox", "en", 0);
  hits_are_at(__LINE__, "fox en", (const char *)NULL);
  OK(jm_store_restore(s, "en", &E));
  EXPECT(s, "fox", "e1", "e5", "s6");

  /* Edits and deletes reach the index at once. */
  append(s, "en", "{'type':'message.edited','id':'e5','content':'a wolf'}");
  EXPECT(s, "fox", "e1", "s6");
  EXPECT(s, "wolf", "e5");
  append(s, "en", "{'type':'message.deleted','id':'e1'}");
  EXPECT(s, "fox", "s6");
  EXPECT(s, "lazy", NULL);
  EXPECT(s, "az", NULL);

  /* Marks of the caller's choosing, in both paths. */
  jm_search_options o = {NULL, 5, "<<", ">>", 0};
  jm_search_results_free(&R);
  OK(jm_store_search(s, "맛있어요", &o, &R, &E));
  ASSERT_EQ(R.n, 1);
  ASSERT_STR_CONTAINS(R.items[0].snippet, "<<맛있어요>>");
  jm_search_results_free(&R);
  OK(jm_store_search(s, "음식", &o, &R, &E));
  ASSERT_EQ(R.n, 1);
  ASSERT_STR_CONTAINS(R.items[0].snippet, "<<음식>>");
  ASSERT_EQ(R.items[0].rank, 0);
  /* Limit. */
  jm_search_results_free(&R);
  o.limit = 1;
  OK(jm_store_search(s, "o", &o, &R, &E));
  ASSERT_EQ(R.n, 1);
  jm_search_results_free(&R);
  OK(jm_store_search(s, "the", &o, &R, &E));
  ASSERT_EQ(R.n, 1);
  jm_search_results_free(&R);

  /* Usage errors. */
  FAILS(JM_EUSAGE, jm_store_search(s, "", NULL, &R, &E));
  FAILS(JM_EUSAGE, jm_store_search(s, " \t\n", NULL, &R, &E));
  FAILS(JM_EUSAGE, jm_store_search(s, "\xe3\x80\x80", NULL, &R, &E));
  FAILS(JM_EUSAGE, jm_store_search(s, "a b c d e f g h i j k l m n o p q",
                                   NULL, &R, &E));
  ASSERT(R.n == 0 && R.items == NULL);
  store_close(s);
}

/* A long message: the snippet of a scanned match is cut around it, on
 * character boundaries, with the marks. */
/* Case folding as docs/store.md says: Unicode for indexed words of 3+
 * characters (trigram), ASCII only for shorter words (LIKE) and for every
 * word in rows the index has not reached yet (scanned while it builds). */
static void test_search_case_folding(void) {
  const char *root = fresh_root("fold");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "fr", NULL, NULL, NULL, NULL, &E));
  add(s, "fr", "f1", "user", "Une école", NULL);
  ASSERT_EQ(search(s, "ÉCOLE", "fr", 0), 1); /* folded */
  ASSERT_EQ(search(s, "UNE", "fr", 0), 1);
  ASSERT_EQ(search(s, "uN", "fr", 0), 1);               /* short, ASCII */
  ASSERT_EQ(search(s, "éc", "fr", 0), 1);
  ASSERT_EQ(search(s, "Éc", "fr", 0), 0); /* short: ASCII only */
  /* The index not built yet (as after a rebuild): rows are scanned. */
  db_exec(root, "INSERT INTO messages_fts (messages_fts) VALUES"
               " ('delete-all'); UPDATE settings SET value = '0' WHERE"
               " key = 'search_upto'");
  ASSERT_EQ(search(s, "école", "fr", 0), 1);
  ASSERT_EQ(search(s, "UNE", "fr", 0), 1);
  ASSERT_EQ(search(s, "ÉCOLE", "fr", 0), 0);
  jm_search_results_free(&R);
  store_close(s);
}

static void test_search_snippets(void) {
  const char *root = fresh_root("snip");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "c", NULL, NULL, NULL, NULL, &E));
  mt_buf b = {0};
  for (int i = 0; i < 60; i++)
    mt_puts(&b, "가나");
  mt_puts(&b, " ZQ ");
  for (int i = 0; i < 60; i++)
    mt_puts(&b, "다라");
  add(s, "c", "long", "user", b.p, NULL);
  ASSERT_EQ(search(s, "zq", NULL, 0), 1);
  const char *sn = R.items[0].snippet;
  ASSERT_STR_CONTAINS(sn, "[ZQ]");
  ASSERT(strncmp(sn, "…", 3) == 0);
  ASSERT(strlen(sn) >= 3 && strcmp(sn + strlen(sn) - 3, "…") == 0);
  ASSERT(strlen(sn) < b.len);
  /* Cut on character boundaries: valid UTF-8 throughout. */
  for (const unsigned char *p = (const unsigned char *)sn; *p;) {
    int n = *p < 0x80 ? 1 : *p < 0xe0 ? 2 : *p < 0xf0 ? 3 : 4;
    for (int k = 1; k < n; k++)
      ASSERT((p[k] & 0xc0) == 0x80);
    p += n;
  }
  ASSERT_EQ(search(s, "가나가", NULL, 0), 1);
  ASSERT_STR_CONTAINS(R.items[0].snippet, "[가나가");
  jm_search_results_free(&R);
  mt_buf_free(&b);
  store_close(s);
}

/* Matches beyond the 5,000 newest the index ranks are found when the
 * filters drop the newest: another conversation's newer matches lying
 * within the searched conversation's rowid range, or a deleted
 * conversation's. */
static void put_msgs(const char *root, const char *conv, const char *prefix,
                     int n, const char *word) {
  mt_buf b = {0};
  for (int i = 0; i < n; i++)
    mt_printf(&b,
              "{\"type\":\"message\",\"ts\":\"2026-01-01T00:00:00Z\","
              "\"id\":\"%s%d\",\"role\":\"user\",\"content\":\"%s %d\"}\n",
              prefix, i, word, i);
  mt_write(root, conv, b.p, b.len);
  mt_buf_free(&b);
}

static void test_search_beyond_the_cut(void) {
  const char *root = fresh_root("cut");
  jm_store *s = store_open(root);
  mkdir(test_fmt("%s/journal", root), 0700);
  jm_message_list l;
  put_msgs(root, "tgt", "t", 1, "needle");
  msgs_all(s, "tgt", &l); /* ingested: the lowest rowids */
  jm_message_list_free(&l);
  put_msgs(root, "other", "o", 6000, "needle");
  msgs_all(s, "other", &l);
  jm_message_list_free(&l);
  append(s, "tgt", "{'type':'message','id':'t9','role':'user','content':'hay'}");
  ASSERT_EQ(search(s, "needle", "tgt", 0), 1);
  ASSERT(hit("t0"));
  ASSERT_EQ(search(s, "needle ne", "tgt", 0), 1); /* and a short word */
  /* a deleted conversation's 6,000 newer matches */
  put_msgs(root, "keep", "k", 1, "haystack");
  msgs_all(s, "keep", &l);
  jm_message_list_free(&l);
  put_msgs(root, "gone", "g", 6000, "haystack");
  msgs_all(s, "gone", &l);
  jm_message_list_free(&l);
  OK(jm_store_delete(s, "gone", &E));
  ASSERT_EQ(search(s, "haystack", NULL, 0), 1);
  ASSERT(hit("k0"));
  ASSERT_EQ(search(s, "haystack", NULL, 1), 50); /* asked for: all there */
  jm_search_results_free(&R);
  store_close(s);
}

/* With the index complete, a word found nowhere costs a lookup, not a
 * read of every message: the scan of rows not indexed yet must not become
 * a scan of all of them (rowid > 2^63-1 made SQLite do just that). */
static void test_search_cost_with_complete_index(void) {
  const char *root = fresh_root("cost");
  jm_store *s = store_open(root);
  mkdir(test_fmt("%s/journal", root), 0700);
  jm_message_list l;
  put_msgs(root, "big", "b", 5000, "needle in a haystack");
  msgs_all(s, "big", &l);
  jm_message_list_free(&l);
  ASSERT_EQ(search(s, "xylophone", NULL, 0), 0);
  jm_search_results_free(&R);
  ASSERT(s->search_steps > 0);
  if (s->search_steps > 1000)
    test_fail(__FILE__, __LINE__, "absent word: %lld VM steps for 5000 rows",
              (long long)s->search_steps);
  ASSERT_EQ(search(s, "xylophone", "big", 0), 0); /* one conversation */
  jm_search_results_free(&R);
  ASSERT(s->search_steps <= 1000);
  ASSERT_EQ(search(s, "haystack", NULL, 0), 50); /* still finds */
  jm_search_results_free(&R);
  store_close(s);
}

/* Processes creating one id at once: exactly one succeeds, the others
 * are told it exists, and the file holds one conversation.created. */
static void test_create_race(void) {
  enum { N = 8 };
  const char *root = fresh_root("race");
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t kids[N];
  for (int i = 0; i < N; i++) {
    if ((kids[i] = fork()) == 0) {
      close(go[1]);
      char c;
      if (read(go[0], &c, 1) < 0) /* released all at once by the EOF */
        _exit(3);
      jm_store *s;
      jm_error err;
      if (jm_store_open(&s, root, NULL, &err) != 0)
        _exit(3);
      int rc = jm_store_create(s, "same", "t", NULL, NULL, NULL, &err);
      jm_store_close(s, NULL);
      _exit(rc == 0 ? 0 : rc == -EEXIST ? 1 : 2);
    }
  }
  close(go[0]);
  close(go[1]);
  int won = 0, told = 0;
  for (int i = 0; i < N; i++) {
    int st;
    ASSERT_EQ(waitpid(kids[i], &st, 0), kids[i]);
    ASSERT(WIFEXITED(st));
    won += WEXITSTATUS(st) == 0;
    told += WEXITSTATUS(st) == 1;
  }
  ASSERT_EQ(won, 1);
  ASSERT_EQ(told, N - 1);
  size_t len;
  char *data = test_read_file(test_fmt("%s/journal/same.jsonl", root), &len);
  int lines = 0;
  for (size_t i = 0; i < len; i++)
    lines += data[i] == '\n';
  ASSERT_EQ(lines, 1);
  free(data);
}

/* A create whose event cannot be written (the disk full) leaves no empty
 * file behind: the id is free, not "already exists" with nothing in it. */
static ssize_t write_enospc(int fd, const void *buf, size_t n) {
  (void)fd;
  (void)buf;
  (void)n;
  errno = ENOSPC;
  return -1;
}

static void test_create_failed_frees_the_id(void) {
  const char *root = fresh_root("nospace");
  jm_store *s = store_open(root);
  OK(jm_store_create(s, "first", NULL, NULL, NULL, NULL, &E));
  jm__sys.write = write_enospc;
  FAILS(-ENOSPC, jm_store_create(s, "c1", "t", NULL, NULL, NULL, &E));
  jm__sys_reset();
  ASSERT_EQ(fsize(test_fmt("%s/journal/c1.jsonl", root)), -1);
  jm_message_in m = {.role = "user", .content = "x", .content_len = 1};
  FAILS(JM_ENOTFOUND, jm_store_add_message(s, "c1", &m, NULL, &E));
  OK(jm_store_create(s, "c1", "t", NULL, NULL, NULL, &E));
  jm_conversation c;
  OK(jm_store_get(s, "c1", &c, &E));
  ASSERT_STR_EQ(c.title, "t");
  jm_conversation_free(&c);
  store_close(s);
}

static const test_case cases[] = {
    TEST_CASE(test_seed_exercise),
    TEST_CASE(test_generated_ids_ordered),
    TEST_CASE(test_errors),
    TEST_CASE(test_create_race),
    TEST_CASE(test_create_failed_frees_the_id),
    TEST_CASE(test_read_your_writes),
    TEST_CASE(test_read_locked_mirror),
    TEST_CASE(test_write_unconfirmed),
    TEST_CASE(test_write_daemon_gone),
    TEST_CASE(test_heal_after_drift),
    TEST_CASE(test_parent_healing),
    TEST_CASE(test_messages_pagination),
    TEST_CASE(test_messages_out_of_memory),
    TEST_CASE(test_list_pagination),
    TEST_CASE_T(test_list_10k_concurrent, 180),
    TEST_CASE(test_search),
    TEST_CASE(test_search_snippets),
    TEST_CASE(test_search_case_folding),
    TEST_CASE_T(test_search_beyond_the_cut, 120),
    TEST_CASE_T(test_search_cost_with_complete_index, 120),
    {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
