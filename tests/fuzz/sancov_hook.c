/* Coverage feedback for libFuzzer (atheris) from a GCC build of pcapwire._native.
 *
 * GCC's -fsanitize-coverage=trace-pc calls __sanitizer_cov_trace_pc() in every basic block,
 * but libFuzzer only reads clang's inline 8-bit counters. This hook hashes the caller's PC
 * into an 8-bit counter array and registers it (with a matching fake PC table) with the
 * libFuzzer inside atheris. -fsanitize-coverage=trace-cmp calls are forwarded to libFuzzer
 * too (for its compare-guided mutations).
 *
 * libFuzzer's entry points are looked up with dlopen(RTLD_NOLOAD)+dlsym on the library
 * named by $PCAPWIRE_FUZZ_LIBFUZZER (atheris's core, already loaded), never through global
 * symbol resolution: under LD_PRELOAD=libasan.so the sanitizer runtime's own stubs would win
 * and coverage would silently vanish. All hooks here are hidden, so the instrumented code
 * binds to them at link time. Compiled WITHOUT -fsanitize-coverage; fuzzing builds only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define NCOUNTERS (1u << 16)
#define HIDDEN __attribute__((visibility("hidden")))

static uint8_t counters[NCOUNTERS];
static uintptr_t pcs[NCOUNTERS * 2];

typedef void (*cmp1_t)(uint8_t, uint8_t);
typedef void (*cmp2_t)(uint16_t, uint16_t);
typedef void (*cmp4_t)(uint32_t, uint32_t);
typedef void (*cmp8_t)(uint64_t, uint64_t);
typedef void (*switch_t)(uint64_t, uint64_t *);

static cmp1_t f_cmp1, f_ccmp1;
static cmp2_t f_cmp2, f_ccmp2;
static cmp4_t f_cmp4, f_ccmp4;
static cmp8_t f_cmp8, f_ccmp8;
static switch_t f_switch;

HIDDEN void __sanitizer_cov_trace_pc(void)
{
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uint8_t *c = &counters[(pc ^ (pc >> 15)) & (NCOUNTERS - 1)];
    if (*c != 0xFF)
        (*c)++;
}

HIDDEN void __sanitizer_cov_trace_cmp1(uint8_t a, uint8_t b) { if (f_cmp1) f_cmp1(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp2(uint16_t a, uint16_t b) { if (f_cmp2) f_cmp2(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp4(uint32_t a, uint32_t b) { if (f_cmp4) f_cmp4(a, b); }
HIDDEN void __sanitizer_cov_trace_cmp8(uint64_t a, uint64_t b) { if (f_cmp8) f_cmp8(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp1(uint8_t a, uint8_t b) { if (f_ccmp1) f_ccmp1(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp2(uint16_t a, uint16_t b) { if (f_ccmp2) f_ccmp2(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp4(uint32_t a, uint32_t b) { if (f_ccmp4) f_ccmp4(a, b); }
HIDDEN void __sanitizer_cov_trace_const_cmp8(uint64_t a, uint64_t b) { if (f_ccmp8) f_ccmp8(a, b); }
HIDDEN void __sanitizer_cov_trace_switch(uint64_t v, uint64_t *cases) { if (f_switch) f_switch(v, cases); }

__attribute__((constructor)) static void register_counters(void)
{
    const char *path = getenv("PCAPWIRE_FUZZ_LIBFUZZER");
    void *h = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : NULL;
    if (!h) {
        fprintf(stderr, "sancov_hook: libFuzzer (%s) not loaded; no coverage feedback\n",
                path ? path : "$PCAPWIRE_FUZZ_LIBFUZZER unset");
        return;
    }
    void (*counters_init)(uint8_t *, uint8_t *) =
        (void (*)(uint8_t *, uint8_t *))dlsym(h, "__sanitizer_cov_8bit_counters_init");
    void (*pcs_init)(const uintptr_t *, const uintptr_t *) =
        (void (*)(const uintptr_t *, const uintptr_t *))dlsym(h, "__sanitizer_cov_pcs_init");
    f_cmp1 = (cmp1_t)dlsym(h, "__sanitizer_cov_trace_cmp1");
    f_cmp2 = (cmp2_t)dlsym(h, "__sanitizer_cov_trace_cmp2");
    f_cmp4 = (cmp4_t)dlsym(h, "__sanitizer_cov_trace_cmp4");
    f_cmp8 = (cmp8_t)dlsym(h, "__sanitizer_cov_trace_cmp8");
    f_ccmp1 = (cmp1_t)dlsym(h, "__sanitizer_cov_trace_const_cmp1");
    f_ccmp2 = (cmp2_t)dlsym(h, "__sanitizer_cov_trace_const_cmp2");
    f_ccmp4 = (cmp4_t)dlsym(h, "__sanitizer_cov_trace_const_cmp4");
    f_ccmp8 = (cmp8_t)dlsym(h, "__sanitizer_cov_trace_const_cmp8");
    f_switch = (switch_t)dlsym(h, "__sanitizer_cov_trace_switch");
    for (uintptr_t i = 0; i < NCOUNTERS; i++) {
        pcs[2 * i] = 0x70000000u + i; /* fake, unique PCs: only their count matters */
        pcs[2 * i + 1] = 0;
    }
    if (counters_init && pcs_init) {
        counters_init(counters, counters + NCOUNTERS);
        pcs_init(pcs, pcs + 2 * NCOUNTERS);
    }
}
