/*
 * test_fold.c - the fold of journal format section 4, one case per rule.
 *
 * Each case writes a small journal file byte for byte (explicit ts on every
 * line), folds it, and reads the rows back with SQL on the mirror database,
 * through a connection of its own.  fold() folds every file four ways and
 * asserts they agree before any rule is checked:
 *   - one jm_mirror_ingest of the whole file;
 *   - the file written half a line at a time, ingested after every write
 *     (so every message is reloaded from its row between lines);
 *   - one event per transaction (jm_ingest_limits.max_events = 1);
 *   - jm_mirror_replay;
 * then checks the first with jm_mirror_verify.  Lines are written with ' for
 * " (mt_line) to keep the JSON readable.
 */
#include "mtest.h"
#include "test.h"

#include <jansson.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

/* ts helpers: T(05) is a ts as written, N(05) as stored. */
#define T(s) "2026-01-01T00:00:" #s "Z"
#define N(s) "2026-01-01T00:00:" #s ".000000Z"

#define MSGCOLS                                                               \
  "id, seq, role, content, parent_id, brain, reasoning_level, thinking,"     \
  " status, stop_reason, created_at, updated_at, edited_at"

static int nfold;

/* Fold the lines (NULL-terminated; "" is a blank line) of conversation c1
 * four ways, assert they agree, return the database of the first. */
static const char *fold_at(int line, const char *first, ...) {
  mt_buf b = {0};
  size_t ends[512];
  size_t n = 0;
  va_list ap;
  va_start(ap, first);
  for (const char *l = first; l != NULL; l = va_arg(ap, const char *)) {
    mt_line(&b, l);
    ends[n++] = b.len;
  }
  va_end(ap);
  int k = nfold++;
  const char *ra = mt_root(test_fmt("f%d", k));
  const char *rb = mt_root(test_fmt("f%d-inc", k));
  static char db[4][1024];
  char *out = db[k % 4];
  mt_write(ra, "c1", b.p ? b.p : "", b.len);

  jm_mirror *m = mt_open(ra, NULL, 0);
  mt_ingest(m, "c1", NULL);
  snprintf(out, sizeof db[0], "%s", jm_mirror_db_path(m));
  mt_verify_ok(m);
  jm_mirror_close(m);
  char *whole = mt_dump(out);

  /* Half a line at a time. */
  m = mt_open(rb, NULL, 0);
  mt_write(rb, "c1", "", 0);
  mt_ingest(m, "c1", NULL);
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    size_t half = at + (ends[i] - at) / 2;
    mt_append(rb, "c1", b.p + at, half - at);
    mt_ingest(m, "c1", NULL);
    mt_append(rb, "c1", b.p + half, ends[i] - half);
    mt_ingest(m, "c1", NULL);
    at = ends[i];
  }
  char *inc = mt_dump(jm_mirror_db_path(m));
  jm_mirror_close(m);
  mt_same_dump_at(__FILE__, line, whole, inc, "whole", "incremental");

  jm_ingest_limits one = {0, 1};
  m = mt_open(ra, test_fmt("%s/one.db", ra), 0);
  mt_ingest(m, "c1", &one);
  char *lim = mt_dump(jm_mirror_db_path(m));
  jm_mirror_close(m);
  mt_same_dump_at(__FILE__, line, whole, lim, "whole", "max_events=1");

  m = mt_open(ra, test_fmt("%s/replay.db", ra), 0);
  mt_replay(m, "c1", 1);
  char *rep = mt_dump(jm_mirror_db_path(m));
  jm_mirror_close(m);
  mt_same_dump_at(__FILE__, line, whole, rep, "whole", "replay");

  free(whole);
  free(inc);
  free(lim);
  free(rep);
  mt_buf_free(&b);
  return out;
}

#define fold(...) fold_at(__LINE__, __VA_ARGS__, NULL)

/* One message's columns (MSGCOLS). */
static const char *msg(const char *db, const char *id) {
  return mt_q(db, "SELECT " MSGCOLS " FROM messages WHERE id = %Q", id);
}

static const char *conv(const char *db) {
  return mt_q(db, "SELECT title, brain, meta, created_at, updated_at,"
                  " deleted_at, message_count, bad_lines, unknown_events"
                  " FROM conversations WHERE id = 'c1'");
}

