// mambac bench: prefill and decode speed in the style of llama-bench, with peak memory and the decode step's
// achieved weight bandwidth beside the machine's measured read bandwidth.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#ifdef MAMBAC_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static const char usage[] = "usage: mambac bench -m MODEL [-p 512] [-n 128] [-b 1] [-t N] [--dtype LIST] [-r 3] "
                            "[-o md|json] [--profile] [--backend auto|ref|cpu|cuda] [--precision f32|tf32|bf16]";

static const char help[] =
    "Runs each combination of the listed values and prints one row per test: ppP is a prompt of P random tokens per\n"
    "sequence processed in one call from an empty state (prefill), tgN is N one-token steps (decode). Batch B runs\n"
    "B sequences together (tokens/s counts all of them). Each test runs once to warm up, then -r times; the table\n"
    "shows the mean and standard deviation of tokens/s, the process's peak resident memory so far, and for decode\n"
    "the weight bytes read per second (bytes one step reads × steps/s) beside the machine's read bandwidth,\n"
    "measured once at start by a vectorized read loop over 1 GiB with the same thread count.\n"
    "\n"
    "flags (LIST = comma-separated values; 0 for -p or -n skips that kind of test):\n"
    "  -m, --model MODEL    model folder, hub-cache snapshot, or ORG/NAME (required)\n"
    "  -p, --n-prompt LIST  prefill lengths (default 512)\n"
    "  -n, --n-gen LIST     decode steps (default 128)\n"
    "  -b, --batch LIST     sequences per step (default 1)\n"
    "  -t, --threads LIST   threads (default: the physical cores)\n"
    "      --dtype LIST     weights: stored, f32, f16, bf16, int8 (default stored)\n"
    "  -r, --repetitions N  timed runs per test (default 3)\n"
    "  -o, --output FMT     md (default) or json: an array of objects with test, batch, threads, dtype, device,\n"
    "                       tokens_per_s, stddev, peak_rss_mb, bandwidth_gbs, machine_bandwidth_gbs\n"
    "      --profile        also time each part of the forward (embed, norm, in_proj, conv, x_proj, dt_proj,\n"
    "                       scan, out_proj, lm_head) and print milliseconds per step (decode) or per call\n"
    "                       (prefill): a second table after the first, or profile_ms in each JSON object\n"
    "      --backend NAME   auto (default), ref, cpu or cuda\n"
    "      --precision P    how a GPU multiplies: f32 (default), tf32 or bf16 (tensor cores; see generate --help);\n"
    "                       on cuda the dtype column then says e.g. 'bf16, bf16 products'\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  mambac init --preset 130m -o /tmp/m130 && mambac bench -m /tmp/m130 -p 512 -n 128 -b 1,8,32 -t 2 "
    "--dtype f32,bf16,int8\n";

#define MAX_LIST 16

typedef struct int_list {
    int64_t v[MAX_LIST];
    int n;
} int_list;

typedef struct bench_opts {
    const char *model;
    int_list prompt, gen, batch, threads, dtypes;
    int64_t reps;
    bool json, profile;
    mc_backend backend;
    mc_precision precision;
    char device[128]; // the CPU's model name, for the JSON rows
    FILE *profile_md; // --profile with -o md: the second table's rows, printed at the end
} bench_opts;

static const char *const dtype_names[] = { "stored", "f32", "f16", "bf16", "int8" };

static int parse_list(cli_flags *f, int64_t lo, int64_t hi, bool names, int_list *out) {
    const char *v = NULL;
    int rc = cli_flag_value(f, &v);
    out->n = 0;
    while (rc == CLI_OK && *v != '\0') {
        size_t len = strcspn(v, ",");
        int64_t x = -1;
        if (names) {
            for (int i = 0; i < 5; i++) {
                x = strlen(dtype_names[i]) == len && strncmp(v, dtype_names[i], len) == 0 ? i : x;
            }
        } else {
            char *end = NULL;
            x = strtoll(v, &end, 10);
            x = len > 0 && end == v + len ? x : lo - 1; // an empty item (",4") is no number
        }
        if (out->n == MAX_LIST) {
            return cli_flag_bad(f, "more than %d values", MAX_LIST);
        }
        if (x < lo || x > hi) {
            return names ? cli_flag_bad(f, "'%.*s' is not a weight dtype (stored, f32, f16, bf16 or int8)", (int)len, v)
                         : cli_flag_bad(f, "'%.*s' is not an integer in %lld..%lld", (int)len, v, (long long)lo,
                                        (long long)hi);
        }
        out->v[out->n++] = x;
        v += len + (v[len] == ',');
    }
    return rc == CLI_OK && out->n == 0 ? cli_flag_bad(f, "empty list") : rc;
}

