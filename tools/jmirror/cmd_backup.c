/*
 * cmd_backup.c - `jmirror backup DEST [--with-mirror] [--json]` and
 * `jmirror backup --check DEST [--json]` (docs/backups.md).
 */
#include "cli.h"

#include <jansson.h>
#include <string.h>

typedef struct reports {
  int json;
  json_t *items; /* --json: {"file", "what"} */
  unsigned long long n;
} reports;

static void on_report(void *ctx, const char *file, const char *what) {
  reports *r = ctx;
  r->n++;
  if (r->json)
    json_array_append_new(r->items,
                          json_pack("{s:s,s:s}", "file", file, "what", what));
  else
    fprintf(stderr, "jmirror: backup: %s: %s\n", file, what);
}

static int run_check(const char *dest, int json) {
  reports r = {json, json ? json_array() : NULL, 0};
  jm_backup_check_result res;
  jm_error err;
  jm_error_clear(&err);
  progress p;
  progress_init(&p, "check");
  int rc = jm_backup_check(dest, on_report, &r, progress_cb, &p, &res, &err);
  progress_done(&p);
  if (rc != 0) {
    json_decref(r.items);
    return cli_fail(&err);
  }
  int ok = res.bad == 0 && res.mirror != 0;
  if (json)
    cli_print_json(json_pack("{s:b,s:I,s:I,s:I,s:I,s:o,s:o}", "ok", ok,
                             "files", (json_int_t)res.files, "files_ok",
                             (json_int_t)res.ok, "files_bad",
                             (json_int_t)res.bad, "extra",
                             (json_int_t)res.extra, "mirror",
                             res.mirror < 0 ? json_null()
                                            : json_boolean(res.mirror),
                             "problems", r.items));
  else
    printf("checked %llu files: %llu ok, %llu bad, %llu not in the manifest"
           "%s\n",
           (unsigned long long)res.files, (unsigned long long)res.ok,
           (unsigned long long)res.bad, (unsigned long long)res.extra,
           res.mirror < 0 ? "" : res.mirror ? "; mirror snapshot ok"
                                            : "; mirror snapshot BAD");
  return ok ? EXIT_OK : EXIT_FAIL;
}

int cmd_backup(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"with-mirror", 0}, {"check", 0}, {"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands != 1)
    return cli_usage(c, "give the backup directory DEST");
  if (o.operands[0][0] == '\0')
    return cli_usage(c, "the backup directory DEST is an empty string");
  int json = o.values[2] != NULL;
  if (o.values[1])
    return run_check(o.operands[0], json);
  reports r = {json, json ? json_array() : NULL, 0};
  jm_backup_options bo = {o.values[0] != NULL, c->mirror_flag, progress_cb,
                          NULL, on_report, &r};
  progress p;
  progress_init(&p, "backup");
  bo.progress_ctx = &p;
  jm_backup_stats st;
  jm_error err;
  jm_error_clear(&err);
  rc = jm_backup(c->root, o.operands[0], &bo, &st, &err);
  progress_done(&p);
  if (rc != 0) {
    json_decref(r.items);
    return rc == JM_EUSAGE ? cli_usage(c, "%s", err.msg) : cli_fail(&err);
  }
  if (json)
    cli_print_json(json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:o}", "files",
        (json_int_t)st.files, "new", (json_int_t)st.new_files, "appended",
        (json_int_t)st.appended, "unchanged", (json_int_t)st.unchanged,
        "recopied", (json_int_t)st.recopied, "kept", (json_int_t)st.kept,
        "bytes_copied", (json_int_t)st.bytes_copied, "bytes_total",
        (json_int_t)st.bytes_total, "mirror_bytes",
        (json_int_t)st.mirror_bytes, "seconds", st.seconds, "reports",
        r.items));
  else
    printf("backed up %llu files to %s: %llu new, %llu appended, %llu "
           "unchanged, %llu copied whole, %llu kept; %.1f MB copied of %.1f "
           "MB%s in %.2f s\n",
           (unsigned long long)st.files, o.operands[0],
           (unsigned long long)st.new_files, (unsigned long long)st.appended,
           (unsigned long long)st.unchanged, (unsigned long long)st.recopied,
           (unsigned long long)st.kept, (double)st.bytes_copied / 1e6,
           (double)st.bytes_total / 1e6,
           st.mirror_bytes ? " (+ mirror snapshot)" : "", st.seconds);
  return EXIT_OK;
}
