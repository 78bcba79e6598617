/* waits MODE near|past: one absolute-deadline wait, deadline = now + 0.2 s read from the
 * program's own (possibly shifted) clock, or absolute 500 s (the *_relative modes: a relative
 * 0.2 s or 0; the *_realtime modes use CLOCK_REALTIME, which is never translated). Prints "elapsed <ns> result <r>"
 * and exits 0 if the wait ended the expected way. A 10 s alarm is the watchdog: a wait whose
 * deadline was not translated hangs and dies of SIGALRM. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static struct timespec deadline(clockid_t c, int past) {
    struct timespec t;
    if (past) {
        t.tv_sec = 500;
        t.tv_nsec = 0;
        return t;
    }
    clock_gettime(c, &t);
    t.tv_nsec += 200000000;
    if (t.tv_nsec >= 1000000000) {
        t.tv_nsec -= 1000000000;
        t.tv_sec++;
    }
    return t;
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static sem_t held;

static void *hold_write_lock(void *arg) {
    (void)arg;
    pthread_rwlock_wrlock(&rw);
    sem_post(&held);
    sleep(30);
    return NULL;
}

static void *sleeper(void *arg) {
    (void)arg;
    sleep(30);
    return NULL;
}

static int timer_mode(clockid_t c, int past, int raw) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value = deadline(c, past);
    if (raw == 2) {
        /* More timers than the library's table holds: the last one's clock comes from
         * /proc/self/timers. */
        timer_t t;
        for (int i = 0; i < 300; i++)
            if (timer_create(c, &ev, &t) != 0) return -errno;
        if (timer_settime(t, TIMER_ABSTIME, &its, NULL) != 0) return -errno;
    } else if (raw) {
        int kid;
        if (syscall(SYS_timer_create, c, &ev, &kid) != 0) return -errno;
        if (syscall(SYS_timer_settime, kid, TIMER_ABSTIME, &its, NULL) != 0) return -errno;
    } else {
        timer_t t;
        if (timer_create(c, &ev, &t) != 0) return -errno;
        if (timer_settime(t, TIMER_ABSTIME, &its, NULL) != 0) return -errno;
    }
    struct timespec limit = {5, 0};
    return sigtimedwait(&set, NULL, &limit) == SIGUSR1 ? 0 : -errno;
}

