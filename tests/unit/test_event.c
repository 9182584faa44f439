/*
 * test_event.c - jm_event_parse() against the journal format, sections 2
 * (what a line is) and 3 (what an event is), plus jm_ts_normalise() and
 * jm_id_check().
 *
 * One case per rule: each bad line asserts the exact category (jm_bad.reason)
 * and that the message names the member and the rule, so a regression that
 * changes either is caught.  Ranking cases (the first fault wins) write the
 * competing faults in both member orders to show the answer does not depend
 * on the order of the JSON.
 *
 * The JSON-level corpus lives in fixtures/malformed/lines.txt (hex-encoded,
 * so NUL and invalid bytes survive); test_fixture_corpus runs all of it.
 */
#include "test.h"
#include "jmirror/jmirror.h"

#include <jansson.h>

#define TS "2026-11-20T09:15:02.12Z"
#define TS_N "2026-11-20T09:15:02.120000Z"

/* ------------------------------------------------------------------ */
/* Helpers: each takes the caller's line so a failure points at the case. */

static void show(char *out, size_t cap, const char *s, size_t n) {
  /* A line as printable text: control and non-ASCII bytes as \xNN. */
  size_t o = 0;
  for (size_t i = 0; i < n && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f)
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
  }
  if (o + 8 >= cap)
    o += (size_t)snprintf(out + o, cap - o, "...");
  out[o] = '\0';
}

static void bad_at(int line, const char *json, size_t len, const char *conv,
                   size_t max, jm_bad_reason want, const char *needle) {
  jm_event ev;
  jm_bad bad;
  char shown[400];
  memset(&ev, 0xab, sizeof ev); /* parse must clear it */
  show(shown, sizeof shown, json, len);
  int rc = jm_event_parse(json, len, conv, max, &ev, &bad);
  if (rc == JM_EVENT_OK) {
    jm_event_release(&ev);
    test_fail(__FILE__, line, "accepted, want %s: %s", jm_bad_reason_name(want),
              shown);
  }
  if (rc != JM_EVENT_BAD)
    test_fail(__FILE__, line, "rc %d, want JM_EVENT_BAD: %s", rc, shown);
  if (bad.reason != want)
    test_fail(__FILE__, line, "reason %s (\"%s\"), want %s: %s",
              jm_bad_reason_name(bad.reason), bad.msg,
              jm_bad_reason_name(want), shown);
  if (needle != NULL && strstr(bad.msg, needle) == NULL)
    test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", bad.msg, needle);
  if (ev.root != NULL || ev.type != JM_EV_UNKNOWN || ev.id.p != NULL)
    test_fail(__FILE__, line, "a bad line left the event filled in");
}

static jm_event ok_at(int line, const char *json, size_t len,
                      const char *conv) {
  jm_event ev;
  jm_bad bad;
  char shown[400];
  show(shown, sizeof shown, json, len);
  int rc = jm_event_parse(json, len, conv, 0, &ev, &bad);
  if (rc != JM_EVENT_OK)
    test_fail(__FILE__, line, "rc %d, %s (\"%s\"), want ok: %s", rc,
              jm_bad_reason_name(bad.reason), bad.msg, shown);
  if (ev.root == NULL)
    test_fail(__FILE__, line, "ok but no root");
  return ev;
}

/* BAD(line, reason, text): the line is bad for `reason`, msg has `text`. */
#define BAD(json, want, needle)                                               \
  bad_at(__LINE__, (json), strlen(json), "c1", 0, (want), (needle))
/* The same for a string literal that holds NUL bytes. */
#define BAD_LIT(lit, want, needle)                                            \
  bad_at(__LINE__, (lit), sizeof(lit) - 1, "c1", 0, (want), (needle))
#define BAD_CONV(json, conv, want, needle)                                    \
  bad_at(__LINE__, (json), strlen(json), (conv), 0, (want), (needle))
#define BAD_MAX(json, max, want, needle)                                      \
  bad_at(__LINE__, (json), strlen(json), "c1", (max), (want), (needle))

#define OK(json) ok_at(__LINE__, (json), strlen(json), "c1")
#define OK_LIT(lit) ok_at(__LINE__, (lit), sizeof(lit) - 1, "c1")
#define OK_CONV(json, conv) ok_at(__LINE__, (json), strlen(json), (conv))

/* Is `json` a valid line?  (For the cases that only need a yes.) */
#define ACCEPT(json)                                                          \
  do {                                                                        \
    jm_event ev_ = OK(json);                                                  \
    jm_event_release(&ev_);                                                   \
  } while (0)

/* A valid message event plus `extra` (",\"k\":v..." or ""). */
static const char *msg_with(const char *extra) {
  return test_fmt("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
                  "\"role\":\"user\",\"content\":\"hi\"%s}",
                  extra);
}

/* An event of `type` with ts and `extra` members. */
static const char *ev_with(const char *type, const char *extra) {
  return test_fmt("{\"type\":\"%s\",\"ts\":\"" TS "\"%s}", type, extra);
}

/* A conversation.created event whose ts is `ts`. */
static const char *with_ts(const char *ts) {
  return test_fmt("{\"type\":\"conversation.created\",\"ts\":\"%s\"}", ts);
}

/* `ts` must be refused both by the parser (bad_ts) and jm_ts_normalise. */
static void bad_ts_at(int line, const char *ts) {
  char out[JM_TS_LEN + 1];
  if (jm_ts_normalise(ts, strlen(ts), out) != -1)
    test_fail(__FILE__, line, "jm_ts_normalise accepted '%s' as '%s'", ts,
              out);
  const char *json = with_ts(ts);
  bad_at(line, json, strlen(json), "c1", 0, JM_BAD_BAD_TS,
         "conversation.created: member 'ts' is not a UTC RFC 3339 time");
}
#define BAD_TS(ts) bad_ts_at(__LINE__, (ts))

/* `ts` is accepted and normalised to `want`, by both entry points. */
static void ts_ok_at(int line, const char *ts, const char *want) {
  char out[JM_TS_LEN + 1];
  memset(out, 'x', sizeof out);
  if (jm_ts_normalise(ts, strlen(ts), out) != 0)
    test_fail(__FILE__, line, "jm_ts_normalise refused '%s'", ts);
  if (strcmp(out, want) != 0)
    test_fail(__FILE__, line, "'%s' normalised to '%s', want '%s'", ts, out,
              want);
  const char *json = with_ts(ts);
  jm_event ev = ok_at(line, json, strlen(json), "c1");
  if (strcmp(ev.ts, want) != 0)
    test_fail(__FILE__, line, "event ts '%s', want '%s'", ev.ts, want);
  jm_event_release(&ev);
}
#define TS_OK(ts, want) ts_ok_at(__LINE__, (ts), (want))

/* A malloc'd line: prefix, `n` copies of `rep`, `mid`, `n` of `rep2`, end. */
static char *build(const char *pre, const char *rep, size_t n, const char *mid,
                   const char *rep2, const char *post) {
  size_t len = strlen(pre) + n * (strlen(rep) + strlen(rep2)) + strlen(mid) +
               strlen(post) + 1;
  char *s = malloc(len);
  ASSERT(s != NULL);
  strcpy(s, pre);
  for (size_t i = 0; i < n; i++)
    strcat(s, rep);
  strcat(s, mid);
  for (size_t i = 0; i < n; i++)
    strcat(s, rep2);
  strcat(s, post);
  return s;
}

/* ------------------------------------------------------------------ */
/* Valid events: what the parser hands out.                             */

static void test_message_fields(void) {
  jm_event ev = OK("{\"type\":\"message\",\"ts\":\"2026-11-20T09:15:02Z\","
                   "\"id\":\"m1\",\"role\":\"assistant\",\"content\":\"hi\","
                   "\"parent_id\":\"m0\",\"brain\":\"b\","
                   "\"reasoning_level\":\"high\",\"thinking\":\"hm\","
                   "\"meta\":{\"k\":[1,2]},\"v\":1,"
                   "\"conversation_id\":\"c1\"}");
  ASSERT_EQ(ev.type, JM_EV_MESSAGE);
  ASSERT_STR_EQ(ev.ts, "2026-11-20T09:15:02.000000Z");
  ASSERT_MEM_EQ(ev.type_name.p, ev.type_name.n, "message", 7);
  ASSERT_EQ(ev.id.state, JM_SET);
  ASSERT_MEM_EQ(ev.id.p, ev.id.n, "m1", 2);
  ASSERT_MEM_EQ(ev.role.p, ev.role.n, "assistant", 9);
  ASSERT_MEM_EQ(ev.content.p, ev.content.n, "hi", 2);
  ASSERT_MEM_EQ(ev.parent_id.p, ev.parent_id.n, "m0", 2);
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "b", 1);
  ASSERT_MEM_EQ(ev.reasoning_level.p, ev.reasoning_level.n, "high", 4);
  ASSERT_MEM_EQ(ev.thinking.p, ev.thinking.n, "hm", 2);
  ASSERT_EQ(ev.meta.state, JM_SET);
  ASSERT(json_is_object(ev.meta.v));
  ASSERT_EQ(ev.text.state, JM_ABSENT);
  ASSERT_EQ(ev.usage.state, JM_ABSENT);
  ASSERT(json_is_object(ev.root));
  jm_event_release(&ev);
  ASSERT(ev.root == NULL);
  jm_event_release(NULL); /* allowed */
}

static void test_every_known_type_minimal(void) {
  static const struct {
    const char *json;
    jm_event_type type;
  } cases[] = {
    {"{\"type\":\"conversation.created\",\"ts\":\"" TS "\"}",
     JM_EV_CONVERSATION_CREATED},
    {"{\"type\":\"conversation.updated\",\"ts\":\"" TS "\"}",
     JM_EV_CONVERSATION_UPDATED},
    {"{\"type\":\"conversation.deleted\",\"ts\":\"" TS "\"}",
     JM_EV_CONVERSATION_DELETED},
    {"{\"type\":\"conversation.restored\",\"ts\":\"" TS "\"}",
     JM_EV_CONVERSATION_RESTORED},
    {"{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\",\"role\":\"user\","
     "\"content\":\"\"}",
     JM_EV_MESSAGE},
    {"{\"type\":\"message.delta\",\"ts\":\"" TS "\",\"id\":\"m\"}",
     JM_EV_MESSAGE_DELTA},
    {"{\"type\":\"message.end\",\"ts\":\"" TS "\",\"id\":\"m\"}",
     JM_EV_MESSAGE_END},
    {"{\"type\":\"message.edited\",\"ts\":\"" TS "\",\"id\":\"m\","
     "\"content\":\"x\"}",
     JM_EV_MESSAGE_EDITED},
    {"{\"type\":\"message.deleted\",\"ts\":\"" TS "\",\"id\":\"m\"}",
     JM_EV_MESSAGE_DELETED},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    jm_event ev = OK(cases[i].json);
    ASSERT_EQ(ev.type, cases[i].type);
    ASSERT_STR_EQ(jm_event_type_name(ev.type), test_fmt("%.*s",
                  (int)ev.type_name.n, ev.type_name.p));
    ASSERT_STR_EQ(ev.ts, TS_N);
    jm_event_release(&ev);
  }
  ASSERT(jm_event_type_name(JM_EV_UNKNOWN) == NULL);
  ASSERT(jm_event_type_name((jm_event_type)99) == NULL);
}