/* Is the JSON text in column `col` of the row `where` the value `want`? */
static int json_col_is(const char *db, const char *table, const char *col,
                       const char *where, const char *want) {
  size_t n = 0;
  char *got = mt_qraw(db, &n, "SELECT %s FROM %s WHERE %s", col, table, where);
  json_error_t e;
  json_t *a = got ? json_loadb(got, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e)
                  : NULL;
  json_t *b = json_loads(want, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  int same = a && b && json_equal(a, b);
  if (!same)
    fprintf(stderr, "# %s.%s: got %s, want %s\n", table, col,
            got ? got : "NULL", want);
  json_decref(a);
  json_decref(b);
  free(got);
  return same;
}

/* ------------------------------------------------------------------ */
/* message                                                              */

static void test_message_creates(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'hello','ts':'" T(01) "'}",
      "{'type':'message','id':'m2','role':'assistant','content':'hi there',"
      "'parent_id':'m1','brain':'b1','reasoning_level':'high','thinking':'hmm',"
      "'meta':{'k':[1,2]},'ts':'" T(02) "'}",
      /* parent_id stored exactly as written: itself, a missing id */
      "{'type':'message','id':'m3','role':'system','content':'','parent_id':'m3','ts':'" T(03) "'}",
      "{'type':'message','id':'m4','role':'tool','content':'t','parent_id':'ghost','ts':'" T(04) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|hello|NULL|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(01) "|NULL");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|2|assistant|hi there|m1|b1|high|hmm|"
                               "complete|NULL|" N(02) "|" N(02) "|NULL");
  ASSERT_STR_EQ(msg(db, "m3"), "m3|3|system||m3|NULL|NULL|NULL|complete|"
                               "NULL|" N(03) "|" N(03) "|NULL");
  ASSERT_STR_EQ(msg(db, "m4"), "m4|4|tool|t|ghost|NULL|NULL|NULL|complete|"
                               "NULL|" N(04) "|" N(04) "|NULL");
  ASSERT(json_col_is(db, "messages", "meta", "id = 'm2'", "{\"k\":[1,2]}"));
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(meta), typeof(usage) FROM messages"
                         " WHERE id = 'm1'"),
                "null|null");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(04) "|NULL|4|0|0");
}

/* A second `message` for a present id completes/replaces it: role and
 * content replaced, status complete, seq and created_at kept. */
static void test_message_replaces(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'first','ts':'" T(01) "'}",
      "{'type':'message','id':'m1','role':'assistant','content':'second','ts':'" T(02) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant|second|NULL|NULL|NULL|NULL|"
                               "complete|NULL|" N(01) "|" N(02) "|NULL");
  ASSERT_EQ(mt_qi(db, "SELECT message_count FROM conversations"), 1);
}

/* Optional members of `message`: absent keeps, null clears, a value sets. */
static void test_message_optional_members(void) {
#define M_ALL                                                                 \
  "{'type':'message','id':'m1','role':'user','content':'c','parent_id':'p',"  \
  "'brain':'b','reasoning_level':'r','thinking':'t','meta':{'x':1},'ts':'" T(01) "'}"
#define M_NONE "{'type':'message','id':'m1','role':'user','content':'c2','ts':'" T(02) "'}"
#define M_NULL                                                                \
  "{'type':'message','id':'m1','role':'user','content':'c3','parent_id':null," \
  "'brain':null,'reasoning_level':null,'thinking':null,'meta':null,'ts':'" T(03) "'}"
#define M_SOME                                                                \
  "{'type':'message','id':'m1','role':'user','content':'c4','brain':'b4',"   \
  "'thinking':'','ts':'" T(04) "'}"
  const char *db = fold(M_ALL, M_NONE);
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|c2|p|b|r|t|complete|NULL|" N(01)
                               "|" N(02) "|NULL");
  ASSERT(json_col_is(db, "messages", "meta", "id = 'm1'", "{\"x\":1}"));
  db = fold(M_ALL, M_NONE, M_NULL);
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|c3|NULL|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(03) "|NULL");
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(meta), typeof(thinking) FROM messages"),
                "null|null");
  db = fold(M_ALL, M_NONE, M_NULL, M_SOME);
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|c4|NULL|b4|NULL||complete|NULL|"
                               N(01) "|" N(04) "|NULL");
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(thinking) FROM messages"), "text");
#undef M_ALL
#undef M_NONE
#undef M_NULL
#undef M_SOME
}

/* ------------------------------------------------------------------ */
/* message.delta                                                        */

static void test_delta_new_id(void) {
  const char *db = fold(
      "{'type':'message.delta','id':'m1','ts':'" T(01) "'}",
      "{'type':'message.delta','id':'m2','role':null,'parent_id':'m1','text':'x','ts':'" T(02) "'}",
      "{'type':'message.delta','id':'m3','role':'user','thinking':'','ts':'" T(03) "'}",
      "{'type':'message.delta','id':'m4','role':'tool','parent_id':null,"
      "'text':null,'thinking':null,'ts':'" T(04) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant||NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(01) "|" N(01) "|NULL");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|2|assistant|x|m1|NULL|NULL|NULL|"
                               "streaming|NULL|" N(02) "|" N(02) "|NULL");
  ASSERT_STR_EQ(msg(db, "m3"), "m3|3|user||NULL|NULL|NULL||"
                               "streaming|NULL|" N(03) "|" N(03) "|NULL");
  ASSERT_STR_EQ(msg(db, "m4"), "m4|4|tool||NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(04) "|" N(04) "|NULL");
  ASSERT_STR_EQ(mt_q(db, "SELECT group_concat(typeof(thinking), ',') FROM"
                         " (SELECT thinking FROM messages ORDER BY seq)"),
                "null,null,text,null");
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(content), typeof(meta),"
                         " typeof(usage) FROM messages WHERE id = 'm1'"),
                "text|null|null");
  ASSERT_EQ(mt_qi(db, "SELECT message_count FROM conversations"), 4);
}

#define D(id, rest, ts)                                                       \
  "{'type':'message.delta','id':'" id "'" rest ",'ts':'" T(ts) "'}"

