/* The first clock reads of a process, made where the library has not looked up the offset store
 * yet: "threads N" starts N threads that all read CLOCK_MONOTONIC at once as their first act
 * (one of them opens the store, the others wait for it); "fork" forks before any clock read and
 * reads in the child, then in the parent. One "mono LABEL sec nsec" line per reading. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static pthread_barrier_t start;
static struct timespec seen[MAX_THREADS];

static void *reader(void *arg) {
    long i = (long)arg;
    pthread_barrier_wait(&start);
    clock_gettime(CLOCK_MONOTONIC, &seen[i]);
    return NULL;
}

static void print(const char *label, const struct timespec *ts) {
    printf("mono %s %lld %ld\n", label, (long long)ts->tv_sec, ts->tv_nsec);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "threads") == 0) {
        long n = atol(argv[2]);
        if (n < 1 || n > MAX_THREADS)
            return 2;
        pthread_t t[MAX_THREADS];
        pthread_barrier_init(&start, NULL, (unsigned)n);
        for (long i = 0; i < n; i++)
            if (pthread_create(&t[i], NULL, reader, (void *)i) != 0)
                return 3;
        for (long i = 0; i < n; i++)
            pthread_join(t[i], NULL);
        for (long i = 0; i < n; i++) {
            char label[32];
            snprintf(label, sizeof label, "thread%ld", i);
            print(label, &seen[i]);
        }
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "fork") == 0) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            return 4;
        struct timespec ts;
        if (pid == 0) {
            clock_gettime(CLOCK_MONOTONIC, &ts);
            print("child", &ts);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return 5;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        print("parent", &ts);
        return 0;
    }
    fprintf(stderr, "usage: first_use threads N | first_use fork\n");
    return 2;
}
