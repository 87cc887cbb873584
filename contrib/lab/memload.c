/*
 * memload: the lab guests' anonymous-memory workload (static, runs as a child
 * of the guest's /init, which restarts it if the OOM killer takes it).
 *
 *   memload WORKLOAD [STATUS_FILE]
 *
 * WORKLOAD is the guest's `ab.workload=` value: components joined by '+'.
 * memload handles the anonymous ones and ignores the rest (idle, cache:N,
 * noballoon are done by /init):
 *   steady:MIB                  hold and keep touching MIB MiB
 *   ramp:FROM:TO:SECONDS        grow linearly from FROM to TO MiB, then hold
 *   spike:BASE:PEAK:AT[:HOLD]   BASE MiB, PEAK MiB from AT s after boot
 *                               (for HOLD s, then back to BASE; HOLD 0 = stay)
 *   thrash:MIB                  hold MIB MiB and keep freeing and re-faulting
 *                               an eighth of it (fresh allocations all the time)
 * Components add up. Times are measured since guest boot (CLOCK_BOOTTIME), so
 * a memload restarted after an OOM kill resumes the same schedule.
 *
 * The whole working set is written once every ~2 s in small slices with
 * sleeps in between, so several TCG guests on two host cores stay responsive.
 * STATUS_FILE (default /run/ws_mib) holds one line for the guest's ABREPORT,
 * rewritten whenever it changes:
 *   WS_MIB PASS_MS ALLOC_US_PER_MIB
 * WS_MIB is the current working set; PASS_MS the time spent touching it
 * during the last full pass (sleeps excluded: the harm a user of the memory
 * feels, e.g. faulting back swapped-out pages); ALLOC_US_PER_MIB the slowest
 * allocation (fresh pages faulted in, growth or thrash) of the last second,
 * in microseconds per MiB, 0 when nothing was allocated.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)
#define PAGE 4096UL
#define MAX_COMP 8
#define TICK_MS 100
#define FULL_PASS_TICKS 20 /* whole working set touched every 20 ticks */

enum kind { STEADY, RAMP, SPIKE, THRASH };

struct comp {
    enum kind kind;
    double a, b, c, d;
};

static struct comp comps[MAX_COMP];
static int ncomp;

static double mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double boot_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void parse(char *spec)
{
    char *save = NULL;
    for (char *tok = strtok_r(spec, "+", &save); tok; tok = strtok_r(NULL, "+", &save)) {
        double v[4] = {0, 0, 0, 0};
        char name[16] = {0};
        int n = sscanf(tok, "%15[a-z]:%lf:%lf:%lf:%lf", name, &v[0], &v[1], &v[2], &v[3]);
        struct comp c = {0};
        if (n >= 2 && !strcmp(name, "steady")) {
            c.kind = STEADY;
        } else if (n >= 4 && !strcmp(name, "ramp")) {
            c.kind = RAMP;
        } else if (n >= 4 && !strcmp(name, "spike")) {
            c.kind = SPIKE;
        } else if (n >= 2 && !strcmp(name, "thrash")) {
            c.kind = THRASH;
        } else {
            if (strcmp(name, "idle") && strcmp(name, "cache") && strcmp(name, "noballoon")
                && strcmp(name, "cgroup") && strcmp(name, "zram"))
                fprintf(stderr, "memload: ignoring unknown component '%s'\n", tok);
            continue;
        }
        c.a = v[0], c.b = v[1], c.c = v[2], c.d = v[3];
        if (ncomp < MAX_COMP)
            comps[ncomp++] = c;
    }
}

/* Target working set in MiB at time t (seconds since boot). */
static double target_mib(double t, int *thrash)
{
    double sum = 0;
    *thrash = 0;
    for (int i = 0; i < ncomp; i++) {
        struct comp *c = &comps[i];
        switch (c->kind) {
        case STEADY:
            sum += c->a;
            break;
        case RAMP:
            if (c->c <= 0 || t >= c->c)
                sum += c->b;
            else
                sum += c->a + (c->b - c->a) * t / c->c;
            break;
        case SPIKE:
            if (t >= c->c && (c->d <= 0 || t < c->c + c->d))
                sum += c->b;
            else
                sum += c->a;
            break;
        case THRASH:
            sum += c->a;
            *thrash = 1;
            break;
        }
    }
    return sum;
}

static double max_mib(void)
{
    double sum = 0;
    for (int i = 0; i < ncomp; i++) {
        struct comp *c = &comps[i];
        double m = c->a;
        if (c->kind == RAMP || c->kind == SPIKE)
            m = c->a > c->b ? c->a : c->b;
        sum += m;
    }
    return sum;
}

