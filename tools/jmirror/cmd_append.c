/*
 * cmd_append.c - `jmirror append <id> [EVENT_JSON | -] [--sync MODE]`.
 *
 * One event from the command line, or many from standard input (one per
 * line: bulk import).  In bulk mode every line is validated and written on
 * its own: a refused line is reported by its input line number and the rest
 * go on; an I/O error (disk full) stops the import, since every later line
 * would fail the same way, and nothing already written is lost.
 */
#include "cli.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct bulk {
  unsigned long long written, refused;
  unsigned long long first_refused[8]; /* line numbers, for the summary */
} bulk;

/* Where the last successful append ended, so that the command can wait
 * for jmirrord to ingest it before exiting. */
static uint64_t last_end;

static int append_one(jm_journal *j, const char *id, const char *s, size_t n,
                      jm_error *err) {
  jm_append_info info;
  int rc = jm_journal_append(j, id, s, n, &info, err);
  if (rc == 0)
    last_end = info.end;
  return rc;
}

/* When jmirrord owns the mirror, return once it has ingested what we
 * wrote, so that the next command (`jmirror show`, `ls`) sees it.  Bounded;
 * a slow daemon is not a failure of the append. */
static void wait_visible(cli *c, const char *id) {
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = 0, .max_line = 0};
  char *db = jm_mirror_resolve_path(c->root, &opt);
  long pid;
  char who[64];
  if (db && last_end > 0 && jm_mirror_lock_holder(db, &pid, who) == 1 &&
      strcmp(who, "jmirrord") == 0)
    jm_daemon_wait(db, id, last_end, 2000, NULL);
  free(db);
}

static void note_refused(bulk *b, unsigned long long line, const char *msg) {
  cli_err("stdin line %llu: %s", line, msg);
  if (b->refused < 8)
    b->first_refused[b->refused] = line;
  b->refused++;
}

/* Handle one framed input line; returns 0 to go on, or an I/O error. */
static int bulk_line(jm_journal *j, const char *id, bulk *b, int status,
                     jm_read *rd, jm_error *err) {
  if (status == JM_READ_BAD) {
    note_refused(b, rd->line, rd->bad.msg);
    return 0;
  }
  int rc = append_one(j, id, rd->raw, rd->raw_len, err);
  if (rc == 0) {
    b->written++;
    return 0;
  }
  if (rc == JM_EEVENT) {
    note_refused(b, rd->line, err->msg);
    return 0;
  }
  return rc;
}

static int bulk_run(jm_journal *j, const char *id, bulk *b, jm_error *err) {
  jm_reader *r = jm_reader_new(NULL, 0);
  if (r == NULL)
    return -ENOMEM;
  jm_reader_set_raw(r, 1);
  static char buf[1 << 16];
  int rc = 0, eof = 0;
  while (rc == 0 && !eof) {
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      snprintf(err->msg, sizeof err->msg, "cannot read standard input: %s",
               strerror(errno));
      break;
    }
    if (n == 0) {
      /* A last line without LF is still a line of input. */
      eof = 1;
      if (jm_reader_pending(r) == 0)
        break;
      buf[0] = '\n';
      n = 1;
    }
    jm_reader_feed(r, buf, (size_t)n);
    jm_read rd;
    int st;
    while (rc == 0 && (st = jm_reader_next(r, &rd)) != JM_READ_NEED_MORE) {
      if (st < 0)
        rc = st;
      else
        rc = bulk_line(j, id, b, st, &rd, err);
    }
  }
  jm_reader_free(r);
  return rc;
}

static void print_summary(const char *id, const bulk *b) {
  printf("appended %llu event%s to '%s'", b->written,
         b->written == 1 ? "" : "s", id);
  if (b->refused) {
    printf(", refused %llu (line%s", b->refused, b->refused == 1 ? "" : "s");
    for (unsigned long long i = 0; i < b->refused && i < 8; i++)
      printf("%s %llu", i ? "," : "", b->first_refused[i]);
    printf("%s)", b->refused > 8 ? ", ..." : "");
  }
  printf("\n");
}

int cmd_append(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"sync", 1}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands < 1)
    return cli_usage(c, "missing conversation id");
  if (o.n_operands > 2)
    return cli_usage(c, "too many arguments (quote the event JSON)");
  const char *id = o.operands[0];
  jm_error err;
  jm_error_clear(&err);
  if (jm_id_check(id, strlen(id), &err) != 0)
    return cli_fail(&err);

  jm_journal_options opt;
  jm_journal_options_init(&opt);
  if (o.values[0] && jm_sync_parse(o.values[0], &opt.sync) != 0)
    return cli_usage(c, "--sync must be always, batch or none, not '%s'",
                     o.values[0]);
  jm_journal *j;
  if (jm_journal_open(&j, c->root, &opt, &err) != 0)
    return cli_fail(&err);

  const char *event = o.n_operands == 2 ? o.operands[1] : "-";
  int status = EXIT_OK;
  if (strcmp(event, "-") != 0) {
    if (append_one(j, id, event, strlen(event), &err) != 0) {
      if (err.code == JM_EEVENT)
        cli_err("refused event for '%s': %s", id, err.msg);
      else
        cli_fail(&err);
      status = EXIT_FAIL;
    }
  } else {
    bulk b = {0};
    rc = bulk_run(j, id, &b, &err);
    if (rc != 0) {
      cli_fail(&err);
      status = EXIT_FAIL;
    }
    print_summary(id, &b);
    if (b.refused)
      status = EXIT_FAIL;
  }
  jm_error_clear(&err);
  if (jm_journal_close(j, &err) != 0) {
    cli_fail(&err);
    status = EXIT_FAIL;
  }
  wait_visible(c, id);
  return status;
}
