// One seccomp user notification's round trip, as vt's supervisor makes it: a tracee opens a
// file N times with a raw `openat` that the filter sends to a supervisor, which reads the
// path from the tracee's memory, looks it up (`statx`) and lets the call continue.
//
//   notify_round_trip CALLS MODE
//
// MODE 0: no SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP at all (the kernel's default);
// MODE 1: the flag set while the supervisor waits (it is woken on the tracee's CPU) and
//         cleared around each reply (the scheduler places the woken tracee): vt's once a
//         second tracee thread has stopped;
// MODE 2: the flag kept for replies too (the tracee is woken on the supervisor's CPU):
//         vt's while one tracee thread is alone.
// Prints the microseconds per call, as the tracee sees it. Linux >= 6.6 for MODEs 1-2.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#define SYNC_WAKE_UP 1UL

// A syscall instruction of our own: libc's `syscall()` may be interposed by a preload.
static long raw_syscall(long nr, long a, long b, long c) {
    long ret;
    register long r10 asm("r10") = 0;
    asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CALLS MODE\n", argv[0]);
        return 2;
    }
    int calls = atoi(argv[1]), mode = atoi(argv[2]);
    int to_parent[2], go[2];
    if (pipe(to_parent) || pipe(go)) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        struct sock_filter program[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog fprog = {sizeof program / sizeof program[0], program};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) die("no_new_privs");
        int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
        if (listener < 0) die("seccomp");
        if (write(to_parent[1], &listener, sizeof listener) != sizeof listener) die("write");
        char byte;
        if (read(go[0], &byte, 1) != 1) die("read");
        close(listener);
        const char *path = "/etc/hostname";
        double start = now_us();
        for (int i = 0; i < calls; i++) {
            long fd = raw_syscall(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) raw_syscall(SYS_close, fd, 0, 0);
        }
        printf("%.2f\n", (now_us() - start) / calls);
        fflush(stdout);
        _exit(0);
    }
    int child_listener;
    if (read(to_parent[0], &child_listener, sizeof child_listener) != sizeof child_listener) die("read");
    int pidfd = syscall(SYS_pidfd_open, child, 0);
    int fd = syscall(SYS_pidfd_getfd, pidfd, child_listener, 0);
    if (pidfd < 0 || fd < 0) die("pidfd_getfd");
    if (mode >= 1 && ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP)) die("SET_FLAGS (Linux >= 6.6)");
    if (write(go[1], "g", 1) != 1) die("write");
    static char path[4096];
    for (;;) {
        struct pollfd ready = {fd, POLLIN, 0};
        if (poll(&ready, 1, -1) < 0) continue;
        if (!(ready.revents & POLLIN)) break;
        struct seccomp_notif request;
        memset(&request, 0, sizeof request);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &request)) continue;
        struct iovec local = {path, sizeof path}, remote = {(void *)request.data.args[1], sizeof path};
        process_vm_readv(request.pid, &local, 1, &remote, 1, 0);
        path[sizeof path - 1] = 0;
        struct statx found;
        statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &found);
        if (mode == 1) ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, 0UL);
        struct seccomp_notif_resp reply = {request.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE};
        ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &reply);
        if (mode == 1) ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP);
    }
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
