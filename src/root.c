/*
 * root.c - where the journal root is.
 *
 * Order: an explicit --root, then $JMIRROR_ROOT, then the platform's place
 * for an application's own data:
 *   macOS  ~/Library/Application Support/jmirror
 *   other  $XDG_DATA_HOME/jmirror (XDG: only if set and absolute),
 *          else ~/.local/share/jmirror
 * The home directory comes from $HOME, else the password database.
 */
#include "internal.h"
#include "jmirror/journal.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *home_dir(void) {
  const char *h = getenv("HOME");
  if (h != NULL && h[0] == '/')
    return h;
  struct passwd *pw = getpwuid(getuid());
  return pw != NULL ? pw->pw_dir : NULL;
}

int jm_root_resolve(const char *flag, char **out, jm_error *err) {
  *out = NULL;
  const char *r = flag;
  if (r == NULL || r[0] == '\0')
    r = getenv("JMIRROR_ROOT");
  if (r != NULL && r[0] != '\0') {
    *out = jm__strdup(r);
    return *out ? 0 : jm__errf(err, -ENOMEM, "out of memory");
  }
#ifdef __APPLE__
  const char *home = home_dir();
  if (home == NULL)
    return jm__errf(err, -ENOENT, "cannot find the home directory; "
                    "pass --root or set JMIRROR_ROOT");
  *out = jm__asprintf("%s/Library/Application Support/jmirror", home);
#else
  const char *xdg = getenv("XDG_DATA_HOME");
  if (xdg != NULL && xdg[0] == '/') {
    *out = jm__asprintf("%s/jmirror", xdg);
  } else {
    const char *home = home_dir();
    if (home == NULL)
      return jm__errf(err, -ENOENT, "cannot find the home directory; "
                      "pass --root or set JMIRROR_ROOT");
    *out = jm__asprintf("%s/.local/share/jmirror", home);
  }
#endif
  return *out ? 0 : jm__errf(err, -ENOMEM, "out of memory");
}
