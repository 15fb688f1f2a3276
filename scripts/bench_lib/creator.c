/* Benchmark 1's creator: empty files at a steady rate, faster than any Python loop.
 *
 *   creator DIR RATE SECONDS
 *
 * Creates RATE * SECONDS files named DIR/fNNNNNNN (open O_CREAT|O_EXCL, close) in 1 ms
 * ticks, sleeping between ticks so that it does not take the core the reader under test
 * needs; gives up at 3x the planned duration plus 5 s. Prints one line:
 *   CREATED TARGET SECONDS LAST_CREATE_AT
 * with LAST_CREATE_AT on CLOCK_MONOTONIC, the clock of Python's time.monotonic().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: creator DIR RATE SECONDS\n");
        return 2;
    }
    const char *dir = argv[1];
    double rate = atof(argv[2]);
    double seconds = atof(argv[3]);
    long target = (long)(rate * seconds);
    double started = now();
    double give_up = started + seconds * 3 + 5;
    long created = 0;
    char path[4096];
    struct timespec tick = {0, 1000000};
    while (created < target) {
        double t = now();
        if (t > give_up)
            break;
        long due = (long)((t - started) * rate) + 1;
        if (due > target)
            due = target;
        while (created < due) {
            snprintf(path, sizeof path, "%s/f%07ld", dir, created);
            int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
            if (fd < 0) {
                fprintf(stderr, "creator: %s: %s\n", path, strerror(errno));
                return 1;
            }
            close(fd);
            created++;
        }
        if (created < target)
            nanosleep(&tick, NULL);
    }
    double finished = now();
    printf("%ld %ld %.6f %.6f\n", created, target, finished - started, finished);
    return 0;
}
