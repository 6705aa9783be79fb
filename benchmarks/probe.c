/* Two figures that tell apart the states of a (virtual) machine, for benchmarks/probe.py:
 * the clock a core runs at, and the round trip of a cache line between two cores. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* GHz: a chain of dependent adds retires one add a cycle; 8 per iteration, the loop's own
 * counter runs beside the chain. */
double clock_ghz(int64_t iterations) {
  uint64_t x = 0;
  double start = now();
  for (int64_t i = 0; i < iterations; ++i) {
    __asm__ volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        : "+r"(x));
  }
  return 8.0 * iterations / (now() - start) / 1e9;
}

static _Alignas(64) _Atomic int64_t ball;
static int64_t rounds;

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void* partner(void* arg) {
  pin((int)(intptr_t)arg);
  for (int64_t i = 0; i < rounds; ++i) {
    while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * i + 1) {
    }
    atomic_store_explicit(&ball, 2 * i + 2, memory_order_release);
  }
  return 0;
}

/* Nanoseconds for one round trip of a cache line between CPUs a and b (each side waits for
 * the other's write), or -1 if the partner thread cannot start. */
double round_trip_ns(int a, int b, int64_t n) {
  pthread_t thread;
  cpu_set_t saved;
  pthread_getaffinity_np(pthread_self(), sizeof saved, &saved);
  rounds = n;
  atomic_store(&ball, 0);
  if (pthread_create(&thread, 0, partner, (void*)(intptr_t)b) != 0) return -1.0;
  pin(a);
  double start = now();
  for (int64_t i = 0; i < n; ++i) {
    atomic_store_explicit(&ball, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * i + 2) {
    }
  }
  double seconds = now() - start;
  pthread_join(thread, 0);
  pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  return seconds / n * 1e9;
}