static void test_delta_appends(void) {
  /* thinking stays null while no thinking arrives (null appends nothing) */
  const char *db = fold(D("m1", ",'text':'Hel'", 01),
                        D("m1", ",'text':'lo','thinking':null", 02),
                        D("m1", "", 03));
  ASSERT_STR_EQ(mt_q(db, "SELECT content, typeof(thinking) FROM messages"),
                "Hello|null");
  db = fold(D("m1", ",'text':'Hel'", 01),
            D("m1", ",'text':'lo','thinking':null", 02), D("m1", "", 03),
            D("m1", ",'thinking':'a'", 04),
            D("m1", ",'thinking':'b','text':' w\\u00e9'", 05),
            D("m1", ",'text':null", 06));
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant|Hello w\\xc3\\xa9|NULL|NULL|NULL|"
                               "ab|streaming|NULL|" N(01) "|" N(06) "|NULL");
  /* "" thinking turns null into "" */
  db = fold(D("m2", ",'text':'q'", 01), D("m2", ",'thinking':''", 02));
  ASSERT_STR_EQ(mt_q(db, "SELECT content, typeof(thinking), length(thinking)"
                         " FROM messages"),
                "q|text|0");
  db = fold(D("m2", ",'text':'q'", 01), D("m2", ",'thinking':''", 02),
            D("m2", ",'thinking':'z'", 03));
  ASSERT_STR_EQ(mt_q(db, "SELECT content, thinking FROM messages"), "q|z");
  /* and stays "" (not null) through later events that leave it alone */
  db = fold(D("m2", ",'text':'q'", 01), D("m2", ",'thinking':''", 02),
            D("m2", ",'text':'r'", 03),
            "{'type':'message.edited','id':'m2','content':'s','ts':'" T(04) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT content, typeof(thinking) FROM messages"),
                "s|text");
}

/* A delta on a present message appends only: role and parent_id ignored,
 * status unchanged (a complete message stays complete). */
static void test_delta_existing_ignores_role_parent(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'a','parent_id':'p0','ts':'" T(01) "'}",
      D("m1", ",'role':'system','parent_id':'zz','text':'b'", 02),
      D("m1", ",'parent_id':null,'role':null,'text':'c'", 03),
      D("m2", ",'text':'x'", 04),
      D("m2", ",'role':'user','parent_id':'m1','text':'y'", 05));
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|abc|p0|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(03) "|NULL");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|4|assistant|xy|NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(04) "|" N(05) "|NULL");
}

/* A `message` after deltas completes the streamed message and replaces its
 * content; thinking is kept when the message leaves it out. */
static void test_message_after_deltas(void) {
  const char *db = fold(
      D("m1", ",'role':'user','text':'par','thinking':'th'", 05),
      D("m1", ",'text':'tial'", 06),
      "{'type':'message','id':'m1','role':'assistant','content':'full','ts':'" T(07) "'}",
      D("m2", ",'thinking':'x'", 08),
      "{'type':'message','id':'m2','role':'assistant','content':'c','thinking':null,'ts':'" T(09) "'}",
      D("m3", ",'thinking':'old'", 10),
      "{'type':'message','id':'m3','role':'assistant','content':'d','thinking':'new',"
      "'brain':'b','ts':'" T(11) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant|full|NULL|NULL|NULL|th|"
                               "complete|NULL|" N(05) "|" N(07) "|NULL");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|4|assistant|c|NULL|NULL|NULL|NULL|"
                               "complete|NULL|" N(08) "|" N(09) "|NULL");
  ASSERT_STR_EQ(msg(db, "m3"), "m3|6|assistant|d|NULL|b|NULL|new|"
                               "complete|NULL|" N(10) "|" N(11) "|NULL");
}

/* ------------------------------------------------------------------ */
/* message.end / edited / deleted                                       */

static void test_end(void) {
#define E1 D("m1", ",'text':'a'", 01)
#define E2                                                                    \
  "{'type':'message.end','id':'m1','stop_reason':'end_turn',"                \
  "'usage':{'in':3,'out':5},'ts':'" T(02) "'}"
  const char *db = fold(E1, E2);
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant|a|NULL|NULL|NULL|NULL|"
                               "complete|end_turn|" N(01) "|" N(02) "|NULL");
  ASSERT(json_col_is(db, "messages", "usage", "id = 'm1'",
                     "{\"in\":3,\"out\":5}"));
  /* absent keeps; null clears; a bare end on a complete message */
  db = fold(E1, E2, "{'type':'message.end','id':'m1','ts':'" T(03) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT status, stop_reason, updated_at FROM messages"),
                "complete|end_turn|" N(03));
  ASSERT(json_col_is(db, "messages", "usage", "id = 'm1'",
                     "{\"in\":3,\"out\":5}"));
  db = fold(E1, E2,
            "{'type':'message.end','id':'m1','stop_reason':null,'usage':null,'ts':'" T(04) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT status, typeof(stop_reason), typeof(usage)"
                         " FROM messages"),
                "complete|null|null");
  /* a bare end completes a streaming message with nulls; a delta after it
   * appends and leaves it complete */
  db = fold(D("m2", ",'text':'s'", 01),
            "{'type':'message.end','id':'m2','ts':'" T(02) "'}",
            D("m2", ",'text':'t'", 03));
  ASSERT_STR_EQ(msg(db, "m2"), "m2|1|assistant|st|NULL|NULL|NULL|NULL|"
                               "complete|NULL|" N(01) "|" N(03) "|NULL");
  /* an end on a `message` stores stop_reason too */
  db = fold("{'type':'message','id':'m3','role':'assistant','content':'x','ts':'" T(01) "'}",
            "{'type':'message.end','id':'m3','stop_reason':'max_tokens','ts':'" T(02) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT status, stop_reason FROM messages"),
                "complete|max_tokens");
  /* unknown id: no row, no count, but the conversation's updated_at moves */
  db = fold(E1, "{'type':'message.end','id':'nope','stop_reason':'x','ts':'" T(50) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT group_concat(id) FROM messages"), "m1");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|assistant|a|NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(01) "|" N(01) "|NULL");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(50) "|NULL|1|0|0");
#undef E1
#undef E2
}

