/* Fused per-token kernels for distdyn.metrics (built once by distdyn.kernels, called through ctypes).
 *
 * token_metrics_f32 reads each token once, while it sits in L1, for its histogram entropies (on one
 * or two value ranges) and sum |x|, and adds |x| to its image's per-channel sums. The channel FFT
 * is not here: distdyn.kernels takes it from a library FFT (scipy.fft) on the same float32 tokens.
 * Plain C, no Python or torch headers: contiguous buffers whose sizes distdyn.kernels checks, the
 * GIL released.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The interface's version, checked by distdyn.kernels before it calls anything (a library built
 * from another source has another signature). */
int distdyn_kernels_abi(void) { return 2; }

/* One binary, the best code path for the CPU it runs on (GCC function multi-versioning). The
 * helpers are forced inline so that each clone gets its own vector code for them. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) /* ifunc: glibc only */
#define DISTDYN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DISTDYN_CLONES
#endif
#if defined(__GNUC__)
#define DISTDYN_INLINE static inline __attribute__((always_inline))
#else
#define DISTDYN_INLINE static inline
#endif

/* Per-token histogram entropy, exactly as np.histogram bins float32 data on the float32 `edges`
 * (bins + 1 of them): bin i holds edges[i] <= v < edges[i+1], the last bin also its right edge,
 * values outside (and NaN) dropped but still counted in p = n / C. nlog2n[k] = k log2 k, k = 0..C.
 * The bin comes from an arithmetic guess corrected against the edges, so it never depends on
 * the guess's rounding. Scalar on purpose: gathers of the edges are slow on many x86 cores.
 */
typedef struct {
    const float *edges;
    const double *nlog2n;
    int64_t bins, C;
    float lo, hi, scale, top, nbins, tol;
    double log2c;
    int32_t *counts; /* 4 * (bins + 1): four sub-histograms and their spare slots */
    int32_t *idx;    /* C */
    int64_t first, last; /* the bins the data's bounds span, when few (narrow_entropy) */
    int narrow;
} entropy_ctx;

/* The bin np.histogram gives v, for lo <= v <= hi: a guess corrected against the float32 edges. */
static inline int64_t exact_bin(const entropy_ctx *e, float v)
{
    const float g = (v - e->lo) * e->scale; /* >= 0 */
    int64_t i = g < e->top ? (int64_t)g : e->bins - 1;
    while (i > 0 && v < e->edges[i])
        i--;
    while (i < e->bins - 1 && v >= e->edges[i + 1])
        i++;
    return i;
}

static int entropy_init(entropy_ctx *e, int64_t C, const float *edges, int64_t bins, const double *nlog2n,
                        const float *bounds)
{
    e->counts = calloc(4 * (size_t)(bins + 1), sizeof(int32_t));
    e->idx = malloc((size_t)C * sizeof(int32_t));
    if (e->counts == NULL || e->idx == NULL)
        return -1;
    e->edges = edges;
    e->nlog2n = nlog2n;
    e->bins = bins;
    e->C = C;
    e->lo = edges[0];
    e->hi = edges[bins];
    e->scale = (float)((double)bins / ((double)e->hi - (double)e->lo));
    e->top = (float)(bins - 1);
    e->nbins = (float)bins;
    e->log2c = log2((double)C);
    /* Float32 rounding moves a value's computed position (in bins) by far less than `tol` from
     * its place among the float32 edges, so a value farther than `tol` from every edge is in bin
     * floor(position) for certain; the others (and values outside the range) are compared
     * against the edges. */
    const double lo = e->lo, hi = e->hi;
    const double mag = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
    const double tol = 8.0 * (double)bins * 1.1920929e-07 * (1.0 + 2.0 * mag / (hi - lo));
    e->tol = tol < 0.25 ? (float)tol : 2.0f; /* 2: every value takes the exact path */
    /* Bounds (least and greatest value of the data, a hint) that span few bins: narrow_entropy
     * counts by comparisons, one pass over the channels per edge, where row_entropy costs about
     * C + bins per token whatever the span (break-even measured at ~28 bins for C = 192, bins = 100). */
    e->narrow = 0;
    if (bounds != NULL && bounds[0] <= bounds[1] && bounds[1] >= e->lo && bounds[0] <= e->hi) {
        e->first = bounds[0] < e->lo ? 0 : exact_bin(e, bounds[0]);
        e->last = bounds[1] > e->hi ? bins - 1 : exact_bin(e, bounds[1]);
        e->narrow = (e->last - e->first + 2) * C <= 16 * (C + bins);
    }
    return 0;
}