static void test_reason_names(void) {
  static const char *const want[] = {
    "none", "too_long", "invalid_utf8", "invalid_json", "not_object",
    "duplicate_key", "unsupported_version", "conversation_mismatch",
    "missing_member", "bad_ts", "wrong_type",
  };
  for (int i = 0; i <= JM_BAD_WRONG_TYPE; i++)
    ASSERT_STR_EQ(jm_bad_reason_name((jm_bad_reason)i), want[i]);
  /* The enum order is the ranking order of the spec. */
  ASSERT(JM_BAD_TOO_LONG < JM_BAD_INVALID_UTF8);
  ASSERT(JM_BAD_INVALID_UTF8 < JM_BAD_INVALID_JSON);
  ASSERT(JM_BAD_INVALID_JSON < JM_BAD_NOT_OBJECT);
  ASSERT(JM_BAD_NOT_OBJECT < JM_BAD_DUPLICATE_KEY);
  ASSERT(JM_BAD_DUPLICATE_KEY < JM_BAD_UNSUPPORTED_VERSION);
  ASSERT(JM_BAD_UNSUPPORTED_VERSION < JM_BAD_CONVERSATION_MISMATCH);
  ASSERT(JM_BAD_CONVERSATION_MISMATCH < JM_BAD_MISSING_MEMBER);
  ASSERT(JM_BAD_MISSING_MEMBER < JM_BAD_BAD_TS);
  ASSERT(JM_BAD_BAD_TS < JM_BAD_WRONG_TYPE);
  ASSERT_STR_EQ(jm_bad_reason_name((jm_bad_reason)77), "unknown");
}

/* ------------------------------------------------------------------ */
/* type                                                                 */

static void test_type_missing(void) {
  BAD("{\"ts\":\"" TS "\"}", JM_BAD_MISSING_MEMBER,
      "event: missing required member 'type'");
}

static void test_type_not_string(void) {
  BAD("{\"type\":7,\"ts\":\"" TS "\"}", JM_BAD_WRONG_TYPE,
      "event: member 'type' must be a string, not integer");
  BAD("{\"type\":[\"message\"],\"ts\":\"" TS "\"}", JM_BAD_WRONG_TYPE,
      "event: member 'type' must be a string, not array");
}

static void test_type_null(void) {
  /* type is required: null is not "absent", it is the wrong type. */
  BAD("{\"type\":null,\"ts\":\"" TS "\"}", JM_BAD_WRONG_TYPE,
      "event: member 'type' must be a string, not null");
}

static void test_type_is_case_sensitive(void) {
  /* "Message" is not "message": an unknown event, so no member rules. */
  jm_event ev = OK("{\"type\":\"Message\",\"ts\":\"" TS "\"}");
  ASSERT_EQ(ev.type, JM_EV_UNKNOWN);
  jm_event_release(&ev);
}

/* ------------------------------------------------------------------ */
/* ts                                                                   */

static void test_ts_missing(void) {
  BAD("{\"type\":\"conversation.deleted\"}", JM_BAD_MISSING_MEMBER,
      "conversation.deleted: missing required member 'ts'");
}

static void test_ts_not_string(void) {
  BAD("{\"type\":\"conversation.deleted\",\"ts\":1763629302}", JM_BAD_BAD_TS,
      "conversation.deleted: member 'ts' must be a string, not integer");
}

static void test_ts_null(void) {
  BAD("{\"type\":\"conversation.deleted\",\"ts\":null}", JM_BAD_BAD_TS,
      "conversation.deleted: member 'ts' must be a string, not null");
}

static void test_ts_lowercase_t(void) { BAD_TS("2026-11-20t09:15:02Z"); }
static void test_ts_lowercase_z(void) { BAD_TS("2026-11-20T09:15:02z"); }
static void test_ts_missing_z(void) {
  BAD_TS("2026-11-20T09:15:02");
  BAD_TS("2026-11-20T09:15:02.123");
}
static void test_ts_offset(void) {
  BAD_TS("2026-11-20T09:15:02+00:00");
  BAD_TS("2026-11-20T09:15:02.5+00:00");
  BAD_TS("2026-11-20T09:15:02-00:00");
  BAD_TS("2026-11-20T09:15:02+0000");
}
static void test_ts_space_separator(void) { BAD_TS("2026-11-20 09:15:02Z"); }
static void test_ts_surrounding_space(void) {
  BAD_TS(" 2026-11-20T09:15:02Z");
  BAD_TS("2026-11-20T09:15:02Z ");
}
static void test_ts_short_fields(void) {
  BAD_TS("2026-1-20T09:15:02Z");
  BAD_TS("26-11-20T09:15:02Z");
  BAD_TS("2026-11-20T9:15:02Z");
  BAD_TS("2026-11-20T09:15Z");
  BAD_TS("2026-11-20");
  BAD_TS("");
  BAD_TS("+2026-11-20T09:15:02Z");
  BAD_TS("2026-11-20T09:15:02ZZ");
  BAD_TS("2026/11/20T09:15:02Z");
  BAD_TS("2026-11-20T09.15.02Z");
}
static void test_ts_month_range(void) {
  BAD_TS("2026-00-20T09:15:02Z");
  BAD_TS("2026-13-20T09:15:02Z");
}
static void test_ts_day_range(void) {
  BAD_TS("2026-11-00T09:15:02Z");
  BAD_TS("2026-11-31T09:15:02Z"); /* November has 30 */
  BAD_TS("2026-04-31T09:15:02Z");
  BAD_TS("2026-01-32T09:15:02Z");
  TS_OK("2026-12-31T23:59:59Z", "2026-12-31T23:59:59.000000Z");
}
static void test_ts_feb30(void) { BAD_TS("2024-02-30T00:00:00Z"); }
static void test_ts_feb29_non_leap(void) {
  BAD_TS("2023-02-29T00:00:00Z");
  BAD_TS("2100-02-29T00:00:00Z");
}
static void test_ts_feb29_1900(void) { BAD_TS("1900-02-29T00:00:00Z"); }
static void test_ts_feb29_leap(void) {
  TS_OK("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000Z");
  TS_OK("2000-02-29T12:00:00Z", "2000-02-29T12:00:00.000000Z");
  TS_OK("2400-02-29T12:00:00Z", "2400-02-29T12:00:00.000000Z");
}
static void test_ts_hour24(void) { BAD_TS("2026-11-20T24:00:00Z"); }
static void test_ts_minute60(void) { BAD_TS("2026-11-20T09:60:00Z"); }
static void test_ts_second61(void) { BAD_TS("2026-11-20T09:15:61Z"); }
static void test_ts_second60_accepted(void) {
  TS_OK("2016-12-31T23:59:60Z", "2016-12-31T23:59:60.000000Z");
  TS_OK("2026-11-20T09:15:60.5Z", "2026-11-20T09:15:60.500000Z");
}
static void test_ts_non_digit(void) {
  BAD_TS("2026-11-2aT09:15:02Z");
  BAD_TS("2026-11-20T09:15:0xZ");
  BAD_TS("2026-11-20T09:15:02.1a2Z");
}
static void test_ts_frac_zero_digits(void) {
  BAD_TS("2026-11-20T09:15:02.Z");
}
static void test_ts_frac_ten_digits(void) {
  BAD_TS("2026-11-20T09:15:02.1234567891Z");
}
static void test_ts_frac_nine_digits_truncated(void) {
  TS_OK("2026-11-20T09:15:02.123456789Z", "2026-11-20T09:15:02.123456Z");
  TS_OK("2026-11-20T09:15:02.9999999Z", "2026-11-20T09:15:02.999999Z");
}
static void test_ts_frac_padded(void) {
  TS_OK("2026-11-20T09:15:02.1Z", "2026-11-20T09:15:02.100000Z");
  TS_OK("2026-11-20T09:15:02.12Z", TS_N);
  TS_OK("2026-11-20T09:15:02.000001Z", "2026-11-20T09:15:02.000001Z");
}
static void test_ts_frac_none(void) {
  TS_OK("2026-11-20T09:15:02Z", "2026-11-20T09:15:02.000000Z");
  TS_OK("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000000Z");
  TS_OK("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z");
}

static void test_ts_normalise_length_bound(void) {
  /* The length is explicit: bytes after n are never read or required. */
  char out[JM_TS_LEN + 1];
  const char *s = "2026-11-20T09:15:02Zgarbage";
  ASSERT_OK(jm_ts_normalise(s, 20, out));
  ASSERT_STR_EQ(out, "2026-11-20T09:15:02.000000Z");
  ASSERT_EQ(jm_ts_normalise(s, 19, out), -1);
  ASSERT_EQ(jm_ts_normalise(s, 21, out), -1);
  /* An embedded NUL (a "\u0000" in the JSON string) is not a terminator. */
  BAD_LIT("{\"type\":\"x\",\"ts\":\"2026-11-20T09:15:02Z\\u0000\"}",
          JM_BAD_BAD_TS, "member 'ts' is not a UTC RFC 3339 time");
}

static void test_ts_order_is_string_order(void) {
  /* The point of normalising: byte order of the strings is time order. */
  char a[JM_TS_LEN + 1], b[JM_TS_LEN + 1];
  ASSERT_OK(jm_ts_normalise("2026-11-20T09:15:02.9Z", 22, a));
  ASSERT_OK(jm_ts_normalise("2026-11-20T09:15:02.10Z", 23, b));
  ASSERT(strcmp(a, b) > 0);
  ASSERT_OK(jm_ts_normalise("2026-11-20T09:15:02Z", 20, a));
  ASSERT_OK(jm_ts_normalise("2026-11-20T09:15:02.000001Z", 27, b));
  ASSERT(strcmp(a, b) < 0);
}

