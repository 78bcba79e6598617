/* Prints bit 1 of the u32 at byte 36 of a pthread_cond_t (glibc's __data.__wrefs) for a
 * default and a CLOCK_MONOTONIC condvar: the library reads the condvar's clock there. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static unsigned bit(pthread_cond_t *c) {
    uint32_t w;
    memcpy(&w, (char *)c + 36, sizeof w);
    return (w >> 1) & 1;
}

int main(void) {
    pthread_cond_t plain, mono, rt;
    pthread_condattr_t a;
    pthread_cond_init(&plain, NULL);
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&mono, &a);
    pthread_condattr_setclock(&a, CLOCK_REALTIME);
    pthread_cond_init(&rt, &a);
    printf("size %zu plain %u realtime %u monotonic %u\n", sizeof(pthread_cond_t), bit(&plain),
           bit(&rt), bit(&mono));
    return 0;
}