static void entropy_free(entropy_ctx *e)
{
    free(e->counts);
    free(e->idx);
}

/* One token's entropy (bits). */
DISTDYN_INLINE double row_entropy(entropy_ctx *e, const float *row)
{
    const int64_t C = e->C, bins = e->bins, stride = bins + 1;
    const float lo = e->lo, hi = e->hi, scale = e->scale, top = e->top, nbins = e->nbins, tol = e->tol;
    int32_t *restrict idx = e->idx, *restrict counts = e->counts;
    int32_t unsure = 0;
    for (int64_t c = 0; c < C; c++) { /* branch-free, no gathers: vectorised */
        const float v = row[c];
        float g = (v - lo) * scale;
        g = g > 0.0f ? g : 0.0f;
        g = g < nbins ? g : top; /* v == hi lands on 0.0 past an edge: the exact path */
        const int32_t i = (int32_t)g;
        const float f = g - (float)i;
        const int sure = (f >= tol) & (f <= 1.0f - tol) & (v >= lo) & (v <= hi);
        idx[c] = sure ? i : (int32_t)bins; /* slot `bins`: decided below */
        unsure += !sure;
    }
    /* four sub-histograms (channel mod 4), so increments of one bin do not wait on each other */
    int32_t *restrict c0 = counts, *restrict c1 = c0 + stride, *restrict c2 = c1 + stride, *restrict c3 = c2 + stride;
    int64_t c = 0;
    for (; c + 4 <= C; c += 4) {
        c0[idx[c]]++;
        c1[idx[c + 1]]++;
        c2[idx[c + 2]]++;
        c3[idx[c + 3]]++;
    }
    for (; c < C; c++)
        c0[idx[c]]++;
    int64_t inside = C;
    if (unsure)
        for (c = 0; c < C; c++) {
            if (idx[c] != bins)
                continue;
            const float v = row[c];
            if (!(v >= lo && v <= hi)) { /* dropped, as np.histogram does */
                inside--;
                continue;
            }
            c0[exact_bin(e, v)]++;
        }
    for (int64_t b = 0; b < bins; b++)
        c0[b] += c1[b] + c2[b] + c3[b];
    const double *nlog2n = e->nlog2n;
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    int64_t b = 0;
    for (; b + 4 <= bins; b += 4) {
        a0 += nlog2n[c0[b]];
        a1 += nlog2n[c0[b + 1]];
        a2 += nlog2n[c0[b + 2]];
        a3 += nlog2n[c0[b + 3]];
    }
    for (; b < bins; b++)
        a0 += nlog2n[c0[b]];
    memset(counts, 0, 4 * (size_t)stride * sizeof(int32_t));
    return (double)inside / (double)C * e->log2c - ((a0 + a1) + (a2 + a3)) / (double)C;
}

/* #(row[c] < t), or #(row[c] <= t) with `or_equal` (NaN in neither); vectorised along the row. */
DISTDYN_INLINE int32_t count_below(const float *restrict row, int64_t C, float t, int or_equal)
{
    int32_t n = 0;
    if (or_equal)
        for (int64_t c = 0; c < C; c++)
            n += row[c] <= t;
    else
        for (int64_t c = 0; c < C; c++)
            n += row[c] < t;
    return n;
}

