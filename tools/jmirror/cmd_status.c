/*
 * cmd_status.c - `jmirror status [--json]`, and handing work to a running
 * daemon (cli_delegate).
 *
 * With a daemon: its own view over the control socket (uptime, files
 * tracked, bytes behind, events ingested, bad lines, last error).  Without
 * one: the same facts read from the mirror and journal/, and it says so.
 * Either way: whether the mirror is excluded from backups.
 */
#include "cli.h"

#include <jansson.h>
#include <string.h>

/* If jmirrord holds the mirror's writer lock, send it `req` and hand back
 * its answer: 1 delegated (*resp owned by the caller), 0 no daemon, or an
 * exit code (>= 1 is EXIT_FAIL, reported). */
int cli_delegate(cli *c, json_t *req, json_t **resp) {
  *resp = NULL;
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = 0, .max_line = 0};
  char *db = jm_mirror_resolve_path(c->root, &opt);
  long pid = 0;
  char who[64] = "";
  int held = db ? jm_mirror_lock_holder(db, &pid, who) : 0;
  if (held != 1 || strcmp(who, "jmirrord") != 0) {
    free(db);
    return 0;
  }
  jm_error err;
  jm_error_clear(&err);
  jm_client *cl;
  char *line = json_dumps(req, JSON_COMPACT), *out = NULL;
  int rc = jm_client_connect(db, 1000, &cl, &err);
  if (rc == 0) {
    rc = jm_client_request(cl, line, &out, -1, &err);
    jm_client_close(cl);
  }
  free(line);
  if (rc != 0) {
    cli_err("mirror '%s' is held by jmirrord (pid %ld), which does not "
            "answer: %s", db, pid, err.msg);
    free(db);
    return -EXIT_FAIL;
  }
  free(db);
  *resp = json_loads(out, 0, NULL);
  free(out);
  if (*resp == NULL) {
    cli_err("jmirrord sent an answer that is not JSON");
    return -EXIT_FAIL;
  }
  if (!json_is_true(json_object_get(*resp, "ok"))) {
    const char *e = json_string_value(json_object_get(*resp, "error"));
    cli_err("jmirrord: %s", e ? e : "request failed");
    json_decref(*resp);
    *resp = NULL;
    return -EXIT_FAIL;
  }
  return 1;
}

static json_t *exclusion_json(const char *db) {
  int tag, tm;
  jm_mirror_exclusion(db, &tag, &tm);
  return json_pack("{s:b,s:o}", "cachedir_tag", tag, "time_machine_excluded",
                   tm < 0 ? json_null() : json_boolean(tm));
}

static void print_exclusion(json_t *ex) {
  int tag = json_is_true(json_object_get(ex, "cachedir_tag"));
  json_t *tm = json_object_get(ex, "time_machine_excluded");
  printf("backups:         mirror %s by CACHEDIR.TAG", tag ? "excluded" : "NOT excluded");
  if (!json_is_null(tm))
    printf("; Time Machine exclusion %s", json_is_true(tm) ? "set" : "NOT set");
  printf("\n");
}

static void print_daemon(json_t *s) {
  json_int_t up = json_integer_value(json_object_get(s, "uptime_s"));
  const char *le = json_string_value(json_object_get(s, "last_error"));
  const char *busy = json_string_value(json_object_get(s, "busy"));
  printf("daemon:          running (pid %lld, up %lldh%02lldm%02llds)%s%s\n",
         (long long)json_integer_value(json_object_get(s, "pid")),
         (long long)up / 3600, (long long)up / 60 % 60, (long long)up % 60,
         busy ? ", busy: " : "", busy ? busy : "");
  printf("root:            %s\n",
         json_string_value(json_object_get(s, "root")));
  printf("mirror:          %s%s\n",
         json_string_value(json_object_get(s, "mirror")),
         json_is_true(json_object_get(s, "mirror_replaced"))
             ? " (deleted or replaced under the daemon: being rebuilt)"
             : "");
  printf("files tracked:   %lld\n",
         (long long)json_integer_value(json_object_get(s, "files_tracked")));
  printf("bytes behind:    %lld\n",
         (long long)json_integer_value(json_object_get(s, "bytes_behind")));
  printf("events ingested: %lld (since start)\n",
         (long long)json_integer_value(json_object_get(s, "events_ingested")));
  printf("bad lines:       %lld (since start)\n",
         (long long)json_integer_value(json_object_get(s, "bad_lines")));
  printf("ignored files:   %lld\n",
         (long long)json_integer_value(json_object_get(s, "ignored_files")));
  if (!json_is_true(json_object_get(s, "journal_present")))
    printf("journal:         MISSING (waiting for it to come back)\n");
  printf("last error:      %s\n", le ? le : "none");
}

