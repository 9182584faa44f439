/*
 * cmd_store.c - conversations from the command line, through the store API:
 *
 *   jmirror new [--title T] [--brain B] [--id ID] [--meta JSON]
 *   jmirror add <id> --role R (--content TEXT | -) [--parent P] [--id M]
 *               [--brain B] [--thinking T] [--meta JSON]
 *   jmirror rename <id> <title> | delete <id> | restore <id>
 *   jmirror ls [--brain B] [--limit N] [--cursor C] [--deleted] [--json]
 *   jmirror show <id> [--json] [--thinking] [--limit N] [--after SEQ]
 *   jmirror search <words...> [--conversation ID] [--limit N] [--deleted]
 *                  [--json]
 */
#include "cli.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

static int open_store(cli *c, jm_store **s) {
  jm_store_options o;
  jm_store_options_init(&o);
  o.db_path = c->mirror_flag;
  jm_error err;
  jm_error_clear(&err);
  if (jm_store_open(s, c->root, &o, &err) != 0)
    return cli_fail(&err);
  return 0;
}

static int close_store(jm_store *s, int status) {
  jm_error err;
  jm_error_clear(&err);
  if (jm_store_close(s, &err) != 0) {
    cli_fail(&err);
    return EXIT_FAIL;
  }
  return status;
}

static int check_id(const char *id) {
  jm_error err;
  if (jm_id_check(id, strlen(id), &err) != 0)
    return cli_fail(&err);
  return 0;
}

/* "2026-11-21T13:00:01.123456Z" -> "2026-11-21 13:00:01Z" */
static const char *when(const char *ts, char buf[32]) {
  if (ts == NULL || strlen(ts) < 19)
    return "-";
  snprintf(buf, 32, "%.10s %.8sZ", ts, ts + 11);
  return buf;
}

/* Text from the journal, printed for a person: control characters are
 * shown, never sent (a title holding ESC [2J must not clear the terminal,
 * a newline must not break an ls row).  C0 and DEL as ^X, C1 (U+0080..
 * U+009F) as <U+00XX>; newline and tab kept only where `multiline`, else
 * a space.  The highlight marks of a search snippet arrive as the
 * noncharacters U+FDD0 / U+FDD1 and become `open` / `close`. */
#define MARK_OPEN "\xEF\xB7\x90"
#define MARK_CLOSE "\xEF\xB7\x91"

static void put_text(const char *s, size_t n, int multiline, const char *open,
                     const char *close) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (open && i + 3 <= n && memcmp(s + i, MARK_OPEN, 3) == 0) {
      fputs(open, stdout);
      i += 2;
    } else if (close && i + 3 <= n && memcmp(s + i, MARK_CLOSE, 3) == 0) {
      fputs(close, stdout);
      i += 2;
    } else if ((c == '\n' || c == '\t') && multiline)
      fputc(c, stdout);
    else if (c == '\n' || c == '\t' || c == '\r')
      fputc(' ', stdout);
    else if (c < 0x20 || c == 0x7f)
      printf("^%c", c == 0x7f ? '?' : c + '@');
    else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
             (unsigned char)s[i + 1] <= 0x9f)
      printf("<U+00%02X>", (unsigned char)s[++i]);
    else
      fputc(c, stdout);
  }
}

static void put_str(const char *s) {
  if (s)
    put_text(s, strlen(s), 0, NULL, NULL);
}

/* new / add / rename / delete / restore ------------------------------------------ */

int cmd_new(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"title", 1}, {"brain", 1}, {"id", 1}, {"meta", 1}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands)
    return cli_usage(c, "takes no operands (use --title)");
  if (o.values[2] && (rc = check_id(o.values[2])) != 0)
    return rc;
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0)
    return rc;
  char id[JM_ID_MAX + 1];
  jm_error err;
  jm_error_clear(&err);
  rc = jm_store_create(s, o.values[2], o.values[0], o.values[1], o.values[3],
                       id, &err);
  if (rc == 0 || rc == JM_ETIMEDOUT) /* written, only not confirmed */
    printf("%s\n", id);
  return close_store(s, rc ? cli_fail(&err) : EXIT_OK);
}

