/* Prints every clock as the program sees it, through libc and through syscall(), plus
 * sysinfo().uptime and a syscall(SYS_getpid) check. One "via clock sec nsec" line per reading,
 * "via clock err errno" on failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static const int clocks[] = {0, 1, 4, 5, 6, 7, 11, 8, 9, 2, 3};

int main(void) {
    for (unsigned i = 0; i < sizeof clocks / sizeof clocks[0]; i++) {
        struct timespec ts;
        if (clock_gettime(clocks[i], &ts) == 0)
            printf("libc %d %lld %ld\n", clocks[i], (long long)ts.tv_sec, ts.tv_nsec);
        else
            printf("libc %d err %d\n", clocks[i], errno);
        if (syscall(SYS_clock_gettime, clocks[i], &ts) == 0)
            printf("sys %d %lld %ld\n", clocks[i], (long long)ts.tv_sec, ts.tv_nsec);
        else
            printf("sys %d err %d\n", clocks[i], errno);
    }
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        printf("uptime %ld\n", si.uptime);
    struct sysinfo si2;
    if (syscall(SYS_sysinfo, &si2) == 0)
        printf("sys_uptime %ld\n", si2.uptime);
    long pid = syscall(SYS_getpid);
    printf("getpid %s\n", pid == (long)getpid() ? "ok" : "mismatch");
    errno = 0;
    long bad = syscall(SYS_clock_gettime, 12345, (void *)0);
    printf("bad_clock %ld %d\n", bad, errno);
    return 0;
}