/* One token's entropy when the data's bounds span few bins (entropy_init), as on a range widened by
 * another layer's outliers: counted by comparisons with those bins' edges, no scatter: bin b holds
 * #(v < edges[b+1]) - #(v < edges[b]), the last bin #(v <= hi) - #(v < edges[bins-1]). The same
 * counts as row_entropy, so the same entropy up to the order of the final sum; a token with values in
 * [lo, hi] outside those bins (wrong bounds) goes to row_entropy. */
DISTDYN_INLINE double narrow_entropy(entropy_ctx *e, const float *row)
{
    const int64_t C = e->C, bins = e->bins, first = e->first, last = e->last;
    const int32_t start = count_below(row, C, e->edges[first], 0);
    int32_t prev = start;
    double s = 0.0;
    for (int64_t b = first; b <= last; b++) {
        const int32_t n = count_below(row, C, e->edges[b + 1], b == bins - 1);
        s += e->nlog2n[n - prev];
        prev = n;
    }
    const int32_t inside = prev - start;
    if (inside != C) { /* values below or above those bins must be outside [lo, hi] */
        const int32_t under = first == 0 ? start : count_below(row, C, e->edges[0], 0);
        const int32_t upto = last == bins - 1 ? prev : count_below(row, C, e->edges[bins], 1);
        if (upto - under != inside)
            return row_entropy(e, row);
    }
    return (double)inside / (double)C * e->log2c - s / (double)C;
}

DISTDYN_INLINE double entropy(entropy_ctx *e, const float *row)
{
    return e->narrow ? narrow_entropy(e, row) : row_entropy(e, row);
}

/* Images [i0, i1) of x [images, N, C] (float32, contiguous): per token the entropy on `edges`
 * (bins + 1 float32 values) -> out_entropy [images, N] and sum |x| -> out_abs_sum [images, N], and
 * per image the sum over its N positions of |x| per channel -> out_chan [images, C] (all float64).
 * With `edges2` (else NULL) also each token's entropy on that second range (same bins) ->
 * out_entropy2. nlog2n: C + 1 values. `bounds` (or NULL): the least and greatest value of x, a hint
 * that only chooses how the entropies are counted. Returns 0, -1 (out of memory) or -2 (C, N or bins
 * below 1; distdyn.kernels checks every size before the call). */
DISTDYN_CLONES
int token_metrics_f32(const float *x, int64_t i0, int64_t i1, int64_t N, int64_t C, const float *edges,
                      int64_t bins, const double *nlog2n, double *out_entropy, double *out_abs_sum,
                      const float *edges2, double *out_entropy2, double *out_chan, const float *bounds)
{
    if (C < 1 || N < 1 || bins < 1 || i0 < 0 || i1 < i0)
        return -2;
    entropy_ctx e, e2;
    e2.counts = NULL, e2.idx = NULL;
    int status = -1;
    if (entropy_init(&e, C, edges, bins, nlog2n, bounds) != 0)
        goto done;
    if (edges2 != NULL && entropy_init(&e2, C, edges2, bins, nlog2n, bounds) != 0)
        goto done;
    for (int64_t img = i0; img < i1; img++) {
        double *restrict chan = out_chan + img * C;
        memset(chan, 0, (size_t)C * sizeof(double));
        for (int64_t t = img * N; t < (img + 1) * N; t++) {
            const float *restrict row = x + t * C;
            out_entropy[t] = entropy(&e, row);
            if (edges2 != NULL)
                out_entropy2[t] = entropy(&e2, row);
            /* |x| into the channel sums and into eight partial sums of the token's (so it vectorises) */
            double part[8] = {0.0};
            int64_t c = 0;
            for (; c + 8 <= C; c += 8)
                for (int64_t l = 0; l < 8; l++) {
                    const double a = fabs((double)row[c + l]);
                    chan[c + l] += a;
                    part[l] += a;
                }
            for (; c < C; c++) {
                const double a = fabs((double)row[c]);
                chan[c] += a;
                part[c % 8] += a;
            }
            out_abs_sum[t] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        }
    }
    status = 0;
done:
    entropy_free(&e);
    entropy_free(&e2);
    return status;
}