static void test_ts_now_is_normalised(void) {
  char now[JM_TS_LEN + 1], again[JM_TS_LEN + 1];
  jm_ts_now(now);
  ASSERT_EQ(strlen(now), JM_TS_LEN);
  ASSERT_OK(jm_ts_normalise(now, strlen(now), again));
  ASSERT_STR_EQ(now, again);
}

/* ------------------------------------------------------------------ */
/* v                                                                    */

static void test_v_absent_ok(void) { ACCEPT(msg_with("")); }
static void test_v_null_ok(void) { ACCEPT(msg_with(",\"v\":null")); }
static void test_v_1_ok(void) { ACCEPT(msg_with(",\"v\":1")); }

static void test_v_2_unsupported(void) {
  BAD(msg_with(",\"v\":2"), JM_BAD_UNSUPPORTED_VERSION,
      "message: format version 2 is not supported");
  BAD(msg_with(",\"v\":9223372036854775807"), JM_BAD_UNSUPPORTED_VERSION,
      "format version 9223372036854775807 is not supported");
  /* An unknown type from a future version is still refused. */
  BAD(ev_with("future.thing", ",\"v\":3"), JM_BAD_UNSUPPORTED_VERSION,
      "event: format version 3 is not supported");
}

static void test_v_0_wrong_type(void) {
  BAD(msg_with(",\"v\":0"), JM_BAD_WRONG_TYPE,
      "message: member 'v' must be 1 or more (got 0)");
}

static void test_v_negative_wrong_type(void) {
  BAD(msg_with(",\"v\":-1"), JM_BAD_WRONG_TYPE,
      "message: member 'v' must be 1 or more (got -1)");
}

static void test_v_real_wrong_type(void) {
  /* 1.0 is not written as an integer literal. */
  BAD(msg_with(",\"v\":1.0"), JM_BAD_WRONG_TYPE,
      "message: member 'v' must be an integer, not number");
  BAD(msg_with(",\"v\":1e0"), JM_BAD_WRONG_TYPE,
      "member 'v' must be an integer, not number");
  BAD(msg_with(",\"v\":2.0"), JM_BAD_WRONG_TYPE,
      "member 'v' must be an integer, not number");
}

static void test_v_string_wrong_type(void) {
  BAD(msg_with(",\"v\":\"1\""), JM_BAD_WRONG_TYPE,
      "message: member 'v' must be an integer, not string");
  BAD(msg_with(",\"v\":true"), JM_BAD_WRONG_TYPE,
      "member 'v' must be an integer, not boolean");
  BAD(msg_with(",\"v\":[1]"), JM_BAD_WRONG_TYPE,
      "member 'v' must be an integer, not array");
}

/* ------------------------------------------------------------------ */
/* conversation_id                                                      */

static void test_conv_id_absent_ok(void) { ACCEPT(msg_with("")); }
static void test_conv_id_null_ok(void) {
  ACCEPT(msg_with(",\"conversation_id\":null"));
}
static void test_conv_id_equal_ok(void) {
  ACCEPT(msg_with(",\"conversation_id\":\"c1\""));
}

static void test_conv_id_mismatch(void) {
  BAD(msg_with(",\"conversation_id\":\"c2\""), JM_BAD_CONVERSATION_MISMATCH,
      "message: conversation_id 'c2' does not match the file's id 'c1'");
  /* Prefixes, case and a trailing NUL are all different ids. */
  BAD(msg_with(",\"conversation_id\":\"c\""), JM_BAD_CONVERSATION_MISMATCH,
      "does not match the file's id 'c1'");
  BAD(msg_with(",\"conversation_id\":\"c12\""), JM_BAD_CONVERSATION_MISMATCH,
      "does not match the file's id 'c1'");
  BAD(msg_with(",\"conversation_id\":\"C1\""), JM_BAD_CONVERSATION_MISMATCH,
      "does not match the file's id 'c1'");
  BAD(msg_with(",\"conversation_id\":\"c1\\u0000\""),
      JM_BAD_CONVERSATION_MISMATCH, "does not match the file's id 'c1'");
  BAD(msg_with(",\"conversation_id\":\"\""), JM_BAD_CONVERSATION_MISMATCH,
      "does not match the file's id 'c1'");
}

static void test_conv_id_wrong_type(void) {
  BAD(msg_with(",\"conversation_id\":1"), JM_BAD_WRONG_TYPE,
      "message: member 'conversation_id' must be a string or null, not "
      "integer");
  BAD(msg_with(",\"conversation_id\":{}"), JM_BAD_WRONG_TYPE,
      "member 'conversation_id' must be a string or null, not object");
}

static void test_conv_id_null_skips_check(void) {
  const char *line = msg_with(",\"conversation_id\":\"anything-else\"");
  jm_event ev = OK_CONV(line, NULL);
  ASSERT_EQ(ev.type, JM_EV_MESSAGE);
  jm_event_release(&ev);
  /* ... but the member's type is still checked. */
  bad_at(__LINE__, msg_with(",\"conversation_id\":5"),
         strlen(msg_with(",\"conversation_id\":5")), NULL, 0,
         JM_BAD_WRONG_TYPE, "member 'conversation_id' must be a string");
}

/* ------------------------------------------------------------------ */
/* Required members of the known types                                  */

static void test_message_missing_id(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"role\":\"user\","
      "\"content\":\"hi\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'id'");
}

static void test_message_missing_role(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
      "\"content\":\"hi\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'role'");
}

static void test_message_missing_content(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
      "\"role\":\"user\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'content'");
}

static void test_delta_missing_id(void) {
  BAD(ev_with("message.delta", ",\"text\":\"x\""), JM_BAD_MISSING_MEMBER,
      "message.delta: missing required member 'id'");
}

static void test_end_missing_id(void) {
  BAD(ev_with("message.end", ",\"stop_reason\":\"end\""),
      JM_BAD_MISSING_MEMBER, "message.end: missing required member 'id'");
}

static void test_edited_missing_id(void) {
  BAD(ev_with("message.edited", ",\"content\":\"x\""), JM_BAD_MISSING_MEMBER,
      "message.edited: missing required member 'id'");
}

static void test_edited_missing_content(void) {
  BAD(ev_with("message.edited", ",\"id\":\"m1\""), JM_BAD_MISSING_MEMBER,
      "message.edited: missing required member 'content'");
}

static void test_deleted_missing_id(void) {
  BAD(ev_with("message.deleted", ""), JM_BAD_MISSING_MEMBER,
      "message.deleted: missing required member 'id'");
}

/* ------------------------------------------------------------------ */
/* Member types                                                         */

static void test_message_id_wrong_type(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":1,\"role\":\"user\","
      "\"content\":\"hi\"}",
      JM_BAD_WRONG_TYPE, "message: member 'id' must be a string, not integer");
}

static void test_message_id_null(void) {
  /* Required members are not nullable. */
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":null,"
      "\"role\":\"user\",\"content\":\"hi\"}",
      JM_BAD_WRONG_TYPE, "message: member 'id' must be a string, not null");
}

static void test_message_role_wrong_type(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\",\"role\":1,"
      "\"content\":\"hi\"}",
      JM_BAD_WRONG_TYPE,
      "message: member 'role' must be a string, not integer");
}

static void test_message_role_null(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
      "\"role\":null,\"content\":\"hi\"}",
      JM_BAD_WRONG_TYPE, "message: member 'role' must be a string, not null");
}

static void test_message_content_wrong_type(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
      "\"role\":\"user\",\"content\":[\"hi\"]}",
      JM_BAD_WRONG_TYPE,
      "message: member 'content' must be a string, not array");
}

static void test_message_content_null(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m1\","
      "\"role\":\"user\",\"content\":null}",
      JM_BAD_WRONG_TYPE, "message: member 'content' must be a string, not null");
}

static void test_message_parent_id_wrong_type(void) {
  BAD(msg_with(",\"parent_id\":7"), JM_BAD_WRONG_TYPE,
      "message: member 'parent_id' must be a string or null, not integer");
}

static void test_message_brain_wrong_type(void) {
  BAD(msg_with(",\"brain\":true"), JM_BAD_WRONG_TYPE,
      "message: member 'brain' must be a string or null, not boolean");
}

static void test_message_reasoning_level_wrong_type(void) {
  BAD(msg_with(",\"reasoning_level\":2.5"), JM_BAD_WRONG_TYPE,
      "message: member 'reasoning_level' must be a string or null, not "
      "number");
}

static void test_message_thinking_wrong_type(void) {
  BAD(msg_with(",\"thinking\":{}"), JM_BAD_WRONG_TYPE,
      "message: member 'thinking' must be a string or null, not object");
}

static void test_message_meta_any_type(void) {
  static const char *const metas[] = {"1", "\"s\"", "[1,{}]", "{\"a\":null}",
                                      "true", "2.5"};
  for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++) {
    jm_event ev = OK(msg_with(test_fmt(",\"meta\":%s", metas[i])));
    ASSERT_EQ(ev.meta.state, JM_SET);
    ASSERT(ev.meta.v != NULL);
    jm_event_release(&ev);
  }
}

static void test_role_enum(void) {
  static const char *const roles[] = {"user", "assistant", "system", "tool"};
  for (size_t i = 0; i < 4; i++) {
    jm_event ev =
        OK(test_fmt("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
                    "\"role\":\"%s\",\"content\":\"\"}",
                    roles[i]));
    ASSERT_MEM_EQ(ev.role.p, ev.role.n, roles[i], strlen(roles[i]));
    jm_event_release(&ev);
  }
}

static void test_role_outside_enum(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"User\",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE,
      "message: member 'role' must be one of user, assistant, system, tool "
      "(got 'User')");
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"\",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE, "member 'role' must be one of");
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"user \",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE, "member 'role' must be one of");
  /* "user" followed by a NUL is not "user". */
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"user\\u0000\",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE, "member 'role' must be one of");
}

static void test_delta_role_outside_enum(void) {
  BAD(ev_with("message.delta", ",\"id\":\"m\",\"role\":\"bot\""),
      JM_BAD_WRONG_TYPE,
      "message.delta: member 'role' must be one of user, assistant, system, "
      "tool (got 'bot')");
}

