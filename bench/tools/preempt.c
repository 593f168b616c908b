/* What preemption costs a hash on this machine: runs THREADS threads that each wake every
 * SLEEP_US microseconds and touch KIB KiB of their own memory (a stand-in for the tokio
 * workers and SQLite threads a login wakes), for SECONDS seconds. Run it beside
 * `argon2_time 30 2` under `perf stat -e task-clock,context-switches` and compare the hash
 * threads' CPU per hash with and without it (docs/BENCHMARKS.md, "Login on the model-167
 * guest"). Not part of the build:
 *
 *   cc -O2 -pthread -o bench/out/preempt bench/tools/preempt.c
 *   bench/out/preempt KIB SLEEP_US THREADS SECONDS
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static size_t kib;
static long sleep_us;

static void *run(void *arg) {
  (void)arg;
  volatile char *buf = calloc(kib ? kib * 1024 : 1, 1);
  if (!buf) return NULL;
  struct timespec ts = {sleep_us / 1000000, (sleep_us % 1000000) * 1000};
  for (;;) {
    nanosleep(&ts, NULL);
    for (size_t i = 0; i < kib * 1024; i += 64) buf[i]++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s KIB SLEEP_US THREADS SECONDS\n", argv[0]);
    return 2;
  }
  kib = strtoul(argv[1], NULL, 10);
  sleep_us = strtol(argv[2], NULL, 10);
  int threads = atoi(argv[3]);
  if (threads < 1 || threads > 64 || sleep_us < 1) {
    fprintf(stderr, "THREADS must be 1-64 and SLEEP_US at least 1\n");
    return 2;
  }
  pthread_t t;
  for (int i = 0; i < threads; i++)
    if (pthread_create(&t, NULL, run, NULL) != 0) return 1;
  sleep((unsigned)atoi(argv[4]));
  return 0;
}