// The read bandwidth for each thread count, measured in a child process before anything else runs: its 1 GiB
// buffer then never counts toward this process's peak RSS, and the child starts no OpenMP pool of ours.
static void measure_bandwidths(const int_list *threads, double *gbs) {
    int fd[2];
    for (int i = 0; i < threads->n; i++) {
        gbs[i] = 0;
    }
    if (pipe(fd) != 0) {
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        for (int i = 0; i < threads->n; i++) {
            double g = mc_cpu_read_bandwidth((int)threads->v[i]);
            if (write(fd[1], &g, sizeof(g)) != (ssize_t)sizeof(g)) {
                break;
            }
        }
        _exit(0);
    }
    close(fd[1]);
    for (int i = 0; pid > 0 && i < threads->n; i++) {
        if (read(fd[0], &gbs[i], sizeof(gbs[i])) != (ssize_t)sizeof(gbs[i])) {
            break;
        }
    }
    close(fd[0]);
    if (pid > 0) {
        waitpid(pid, NULL, 0);
    }
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

typedef struct result {
    double mean, sd;
    double gpu_mb; // device memory in use at the end of the test (cuda backend only; -1 otherwise)
    double part_ms[MC_PROFILE_COUNT], other_ms; // per step or call, over the timed runs (--profile)
} result;

// Device memory in use on the current GPU (MB; the CUDA context, weights, state and scratch of this process and any
// other on the card), or -1 without CUDA. Read while a test's state still holds its scratch, so it is the peak of the
// test up to the context's own pools.
static double gpu_used_mb(const mc_model *m) {
#ifdef MAMBAC_HAVE_CUDA
    mc_model_info info;
    mc_model_get_info(m, &info);
    size_t free_b = 0, total_b = 0;
    if (info.backend == MC_BACKEND_CUDA && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
        return (double)(total_b - free_b) / (1024.0 * 1024.0);
    }
#else
    (void)m;
#endif
    return -1;
}

// Times one test: prefill (n_prompt > 0) or decode (n_gen > 0) for a batch.
static int run_test(const char *cmd, const mc_model *m, int64_t batch, int64_t n_prompt, int64_t n_gen, int64_t reps,
                    bool profile, result *out) {
    const int64_t V = mc_model_config(m)->vocab_size, L = n_prompt > 0 ? n_prompt : 1;
    int32_t *ids = malloc((size_t)(batch * L) * sizeof(int32_t));
    float *logits = malloc((size_t)(batch * V) * sizeof(float));
    double *tps = calloc((size_t)reps + 1, sizeof(double));
    mc_state *st = NULL;
    mc_error err = { 0 };
    int rc = CLI_OK;
    if (ids == NULL || logits == NULL || tps == NULL || mc_state_new(m, batch, &st, &err) != MC_OK) {
        rc = ids && logits && tps ? cli_fail_err(cmd, &err) : cli_fail(cmd, "out of memory");
    }
    uint64_t x = 12345;
    for (int64_t i = 0; rc == CLI_OK && i < batch * L; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)V);
    }
    double timed_s = 0;
    for (int64_t r = 0; rc == CLI_OK && r <= reps; r++) { // run 0 warms up
        if (mc_state_reset(st, &err) != MC_OK) {
            rc = cli_fail_err("bench", &err);
            break;
        }
        if (r == 1 && profile) { // the timed runs: zeroed once, summed over all of them
            mc_state_profile(st, true);
        }
        double t0 = cli_now();
        mc_status s = MC_OK;
        if (n_prompt > 0) {
            s = mc_model_forward(m, st, ids, batch, n_prompt, false, logits, &err);
        } else {
            for (int64_t step = 0; s == MC_OK && step < n_gen; step++) {
                s = mc_model_forward(m, st, ids, batch, 1, false, logits, &err);
            }
        }
        if (s != MC_OK) {
            rc = cli_fail_err(cmd, &err);
        }
        const double dt = cli_now() - t0;
        tps[r] = (double)(batch * (n_prompt > 0 ? n_prompt : n_gen)) / dt;
        timed_s += r > 0 ? dt : 0;
    }
    if (rc == CLI_OK && profile) { // per step (decode) or per call (prefill)
        double part_s[MC_PROFILE_COUNT];
        mc_state_profile_get(st, part_s);
        const double calls = (double)reps * (double)(n_prompt > 0 ? 1 : n_gen);
        out->other_ms = timed_s * 1e3 / calls;
        for (int i = 0; i < MC_PROFILE_COUNT; i++) {
            out->part_ms[i] = part_s[i] * 1e3 / calls;
            out->other_ms -= out->part_ms[i];
        }
    }
    double sum = 0, sum2 = 0;
    for (int64_t r = 1; r <= reps; r++) {
        sum += tps[r];
        sum2 += tps[r] * tps[r];
    }
    out->gpu_mb = gpu_used_mb(m);
    out->mean = sum / (double)reps;
    out->sd = reps > 1 ? sqrt(fmax(0, (sum2 - sum * sum / (double)reps) / (double)(reps - 1))) : 0;
    mc_state_free(st);
    free(tps);
    free(logits);
    free(ids);
    return rc;
}