static void test_delta_role_wrong_type(void) {
  BAD(ev_with("message.delta", ",\"id\":\"m\",\"role\":1"), JM_BAD_WRONG_TYPE,
      "message.delta: member 'role' must be a string or null, not integer");
}

static void test_delta_role_null_ok(void) {
  jm_event ev = OK(ev_with("message.delta", ",\"id\":\"m\",\"role\":null"));
  ASSERT_EQ(ev.role.state, JM_NULL);
  ASSERT(ev.role.p == NULL);
  jm_event_release(&ev);
  ev = OK(ev_with("message.delta", ",\"id\":\"m\",\"role\":\"tool\""));
  ASSERT_EQ(ev.role.state, JM_SET);
  jm_event_release(&ev);
}

static void test_delta_text_wrong_type(void) {
  BAD(ev_with("message.delta", ",\"id\":\"m\",\"text\":1"), JM_BAD_WRONG_TYPE,
      "message.delta: member 'text' must be a string or null, not integer");
}

static void test_delta_thinking_wrong_type(void) {
  BAD(ev_with("message.delta", ",\"id\":\"m\",\"thinking\":[]"),
      JM_BAD_WRONG_TYPE,
      "message.delta: member 'thinking' must be a string or null, not array");
}

static void test_delta_parent_id_wrong_type(void) {
  BAD(ev_with("message.delta", ",\"id\":\"m\",\"parent_id\":false"),
      JM_BAD_WRONG_TYPE,
      "message.delta: member 'parent_id' must be a string or null, not "
      "boolean");
}

static void test_delta_id_wrong_type(void) {
  BAD(ev_with("message.delta", ",\"id\":{}"), JM_BAD_WRONG_TYPE,
      "message.delta: member 'id' must be a string, not object");
}

static void test_end_stop_reason_wrong_type(void) {
  BAD(ev_with("message.end", ",\"id\":\"m\",\"stop_reason\":0"),
      JM_BAD_WRONG_TYPE,
      "message.end: member 'stop_reason' must be a string or null, not "
      "integer");
}

static void test_end_usage_object_or_null(void) {
  jm_event ev = OK(ev_with("message.end",
                           ",\"id\":\"m\",\"usage\":{\"in\":1,\"out\":2}"));
  ASSERT_EQ(ev.usage.state, JM_SET);
  ASSERT(json_is_object(ev.usage.v));
  jm_event_release(&ev);
  ev = OK(ev_with("message.end", ",\"id\":\"m\",\"usage\":null"));
  ASSERT_EQ(ev.usage.state, JM_NULL);
  ASSERT(ev.usage.v == NULL);
  jm_event_release(&ev);
}

static void test_end_usage_wrong_type(void) {
  BAD(ev_with("message.end", ",\"id\":\"m\",\"usage\":\"12 tokens\""),
      JM_BAD_WRONG_TYPE,
      "message.end: member 'usage' must be an object or null, not string");
  BAD(ev_with("message.end", ",\"id\":\"m\",\"usage\":[1]"),
      JM_BAD_WRONG_TYPE, "member 'usage' must be an object or null, not array");
  BAD(ev_with("message.end", ",\"id\":\"m\",\"usage\":3"), JM_BAD_WRONG_TYPE,
      "member 'usage' must be an object or null, not integer");
  BAD(ev_with("message.end", ",\"id\":\"m\",\"usage\":false"),
      JM_BAD_WRONG_TYPE,
      "member 'usage' must be an object or null, not boolean");
}

static void test_end_id_wrong_type(void) {
  BAD(ev_with("message.end", ",\"id\":1"), JM_BAD_WRONG_TYPE,
      "message.end: member 'id' must be a string, not integer");
}

static void test_edited_content_wrong_type(void) {
  BAD(ev_with("message.edited", ",\"id\":\"m\",\"content\":1"),
      JM_BAD_WRONG_TYPE,
      "message.edited: member 'content' must be a string, not integer");
  BAD(ev_with("message.edited", ",\"id\":\"m\",\"content\":null"),
      JM_BAD_WRONG_TYPE,
      "message.edited: member 'content' must be a string, not null");
}

static void test_edited_id_wrong_type(void) {
  BAD(ev_with("message.edited", ",\"id\":[],\"content\":\"x\""),
      JM_BAD_WRONG_TYPE,
      "message.edited: member 'id' must be a string, not array");
}

static void test_deleted_id_wrong_type(void) {
  BAD(ev_with("message.deleted", ",\"id\":2"), JM_BAD_WRONG_TYPE,
      "message.deleted: member 'id' must be a string, not integer");
}

static void test_created_title_wrong_type(void) {
  BAD(ev_with("conversation.created", ",\"title\":1"), JM_BAD_WRONG_TYPE,
      "conversation.created: member 'title' must be a string or null, not "
      "integer");
}

static void test_created_brain_wrong_type(void) {
  BAD(ev_with("conversation.created", ",\"brain\":{}"), JM_BAD_WRONG_TYPE,
      "conversation.created: member 'brain' must be a string or null, not "
      "object");
}

static void test_updated_title_wrong_type(void) {
  BAD(ev_with("conversation.updated", ",\"title\":[]"), JM_BAD_WRONG_TYPE,
      "conversation.updated: member 'title' must be a string or null, not "
      "array");
}

static void test_updated_brain_wrong_type(void) {
  BAD(ev_with("conversation.updated", ",\"brain\":0"), JM_BAD_WRONG_TYPE,
      "conversation.updated: member 'brain' must be a string or null, not "
      "integer");
}

static void test_conversation_members_set(void) {
  jm_event ev = OK(ev_with("conversation.updated",
                           ",\"title\":\"T\",\"brain\":\"B\",\"meta\":[1]"));
  ASSERT_EQ(ev.type, JM_EV_CONVERSATION_UPDATED);
  ASSERT_MEM_EQ(ev.title.p, ev.title.n, "T", 1);
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "B", 1);
  ASSERT_EQ(ev.meta.state, JM_SET);
  ASSERT(json_is_array(ev.meta.v));
  jm_event_release(&ev);
}

/* ------------------------------------------------------------------ */
/* Message ids: 1 to 256 bytes of UTF-8, no NUL, in every message event  */

static const char *with_id(const char *type, const char *id) {
  if (strcmp(type, "message") == 0)
    return test_fmt("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"%s\","
                    "\"role\":\"user\",\"content\":\"\"}",
                    id);
  if (strcmp(type, "message.edited") == 0)
    return test_fmt("{\"type\":\"message.edited\",\"ts\":\"" TS "\","
                    "\"id\":\"%s\",\"content\":\"\"}",
                    id);
  return test_fmt("{\"type\":\"%s\",\"ts\":\"" TS "\",\"id\":\"%s\"}", type,
                  id);
}

static const char *const msg_types[] = {"message", "message.delta",
                                        "message.end", "message.edited",
                                        "message.deleted"};

static void test_message_id_empty(void) {
  for (size_t i = 0; i < 5; i++)
    BAD(with_id(msg_types[i], ""), JM_BAD_WRONG_TYPE,
        test_fmt("%s: member 'id' must be 1 to 256 bytes (got 0)",
                 msg_types[i]));
}

static void test_message_id_256_ok(void) {
  char id[257];
  memset(id, 'a', 256);
  id[256] = '\0';
  for (size_t i = 0; i < 5; i++) {
    jm_event ev = OK(with_id(msg_types[i], id));
    ASSERT_EQ(ev.id.n, 256);
    jm_event_release(&ev);
  }
  /* Bytes, not characters: 128 two-byte characters are 256 bytes. */
  char wide[128 * 2 + 1] = "";
  for (int i = 0; i < 128; i++)
    strcat(wide, "\xc3\xa9");
  jm_event ev = OK(with_id("message", wide));
  ASSERT_EQ(ev.id.n, 256);
  jm_event_release(&ev);
  ACCEPT(with_id("message", "m")); /* 1 byte */
}

static void test_message_id_257(void) {
  char id[258];
  memset(id, 'a', 257);
  id[257] = '\0';
  for (size_t i = 0; i < 5; i++)
    BAD(with_id(msg_types[i], id), JM_BAD_WRONG_TYPE,
        test_fmt("%s: member 'id' must be 1 to 256 bytes (got 257)",
                 msg_types[i]));
  /* 128 characters, 257 bytes: the limit is bytes. */
  char wide[300] = "x";
  for (int i = 0; i < 128; i++)
    strcat(wide, "\xc3\xa9");
  BAD(with_id("message", wide), JM_BAD_WRONG_TYPE,
      "member 'id' must be 1 to 256 bytes (got 257)");
  /* An escape counts as the bytes it stands for: 255 + "\u00e9" = 257. */
  char esc[300];
  memset(esc, 'a', 255);
  strcpy(esc + 255, "\\u00e9");
  BAD(with_id("message", esc), JM_BAD_WRONG_TYPE,
      "member 'id' must be 1 to 256 bytes (got 257)");
}

static void test_message_id_nul(void) {
  for (size_t i = 0; i < 5; i++)
    BAD(with_id(msg_types[i], "m\\u00001"), JM_BAD_WRONG_TYPE,
        test_fmt("%s: member 'id' must not contain NUL", msg_types[i]));
  BAD(with_id("message", "\\u0000"), JM_BAD_WRONG_TYPE,
      "member 'id' must not contain NUL");
}

/* ------------------------------------------------------------------ */
/* null for every optional member; unknown types and members             */

