/* A thread blocked in each interposed cancellation point (clock_nanosleep, the condvar waits,
 * sem_clockwait, pthread_clockjoin_np) is cancelled: glibc's forced unwind must pass through
 * the interposer. Prints "cancelled N" for N threads and exits 0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static struct timespec far(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += 60;
    return t;
}

static void *nanosleeper(void *a) {
    (void)a;
    struct timespec d = far();
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
    return NULL;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static void unlock(void *m) { pthread_mutex_unlock(m); }

static void *condwaiter(void *a) {
    pthread_condattr_t at;
    pthread_condattr_init(&at);
    pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
    static pthread_cond_t c1, c2;
    pthread_cond_init(&c1, &at);
    pthread_cond_init(&c2, NULL);
    struct timespec d = far();
    pthread_mutex_lock(&mu);
    pthread_cleanup_push(unlock, &mu);
    if (a)
        pthread_cond_timedwait(&c1, &mu, &d);
    else
        pthread_cond_clockwait(&c2, &mu, CLOCK_MONOTONIC, &d);
    pthread_cleanup_pop(1);
    return NULL;
}

static void *semwaiter(void *a) {
    (void)a;
    static sem_t s;
    sem_init(&s, 0, 0);
    struct timespec d = far();
    sem_clockwait(&s, CLOCK_MONOTONIC, &d);
    return NULL;
}

static void *forever(void *a) {
    (void)a;
    pause();
    return NULL;
}

static void *joiner(void *a) {
    (void)a;
    pthread_t t;
    pthread_create(&t, NULL, forever, NULL);
    struct timespec d = far();
    pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, &d);
    return NULL;
}

int main(void) {
    alarm(10);
    void *(*fns[])(void *) = {nanosleeper, condwaiter, condwaiter, semwaiter, joiner};
    void *args[] = {NULL, (void *)1, NULL, NULL, NULL};
    int n = 0;
    for (int i = 0; i < 5; i++) {
        pthread_t t;
        pthread_create(&t, NULL, fns[i], args[i]);
        usleep(100000);
        pthread_cancel(t);
        void *res;
        pthread_join(t, &res);
        if (res == PTHREAD_CANCELED) n++;
    }
    printf("cancelled %d\n", n);
    return n == 5 ? 0 : 1;
}