static int status_from_mirror(cli *c, int json) {
  jm_mirror *m;
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = 1, .max_line = 0};
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_open(&m, c->root, &opt, &err) != 0) {
    if (err.code != -ENOENT)
      return cli_fail(&err);
    char *db = jm_mirror_resolve_path(c->root, &opt);
    cli_err("no daemon running and no mirror yet at '%s' (start jmirrord or "
            "run 'jmirror ingest')", db ? db : "?");
    free(db);
    return EXIT_FAIL;
  }
  jm_mirror_status st;
  int rc = jm_mirror_status_read(m, &st, &err);
  json_t *ex = exclusion_json(jm_mirror_db_path(m));
  if (rc == 0 && json)
    cli_print_json(json_pack(
        "{s:b,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:i,s:o}", "daemon", 0,
        "root", c->root, "mirror", jm_mirror_db_path(m), "files_tracked",
        (json_int_t)st.conversations, "files", (json_int_t)st.files,
        "messages", (json_int_t)st.messages, "bytes_behind",
        (json_int_t)st.bytes_behind, "bad_lines", (json_int_t)st.bad_lines,
        "ignored_files", (json_int_t)st.ignored_files, "journal_present",
        !st.journal_missing, "schema_version", st.schema_version, "backup",
        json_incref(ex)));
  else if (rc == 0) {
    printf("daemon:          not running (status read from the mirror)\n");
    printf("root:            %s\n", c->root);
    printf("mirror:          %s (schema %d)\n", jm_mirror_db_path(m),
           st.schema_version);
    printf("conversations:   %llu (%llu deleted), %llu messages\n",
           (unsigned long long)st.conversations,
           (unsigned long long)st.deleted_conversations,
           (unsigned long long)st.messages);
    printf("bytes behind:    %llu%s\n", (unsigned long long)st.bytes_behind,
           st.bytes_behind ? " (run 'jmirror ingest' or start jmirrord)" : "");
    printf("bad lines:       %llu\n", (unsigned long long)st.bad_lines);
    printf("ignored files:   %llu\n", (unsigned long long)st.ignored_files);
    if (st.journal_missing)
      printf("journal:         MISSING\n");
    print_exclusion(ex);
  }
  json_decref(ex);
  jm_mirror_close(m);
  return rc ? cli_fail(&err) : EXIT_OK;
}

int cmd_status(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands)
    return cli_usage(c, "takes no arguments");
  int json = o.values[0] != NULL;
  json_t *req = json_pack("{s:s}", "cmd", "status"), *resp;
  rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc < 0)
    return -rc;
  if (rc == 0)
    return status_from_mirror(c, json);
  json_t *ex = exclusion_json(json_string_value(json_object_get(resp, "mirror")));
  json_object_set_new(resp, "daemon", json_true());
  json_object_del(resp, "ok");
  if (json) {
    json_object_set(resp, "backup", ex);
    cli_print_json(json_incref(resp));
  } else {
    print_daemon(resp);
    print_exclusion(ex);
  }
  json_decref(ex);
  json_decref(resp);
  return EXIT_OK;
}
