/* The libc entry points vt interposes on macOS (DYLD_INSERT_LIBRARIES).
 *
 * Written in C because open/openat are variadic: on Apple arm64 variadic arguments travel
 * on the stack, so only va_arg reads `mode` correctly. Each hook calls the real function
 * (dyld does not apply an image's own interpositions to calls made from inside it), then
 * hands the call and its result to Rust (src/interpose.rs), which frames and sends it.
 *
 * Compiled by build.rs only when the target is macOS. NOT compiled or run on vt's Linux CI.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

/* Rust side (src/interpose.rs). `dirfd` is resolved to a path there. */
extern void vt_report_open(int dirfd, const char *path, int flags, int result);
extern void vt_report_probe(const char *path, int follow, int result);
extern void vt_report_list(const char *path, int result);
extern void vt_report_exec(const char *path, int result);
extern void vt_report_path(int op, const char *path, int result);
extern void vt_report_rename(const char *from, const char *to, int result);
extern void vt_report_forked(pid_t child);

#define DYLD_INTERPOSE(replacement, replacee)                                        \
  __attribute__((used)) static struct {                                              \
    const void *replacement;                                                         \
    const void *replacee;                                                            \
  } _interpose_##replacee __attribute__((section("__DATA,__interpose"))) = {         \
      (const void *)(unsigned long)&replacement, (const void *)(unsigned long)&replacee};

#define RESULT(r) ((r) < 0 ? -errno : (r))

enum { OP_MKDIR = 1, OP_UNLINK = 2, OP_RMDIR = 3, OP_CHDIR = 4 };

static int vt_open(const char *path, int flags, ...) {
  mode_t mode = 0;
  if (flags & O_CREAT) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = open(path, flags, mode);
  int saved = errno;
  vt_report_open(AT_FDCWD, path, flags, RESULT(fd));
  errno = saved;
  return fd;
}
DYLD_INTERPOSE(vt_open, open)

static int vt_openat(int dirfd, const char *path, int flags, ...) {
  mode_t mode = 0;
  if (flags & O_CREAT) {
    va_list ap;
    va_start(ap, flags);
    mode = (mode_t)va_arg(ap, int);
    va_end(ap);
  }
  int fd = openat(dirfd, path, flags, mode);
  int saved = errno;
  vt_report_open(dirfd, path, flags, RESULT(fd));
  errno = saved;
  return fd;
}
DYLD_INTERPOSE(vt_openat, openat)

#define PROBE(name, follow, call, ...)                                               \
  static int vt_##name(__VA_ARGS__) {                                                \
    int r = call;                                                                    \
    int saved = errno;                                                               \
    vt_report_probe(path, follow, RESULT(r));                                        \
    errno = saved;                                                                   \
    return r;                                                                        \
  }                                                                                  \
  DYLD_INTERPOSE(vt_##name, name)

PROBE(stat, 1, stat(path, buf), const char *path, struct stat *buf)
PROBE(lstat, 0, lstat(path, buf), const char *path, struct stat *buf)
PROBE(access, 1, access(path, mode), const char *path, int mode)
PROBE(readlink, 0, (int)readlink(path, buf, size), const char *path, char *buf, size_t size)

static DIR *vt_opendir(const char *path) {
  DIR *dir = opendir(path);
  int saved = errno;
  vt_report_list(path, dir ? 0 : -errno);
  errno = saved;
  return dir;
}
DYLD_INTERPOSE(vt_opendir, opendir)

static int vt_execve(const char *path, char *const argv[], char *const envp[]) {
  vt_report_exec(path, 0); /* reported first: on success execve does not return */
  int r = execve(path, argv, envp);
  int saved = errno;
  vt_report_exec(path, -errno);
  errno = saved;
  return r;
}
DYLD_INTERPOSE(vt_execve, execve)

static int vt_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  int r = posix_spawn(pid, path, fa, attr, argv, envp);
  vt_report_exec(path, r == 0 ? 0 : -r);
  if (r == 0 && pid) vt_report_forked(*pid);
  return r;
}
DYLD_INTERPOSE(vt_posix_spawn, posix_spawn)

#define PATH_OP(name, op, call, ...)                                                 \
  static int vt_##name(__VA_ARGS__) {                                                \
    int r = call;                                                                    \
    int saved = errno;                                                               \
    vt_report_path(op, path, RESULT(r));                                             \
    errno = saved;                                                                   \
    return r;                                                                        \
  }                                                                                  \
  DYLD_INTERPOSE(vt_##name, name)

PATH_OP(mkdir, OP_MKDIR, mkdir(path, mode), const char *path, mode_t mode)
PATH_OP(unlink, OP_UNLINK, unlink(path), const char *path)
PATH_OP(rmdir, OP_RMDIR, rmdir(path), const char *path)
PATH_OP(chdir, OP_CHDIR, chdir(path), const char *path)

static int vt_rename(const char *from, const char *to) {
  int r = rename(from, to);
  int saved = errno;
  vt_report_rename(from, to, RESULT(r));
  errno = saved;
  return r;
}
DYLD_INTERPOSE(vt_rename, rename)

static pid_t vt_fork(void) {
  pid_t child = fork();
  if (child > 0) {
    int saved = errno;
    vt_report_forked(child);
    errno = saved;
  }
  return child;
}
DYLD_INTERPOSE(vt_fork, fork)