/* All of standard input; one trailing newline (from echo) is dropped. */
static char *read_stdin(size_t *len) {
  jm_error err;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  ssize_t r;
  while (buf && (r = read(STDIN_FILENO, buf + n, cap - n)) != 0) {
    if (r < 0) {
      if (errno == EINTR)
        continue;
      jm_error_clear(&err);
      cli_err("cannot read standard input: %s", strerror(errno));
      free(buf);
      return NULL;
    }
    n += (size_t)r;
    if (n == cap) {
      char *p = realloc(buf, cap *= 2);
      if (p == NULL)
        free(buf);
      buf = p;
    }
  }
  if (buf && n > 0 && buf[n - 1] == '\n')
    n--;
  if (buf)
    buf[n] = '\0';
  *len = n;
  return buf;
}

int cmd_add(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"role", 1},  {"content", 1},  {"parent", 1}, {"id", 1},
      {"brain", 1}, {"thinking", 1}, {"meta", 1},   {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  int from_stdin = o.n_operands == 2 && strcmp(o.operands[1], "-") == 0;
  if (o.n_operands < 1 || o.n_operands > 2 || (o.n_operands == 2 && !from_stdin))
    return cli_usage(c, "give a conversation id, and '-' to read the "
                        "content from standard input");
  if (o.values[0] == NULL)
    return cli_usage(c, "--role is required (user, assistant, system, tool)");
  if ((o.values[1] != NULL) == from_stdin)
    return cli_usage(c, "give the content with --content TEXT or '-' (not "
                        "both)");
  if ((rc = check_id(o.operands[0])) != 0)
    return rc;
  size_t len = 0;
  char *content = from_stdin ? read_stdin(&len) : NULL;
  if (from_stdin && content == NULL)
    return EXIT_FAIL;
  jm_message_in m = {o.values[3], o.values[0],
                     from_stdin ? content : o.values[1],
                     from_stdin ? len : SIZE_MAX, o.values[2], o.values[4],
                     NULL, o.values[5], o.values[6]};
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0) {
    free(content);
    return rc;
  }
  char mid[JM_MSG_ID_MAX + 1];
  jm_error err;
  jm_error_clear(&err);
  rc = jm_store_add_message(s, o.operands[0], &m, mid, &err);
  free(content);
  if (rc == 0 || rc == JM_ETIMEDOUT) /* written, only not confirmed */
    printf("%s\n", mid);
  return close_store(s, rc ? cli_fail(&err) : EXIT_OK);
}

/* rename / delete / restore share one shape. */
static int simple_write(cli *c, int argc, char **argv, int want,
                        int (*fn)(jm_store *, const char *, const char *,
                                  jm_error *)) {
  opt_result o;
  int rc = cli_parse(c, argc, argv, NULL, &o);
  if (rc)
    return rc;
  if (o.n_operands != want)
    return cli_usage(c, want == 2 ? "give a conversation id and a title"
                                  : "give one conversation id");
  if ((rc = check_id(o.operands[0])) != 0)
    return rc;
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0)
    return rc;
  jm_error err;
  jm_error_clear(&err);
  rc = fn(s, o.operands[0], want == 2 ? o.operands[1] : NULL, &err);
  return close_store(s, rc ? cli_fail(&err) : EXIT_OK);
}

static int do_rename(jm_store *s, const char *id, const char *t,
                     jm_error *e) {
  return jm_store_rename(s, id, t, e);
}
static int do_delete(jm_store *s, const char *id, const char *t,
                     jm_error *e) {
  (void)t;
  return jm_store_delete(s, id, e);
}
static int do_restore(jm_store *s, const char *id, const char *t,
                      jm_error *e) {
  (void)t;
  return jm_store_restore(s, id, e);
}

int cmd_rename(cli *c, int argc, char **argv) {
  return simple_write(c, argc, argv, 2, do_rename);
}
int cmd_delete(cli *c, int argc, char **argv) {
  return simple_write(c, argc, argv, 1, do_delete);
}
int cmd_restore(cli *c, int argc, char **argv) {
  return simple_write(c, argc, argv, 1, do_restore);
}

/* ls ----------------------------------------------------------------------------- */

static json_t *conv_json(const jm_conversation *v) {
  json_t *meta = v->meta ? json_loads(v->meta, JSON_DECODE_ANY, NULL) : NULL;
  return json_pack("{s:s,s:s?,s:s?,s:o,s:s?,s:s?,s:s?,s:I,s:I,s:I}", "id",
                   v->id, "title", v->title, "brain", v->brain, "meta",
                   meta ? meta : json_null(), "created_at", v->created_at,
                   "updated_at", v->updated_at, "deleted_at", v->deleted_at,
                   "message_count", (json_int_t)v->message_count, "bad_lines",
                   (json_int_t)v->bad_lines, "unknown_events",
                   (json_int_t)v->unknown_events);
}