static void test_edited(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'orig','ts':'" T(01) "'}",
      "{'type':'message.edited','id':'m1','content':'new','ts':'" T(02) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|new|NULL|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(02) "|" N(02));
  /* edited_at is the ts of the last edit even when the clock went back;
   * updated_at keeps the max */
  db = fold("{'type':'message','id':'m1','role':'user','content':'orig','ts':'" T(01) "'}",
            "{'type':'message.edited','id':'m1','content':'new','ts':'" T(09) "'}",
            "{'type':'message.edited','id':'m1','content':'newer','ts':'" T(05) "'}");
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|newer|NULL|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(09) "|" N(05));
  /* a streaming message stays streaming */
  db = fold(D("m2", ",'text':'a'", 01),
            "{'type':'message.edited','id':'m2','content':'b','ts':'" T(02) "'}");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|1|assistant|b|NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(01) "|" N(02) "|" N(02));
  /* unknown id: no effect on messages */
  db = fold("{'type':'message','id':'m1','role':'user','content':'orig','ts':'" T(01) "'}",
            "{'type':'message.edited','id':'ghost','content':'boo','ts':'" T(30) "'}");
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages"), 1);
  ASSERT_STR_EQ(msg(db, "m1"), "m1|1|user|orig|NULL|NULL|NULL|NULL|complete|"
                               "NULL|" N(01) "|" N(01) "|NULL");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(30) "|NULL|1|0|0");
}

static void test_deleted(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(01) "'}",
      "{'type':'message','id':'m2','role':'user','content':'b','ts':'" T(02) "'}",
      "{'type':'message','id':'m3','role':'user','content':'c','ts':'" T(03) "'}",
      "{'type':'message.deleted','id':'m2','ts':'" T(04) "'}",
      "{'type':'message.deleted','id':'ghost','ts':'" T(05) "'}",
      "{'type':'message.deleted','id':'m2','ts':'" T(06) "'}",
      /* a deleted id is absent: end / edited do nothing */
      "{'type':'message.end','id':'m2','stop_reason':'x','ts':'" T(07) "'}",
      "{'type':'message.edited','id':'m2','content':'zombie','ts':'" T(08) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT group_concat(id) FROM (SELECT id FROM"
                         " messages ORDER BY seq)"),
                "m1,m3");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(08) "|NULL|2|0|0");
  /* deleting everything */
  db = fold("{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(01) "'}",
            "{'type':'message.deleted','id':'m1','ts':'" T(02) "'}");
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages"), 0);
  ASSERT_EQ(mt_qi(db, "SELECT message_count FROM conversations"), 0);
}

/* A re-created id is a new message: new seq, new created_at, nothing kept
 * from the deleted one. */
static void test_recreate_after_delete(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'a','thinking':'t',"
      "'brain':'b','meta':{'o':1},'ts':'" T(10) "'}",
      "{'type':'message.edited','id':'m1','content':'a2','ts':'" T(11) "'}",
      "{'type':'message.end','id':'m1','stop_reason':'s','ts':'" T(12) "'}",
      "{'type':'message.deleted','id':'m1','ts':'" T(13) "'}",
      "{'type':'message','id':'m2','role':'user','content':'b','ts':'" T(14) "'}",
      "{'type':'message','id':'m1','role':'assistant','content':'again','ts':'" T(05) "'}",
      "{'type':'message.deleted','id':'m2','ts':'" T(16) "'}",
      D("m2", ",'text':'re'", 17));
  ASSERT_STR_EQ(msg(db, "m1"), "m1|6|assistant|again|NULL|NULL|NULL|NULL|"
                               "complete|NULL|" N(05) "|" N(05) "|NULL");
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(meta), typeof(usage) FROM messages"
                         " WHERE id = 'm1'"),
                "null|null");
  ASSERT_STR_EQ(msg(db, "m2"), "m2|8|assistant|re|NULL|NULL|NULL|NULL|"
                               "streaming|NULL|" N(17) "|" N(17) "|NULL");
  ASSERT_STR_EQ(mt_q(db, "SELECT group_concat(id) FROM (SELECT id FROM"
                         " messages ORDER BY seq)"),
                "m1,m2");
  ASSERT_EQ(mt_qi(db, "SELECT message_count FROM conversations"), 2);
}