static void test_null_optional_members(void) {
  jm_event ev;
  ev = OK(ev_with("conversation.created",
                  ",\"title\":null,\"brain\":null,\"meta\":null,\"v\":null,"
                  "\"conversation_id\":null"));
  ASSERT_EQ(ev.title.state, JM_NULL);
  ASSERT_EQ(ev.brain.state, JM_NULL);
  ASSERT_EQ(ev.meta.state, JM_NULL);
  ASSERT(ev.meta.v == NULL);
  jm_event_release(&ev);
  ev = OK(ev_with("conversation.updated",
                  ",\"title\":null,\"brain\":null,\"meta\":null"));
  ASSERT_EQ(ev.title.state, JM_NULL);
  ASSERT_EQ(ev.brain.state, JM_NULL);
  ASSERT_EQ(ev.meta.state, JM_NULL);
  jm_event_release(&ev);
  ev = OK(msg_with(",\"parent_id\":null,\"brain\":null,"
                   "\"reasoning_level\":null,\"thinking\":null,\"meta\":null,"
                   "\"v\":null,\"conversation_id\":null"));
  ASSERT_EQ(ev.parent_id.state, JM_NULL);
  ASSERT_EQ(ev.brain.state, JM_NULL);
  ASSERT_EQ(ev.reasoning_level.state, JM_NULL);
  ASSERT_EQ(ev.thinking.state, JM_NULL);
  ASSERT_EQ(ev.meta.state, JM_NULL);
  jm_event_release(&ev);
  ev = OK(ev_with("message.delta",
                  ",\"id\":\"m\",\"role\":null,\"parent_id\":null,"
                  "\"text\":null,\"thinking\":null"));
  ASSERT_EQ(ev.role.state, JM_NULL);
  ASSERT_EQ(ev.parent_id.state, JM_NULL);
  ASSERT_EQ(ev.text.state, JM_NULL);
  ASSERT_EQ(ev.thinking.state, JM_NULL);
  jm_event_release(&ev);
  ev = OK(ev_with("message.end",
                  ",\"id\":\"m\",\"stop_reason\":null,\"usage\":null"));
  ASSERT_EQ(ev.stop_reason.state, JM_NULL);
  ASSERT_EQ(ev.usage.state, JM_NULL);
  jm_event_release(&ev);
  /* Absent stays absent, distinct from null. */
  ev = OK(ev_with("message.end", ",\"id\":\"m\""));
  ASSERT_EQ(ev.stop_reason.state, JM_ABSENT);
  ASSERT_EQ(ev.usage.state, JM_ABSENT);
  jm_event_release(&ev);
}

static void test_unknown_type_valid(void) {
  jm_event ev = OK(ev_with("future.thing", ",\"id\":5,\"role\":[]"));
  ASSERT_EQ(ev.type, JM_EV_UNKNOWN);
  ASSERT_MEM_EQ(ev.type_name.p, ev.type_name.n, "future.thing", 12);
  ASSERT_STR_EQ(ev.ts, TS_N);
  ASSERT_EQ(ev.id.state, JM_ABSENT); /* not read for an unknown type */
  jm_event_release(&ev);
  ACCEPT(ev_with("", "")); /* the empty type name is just unknown */
}

static void test_unknown_type_needs_ts(void) {
  BAD("{\"type\":\"future.thing\"}", JM_BAD_MISSING_MEMBER,
      "event: missing required member 'ts'");
  BAD("{\"type\":\"future.thing\",\"ts\":\"yesterday\"}", JM_BAD_BAD_TS,
      "event: member 'ts' is not a UTC RFC 3339 time");
}

static void test_unknown_type_common_rules(void) {
  BAD(ev_with("future.thing", ",\"conversation_id\":\"c9\""),
      JM_BAD_CONVERSATION_MISMATCH,
      "event: conversation_id 'c9' does not match the file's id 'c1'");
  BAD(ev_with("future.thing", ",\"v\":\"1\""), JM_BAD_WRONG_TYPE,
      "event: member 'v' must be an integer, not string");
}

static void test_unknown_members_ignored(void) {
  jm_event ev = OK(msg_with(",\"extra\":{\"deep\":[1,2,{\"x\":null}]},"
                            "\"title\":5,\"text\":[],\"usage\":\"u\","
                            "\"stop_reason\":1"));
  /* Members of other types are unknown here: not read, not checked. */
  ASSERT_EQ(ev.title.state, JM_ABSENT);
  ASSERT_EQ(ev.text.state, JM_ABSENT);
  ASSERT_EQ(ev.usage.state, JM_ABSENT);
  ASSERT(json_object_get(ev.root, "extra") != NULL); /* kept in the root */
  jm_event_release(&ev);
  ACCEPT(ev_with("conversation.deleted", ",\"id\":5,\"content\":null"));
  ACCEPT(ev_with("message.deleted", ",\"id\":\"m\",\"role\":\"nobody\""));
}

/* ------------------------------------------------------------------ */
/* Ranking: the first fault in the spec's order wins, in any JSON order. */

static void test_rank_missing_beats_wrong_type(void) {
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":1,\"role\":\"user\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'content'");
  BAD("{\"content\":5,\"role\":\"user\",\"ts\":\"" TS "\","
      "\"type\":\"message\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'id'");
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"robot\",\"parent_id\":1}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'content'");
}

static void test_rank_unsupported_beats_mismatch(void) {
  BAD(msg_with(",\"v\":2,\"conversation_id\":\"c2\""),
      JM_BAD_UNSUPPORTED_VERSION, "format version 2 is not supported");
  BAD("{\"conversation_id\":\"c2\",\"type\":\"message\",\"v\":2}",
      JM_BAD_UNSUPPORTED_VERSION, "format version 2 is not supported");
}

static void test_rank_mismatch_beats_missing(void) {
  BAD("{\"type\":\"message\",\"conversation_id\":\"c2\"}",
      JM_BAD_CONVERSATION_MISMATCH, "does not match the file's id 'c1'");
  BAD("{\"conversation_id\":\"c2\"}", JM_BAD_CONVERSATION_MISMATCH,
      "event: conversation_id 'c2' does not match");
}

static void test_rank_missing_beats_bad_ts(void) {
  BAD("{\"type\":\"message\",\"ts\":\"now\",\"id\":\"m\",\"role\":\"user\"}",
      JM_BAD_MISSING_MEMBER, "message: missing required member 'content'");
  BAD("{\"ts\":\"now\"}", JM_BAD_MISSING_MEMBER,
      "event: missing required member 'type'");
}

static void test_rank_bad_ts_beats_wrong_type(void) {
  BAD("{\"type\":\"message\",\"ts\":\"now\",\"id\":1,\"role\":\"x\","
      "\"content\":2,\"v\":0}",
      JM_BAD_BAD_TS, "message: member 'ts' is not a UTC RFC 3339 time");
  BAD("{\"v\":0,\"content\":2,\"role\":\"x\",\"id\":1,"
      "\"type\":\"message\",\"ts\":\"now\"}",
      JM_BAD_BAD_TS, "message: member 'ts' is not a UTC RFC 3339 time");
  BAD("{\"type\":5,\"ts\":\"now\"}", JM_BAD_BAD_TS,
      "event: member 'ts' is not a UTC RFC 3339 time");
}

static void test_rank_same_category_is_deterministic(void) {
  /* Two wrong types: the answer names the same member in either order. */
  const char *a = "{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":1,"
                  "\"role\":\"user\",\"content\":2}";
  const char *b = "{\"content\":2,\"role\":\"user\",\"id\":1,"
                  "\"ts\":\"" TS "\",\"type\":\"message\"}";
  jm_event ev;
  jm_bad ba, bb;
  ASSERT_EQ(jm_event_parse(a, strlen(a), "c1", 0, &ev, &ba), JM_EVENT_BAD);
  ASSERT_EQ(jm_event_parse(b, strlen(b), "c1", 0, &ev, &bb), JM_EVENT_BAD);
  ASSERT_EQ(ba.reason, JM_BAD_WRONG_TYPE);
  ASSERT_STR_EQ(ba.msg, bb.msg);
}

static void test_rank_duplicate_beats_member_rules(void) {
  BAD("{\"type\":\"message\",\"v\":2,\"v\":2}", JM_BAD_DUPLICATE_KEY,
      "duplicate");
  BAD("{\"ts\":1,\"ts\":1}", JM_BAD_DUPLICATE_KEY, "duplicate");
}

static void test_rank_not_object_beats_duplicate(void) {
  BAD("[{\"a\":1,\"a\":2}]", JM_BAD_NOT_OBJECT, "not a JSON object but array");
}