static void write_status(const char *path, unsigned long mib, double pass_ms, double alloc)
{
    char tmp[256], buf[96];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return;
    int n = snprintf(buf, sizeof buf, "%lu %.1f %.0f\n", mib, pass_ms, alloc);
    if (write(fd, buf, (size_t)n) != n) {
        close(fd);
        return;
    }
    close(fd);
    rename(tmp, path);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: memload WORKLOAD [STATUS_FILE]\n");
        return 2;
    }
    const char *status = argc > 2 ? argv[2] : "/run/ws_mib";
    char *spec = strdup(argv[1]);
    parse(spec);

    /* Be the OOM killer's first choice; /init and the reporter are -1000. */
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "1000", 4) < 0)
            perror("memload: oom_score_adj");
        close(fd);
    }

    write_status(status, 0, 0, 0);
    if (ncomp == 0) {
        for (;;)
            pause();
    }

    size_t cap = (size_t)(max_mib() * MIB) + MIB;
    unsigned char *mem = mmap(NULL, cap, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        perror("memload: mmap");
        return 1;
    }

    size_t held = 0; /* bytes currently faulted in: [0, held) */
    size_t cursor = 0;
    char last_status[96] = "";
    double pass_busy_us = 0, pass_ms = 0;   /* touch time: this pass, the last full one */
    double alloc_now = 0, alloc_last = 0;   /* slowest us/MiB: this second, the last one */
    int ticks = 0;
    unsigned char stamp = 1;
    size_t thrash_pos = 0;

    for (;;) {
        int thrash;
        double tgt = target_mib(boot_seconds(), &thrash);
        size_t want = ((size_t)(tgt * MIB)) & ~(PAGE - 1);
        if (want > cap)
            want = cap & ~(PAGE - 1);

        if (want < held) {
            madvise(mem + want, held - want, MADV_DONTNEED);
            held = want;
        }
        /* Grow by at most 64 MiB per tick (a 'sudden' spike is still fast). */
        size_t grow_to = want;
        if (grow_to > held + 64 * MIB)
            grow_to = held + 64 * MIB;
        double t0 = mono_us();
        for (size_t off = held; off < grow_to; off += PAGE)
            mem[off] = stamp;
        if (grow_to >= held + MIB) {
            double per_mib = (mono_us() - t0) * (double)MIB / (double)(grow_to - held);
            if (per_mib > alloc_now)
                alloc_now = per_mib;
        }
        if (grow_to > held)
            held = grow_to;

        if (thrash && held >= 8 * PAGE) {
            /* Drop one 1/64 of the set and fault it back in: with 8 ticks per
             * eighth this re-allocates an eighth of the set every ~0.8 s. */
            size_t chunk = (held / 64) & ~(PAGE - 1);
            if (chunk < PAGE)
                chunk = PAGE;
            if (thrash_pos + chunk > held)
                thrash_pos = 0;
            madvise(mem + thrash_pos, chunk, MADV_DONTNEED);
            double t1 = mono_us();
            for (size_t off = thrash_pos; off < thrash_pos + chunk; off += PAGE)
                mem[off] = stamp;
            double per_mib = (mono_us() - t1) * (double)MIB / (double)chunk;
            if (per_mib > alloc_now)
                alloc_now = per_mib;
            thrash_pos += chunk;
        }

        /* Touch one slice of the working set. */
        if (held) {
            size_t slice = (held / FULL_PASS_TICKS + PAGE) & ~(PAGE - 1);
            if (cursor >= held)
                cursor = 0;
            size_t end = cursor + slice > held ? held : cursor + slice;
            double t2 = mono_us();
            for (size_t off = cursor; off < end; off += PAGE)
                mem[off] = stamp;
            pass_busy_us += mono_us() - t2;
            cursor = end;
            if (cursor >= held) {
                stamp++;
                pass_ms = pass_busy_us / 1000.0;
                pass_busy_us = 0;
            }
        }
        if (++ticks % (1000 / TICK_MS) == 0) {
            alloc_last = alloc_now;
            alloc_now = 0;
        }

        char line[96];
        snprintf(line, sizeof line, "%lu %.1f %.0f", (unsigned long)(held / MIB), pass_ms,
                 alloc_last);
        if (strcmp(line, last_status)) {
            write_status(status, (unsigned long)(held / MIB), pass_ms, alloc_last);
            snprintf(last_status, sizeof last_status, "%s", line);
        }
        sleep_ms(TICK_MS);
    }
}