/* ------------------------------------------------------------------ */
/* conversation events                                                  */

#define CU(rest, ts) "{'type':'conversation.updated'" rest ",'ts':'" T(ts) "'}"

static void test_conversation_created_updated(void) {
  const char *c1 =
      "{'type':'conversation.created','title':'T','brain':'B',"
      "'meta':{'a':1},'ts':'" T(01) "'}";
  const char *db = fold(c1);
  ASSERT_STR_EQ(mt_q(db, "SELECT title, brain, created_at, updated_at FROM"
                         " conversations"),
                "T|B|" N(01) "|" N(01));
  ASSERT(json_col_is(db, "conversations", "meta", "1", "{\"a\":1}"));
  db = fold(c1, CU(",'title':'T2'", 02));
  ASSERT_STR_EQ(mt_q(db, "SELECT title, brain FROM conversations"), "T2|B");
  ASSERT(json_col_is(db, "conversations", "meta", "1", "{\"a\":1}"));
  db = fold(c1, CU(",'title':'T2'", 02), CU(",'brain':null,'meta':null", 03));
  ASSERT_STR_EQ(mt_q(db, "SELECT title, typeof(brain), typeof(meta),"
                         " updated_at FROM conversations"),
                "T2|null|null|" N(03));
  db = fold(c1, CU(",'title':'T2'", 02), CU(",'brain':null,'meta':null", 03),
            CU(",'meta':{'b':[true,null]},'title':null", 04),
            /* a second `created` sets what it names, like updated */
            "{'type':'conversation.created','brain':'B5','ts':'" T(05) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(title), brain, created_at, updated_at"
                         " FROM conversations"),
                "null|B5|" N(01) "|" N(05));
  ASSERT(json_col_is(db, "conversations", "meta", "1",
                     "{\"b\":[true,null]}"));
  /* updated before created: the first valid line still gives created_at */
  db = fold(CU(",'title':'early'", 07),
            "{'type':'conversation.created','title':'late','ts':'" T(03) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT title, created_at, updated_at FROM"
                         " conversations"),
                "late|" N(07) "|" N(07));
}

static void test_conversation_deleted_restored(void) {
  const char *base =
      "{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(01) "'}";
  const char *del = "{'type':'conversation.deleted','ts':'" T(02) "'}";
  const char *db = fold(base, del);
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(02) "|" N(02) "|1|0|0");
  ASSERT_EQ(mt_qi(db, "SELECT count(*) FROM messages"), 1); /* kept */
  db = fold(base, del, "{'type':'conversation.restored','ts':'" T(03) "'}");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(03) "|NULL|1|0|0");
  /* deleted again, then once more with an earlier clock: the last wins */
  db = fold(base, del, "{'type':'conversation.restored','ts':'" T(03) "'}",
            "{'type':'conversation.deleted','ts':'" T(09) "'}",
            "{'type':'conversation.deleted','ts':'" T(04) "'}");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(09) "|" N(04) "|1|0|0");
  /* restore of a live conversation changes nothing but timestamps */
  db = fold(base, "{'type':'conversation.restored','ts':'" T(05) "'}");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(01) "|" N(05) "|NULL|1|0|0");
}

/* ------------------------------------------------------------------ */
/* unknown events, bad lines, timestamps                                */

static void test_unknown_events(void) {
  const char *db = fold(
      "{'type':'x.future','ts':'" T(05) "','foo':{'bar':1}}",
      "{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(03) "'}",
      "{'type':'message.reaction','id':'m1','emoji':'+1','ts':'" T(09) "'}",
      /* unknown types must still pass the common rules */
      "{'type':'x.future'}", "{'type':'x.future','ts':'" T(10) "','v':2}",
      "{'type':'x.future','ts':'" T(11) "','conversation_id':'other'}",
      "{'type':'x.future','ts':'" T(12) "','conversation_id':'c1','v':1}");
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(05) "|" N(12) "|NULL|1|3|3");
  ASSERT_STR_EQ(mt_q(db, "SELECT line, reason FROM bad_lines ORDER BY line"),
                "4|missing_member\n5|unsupported_version\n"
                "6|conversation_mismatch");
  /* the message named by an unknown event is untouched */
  ASSERT_STR_EQ(mt_q(db, "SELECT updated_at FROM messages"), N(03));
}

static void test_bad_lines_counted(void) {
#define B1 "{bad"
#define B2 "{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(04) "'}"
#define B3 "[1]"
#define B4 ""
#define B5 "{'type':'message','id':'m2','role':'robot','content':'a','ts':'2026-12-31T00:00:00Z'}"
#define B6 "{'type':'message','id':'m3','role':'user','content':'c','ts':'" T(05) "'}"
  /* sizeof a literal = its length + 1 = the line with its LF */
  const size_t o3 = sizeof B1 + sizeof B2, o5 = o3 + sizeof B3 + sizeof B4;
  const size_t end = o5 + sizeof B5 + sizeof B6;
  const char *db = fold(B1, B2, B3, B4, B5, B6);
  ASSERT_STR_EQ(conv(db), "NULL|NULL|NULL|" N(04) "|" N(05) "|NULL|2|3|0");
  ASSERT_STR_EQ(mt_q(db, "SELECT line, byte_offset, reason FROM bad_lines"
                         " ORDER BY line"),
                test_fmt("1|0|invalid_json\n3|%zu|not_object\n5|%zu|wrong_type",
                         o3, o5));
  ASSERT_STR_EQ(mt_q(db, "SELECT id, seq FROM messages ORDER BY seq"),
                "m1|2\nm3|6");
  ASSERT_STR_EQ(mt_q(db, "SELECT byte_offset, lines FROM sources"),
                test_fmt("%zu|6", end));
#undef B1
#undef B2
#undef B3
#undef B4
#undef B5
#undef B6
}