static void test_rank_utf8_beats_json(void) {
  BAD_LIT("{\"type\": \xff", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 9");
  BAD_LIT("\xc0\xaf not json at all", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 0");
}

static void test_rank_too_long_beats_utf8(void) {
  BAD_MAX("\xff\xff\xff\xff", 3, JM_BAD_TOO_LONG,
          "line of 4 bytes exceeds the maximum of 3");
}

/* A message quotes values from the line: it must stay one line of text
 * (journal.c hands it on as a jm_error message) that a NUL cannot cut. */
static void test_messages_quote_values(void) {
  BAD(msg_with(",\"conversation_id\":\"evil\\nline\""),
      JM_BAD_CONVERSATION_MISMATCH,
      "conversation_id 'evil\\x0aline' does not match the file's id 'c1'");
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"\\u0000evil\",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE, "(got '\\x00evil')");
  BAD("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
      "\"role\":\"\\u001b[2J\\r\",\"content\":\"\"}",
      JM_BAD_WRONG_TYPE, "(got '\\x1b[2J\\x0d')");
  BAD(with_ts("2026-11-20T09:15:02Z\\n"), JM_BAD_BAD_TS,
      "'2026-11-20T09:15:02Z\\x0a'");
  /* Long values are cut short with "...", never mid-character. */
  char role[200] = "a";
  for (int i = 0; i < 60; i++)
    strcat(role, "\xc3\xa9");
  BAD(test_fmt("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
               "\"role\":\"%s\",\"content\":\"\"}",
               role),
      JM_BAD_WRONG_TYPE, "(got 'a\\xc3\\xa9");
  static const char *const lines[] = {
    "{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
    "\"role\":\"\\n\\u0000\\u00e9\\u2028\",\"content\":\"\"}",
    "{\"type\":\"x\",\"ts\":\"\\t\\u007f\\ud83d\\ude00\"}",
    "{\"type\":\"x\",\"ts\":\"" TS "\",\"conversation_id\":\"\\r\\n\"}",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    jm_event ev;
    jm_bad bad;
    ASSERT_EQ(jm_event_parse(lines[i], strlen(lines[i]), "c1", 0, &ev, &bad),
              JM_EVENT_BAD);
    for (const char *p = bad.msg; *p; p++)
      if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
        test_fail(__FILE__, __LINE__, "byte 0x%02x in message \"%s\"",
                  (unsigned char)*p, bad.msg);
  }
}

/* ------------------------------------------------------------------ */
/* Section 2: JSON-level faults                                         */

static void test_invalid_utf8_overlong(void) {
  BAD_LIT("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":\"\xc0\xaf\"}",
          JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 48");
  BAD_LIT("{\"k\":\"\xc1\xbf\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xe0\x80\xaf\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xf0\x80\x80\xaf\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
}

static void test_invalid_utf8_surrogate(void) {
  BAD_LIT("{\"k\":\"\xed\xa0\x80\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xed\xbf\xbf\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  /* The last code points below the surrogates are fine. */
  ACCEPT(ev_with("x", ",\"k\":\"\xed\x9f\xbf\""));
}

static void test_invalid_utf8_ff(void) {
  BAD_LIT("{\"k\":\"\xff\"}", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xfe\"}", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\x80\"}", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 6");
}

static void test_invalid_utf8_truncated(void) {
  BAD_LIT("{\"k\":\"\xe2\x82\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xf0\x9f\x98\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  /* Cut off by the end of the line, and within the ASCII fast path. */
  BAD_LIT("{\"k\":\"abcdefgh\xe2\x82", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 14");
  BAD_LIT("\xc3", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 0");
}

static void test_invalid_utf8_above_max(void) {
  BAD_LIT("{\"k\":\"\xf4\x90\x80\x80\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  BAD_LIT("{\"k\":\"\xf5\x80\x80\x80\"}", JM_BAD_INVALID_UTF8,
          "invalid UTF-8 at byte 6");
  ACCEPT(ev_with("x", ",\"k\":\"\xf4\x8f\xbf\xbf\"")); /* U+10FFFF */
}

static void test_invalid_utf8_in_key(void) {
  BAD_LIT("{\"\xff\":1}", JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte 2");
}

static void test_valid_utf8_all_lengths(void) {
  jm_event ev = OK(msg_with(",\"brain\":\"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                10);
  jm_event_release(&ev);
}

static void test_json_syntax_error(void) {
  BAD("{\"type\":\"x\" \"ts\":\"" TS "\"}", JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD("{\"type\":\"x\",", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{type:\"x\"}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{'type':'x'}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":1,}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":[1,]}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":01}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":\"\\x41\"}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":\"unterminated}", JM_BAD_INVALID_JSON, "invalid JSON at byte");
}

static void test_json_empty(void) {
  /* The reader skips blank lines; the parser itself calls them invalid. */
  BAD("", JM_BAD_INVALID_JSON, "invalid JSON");
  BAD(" \t", JM_BAD_INVALID_JSON, "invalid JSON");
}

static void test_json_trailing_garbage(void) {
  BAD(test_fmt("%s x", ev_with("x", "")), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(test_fmt("%s{}", ev_with("x", "")), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(test_fmt("%s,", ev_with("x", "")), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  /* Trailing JSON whitespace is not garbage (a CR too). */
  ACCEPT(test_fmt(" \t%s \t\r", ev_with("x", "")));
}

static void test_json_bom(void) {
  BAD(test_fmt("\xef\xbb\xbf%s", ev_with("x", "")), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_nan_infinity(void) {
  BAD(ev_with("x", ",\"k\":NaN"), JM_BAD_INVALID_JSON, "invalid JSON");
  BAD(ev_with("x", ",\"k\":Infinity"), JM_BAD_INVALID_JSON, "invalid JSON");
  BAD(ev_with("x", ",\"k\":-Infinity"), JM_BAD_INVALID_JSON, "invalid JSON");
  BAD(ev_with("x", ",\"k\":nan"), JM_BAD_INVALID_JSON, "invalid JSON");
}

static void test_json_lone_high_surrogate(void) {
  BAD(ev_with("x", ",\"k\":\"\\ud800\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"\\ud800x\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"\\ud800\\u0041\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"\\ud800\\ud800\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_lone_low_surrogate(void) {
  BAD(ev_with("x", ",\"k\":\"\\udc00\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"\\udfff\\ud800\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_lone_surrogate_in_key(void) {
  BAD(ev_with("x", ",\"\\ud800\":1"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_surrogate_pair_ok(void) {
  jm_event ev = OK(msg_with(",\"brain\":\"\\ud83d\\ude00\\uD83D\\uDE00\""));
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "\xf0\x9f\x98\x80\xf0\x9f\x98\x80",
                8);
  jm_event_release(&ev);
  ev = OK(msg_with(",\"brain\":\"\\udbff\\udfff\"")); /* U+10FFFF */
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "\xf4\x8f\xbf\xbf", 4);
  jm_event_release(&ev);
}

static void test_json_int64_bounds(void) {
  ACCEPT(ev_with("x", ",\"k\":9223372036854775807"));
  ACCEPT(ev_with("x", ",\"k\":-9223372036854775808"));
  BAD(ev_with("x", ",\"k\":9223372036854775808"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":-9223372036854775809"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":100000000000000000000"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_double_overflow(void) {
  BAD(ev_with("x", ",\"k\":1e400"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":-1e400"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":1.8e308"), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  ACCEPT(ev_with("x", ",\"k\":1.7976931348623157e308"));
  /* Only overflow is a fault: 1e-400 underflows to 0 and is accepted. */
  ACCEPT(ev_with("x", ",\"k\":1e-400"));
  /* A big number written with a fraction or exponent is a real, fine. */
  ACCEPT(ev_with("x", ",\"k\":9223372036854775808.0"));
  ACCEPT(ev_with("x", ",\"k\":1e19"));
}

static void test_json_raw_control_char(void) {
  BAD(ev_with("x", ",\"k\":\"a\x01z\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"a\tz\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD(ev_with("x", ",\"k\":\"a\x1fz\""), JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  ACCEPT(ev_with("x", ",\"k\":\"a\x7fz\"")); /* DEL is not a control char */
}

static void test_json_raw_nul(void) {
  BAD_LIT("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":\"a\0z\"}",
          JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD_LIT("{\"type\":\"x\",\"ts\":\"" TS "\"}\0", JM_BAD_INVALID_JSON,
          "invalid JSON at byte");
  BAD_LIT("{\"type\":\"x\",\0\"ts\":\"" TS "\"}", JM_BAD_INVALID_JSON,
          "invalid JSON at byte");
  BAD_LIT("\0", JM_BAD_INVALID_JSON, "invalid JSON at byte");
}

static void test_json_escaped_nul_in_value_ok(void) {
  jm_event ev = OK(msg_with(",\"brain\":\"a\\u0000b\",\"thinking\":\"\\u0000\""));
  ASSERT_EQ(ev.brain.n, 3);
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "a\0b", 3);
  ASSERT_EQ(ev.brain.p[3], '\0'); /* still NUL-terminated */
  ASSERT_EQ(ev.thinking.n, 1);
  jm_event_release(&ev);
  ev = OK("{\"type\":\"message\",\"ts\":\"" TS "\",\"id\":\"m\","
          "\"role\":\"user\",\"content\":\"\\u0000\\u0000x\\u0000\"}");
  ASSERT_EQ(ev.content.n, 4);
  ASSERT_MEM_EQ(ev.content.p, ev.content.n, "\0\0x\0", 4);
  jm_event_release(&ev);
}

static void test_json_escaped_nul_in_key(void) {
  /* Deliberate: jansson cannot hold a NUL in a key, so the line is
   * reported invalid_json (not accepted, not a crash). */
  BAD(ev_with("x", ",\"a\\u0000b\":1"), JM_BAD_INVALID_JSON,
      "\\u0000 in an object key is not supported");
  BAD(ev_with("x", ",\"m\":{\"\\u0000\":1}"), JM_BAD_INVALID_JSON,
      "\\u0000 in an object key is not supported");
  /* Even when a duplicate key comes first. */
  BAD(ev_with("x", ",\"d\":1,\"d\":2,\"\\u0000\":1"), JM_BAD_INVALID_JSON,
      "\\u0000 in an object key is not supported");
}

static void test_json_escapes_ok(void) {
  jm_event ev = OK(msg_with(",\"brain\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\""));
  ASSERT_MEM_EQ(ev.brain.p, ev.brain.n, "\"\\/\b\f\n\r\t\xc3\xa9", 10);
  jm_event_release(&ev);
}

/* Depth: the root object counts as one level; 100 levels are fine. */
static void test_json_depth_100_ok(void) {
  /* root object + 99 arrays = 100 */
  char *s = build("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":", "[", 99, "",
                  "]", "}");
  ACCEPT(s);
  free(s);
  /* root object + 99 objects = 100 */
  s = build("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":", "{\"a\":", 98, "{}",
            "}", "}");
  ACCEPT(s);
  free(s);
  /* 100 bare arrays: valid JSON, not an object */
  s = build("", "[", 100, "", "]", "");
  BAD(s, JM_BAD_NOT_OBJECT, "not a JSON object but array");
  free(s);
  /* Many openers, but shallow (the quick filter must not misfire). */
  s = build("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":[", "[],", 200, "[]", "",
            "],\"s\":\"[[[[{{{{\"}");
  ACCEPT(s);
  free(s);
}

static void test_json_depth_101_arrays(void) {
  char *s = build("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":", "[", 100, "",
                  "]", "}");
  BAD(s, JM_BAD_INVALID_JSON,
      "invalid JSON: nested deeper than 100 arrays/objects");
  free(s);
  /* A bare array of depth 101 is invalid JSON first, not "not an object". */
  s = build("", "[", 101, "", "]", "");
  BAD(s, JM_BAD_INVALID_JSON, "nested deeper than 100 arrays/objects");
  free(s);
}

static void test_json_depth_101_objects(void) {
  char *s = build("{\"type\":\"x\",\"ts\":\"" TS "\",\"k\":", "{\"a\":", 99,
                  "{}", "}", "}");
  BAD(s, JM_BAD_INVALID_JSON, "nested deeper than 100 arrays/objects");
  free(s);
  s = build("", "{\"a\":", 100, "{}", "}", "");
  BAD(s, JM_BAD_INVALID_JSON, "nested deeper than 100 arrays/objects");
  free(s);
}

static void test_json_depth_far_beyond(void) {
  /* Beyond jansson's own limit too: still just invalid_json. */
  char *s = build("", "[", 5000, "", "]", "");
  BAD(s, JM_BAD_INVALID_JSON, "invalid JSON");
  free(s);
}

static void test_json_duplicate_then_syntax_error(void) {
  BAD("{\"a\":1,\"a\":2,", JM_BAD_INVALID_JSON, "invalid JSON at byte");
  BAD("{\"a\":1,\"a\":2} trailing", JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD("{\"a\":1,\"a\":2,\"k\":\"\\ud800\"}", JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
  BAD("{\"a\":1,\"a\":2,\"k\":1e400}", JM_BAD_INVALID_JSON,
      "invalid JSON at byte");
}

static void test_json_duplicate_then_too_deep(void) {
  char *s = build("{\"a\":1,\"a\":2,\"k\":", "[", 100, "", "]", "}");
  BAD(s, JM_BAD_INVALID_JSON, "nested deeper than 100 arrays/objects");
  free(s);
}

static void test_not_object(void) {
  BAD("[]", JM_BAD_NOT_OBJECT, "not a JSON object but array");
  BAD("[{\"type\":\"x\",\"ts\":\"" TS "\"}]", JM_BAD_NOT_OBJECT,
      "not a JSON object but array");
  BAD("\"message\"", JM_BAD_NOT_OBJECT, "not a JSON object but string");
  BAD("42", JM_BAD_NOT_OBJECT, "not a JSON object but integer");
  BAD("-1.5", JM_BAD_NOT_OBJECT, "not a JSON object but number");
  BAD("null", JM_BAD_NOT_OBJECT, "not a JSON object but null");
  BAD("true", JM_BAD_NOT_OBJECT, "not a JSON object but boolean");
  BAD(" false ", JM_BAD_NOT_OBJECT, "not a JSON object but boolean");
}

static void test_duplicate_key_top_level(void) {
  BAD("{\"type\":\"x\",\"ts\":\"" TS "\",\"type\":\"x\"}",
      JM_BAD_DUPLICATE_KEY, "duplicate object key");
  BAD(msg_with(",\"content\":\"again\""), JM_BAD_DUPLICATE_KEY,
      "duplicate object key");
}

static void test_duplicate_key_nested(void) {
  BAD(msg_with(",\"meta\":{\"x\":1,\"y\":{\"z\":1,\"z\":1}}"),
      JM_BAD_DUPLICATE_KEY, "duplicate object key");
  BAD(ev_with("x", ",\"k\":[{},{\"a\":null,\"a\":null}]"),
      JM_BAD_DUPLICATE_KEY, "duplicate object key");
  /* Same key in sibling objects is not a duplicate. */
  ACCEPT(ev_with("x", ",\"k\":[{\"a\":1},{\"a\":2}],\"m\":{\"a\":3}"));
}

static void test_duplicate_key_after_unescaping(void) {
  BAD(ev_with("x", ",\"a\":1,\"\\u0061\":2"), JM_BAD_DUPLICATE_KEY,
      "duplicate object key");
  BAD("{\"type\":\"x\",\"\\u0074\\u0073\":\"" TS "\",\"ts\":\"" TS "\"}",
      JM_BAD_DUPLICATE_KEY, "duplicate object key");
  BAD(ev_with("x", ",\"\\u00e9\":1,\"\xc3\xa9\":2"), JM_BAD_DUPLICATE_KEY,
      "duplicate object key");
  BAD(ev_with("x", ",\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2"),
      JM_BAD_DUPLICATE_KEY, "duplicate object key");
  /* Case and the empty key: "" twice is a duplicate, "A" vs "a" is not. */
  BAD(ev_with("x", ",\"\":1,\"\":2"), JM_BAD_DUPLICATE_KEY,
      "duplicate object key");
  ACCEPT(ev_with("x", ",\"A\":1,\"a\":2"));
}

static void test_too_long(void) {
  const char *line = ev_with("x", "");
  size_t n = strlen(line);
  ACCEPT(line); /* default maximum */
  bad_at(__LINE__, line, n, "c1", n - 1, JM_BAD_TOO_LONG,
         test_fmt("line of %zu bytes exceeds the maximum of %zu", n, n - 1));
  bad_at(__LINE__, line, n, "c1", 1, JM_BAD_TOO_LONG,
         test_fmt("line of %zu bytes exceeds the maximum of 1", n));
  /* Exactly the maximum is fine. */
  jm_event ev;
  jm_bad bad;
  ASSERT_EQ(jm_event_parse(line, n, "c1", n, &ev, &bad), JM_EVENT_OK);
  jm_event_release(&ev);
  /* too_long outranks everything: garbage over the limit is too_long. */
  BAD_MAX("[[[ not json", 5, JM_BAD_TOO_LONG, "exceeds the maximum of 5");
}

/* ------------------------------------------------------------------ */
/* jm_id_check                                                          */

static void id_ok_at(int line, const char *id, size_t n) {
  jm_error err;
  memset(&err, 0, sizeof err);
  int rc = jm_id_check(id, n, &err);
  if (rc != 0)
    test_fail(__FILE__, line, "id '%.*s' refused: %d %s", (int)n, id, rc,
              err.msg);
}

static void id_bad_at(int line, const char *id, size_t n, const char *needle) {
  jm_error err;
  memset(&err, 0, sizeof err);
  int rc = jm_id_check(id, n, &err);
  if (rc != JM_EID || err.code != JM_EID)
    test_fail(__FILE__, line, "id of %zu bytes: rc %d code %d, want JM_EID",
              n, rc, err.code);
  if (strstr(err.msg, "invalid conversation id") == NULL ||
      strstr(err.msg, needle) == NULL)
    test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", err.msg, needle);
  if (jm_id_check(id, n, NULL) != JM_EID) /* err is optional */
    test_fail(__FILE__, line, "refusal depends on err");
}

#define ID_OK(s) id_ok_at(__LINE__, (s), strlen(s))
#define ID_BAD(s, needle) id_bad_at(__LINE__, (s), strlen(s), (needle))

static void test_id_valid(void) {
  ID_OK("c1");
  ID_OK("a");
  ID_OK("0");
  ID_OK("-");
  ID_OK("_");
  ID_OK("a.b_c-d");
  ID_OK("a..b");
  ID_OK("x.");
  ID_OK("01jbz3k6f8q4r5s6t7v8w9x0yz");
  ID_OK("abcdefghijklmnopqrstuvwxyz0123456789");
  ASSERT_OK(jm_id_check("c1", 2, NULL));
}

static void test_id_empty(void) {
  ID_BAD("", "empty");
  id_bad_at(__LINE__, NULL, 0, "empty");
}
static void test_id_dot(void) { ID_BAD(".", "must not start with '.'"); }
static void test_id_dotdot(void) { ID_BAD("..", "must not start with '.'"); }
static void test_id_hidden(void) {
  ID_BAD(".hidden", "must not start with '.'");
}
static void test_id_slash(void) {
  ID_BAD("a/b", "byte 1 is not one of [a-z0-9._-]");
  ID_BAD("/", "byte 0 is not one of");
  ID_BAD("../x", "must not start with '.'");
  ID_BAD("a\\b", "byte 1 is not one of");
}
static void test_id_upper_case(void) {
  ID_BAD("Abc", "byte 0 is not one of [a-z0-9._-]");
  ID_BAD("abC", "byte 2 is not one of");
}
static void test_id_space(void) {
  ID_BAD("a b", "byte 1 is not one of");
  ID_BAD("ab ", "byte 2 is not one of");
}
static void test_id_128_ok(void) {
  char id[129];
  memset(id, 'z', 128);
  id[128] = '\0';
  ID_OK(id);
}
static void test_id_129_refused(void) {
  char id[130];
  memset(id, 'z', 129);
  id[129] = '\0';
  ID_BAD(id, "129 bytes, at most 128");
}
static void test_id_embedded_nul(void) {
  id_bad_at(__LINE__, "ab\0cd", 5, "byte 2 is not one of");
  id_bad_at(__LINE__, "ab\0", 3, "byte 2 is not one of");
  /* The message shows the NUL escaped, not as a terminator. */
  jm_error err;
  ASSERT_EQ(jm_id_check("ab\0cd", 5, &err), JM_EID);
  ASSERT_STR_CONTAINS(err.msg, "ab\\x00cd");
  /* Only n bytes are looked at. */
  id_ok_at(__LINE__, "ab/cd", 2);
}
static void test_id_non_ascii(void) {
  ID_BAD("caf\xc3\xa9", "byte 3 is not one of");
  ID_BAD("\xff", "byte 0 is not one of");
  ID_BAD("a\x01", "byte 1 is not one of");
}

/* ------------------------------------------------------------------ */
/* The fixture corpus: fixtures/malformed/lines.txt                      */

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* jansson quotes the input near a syntax error or a duplicate key: those
 * bytes reach stderr, the mirror's bad_lines and `jmirror errors`, so a
 * form feed, an ESC or a C1 control must come out as \xNN, never raw. */
static void test_bad_message_escapes_input_bytes(void) {
  static const struct {
    const char *line, *needle;
    jm_bad_reason want;
  } cases[] = {
    {"\x1b[2J", "near '\\x1b'", JM_BAD_INVALID_JSON},
    {"{\"a\"\x0c:1}", "\\x0c", JM_BAD_INVALID_JSON},
    {"\xc2\x9b" "31m", "\\xc2\\x9b", JM_BAD_INVALID_JSON},
    {"{\"\xc2\x9b\":1,\"\xc2\x9b\":2}", "\\xc2\\x9b", JM_BAD_DUPLICATE_KEY},
    {"{\"a\":tru\x1b}", "invalid JSON", JM_BAD_INVALID_JSON},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    jm_event ev;
    jm_bad bad;
    int rc = jm_event_parse(cases[i].line, strlen(cases[i].line), "c1", 0, &ev,
                            &bad);
    ASSERT_EQ(rc, JM_EVENT_BAD);
    ASSERT_EQ(bad.reason, cases[i].want);
    ASSERT_STR_CONTAINS(bad.msg, cases[i].needle);
    for (const char *p = bad.msg; *p; p++)
      if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
        test_fail(__FILE__, __LINE__, "case %zu: raw byte 0x%02x in \"%s\"",
                  i, (unsigned char)*p, bad.msg);
  }
}

static void test_fixture_corpus(void) {
  const char *dir = getenv("JM_FIXTURES");
  ASSERT(dir != NULL && dir[0] != '\0');
  const char *path = test_fmt("%s/malformed/lines.txt", dir);
  size_t len;
  char *text = test_read_file(path, &len);
  if (text == NULL)
    test_fail(__FILE__, __LINE__, "cannot read %s", path);
  int cases = 0, failed = 0, ok_cases = 0, lineno = 0;
  char *save = NULL;
  for (char *l = strtok_r(text, "\n", &save); l != NULL;
       l = strtok_r(NULL, "\n", &save)) {
    lineno++; /* strtok skips empty lines: numbers count non-empty ones */
    if (l[0] == '#')
      continue;
    char *t1 = strchr(l, '\t');
    char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (t1 == NULL || t2 == NULL)
      test_fail(__FILE__, __LINE__, "%s: malformed entry %d: %s", path, lineno,
                l);
    *t1 = *t2 = '\0';
    const char *want = l, *hex = t1 + 1, *desc = t2 + 1;
    size_t hn = strlen(hex);
    if (hn % 2 != 0)
      test_fail(__FILE__, __LINE__, "%s: odd hex in '%s'", path, desc);
    char *bytes = malloc(hn / 2 + 1);
    ASSERT(bytes != NULL);
    for (size_t i = 0; i < hn / 2; i++) {
      int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
      if (hi < 0 || lo < 0)
        test_fail(__FILE__, __LINE__, "%s: bad hex in '%s'", path, desc);
      bytes[i] = (char)(hi * 16 + lo);
    }
    jm_event ev;
    jm_bad bad;
    int rc = jm_event_parse(bytes, hn / 2, "c1", 0, &ev, &bad);
    const char *got = rc == JM_EVENT_OK    ? "ok"
                      : rc == JM_EVENT_BAD ? jm_bad_reason_name(bad.reason)
                                           : "error";
    if (strcmp(got, want) != 0) {
      fprintf(stderr, "# fixture '%s': got %s (%s), want %s\n", desc, got,
              rc == JM_EVENT_BAD ? bad.msg : "", want);
      failed++;
    }
    if (rc == JM_EVENT_OK)
      jm_event_release(&ev);
    ok_cases += strcmp(want, "ok") == 0;
    cases++;
    free(bytes);
  }
  free(text);
  fprintf(stderr, "# %d fixture lines, %d expected ok\n", cases, ok_cases);
  ASSERT_EQ(failed, 0);
  ASSERT(cases >= 40);
  ASSERT(ok_cases >= 5);
}

static const test_case cases[] = {
  TEST_CASE(test_message_fields),
  TEST_CASE(test_every_known_type_minimal),
  TEST_CASE(test_reason_names),
  /* type */
  TEST_CASE(test_type_missing),
  TEST_CASE(test_type_not_string),
  TEST_CASE(test_type_null),
  TEST_CASE(test_type_is_case_sensitive),
  /* ts */
  TEST_CASE(test_ts_missing),
  TEST_CASE(test_ts_not_string),
  TEST_CASE(test_ts_null),
  TEST_CASE(test_ts_lowercase_t),
  TEST_CASE(test_ts_lowercase_z),
  TEST_CASE(test_ts_missing_z),
  TEST_CASE(test_ts_offset),
  TEST_CASE(test_ts_space_separator),
  TEST_CASE(test_ts_surrounding_space),
  TEST_CASE(test_ts_short_fields),
  TEST_CASE(test_ts_month_range),
  TEST_CASE(test_ts_day_range),
  TEST_CASE(test_ts_feb30),
  TEST_CASE(test_ts_feb29_non_leap),
  TEST_CASE(test_ts_feb29_1900),
  TEST_CASE(test_ts_feb29_leap),
  TEST_CASE(test_ts_hour24),
  TEST_CASE(test_ts_minute60),
  TEST_CASE(test_ts_second61),
  TEST_CASE(test_ts_second60_accepted),
  TEST_CASE(test_ts_non_digit),
  TEST_CASE(test_ts_frac_zero_digits),
  TEST_CASE(test_ts_frac_ten_digits),
  TEST_CASE(test_ts_frac_nine_digits_truncated),
  TEST_CASE(test_ts_frac_padded),
  TEST_CASE(test_ts_frac_none),
  TEST_CASE(test_ts_normalise_length_bound),
  TEST_CASE(test_ts_order_is_string_order),
  TEST_CASE(test_ts_now_is_normalised),
  /* v */
  TEST_CASE(test_v_absent_ok),
  TEST_CASE(test_v_null_ok),
  TEST_CASE(test_v_1_ok),
  TEST_CASE(test_v_2_unsupported),
  TEST_CASE(test_v_0_wrong_type),
  TEST_CASE(test_v_negative_wrong_type),
  TEST_CASE(test_v_real_wrong_type),
  TEST_CASE(test_v_string_wrong_type),
  /* conversation_id */
  TEST_CASE(test_conv_id_absent_ok),
  TEST_CASE(test_conv_id_null_ok),
  TEST_CASE(test_conv_id_equal_ok),
  TEST_CASE(test_conv_id_mismatch),
  TEST_CASE(test_conv_id_wrong_type),
  TEST_CASE(test_conv_id_null_skips_check),
  /* required members */
  TEST_CASE(test_message_missing_id),
  TEST_CASE(test_message_missing_role),
  TEST_CASE(test_message_missing_content),
  TEST_CASE(test_delta_missing_id),
  TEST_CASE(test_end_missing_id),
  TEST_CASE(test_edited_missing_id),
  TEST_CASE(test_edited_missing_content),
  TEST_CASE(test_deleted_missing_id),
  /* member types */
  TEST_CASE(test_message_id_wrong_type),
  TEST_CASE(test_message_id_null),
  TEST_CASE(test_message_role_wrong_type),
  TEST_CASE(test_message_role_null),
  TEST_CASE(test_message_content_wrong_type),
  TEST_CASE(test_message_content_null),
  TEST_CASE(test_message_parent_id_wrong_type),
  TEST_CASE(test_message_brain_wrong_type),
  TEST_CASE(test_message_reasoning_level_wrong_type),
  TEST_CASE(test_message_thinking_wrong_type),
  TEST_CASE(test_message_meta_any_type),
  TEST_CASE(test_role_enum),
  TEST_CASE(test_role_outside_enum),
  TEST_CASE(test_delta_role_outside_enum),
  TEST_CASE(test_delta_role_wrong_type),
  TEST_CASE(test_delta_role_null_ok),
  TEST_CASE(test_delta_text_wrong_type),
  TEST_CASE(test_delta_thinking_wrong_type),
  TEST_CASE(test_delta_parent_id_wrong_type),
  TEST_CASE(test_delta_id_wrong_type),
  TEST_CASE(test_end_stop_reason_wrong_type),
  TEST_CASE(test_end_usage_object_or_null),
  TEST_CASE(test_end_usage_wrong_type),
  TEST_CASE(test_end_id_wrong_type),
  TEST_CASE(test_edited_content_wrong_type),
  TEST_CASE(test_edited_id_wrong_type),
  TEST_CASE(test_deleted_id_wrong_type),
  TEST_CASE(test_created_title_wrong_type),
  TEST_CASE(test_created_brain_wrong_type),
  TEST_CASE(test_updated_title_wrong_type),
  TEST_CASE(test_updated_brain_wrong_type),
  TEST_CASE(test_conversation_members_set),
  /* message ids */
  TEST_CASE(test_message_id_empty),
  TEST_CASE(test_message_id_256_ok),
  TEST_CASE(test_message_id_257),
  TEST_CASE(test_message_id_nul),
  /* null, unknown */
  TEST_CASE(test_null_optional_members),
  TEST_CASE(test_unknown_type_valid),
  TEST_CASE(test_unknown_type_needs_ts),
  TEST_CASE(test_unknown_type_common_rules),
  TEST_CASE(test_unknown_members_ignored),
  /* ranking */
  TEST_CASE(test_rank_missing_beats_wrong_type),
  TEST_CASE(test_rank_unsupported_beats_mismatch),
  TEST_CASE(test_rank_mismatch_beats_missing),
  TEST_CASE(test_rank_missing_beats_bad_ts),
  TEST_CASE(test_rank_bad_ts_beats_wrong_type),
  TEST_CASE(test_rank_same_category_is_deterministic),
  TEST_CASE(test_rank_duplicate_beats_member_rules),
  TEST_CASE(test_rank_not_object_beats_duplicate),
  TEST_CASE(test_rank_utf8_beats_json),
  TEST_CASE(test_rank_too_long_beats_utf8),
  TEST_CASE(test_messages_quote_values),
  /* section 2 */
  TEST_CASE(test_invalid_utf8_overlong),
  TEST_CASE(test_invalid_utf8_surrogate),
  TEST_CASE(test_invalid_utf8_ff),
  TEST_CASE(test_invalid_utf8_truncated),
  TEST_CASE(test_invalid_utf8_above_max),
  TEST_CASE(test_invalid_utf8_in_key),
  TEST_CASE(test_valid_utf8_all_lengths),
  TEST_CASE(test_json_syntax_error),
  TEST_CASE(test_json_empty),
  TEST_CASE(test_json_trailing_garbage),
  TEST_CASE(test_json_bom),
  TEST_CASE(test_json_nan_infinity),
  TEST_CASE(test_json_lone_high_surrogate),
  TEST_CASE(test_json_lone_low_surrogate),
  TEST_CASE(test_json_lone_surrogate_in_key),
  TEST_CASE(test_json_surrogate_pair_ok),
  TEST_CASE(test_json_int64_bounds),
  TEST_CASE(test_json_double_overflow),
  TEST_CASE(test_json_raw_control_char),
  TEST_CASE(test_json_raw_nul),
  TEST_CASE(test_json_escaped_nul_in_value_ok),
  TEST_CASE(test_json_escaped_nul_in_key),
  TEST_CASE(test_json_escapes_ok),
  TEST_CASE(test_json_depth_100_ok),
  TEST_CASE(test_json_depth_101_arrays),
  TEST_CASE(test_json_depth_101_objects),
  TEST_CASE(test_json_depth_far_beyond),
  TEST_CASE(test_json_duplicate_then_syntax_error),
  TEST_CASE(test_json_duplicate_then_too_deep),
  TEST_CASE(test_not_object),
  TEST_CASE(test_duplicate_key_top_level),
  TEST_CASE(test_duplicate_key_nested),
  TEST_CASE(test_duplicate_key_after_unescaping),
  TEST_CASE(test_too_long),
  /* jm_id_check */
  TEST_CASE(test_id_valid),
  TEST_CASE(test_id_empty),
  TEST_CASE(test_id_dot),
  TEST_CASE(test_id_dotdot),
  TEST_CASE(test_id_hidden),
  TEST_CASE(test_id_slash),
  TEST_CASE(test_id_upper_case),
  TEST_CASE(test_id_space),
  TEST_CASE(test_id_128_ok),
  TEST_CASE(test_id_129_refused),
  TEST_CASE(test_id_embedded_nul),
  TEST_CASE(test_id_non_ascii),
  /* corpus */
  TEST_CASE(test_bad_message_escapes_input_bytes),
  TEST_CASE(test_fixture_corpus),
  {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