int cmd_ls(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"brain", 1}, {"limit", 1}, {"cursor", 1},
                                   {"deleted", 0}, {"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands)
    return cli_usage(c, "takes no operands");
  unsigned long long limit = 50;
  if (o.values[1] && (rc = cli_parse_uint(c, "limit", o.values[1], &limit)))
    return rc;
  jm_list_options lo = {o.values[0], o.values[3] != NULL, (size_t)limit,
                        o.values[2]};
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0)
    return rc;
  jm_conversation_list l;
  jm_error err;
  jm_error_clear(&err);
  if ((rc = jm_store_list(s, &lo, &l, &err)) != 0)
    return close_store(s, rc == JM_EUSAGE ? cli_usage(c, "%s", err.msg)
                                          : cli_fail(&err));
  if (o.values[4]) {
    json_t *arr = json_array();
    for (size_t i = 0; i < l.n; i++)
      json_array_append_new(arr, conv_json(&l.items[i]));
    cli_print_json(json_pack("{s:o,s:s?}", "conversations", arr,
                             "next_cursor", l.next_cursor));
  } else {
    char b[32];
    for (size_t i = 0; i < l.n; i++) {
      jm_conversation *v = &l.items[i];
      printf("%-20s %5lld  %-26s ", when(v->updated_at, b),
             (long long)v->message_count, v->id);
      put_str(v->title);
      printf("%s\n", v->deleted_at ? "  (deleted)" : "");
    }
    if (l.next_cursor)
      printf("(more: jmirror ls --cursor %s)\n", l.next_cursor);
  }
  jm_conversation_list_free(&l);
  return close_store(s, EXIT_OK);
}

/* show ---------------------------------------------------------------------------- */

static json_t *raw_json(const char *text) {
  json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
  return v ? v : json_null();
}

static json_t *msg_json(const jm_message *m) {
  return json_pack(
      "{s:s,s:I,s:s,s:s%,s:s?,s:s?,s:s?,s:s?,s:o,s:s?,s:s,s:s?,s:o,s:s?,s:s?,"
      "s:s?}",
      "id", m->id, "seq", (json_int_t)m->seq, "role", m->role, "content",
      m->content, m->content_len, "parent_id", m->parent_id,
      "parent_id_written", m->parent_id_written, "brain", m->brain,
      "reasoning_level", m->reasoning_level, "meta", raw_json(m->meta),
      "thinking", m->thinking, "status", m->status, "stop_reason",
      m->stop_reason, "usage", raw_json(m->usage), "created_at", m->created_at,
      "updated_at", m->updated_at, "edited_at", m->edited_at);
}

/* Content indented two spaces, line by line. */
static void indent(const char *s, size_t n) {
  fputs("  ", stdout);
  size_t from = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\n' && i + 1 < n) {
      put_text(s + from, i + 1 - from, 1, NULL, NULL);
      fputs("  ", stdout);
      from = i + 1;
    }
  put_text(s + from, n - from, 1, NULL, NULL);
  fputc('\n', stdout);
}

static void show_msg(const jm_message *m, int thinking) {
  char b[32];
  printf("\n[%s] ", when(m->created_at, b));
  put_str(m->role);
  fputc(' ', stdout);
  put_str(m->id); /* any text but NUL: shown like the content */
  printf("%s%s\n", strcmp(m->status, "complete") ? " (streaming)" : "",
         m->edited_at ? " (edited)" : "");
  if (m->thinking && thinking) {
    printf("  <thinking>\n");
    indent(m->thinking, m->thinking_len);
    printf("  </thinking>\n");
  } else if (m->thinking)
    printf("  [thinking: %zu bytes; --thinking shows it]\n", m->thinking_len);
  indent(m->content, m->content_len);
}