/* created_at is the ts of the first valid line, updated_at the greatest:
 * a later line with an earlier clock lowers neither. */
static void test_conversation_timestamps_skew(void) {
  const char *db = fold(
      "{'type':'message','id':'m0','role':'user','ts':'2026-01-01T08:00:00Z'}",
      "{'type':'message','id':'m1','role':'user','content':'a','ts':'2026-01-01T10:00:00Z'}",
      "{'type':'message','id':'m2','role':'user','content':'b','ts':'2026-01-01T09:00:00Z'}",
      "{'type':'x.unknown','ts':'2026-01-01T11:00:00Z'}",
      "{'type':'message','id':'m3','role':'user','content':'c','ts':'2026-01-01T10:30:00Z'}",
      "{'type':'conversation.updated','title':'t','ts':'2025-06-01T00:00:00Z'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT created_at, updated_at, bad_lines FROM"
                         " conversations"),
                "2026-01-01T10:00:00.000000Z|2026-01-01T11:00:00.000000Z|1");
}

/* A message's updated_at is the max ts of the events effective on it:
 * creating it or naming it while present (an empty delta too); events on
 * other messages and events on absent ids do not count. */
static void test_message_updated_at(void) {
  const char *db = fold(
      "{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(10) "'}",
      D("m1", ",'text':'b'", 05),
      "{'type':'message','id':'m2','role':'user','content':'x','ts':'" T(40) "'}",
      "{'type':'message.end','id':'ghost','ts':'" T(41) "'}",
      "{'type':'message.edited','id':'m1','content':'e','ts':'" T(20) "'}",
      "{'type':'message.end','id':'m1','ts':'" T(15) "'}",
      "{'type':'message','id':'m1','role':'user','content':'f','ts':'" T(12) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT created_at, updated_at FROM messages WHERE"
                         " id = 'm1'"),
                N(10) "|" N(20));
  db = fold("{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(10) "'}",
            D("m1", "", 25));
  ASSERT_STR_EQ(mt_q(db, "SELECT content, updated_at FROM messages"),
                "a|" N(25));
  db = fold("{'type':'message','id':'m1','role':'user','content':'a','ts':'" T(10) "'}",
            "{'type':'message.end','id':'m1','ts':'" T(33) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT updated_at FROM messages"), N(33));
}

/* seq is the creating line; ORDER BY seq is file order whatever the ts. */
static void test_seq_stable_under_skew(void) {
  const char *db = fold(
      "{'type':'conversation.created','ts':'" T(00) "'}",
      D("m1", ",'text':'a'", 30),
      "{'type':'message','id':'m2','role':'user','content':'b','ts':'" T(10) "'}",
      "{'type':'message','id':'m1','role':'assistant','content':'c','ts':'" T(05) "'}",
      "{'type':'message.edited','id':'m1','content':'d','ts':'" T(01) "'}",
      "{'type':'message','id':'m3','role':'user','content':'e','ts':'" T(02) "'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT id, seq, created_at FROM messages ORDER BY seq"),
                "m1|2|" N(30) "\nm2|3|" N(10) "\nm3|6|" N(02));
}

static void test_ts_normalised(void) {
  const char *db = fold(
      "{'type':'message','id':'a','role':'user','content':'','ts':'2026-11-20T09:15:02Z'}",
      "{'type':'message','id':'b','role':'user','content':'','ts':'2026-11-20T09:15:02.12Z'}",
      "{'type':'message','id':'c','role':'user','content':'','ts':'2026-11-20T09:15:02.123456789Z'}",
      "{'type':'message','id':'d','role':'user','content':'','ts':'2016-12-31T23:59:60.5Z'}",
      "{'type':'message','id':'e','role':'user','content':'','ts':'2026-11-20T09:15:02.1234567Z'}",
      "{'type':'message.edited','id':'e','content':'x','ts':'2026-11-20T09:15:03.9Z'}",
      "{'type':'conversation.deleted','ts':'2024-02-29T00:00:00.000001Z'}");
  ASSERT_STR_EQ(mt_q(db, "SELECT id, created_at, edited_at FROM messages"
                         " ORDER BY seq"),
                "a|2026-11-20T09:15:02.000000Z|NULL\n"
                "b|2026-11-20T09:15:02.120000Z|NULL\n"
                "c|2026-11-20T09:15:02.123456Z|NULL\n"
                "d|2016-12-31T23:59:60.500000Z|NULL\n"
                "e|2026-11-20T09:15:02.123456Z|2026-11-20T09:15:03.900000Z");
  ASSERT_STR_EQ(mt_q(db, "SELECT created_at, updated_at, deleted_at FROM"
                         " conversations"),
                "2026-11-20T09:15:02.000000Z|2026-11-20T09:15:03.900000Z|"
                "2024-02-29T00:00:00.000001Z");
}

