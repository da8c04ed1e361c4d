// A command run under a fanotify group like vt's second source, and nothing else: the group
// (FAN_REPORT_DFID_NAME, unlimited queue) marks the whole file system holding DIR for vt's
// events (opens, execs, changes), nobody reads it while the command runs, and its events are
// counted after. What the kernel's side of the cross-check costs the task, without vt.
//
//   fanotify_group DIR|- COMMAND [ARG...]     (- : no group, the same fork and wait)
//
// Prints "EVENTS" on stderr (the events queued, by the command and anything else on that
// file system meanwhile). Needs CAP_SYS_ADMIN (a file system mark).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR|- COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    int group = -1;
    if (strcmp(argv[1], "-") != 0) {
        group = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_REPORT_DFID_NAME,
                              O_RDONLY | O_LARGEFILE);
        unsigned long long mask = FAN_OPEN | FAN_OPEN_EXEC | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_CREATE | FAN_DELETE |
                                  FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ONDIR;
        if (group < 0 || fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, argv[1])) {
            perror("fanotify");
            return 1;
        }
    }
    pid_t child = fork();
    if (child == 0) {
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    long events = 0;
    static char buffer[1 << 20];
    for (ssize_t n; group >= 0 && (n = read(group, buffer, sizeof buffer)) > 0;) {
        for (struct fanotify_event_metadata *m = (void *)buffer; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) events++;
    }
    fprintf(stderr, "%ld\n", events);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