static void cpu_name(char *name, size_t cap);

// The GPU's name when the backend will be cuda (named, or auto with a device), else the CPU's.
static void device_name(char *name, size_t cap, mc_backend backend) {
#ifdef MAMBAC_HAVE_CUDA
    int n = 0;
    struct cudaDeviceProp prop;
    if ((backend == MC_BACKEND_CUDA || backend == MC_BACKEND_AUTO) && cudaGetDeviceCount(&n) == cudaSuccess && n > 0 &&
        cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
        snprintf(name, cap, "%.*s", (int)(cap > 1 ? cap - 1 : 0), prop.name);
        return;
    }
#else
    (void)backend;
#endif
    cpu_name(name, cap);
}

// The CPU's model name from /proc/cpuinfo into name (cap bytes), or "cpu".
static void cpu_name(char *name, size_t cap) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    snprintf(name, cap, "cpu");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') != NULL) {
            snprintf(name, cap, "%s", strchr(line, ':') + 2);
            name[strcspn(name, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
}

// Prints s as a JSON string: quotes, backslashes and control characters escaped (a folder may be named a"b).
static void print_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static void print_row(const bench_opts *o, mc_backend backend, const char *model, const char *dtype, int threads, int64_t batch,
                      const char *test, const result *r, double gbs, double machine_gbs, bool *first) {
    double rss = peak_rss_mb();
    if (o->json) {
        printf("%s\n  {\"model\": ", *first ? "[" : ",");
        print_json_string(model);
        printf(", \"backend\": \"%s\", \"test\": \"%s\", \"batch\": %lld, \"threads\": %d, \"dtype\": \"%s\", "
               "\"device\": ",
               mc_backend_name(backend), test, (long long)batch,
               threads, dtype);
        print_json_string(o->device);
        printf(", \"tokens_per_s\": %.3f, \"stddev\": %.3f, \"peak_rss_mb\": %.1f, \"bandwidth_gbs\": %.3f, "
               "\"machine_bandwidth_gbs\": %.3f",
               r->mean, r->sd, rss, gbs, machine_gbs);
        if (r->gpu_mb >= 0) {
            printf(", \"gpu_mem_mb\": %.1f", r->gpu_mb);
        }
        if (o->profile) {
            for (int i = 0; i < MC_PROFILE_COUNT; i++) {
                printf("%s\"%s\": %.4f", i == 0 ? ", \"profile_ms\": {" : ", ", mc_profile_part_name(i), r->part_ms[i]);
            }
            printf(", \"other\": %.4f}", r->other_ms);
        }
        printf("}");
    } else {
        if (*first) {
            printf("| model | dtype | backend | threads | batch | test | tokens/s | weight GB/s (machine) | peak RSS MB |\n"
                   "|---|---|---|---:|---:|---|---:|---:|---:|\n");
        }
        char bw[64] = "";
        if (gbs > 0) {
            snprintf(bw, sizeof(bw), "%.2f (%.2f)", gbs, machine_gbs);
        }
        printf("| ");
        for (const char *c = model; *c != '\0'; c++) { // a '|' in a folder name would end the cell
            printf(*c == '|' ? "\\|" : "%c", *c);
        }
        char mem[64];
        snprintf(mem, sizeof(mem), "%.0f", rss);
        if (r->gpu_mb >= 0) { // the device's memory beside the host's
            snprintf(mem, sizeof(mem), "%.0f (GPU %.0f)", rss, r->gpu_mb);
        }
        printf(" | %s | %s | %d | %lld | %s | %.2f ± %.2f | %s | %s |\n", dtype,
               mc_backend_name(backend), threads,
               (long long)batch, test, r->mean, r->sd, bw, mem);
        if (o->profile_md != NULL) {
            fprintf(o->profile_md, "| %s | %d | %lld | %s |", dtype, threads, (long long)batch, test);
            for (int i = 0; i < MC_PROFILE_COUNT; i++) {
                fprintf(o->profile_md, " %.3f |", r->part_ms[i]);
            }
            fprintf(o->profile_md, " %.3f |\n", r->other_ms);
        }
    }
    fflush(stdout);
    *first = false;
}

static int bench_config(const bench_opts *o, int dtype, int threads, double machine_gbs, bool *first) {
    mc_load_opts load;
    mc_load_opts_init(&load);
    load.backend = o->backend;
    load.n_threads = threads;
    load.weight_dtype = (mc_weight_dtype)dtype;
    load.precision = o->precision;
    mc_model *m = NULL;
    int rc = cli_open_model("bench", o->model, &load, &m, NULL);
    if (rc != CLI_OK) {
        return rc;
    }
    mc_model_info info;
    mc_model_get_info(m, &info);
    const char *model = strrchr(mc_model_dir(m), '/') != NULL ? strrchr(mc_model_dir(m), '/') + 1 : mc_model_dir(m);
    static const char *const products[] = { "f32", "tf32", "bf16" }; // mc_precision's order
    char dname[48];
    snprintf(dname, sizeof(dname), "%s", dtype == 0 ? mc_dtype_name((mc_dtype)mc_model_weight_dtype(m)) : dtype_names[dtype]);
    if (o->precision != MC_PRECISION_F32 && info.backend == MC_BACKEND_CUDA) { // the CPU computes in f32
        snprintf(dname + strlen(dname), sizeof(dname) - strlen(dname), ", %s products", products[o->precision]);
    }
    for (int b = 0; rc == CLI_OK && b < o->batch.n; b++) {
        for (int p = 0; rc == CLI_OK && p < o->prompt.n; p++) {
            if (o->prompt.v[p] > 0) {
                result r = { 0 };
                char test[32];
                snprintf(test, sizeof(test), "pp%lld", (long long)o->prompt.v[p]);
                rc = run_test("bench", m, o->batch.v[b], o->prompt.v[p], 0, o->reps, o->profile, &r);
                if (rc == CLI_OK) {
                    print_row(o, info.backend, model, dname, threads, o->batch.v[b], test, &r, 0, 0, first);
                }
            }
        }
        for (int g = 0; rc == CLI_OK && g < o->gen.n; g++) {
            if (o->gen.v[g] > 0) {
                result r = { 0 };
                char test[32];
                snprintf(test, sizeof(test), "tg%lld", (long long)o->gen.v[g]);
                rc = run_test("bench", m, o->batch.v[b], 0, o->gen.v[g], o->reps, o->profile, &r);
                double steps_per_s = r.mean / (double)o->batch.v[b];
                if (rc == CLI_OK) {
                    print_row(o, info.backend, model, dname, threads, o->batch.v[b], test, &r,
                              steps_per_s * (double)info.read_bytes_per_token / 1e9, machine_gbs, first);
                }
            }
        }
    }
    mc_model_free(m);
    return rc;
}

int cli_bench(int argc, char **argv) {
    bench_opts o = { .prompt = { { 512 }, 1 }, .gen = { { 128 }, 1 }, .batch = { { 1 }, 1 },
                     .threads = { { mc_cpu_physical_cores() }, 1 }, .dtypes = { { 0 }, 1 }, .reps = 3 };
    cli_flags f;
    cli_flags_init(&f, "bench", usage, argc, argv);
    while (cli_flags_next(&f)) {
        int rc = CLI_OK;
        const char *v = NULL;
        if (cli_flag_is(&f, "-h", "--help")) {
            cli_print_help(usage, help);
            return CLI_OK;
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &o.model);
        } else if (cli_flag_is(&f, "-p", "--n-prompt")) {
            rc = parse_list(&f, 0, 1 << 24, false, &o.prompt);
        } else if (cli_flag_is(&f, "-n", "--n-gen")) {
            rc = parse_list(&f, 0, 1 << 24, false, &o.gen);
        } else if (cli_flag_is(&f, "-b", "--batch")) {
            rc = parse_list(&f, 1, 4096, false, &o.batch);
        } else if (cli_flag_is(&f, "-t", "--threads")) {
            rc = parse_list(&f, 1, 4096, false, &o.threads);
        } else if (cli_flag_is(&f, NULL, "--dtype")) {
            rc = parse_list(&f, 0, 4, true, &o.dtypes);
        } else if (cli_flag_is(&f, "-r", "--repetitions")) {
            rc = cli_flag_i64(&f, 1, 1000, &o.reps);
        } else if (cli_flag_is(&f, "-o", "--output")) {
            rc = cli_flag_value(&f, &v);
            if (rc == CLI_OK && strcmp(v, "json") != 0 && strcmp(v, "md") != 0) {
                rc = cli_flag_bad(&f, "'%s' is not md or json", v);
            }
            o.json = rc == CLI_OK && strcmp(v, "json") == 0;
        } else if (cli_flag_is(&f, NULL, "--profile")) {
            o.profile = true;
        } else if (cli_flag_is(&f, NULL, "--backend") || cli_flag_is(&f, NULL, "--precision")) {
            mc_load_opts tmp;
            mc_load_opts_init(&tmp);
            tmp.backend = o.backend;
            tmp.precision = o.precision;
            bool matched = false;
            rc = cli_load_flag(&f, &tmp, &matched);
            o.backend = tmp.backend;
            o.precision = tmp.precision;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (cli_need_model("bench", usage, &o.model) != CLI_OK) {
        return CLI_USAGE;
    }
    bool any_test = false;
    for (int i = 0; i < o.prompt.n; i++) {
        any_test |= o.prompt.v[i] > 0;
    }
    for (int i = 0; i < o.gen.n; i++) {
        any_test |= o.gen.v[i] > 0;
    }
    if (!any_test) {
        return cli_missing("bench", usage, "-p and -n are all 0: nothing to run");
    }
    { // a missing model fails now, not after the bandwidth probe's second
        mc_error err = { 0 };
        char *dir = NULL;
        if (mc_model_resolve_dir(o.model, NULL, &dir, &err) != MC_OK) {
            return cli_fail_err("bench", &err);
        }
        free(dir);
    }
    device_name(o.device, sizeof(o.device), o.backend);
    double machine_gbs[MAX_LIST] = { 0 };
    bool any_gen = false;
    for (int g = 0; g < o.gen.n; g++) {
        any_gen |= o.gen.v[g] > 0;
    }
    if (any_gen) {
        measure_bandwidths(&o.threads, machine_gbs);
    }
    bool first = true;
    int rc = CLI_OK;
    char *prof_text = NULL;
    size_t prof_len = 0;
    if (o.profile && !o.json && (o.profile_md = open_memstream(&prof_text, &prof_len)) == NULL) {
        return cli_fail("bench", "out of memory");
    }
    for (int d = 0; rc == CLI_OK && d < o.dtypes.n; d++) {
        for (int t = 0; rc == CLI_OK && t < o.threads.n; t++) {
            rc = bench_config(&o, (int)o.dtypes.v[d], (int)o.threads.v[t], machine_gbs[t], &first);
        }
    }
    if (o.json) {
        printf(first ? "[]\n" : "\n]\n");
    }
    if (o.profile_md != NULL) {
        fclose(o.profile_md);
        printf("\nms per step (tg) or call (pp), by part of the forward; other = the rest of the wall time\n\n"
               "| dtype | threads | batch | test |");
        for (int i = 0; i < MC_PROFILE_COUNT; i++) {
            printf(" %s |", mc_profile_part_name(i));
        }
        printf(" other |\n|---|---:|---:|---|");
        for (int i = 0; i <= MC_PROFILE_COUNT; i++) {
            printf("---:|");
        }
        printf("\n%s", prof_text != NULL ? prof_text : "");
        free(prof_text);
    }
    return rc;
}