/* meta and usage: compact JSON text, compared as values; JSON null is SQL
 * NULL; any JSON value is a valid meta. */
static void test_meta_usage_json(void) {
  const char *db = fold(
      "{'type':'conversation.created','meta':{ 'b' : [1, 2.50, 'x y', -0.0] ,"
      " 'a' : {'n': null, 'u': '\\u00e9\\u0000'}, 'big': 9223372036854775807 },"
      "'ts':'" T(01) "'}",
      "{'type':'message','id':'s','role':'user','content':'','meta':'str','ts':'" T(02) "'}",
      "{'type':'message','id':'z','role':'user','content':'','meta':0,'ts':'" T(02) "'}",
      "{'type':'message','id':'f','role':'user','content':'','meta':false,'ts':'" T(02) "'}",
      "{'type':'message','id':'e','role':'user','content':'','meta':[],'ts':'" T(02) "'}",
      "{'type':'message','id':'n','role':'user','content':'','meta':null,'ts':'" T(02) "'}",
      "{'type':'message.end','id':'e','usage':{ 'in' : 1e2, 'deep':{'x':[[]]} },'ts':'" T(03) "'}",
      /* usage must be an object or null */
      "{'type':'message.end','id':'e','usage':[1],'ts':'" T(04) "'}");
  ASSERT(json_col_is(db, "conversations", "meta", "1",
                     "{\"a\":{\"u\":\"\\u00e9\\u0000\",\"n\":null},"
                     "\"big\":9223372036854775807,"
                     "\"b\":[1,2.5,\"x y\",-0.0]}"));
  /* compact: SQLite's minified form of it is itself */
  ASSERT_EQ(mt_qi(db, "SELECT meta = json(meta) FROM conversations"), 1);
  ASSERT_EQ(mt_qi(db, "SELECT instr(meta, ' ') = instr(meta, 'x y') + 1"
                      " FROM conversations"),
            1);
  ASSERT(json_col_is(db, "messages", "meta", "id = 's'", "\"str\""));
  ASSERT(json_col_is(db, "messages", "meta", "id = 'z'", "0"));
  ASSERT(json_col_is(db, "messages", "meta", "id = 'f'", "false"));
  ASSERT(json_col_is(db, "messages", "meta", "id = 'e'", "[]"));
  ASSERT_STR_EQ(mt_q(db, "SELECT typeof(meta) FROM messages WHERE id = 'n'"),
                "null");
  ASSERT(json_col_is(db, "messages", "usage", "id = 'e'",
                     "{\"in\":100.0,\"deep\":{\"x\":[[]]}}"));
  ASSERT_EQ(mt_qi(db, "SELECT usage = json(usage) FROM messages WHERE id = 'e'"),
            1);
  ASSERT_STR_EQ(mt_q(db, "SELECT line, reason FROM bad_lines"), "8|wrong_type");
}

/* ------------------------------------------------------------------ */
/* files                                                                */

/* Every file with a valid name has a row, even with no valid line. */
static void test_files_without_valid_lines(void) {
  const char *db = fold("");
  ASSERT_STR_EQ(mt_q(db, "SELECT created_at, updated_at, message_count,"
                         " bad_lines, unknown_events FROM conversations"),
                "NULL|NULL|0|0|0");
  ASSERT_STR_EQ(mt_q(db, "SELECT byte_offset, lines FROM sources"), "1|1");
  const char *root = mt_root("empty");
  mt_write(root, "empty", "", 0);
  mt_write(root, "blank", "\n \t\r\n\r\n", 7);
  mt_write(root, "bad", "{oops\n[1]\n\n{\"type\":1}\n", 22);
  mt_write(root, "tail", "{\"type\":\"message\"", 17); /* no LF yet */
  jm_mirror *m = mt_open(root, NULL, 0);
  jm_catchup_stats st;
  jm_error err;
  jm_error_clear(&err);
  ASSERT_OK(jm_mirror_catch_up(m, NULL, 0, NULL, NULL, NULL, &st, &err));
  ASSERT_EQ(st.files, 4);
  ASSERT_EQ(st.ignored_files, 0);
  const char *d = jm_mirror_db_path(m);
  ASSERT_STR_EQ(mt_q(d, "SELECT c.id, title, brain, meta, created_at,"
                        " updated_at, deleted_at, message_count, c.bad_lines,"
                        " unknown_events, s.byte_offset, s.lines FROM"
                        " conversations c JOIN sources s ON"
                        " s.conversation_id = c.id ORDER BY c.id"),
                "bad|NULL|NULL|NULL|NULL|NULL|NULL|0|3|0|22|4\n"
                "blank|NULL|NULL|NULL|NULL|NULL|NULL|0|0|0|7|3\n"
                "empty|NULL|NULL|NULL|NULL|NULL|NULL|0|0|0|0|0\n"
                "tail|NULL|NULL|NULL|NULL|NULL|NULL|0|0|0|0|0");
  char *a = mt_dump(d);
  jm_mirror_close(m);
  /* a rebuild and a replay of each agree */
  m = mt_open(root, test_fmt("%s/rebuilt.db", root), 0);
  mt_rebuild(m, 2);
  char *b = mt_dump(jm_mirror_db_path(m));
  jm_mirror_close(m);
  MT_SAME(a, b, "catch-up", "rebuild");
  m = mt_open(root, test_fmt("%s/replayed.db", root), 0);
  const char *ids[] = {"bad", "blank", "empty", "tail"};
  for (int i = 0; i < 4; i++)
    mt_replay(m, ids[i], 1);
  char *c = mt_dump(jm_mirror_db_path(m));
  mt_verify_ok(m);
  jm_mirror_close(m);
  MT_SAME(a, c, "catch-up", "replay");
  free(a);
  free(b);
  free(c);
}

