/* ns steps | ns exec PROGRAM: the namespace calls through the clock library, printing one
 * "key value..." line per observation (the test checks them).
 *
 * steps: unshare (A1), write offsets into the pending namespace, fork (B1), clone3 with
 * CLONE_NEWTIME (A11), setns errors and setns into time_for_children (B5, B6).
 * exec: unshare, write offsets, exec PROGRAM (B4: it runs in the new namespace). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x80
#endif

static void link_of(const char *name, char *out, size_t len) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/ns/%s", name);
    ssize_t n = readlink(path, out, len - 1);
    out[n < 0 ? 0 : n] = 0;
}

static void links(const char *step) {
    char t[64], c[64];
    link_of("time", t, sizeof t);
    link_of("time_for_children", c, sizeof c);
    printf("%s_time %s\n%s_tfc %s\n", step, t, step, c);
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_offsets(const char *text) {
    int fd = open("/proc/self/timens_offsets", O_WRONLY);
    if (fd < 0) return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    return n < 0 ? -e : 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(15);
    if (argc == 3 && !strcmp(argv[1], "exec")) {
        if (unshare(CLONE_NEWTIME) != 0) { printf("unshare_errno %d\n", errno); return 1; }
        int w = write_offsets("monotonic 7200 0\nboottime 172800 0\n");
        if (w != 0) { printf("write_errno %d\n", -w); return 1; }
        execv(argv[2], argv + 2);
        printf("exec_errno %d\n", errno);
        return 1;
    }
    links("start");
    double m0 = mono();
    printf("unshare %d\n", unshare(CLONE_NEWTIME) == 0 ? 0 : errno);
    links("unshared");
    printf("unshare_delta %.0f\n", mono() - m0);
    printf("write %d\n", write_offsets("monotonic 7200 0\nboottime 172800 0\n"));

    double before = mono();
    pid_t pid = fork();
    if (pid == 0) {
        links("forked");
        printf("fork_delta %.0f\n", mono() - before);
        _exit(0);
    }
    waitpid(pid, NULL, 0);

    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.flags = CLONE_NEWTIME;
    ca.exit_signal = SIGCHLD;
    before = mono();
    long c = syscall(SYS_clone3, &ca, sizeof ca);
    if (c == 0) {
        printf("clone3_child_delta %.0f\n", mono() - before);
        usleep(300000); /* the parent tells the daemon where the child is */
        links("clone3_child");
        _exit(0);
    }
    printf("clone3 %d\n", c > 0 ? 0 : errno);
    if (c > 0) waitpid((pid_t)c, NULL, 0);

    int fd = open("/proc/self/ns/time_for_children", O_RDONLY);
    printf("setns_newnet %d\n", setns(fd, CLONE_NEWNET) == 0 ? 0 : errno);
    int other = open("/etc/hostname", O_RDONLY);
    printf("setns_regular_file %d\n", setns(other, 0) == 0 ? 0 : errno);
    printf("setns_bad_fd %d\n", setns(12345, CLONE_NEWTIME) == 0 ? 0 : errno);
    before = mono();
    printf("setns %d\n", setns(fd, CLONE_NEWTIME) == 0 ? 0 : errno);
    printf("setns_delta %.0f\n", mono() - before);
    links("entered");
    return 0;
}
