/* bench [N]: ns per clock_gettime(CLOCK_MONOTONIC) over N calls (default 10M). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    struct timespec a, b, t;
    clock_gettime(CLOCK_REALTIME, &a);
    for (long i = 0; i < n; i++) clock_gettime(CLOCK_MONOTONIC, &t);
    clock_gettime(CLOCK_REALTIME, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.2f ns/call\n", ns / n);
    return 0;
}