int cmd_show(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"json", 0}, {"thinking", 0},
                                   {"limit", 1}, {"after", 1}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands != 1)
    return cli_usage(c, "give one conversation id");
  unsigned long long limit = 0, after = 0;
  if ((o.values[2] && (rc = cli_parse_uint(c, "limit", o.values[2], &limit))) ||
      (o.values[3] && (rc = cli_parse_uint(c, "after", o.values[3], &after))))
    return rc;
  if (after > INT64_MAX) /* a seq is an int64: no message lies beyond */
    return cli_usage(c, "option '--after' is out of range (at most %lld)",
                     (long long)INT64_MAX);
  if ((rc = check_id(o.operands[0])) != 0)
    return rc;
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0)
    return rc;
  jm_conversation conv;
  jm_error err;
  jm_error_clear(&err);
  if (jm_store_get(s, o.operands[0], &conv, &err) != 0)
    return close_store(s, cli_fail(&err));
  int json = o.values[0] != NULL;
  json_t *msgs = json ? json_array() : NULL;
  if (!json) {
    char b1[32], b2[32];
    put_str(conv.title ? conv.title : "(untitled)");
    printf(" (%s)\ncreated %s, updated %s, %lld messages%s\n", conv.id,
           when(conv.created_at, b1), when(conv.updated_at, b2),
           (long long)conv.message_count, conv.deleted_at ? ", DELETED" : "");
  }
  int64_t next = (int64_t)after;
  size_t shown = 0;
  while (rc == 0 && next >= 0 && (limit == 0 || shown < limit)) {
    jm_message_list l;
    size_t page = limit && limit - shown < 500 ? limit - shown : 500;
    if ((rc = jm_store_messages(s, conv.id, next, page, &l, &err)) != 0)
      break;
    for (size_t i = 0; i < l.n; i++, shown++)
      if (json)
        json_array_append_new(msgs, msg_json(&l.items[i]));
      else
        show_msg(&l.items[i], o.values[1] != NULL);
    next = l.next_after;
    jm_message_list_free(&l);
  }
  if (rc == 0 && json) {
    cli_print_json(json_pack("{s:o,s:o}", "conversation", conv_json(&conv),
                             "messages", msgs));
    msgs = NULL;
  }
  json_decref(msgs);
  jm_conversation_free(&conv);
  return close_store(s, rc ? cli_fail(&err) : EXIT_OK);
}

/* search --------------------------------------------------------------------------- */

int cmd_search(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"conversation", 1}, {"limit", 1},
                                   {"json", 0}, {"deleted", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands < 1)
    return cli_usage(c, "give the words to search for");
  unsigned long long limit = 20;
  if (o.values[1] && (rc = cli_parse_uint(c, "limit", o.values[1], &limit)))
    return rc;
  if (o.values[0] && (rc = check_id(o.values[0])) != 0)
    return rc;
  char *q = NULL;
  for (int i = 0; i < o.n_operands; i++) {
    char *n = cli_asprintf("%s%s%s", q ? q : "", q ? " " : "", o.operands[i]);
    free(q);
    q = n;
  }
  int json = o.values[2] != NULL, tty = !json && isatty(STDOUT_FILENO);
  jm_search_options so = {o.values[0], (size_t)limit, MARK_OPEN, MARK_CLOSE,
                          o.values[3] != NULL};
  if (json) {
    so.mark_open = "[";
    so.mark_close = "]";
  }
  jm_store *s;
  if ((rc = open_store(c, &s)) != 0) {
    free(q);
    return rc;
  }
  jm_search_results r;
  jm_error err;
  jm_error_clear(&err);
  rc = jm_store_search(s, q, &so, &r, &err);
  free(q);
  if (rc != 0)
    return close_store(s, rc == JM_EUSAGE ? cli_usage(c, "%s", err.msg)
                                          : cli_fail(&err));
  json_t *arr = json ? json_array() : NULL;
  for (size_t i = 0; i < r.n; i++) {
    jm_search_hit *h = &r.items[i];
    if (json)
      json_array_append_new(
          arr, json_pack("{s:s,s:s,s:I,s:s,s:s,s:s?,s:f}", "conversation",
                         h->conversation_id, "message", h->message_id, "seq",
                         (json_int_t)h->seq, "role", h->role, "snippet",
                         h->snippet, "created_at", h->created_at, "rank",
                         h->rank));
    else {
      printf("%s #%lld ", h->conversation_id, (long long)h->seq);
      put_str(h->role);
      fputs(": ", stdout);
      put_text(h->snippet, strlen(h->snippet), 0, tty ? "\033[1;33m" : "[",
               tty ? "\033[0m" : "]");
      fputc('\n', stdout);
    }
  }
  if (json)
    cli_print_json(json_pack("{s:o}", "results", arr));
  else if (r.n == 0)
    fprintf(stderr, "no matches\n");
  jm_search_results_free(&r);
  return close_store(s, EXIT_OK);
}