/* Files in journal/ whose name is not <valid id>.jsonl are ignored and
 * counted. */
static void test_invalid_names_ignored(void) {
  const char *root = mt_root("names");
  const char *line =
      "{\"type\":\"message\",\"id\":\"m\",\"role\":\"user\",\"content\":\"x\","
      "\"ts\":\"2026-01-01T00:00:00Z\"}\n";
  char long_id[130];
  memset(long_id, 'a', 129);
  long_id[129] = '\0';
  const char *bad[] = {"Bad",   "a b",  ".hidden", "x\xc3\xa9",
                       long_id, "UP",  "a:b",     "semi;colon"};
  mt_write(root, "good", line, strlen(line));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    test_write_file(mt_jpath(root, bad[i]), line, strlen(line));
  test_write_file(test_fmt("%s/journal/x.json", root), line, strlen(line));
  test_write_file(test_fmt("%s/journal/noext", root), line, strlen(line));
  test_write_file(test_fmt("%s/journal/good.jsonl.tmp", root), line,
                  strlen(line));
  test_write_file(test_fmt("%s/journal/.jsonl", root), line, strlen(line));
  ASSERT_OK(mkdir(test_fmt("%s/journal/dir.jsonl", root), 0700));
  ASSERT_OK(symlink("good.jsonl", test_fmt("%s/journal/link.jsonl", root)));
  const uint64_t n_ignored = sizeof bad / sizeof bad[0] + 6;

  jm_mirror *m = mt_open(root, NULL, 0);
  jm_catchup_stats st;
  jm_error err;
  jm_error_clear(&err);
  ASSERT_OK(jm_mirror_catch_up(m, NULL, 0, NULL, NULL, NULL, &st, &err));
  ASSERT_EQ(st.files, 1);
  ASSERT_EQ(st.ignored_files, n_ignored);
  const char *d = jm_mirror_db_path(m);
  ASSERT_STR_EQ(mt_q(d, "SELECT group_concat(id) FROM conversations"), "good");
  ASSERT_EQ(mt_qi(d, "SELECT count(*) FROM messages"), 1);
  /* naming one directly is refused, nothing written */
  jm_error_clear(&err);
  ASSERT_EQ(jm_mirror_ingest(m, "Bad", NULL, NULL, &err), JM_EID);
  jm_error_clear(&err);
  ASSERT_EQ(jm_mirror_replay(m, "a b", 1, NULL, &err), JM_EID);
  jm_error_clear(&err);
  /* a symlink is not a journal file: as if absent (no rows made) */
  jm_ingest_result ir;
  ASSERT_OK(jm_mirror_ingest(m, "link", NULL, &ir, &err));
  ASSERT_EQ(ir.removed, 1);
  ASSERT_EQ(mt_qi(d, "SELECT count(*) FROM conversations"), 1);
  jm_rebuild_stats rs;
  jm_error_clear(&err);
  ASSERT_OK(jm_mirror_rebuild(m, 2, NULL, NULL, &rs, &err));
  ASSERT_EQ(rs.conversations, 1);
  ASSERT_EQ(rs.ignored_files, n_ignored);
  ASSERT_STR_EQ(mt_q(d, "SELECT group_concat(id) FROM conversations"), "good");
  jm_mirror_close(m);
}

static const test_case cases[] = {
    TEST_CASE(test_message_creates),
    TEST_CASE(test_message_replaces),
    TEST_CASE(test_message_optional_members),
    TEST_CASE(test_delta_new_id),
    TEST_CASE(test_delta_appends),
    TEST_CASE(test_delta_existing_ignores_role_parent),
    TEST_CASE(test_message_after_deltas),
    TEST_CASE(test_end),
    TEST_CASE(test_edited),
    TEST_CASE(test_deleted),
    TEST_CASE(test_recreate_after_delete),
    TEST_CASE(test_conversation_created_updated),
    TEST_CASE(test_conversation_deleted_restored),
    TEST_CASE(test_unknown_events),
    TEST_CASE(test_bad_lines_counted),
    TEST_CASE(test_conversation_timestamps_skew),
    TEST_CASE(test_message_updated_at),
    TEST_CASE(test_seq_stable_under_skew),
    TEST_CASE(test_ts_normalised),
    TEST_CASE(test_meta_usage_json),
    TEST_CASE(test_files_without_valid_lines),
    TEST_CASE(test_invalid_names_ignored),
    {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