static int timerfd_mode(clockid_t c, int past, int raw) {
    int fd = raw ? (int)syscall(SYS_timerfd_create, c, 0) : timerfd_create(c, 0);
    if (fd < 0) return -errno;
    if (raw == 2) {
        /* A copy the library never saw created: its clock comes from /proc/self/fdinfo. */
        int copy = dup(fd);
        close(fd);
        fd = copy;
    }
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value = deadline(c, past);
    int rc = raw ? (int)syscall(SYS_timerfd_settime, fd, TFD_TIMER_ABSTIME, &its, NULL)
                 : timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
    if (rc != 0) return -errno;
    uint64_t ticks;
    return read(fd, &ticks, sizeof ticks) == sizeof ticks ? 0 : -errno;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: waits MODE near|past\n");
        return 2;
    }
    const char *m = argv[1];
    int past = strcmp(argv[2], "past") == 0;
    alarm(10);
    long long start = now_ns();
    int r = -1000, ok = 0;
    if (!strcmp(m, "clock_nanosleep")) {
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
        ok = r == 0;
    } else if (!strcmp(m, "clock_nanosleep_boottime")) {
        struct timespec d = deadline(CLOCK_BOOTTIME, past);
        r = clock_nanosleep(CLOCK_BOOTTIME, TIMER_ABSTIME, &d, NULL);
        ok = r == 0;
    } else if (!strcmp(m, "clock_nanosleep_realtime")) {
        struct timespec d = deadline(CLOCK_REALTIME, past);
        r = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &d, NULL);
        ok = r == 0;
    } else if (!strcmp(m, "clock_nanosleep_relative")) {
        struct timespec d = {0, past ? 0 : 200000000};
        r = clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);
        ok = r == 0;
    } else if (!strcmp(m, "futex_wait_relative")) {
        uint32_t word = 0;
        struct timespec d = {0, past ? 0 : 200000000};
        r = (int)syscall(SYS_futex, &word, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 0, &d, NULL, 0) == 0
                ? 0 : errno;
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "sys_clock_nanosleep")) {
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = (int)syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
        ok = r == 0;
    } else if (!strcmp(m, "timer_settime")) {
        r = timer_mode(CLOCK_MONOTONIC, past, 0);
        ok = r == 0;
    } else if (!strcmp(m, "timer_settime_boottime")) {
        r = timer_mode(CLOCK_BOOTTIME, past, 0);
        ok = r == 0;
    } else if (!strcmp(m, "sys_timer_settime")) {
        r = timer_mode(CLOCK_MONOTONIC, past, 1);
        ok = r == 0;
    } else if (!strcmp(m, "timer_settime_untracked")) {
        r = timer_mode(CLOCK_MONOTONIC, past, 2);
        ok = r == 0;
    } else if (!strcmp(m, "timerfd_settime_dup")) {
        r = timerfd_mode(CLOCK_MONOTONIC, past, 2);
        ok = r == 0;
    } else if (!strcmp(m, "timerfd_settime")) {
        r = timerfd_mode(CLOCK_MONOTONIC, past, 0);
        ok = r == 0;
    } else if (!strcmp(m, "timerfd_settime_boottime")) {
        r = timerfd_mode(CLOCK_BOOTTIME, past, 0);
        ok = r == 0;
    } else if (!strcmp(m, "sys_timerfd_settime")) {
        r = timerfd_mode(CLOCK_MONOTONIC, past, 1);
        ok = r == 0;
    } else if (!strcmp(m, "pthread_cond_timedwait")) {
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_t c;
        pthread_cond_init(&c, &a);
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&mu);
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = pthread_cond_timedwait(&c, &mu, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "pthread_cond_timedwait_realtime")) {
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&mu);
        struct timespec d = deadline(CLOCK_REALTIME, past);
        r = pthread_cond_timedwait(&c, &mu, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "pthread_cond_clockwait")) {
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&mu);
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = pthread_cond_clockwait(&c, &mu, CLOCK_MONOTONIC, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "sem_clockwait")) {
        sem_t s;
        sem_init(&s, 0, 0);
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = sem_clockwait(&s, CLOCK_MONOTONIC, &d) == 0 ? 0 : errno;
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "pthread_mutex_clocklock")) {
        pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_lock(&mu);
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = pthread_mutex_clocklock(&mu, CLOCK_MONOTONIC, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "pthread_rwlock_clockrdlock") || !strcmp(m, "pthread_rwlock_clockwrlock")) {
        pthread_t t;
        sem_init(&held, 0, 0);
        pthread_create(&t, NULL, hold_write_lock, NULL);
        sem_wait(&held);
        start = now_ns();
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = m[21] == 'r' ? pthread_rwlock_clockrdlock(&rw, CLOCK_MONOTONIC, &d)
                         : pthread_rwlock_clockwrlock(&rw, CLOCK_MONOTONIC, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "pthread_clockjoin_np")) {
        pthread_t t;
        pthread_create(&t, NULL, sleeper, NULL);
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, &d);
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "futex_wait_bitset")) {
        uint32_t word = 0;
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = (int)syscall(SYS_futex, &word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, &d, NULL,
                         FUTEX_BITSET_MATCH_ANY) == 0 ? 0 : errno;
        ok = r == ETIMEDOUT;
    } else if (!strcmp(m, "futex_waitv")) {
        uint32_t word = 0;
        struct futex_waitv w;
        memset(&w, 0, sizeof w);
        w.val = 0;
        w.uaddr = (uintptr_t)&word;
        w.flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
        struct timespec d = deadline(CLOCK_MONOTONIC, past);
        r = (int)syscall(SYS_futex_waitv, &w, 1, 0, &d, CLOCK_MONOTONIC) >= 0 ? 0 : errno;
        ok = r == ETIMEDOUT;
    } else {
        fprintf(stderr, "unknown mode %s\n", m);
        return 2;
    }
    printf("elapsed %lld result %d\n", now_ns() - start, r);
    return ok ? 0 : 1;
}
