/* Fused per-token kernels for distdyn.metrics (compiled on first use by distdyn.kernels).
 *
 * The torch path makes a dozen passes over each chunk and writes the whole complex spectrum;
 * token_metrics_f32 takes 16 tokens at a time while they are in L1 and computes their
 * histogram entropies (on one or two value ranges), |x| sums and channel FFTs, keeping only
 * per-image sums of |X_k| and of |x| per channel.
 * Plain C, no Python or torch headers: called through ctypes on contiguous buffers, the GIL
 * released.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static int64_t exact_bin(const entropy_ctx *e, float v);

static int entropy_init(entropy_ctx *e, int64_t C, const float *edges, int64_t bins, const double *nlog2n,
                        const float *bounds)
{
    e->counts = calloc(4 * (size_t)(bins + 1), sizeof(int32_t));
    e->idx = malloc((size_t)(C > 0 ? C : 1) * sizeof(int32_t));
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

/* The bin np.histogram gives v, for lo <= v <= hi: a guess corrected against the float32 edges. */
static int64_t exact_bin(const entropy_ctx *e, float v)
{
    const float g = (v - e->lo) * e->scale; /* >= 0 */
    int64_t i = g < e->top ? (int64_t)g : e->bins - 1;
    while (i > 0 && v < e->edges[i])
        i--;
    while (i < e->bins - 1 && v >= e->edges[i + 1])
        i++;
    return i;
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
            /* exact: guess, then compare against the float32 edges */
            const float g = (v - lo) * scale; /* >= 0 */
            int64_t i = g < top ? (int64_t)g : bins - 1;
            while (i > 0 && v < e->edges[i])
                i--;
            while (i < bins - 1 && v >= e->edges[i + 1])
                i++;
            c0[i]++;
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

/* ------------------------------------------------------------ FFT over channels, 16 tokens at once
 *
 * A complex FFT of length C runs on 8 lanes (one AVX register) at a time, each lane a
 * different pair of tokens: token a in the real part, token b in the imaginary part, so one
 * complex FFT gives both real spectra (A[k] = (Z[k] + conj Z[-k]) / 2, B[k] = (Z[k] - conj Z[-k]) / 2i).
 * Stockham auto-sort passes of radix 4, 2, 3 and, for other prime factors, a plain DFT; twiddles
 * computed in double. The data of one block stays in L1 (for C up to a few hundred), and nothing
 * is written back but the per-image sums of |X_k|.
 */
#define LANES 8
typedef float v8f __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t v8i __attribute__((vector_size(LANES * sizeof(int32_t))));

typedef struct {
    int64_t R, Ns;  /* radix; product of the radices of the passes before */
    float *tw;      /* [Ns][R - 1] (cos, sin) of -2 pi jm r / (Ns R) */
    float *roots;   /* [R] (cos, sin) of 2 pi q / R, for the plain DFT */
} fft_pass;

typedef struct {
    int64_t n, passes, max_r;
    fft_pass pass[64];
} fft_plan;

static void plan_free(fft_plan *pl)
{
    for (int64_t p = 0; p < pl->passes; p++) {
        free(pl->pass[p].tw);
        free(pl->pass[p].roots);
    }
    pl->passes = 0;
}

static int plan_init(fft_plan *pl, int64_t n)
{
    const double two_pi = 6.283185307179586476925286766559;
    pl->n = n;
    pl->passes = 0;
    pl->max_r = 1;
    for (int64_t m = n, Ns = 1; m > 1;) {
        int64_t R = m % 4 == 0 ? 4 : m % 2 == 0 ? 2 : m % 3 == 0 ? 3 : 5;
        while (m % R)
            R += 2; /* the smallest odd prime factor */
        fft_pass *ps = &pl->pass[pl->passes++];
        ps->R = R;
        ps->Ns = Ns;
        ps->tw = malloc(2 * (size_t)(Ns * (R - 1)) * sizeof(float));
        ps->roots = malloc(2 * (size_t)R * sizeof(float));
        if (ps->tw == NULL || ps->roots == NULL)
            return -1;
        for (int64_t jm = 0; jm < Ns; jm++)
            for (int64_t r = 1; r < R; r++) {
                const double ang = -two_pi * (double)(jm * r) / (double)(Ns * R);
                ps->tw[2 * (jm * (R - 1) + r - 1)] = (float)cos(ang);
                ps->tw[2 * (jm * (R - 1) + r - 1) + 1] = (float)sin(ang);
            }
        for (int64_t q = 0; q < R; q++) {
            ps->roots[2 * q] = (float)cos(two_pi * (double)q / (double)R);
            ps->roots[2 * q + 1] = (float)sin(two_pi * (double)q / (double)R);
        }
        pl->max_r = R > pl->max_r ? R : pl->max_r;
        Ns *= R;
        m /= R;
    }
    return 0;
}

/* (re, im) *= (c + i s) */
#define TWIDDLE(re, im, c, s)                     \
    do {                                          \
        const v8f t_ = (re);                      \
        (re) = t_ * (c) - (im) * (s);             \
        (im) = t_ * (s) + (im) * (c);             \
    } while (0)

/* One Stockham pass: in (ir, ii) -> out (dr, di), each [n] vectors of LANES values; vr, vi: [R]
 * scratch for the plain DFT. Input j + r n/R, twiddled by w^(r (j mod Ns)), goes through an R-point
 * DFT to output (j div Ns) Ns R + (j mod Ns) + q Ns. The first pass (Ns = 1) has no twiddles. */
DISTDYN_INLINE void fft_pass_run(const fft_pass *ps, int64_t n, const v8f *restrict ir, const v8f *restrict ii,
                                v8f *restrict dr, v8f *restrict di, v8f *restrict vr, v8f *restrict vi)
{
    const int64_t R = ps->R, Ns = ps->Ns, stride = n / R;
    const float *tw = ps->tw;
    for (int64_t jq = 0; jq < stride / Ns; jq++)
        for (int64_t jm = 0; jm < Ns; jm++) {
            const int64_t j = jq * Ns + jm, base = jq * Ns * R + jm;
            const float *w = tw + 2 * jm * (R - 1);
            if (R == 4) {
                v8f x0r = ir[j], x0i = ii[j], x1r = ir[j + stride], x1i = ii[j + stride];
                v8f x2r = ir[j + 2 * stride], x2i = ii[j + 2 * stride], x3r = ir[j + 3 * stride], x3i = ii[j + 3 * stride];
                if (Ns > 1) {
                    TWIDDLE(x1r, x1i, w[0], w[1]);
                    TWIDDLE(x2r, x2i, w[2], w[3]);
                    TWIDDLE(x3r, x3i, w[4], w[5]);
                }
                const v8f a0r = x0r + x2r, a0i = x0i + x2i, a1r = x0r - x2r, a1i = x0i - x2i;
                const v8f a2r = x1r + x3r, a2i = x1i + x3i;
                const v8f a3r = x1i - x3i, a3i = x3r - x1r; /* -i (x1 - x3) */
                dr[base] = a0r + a2r;
                di[base] = a0i + a2i;
                dr[base + Ns] = a1r + a3r;
                di[base + Ns] = a1i + a3i;
                dr[base + 2 * Ns] = a0r - a2r;
                di[base + 2 * Ns] = a0i - a2i;
                dr[base + 3 * Ns] = a1r - a3r;
                di[base + 3 * Ns] = a1i - a3i;
            } else if (R == 2) {
                v8f x0r = ir[j], x0i = ii[j], x1r = ir[j + stride], x1i = ii[j + stride];
                if (Ns > 1)
                    TWIDDLE(x1r, x1i, w[0], w[1]);
                dr[base] = x0r + x1r;
                di[base] = x0i + x1i;
                dr[base + Ns] = x0r - x1r;
                di[base + Ns] = x0i - x1i;
            } else if (R == 3) {
                const float h = 0.86602540378443864676f; /* sqrt(3) / 2 */
                v8f x0r = ir[j], x0i = ii[j], x1r = ir[j + stride], x1i = ii[j + stride];
                v8f x2r = ir[j + 2 * stride], x2i = ii[j + 2 * stride];
                if (Ns > 1) {
                    TWIDDLE(x1r, x1i, w[0], w[1]);
                    TWIDDLE(x2r, x2i, w[2], w[3]);
                }
                const v8f t1r = x1r + x2r, t1i = x1i + x2i;
                const v8f t2r = x0r - 0.5f * t1r, t2i = x0i - 0.5f * t1i;
                const v8f ur = h * (x1i - x2i), ui = h * (x2r - x1r); /* -i h (x1 - x2) */
                dr[base] = x0r + t1r;
                di[base] = x0i + t1i;
                dr[base + Ns] = t2r + ur;
                di[base + Ns] = t2i + ui;
                dr[base + 2 * Ns] = t2r - ur;
                di[base + 2 * Ns] = t2i - ui;
            } else { /* plain DFT: y_q = sum_r x_r exp(-2 pi i r q / R) */
                for (int64_t r = 0; r < R; r++) {
                    vr[r] = ir[j + r * stride];
                    vi[r] = ii[j + r * stride];
                    if (r && Ns > 1)
                        TWIDDLE(vr[r], vi[r], w[2 * (r - 1)], w[2 * (r - 1) + 1]);
                }
                const float *rt = ps->roots;
                for (int64_t q = 0; q < R; q++) {
                    v8f yr = vr[0], yi = vi[0];
                    for (int64_t r = 1, rq = q; r < R; r++, rq = rq + q < R ? rq + q : rq + q - R) {
                        const float c = rt[2 * rq], s = rt[2 * rq + 1];
                        yr += vr[r] * c + vi[r] * s;
                        yi += vi[r] * c - vr[r] * s;
                    }
                    dr[base + q * Ns] = yr;
                    di[base + q * Ns] = yi;
                }
            }
        }
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define DISTDYN_SHUFFLE 1
#endif
#endif

/* out[c][l] = rows[l][c] for c < C: eight rows into lane-major order, 8 x 8 tiles in registers. */
DISTDYN_INLINE void transpose_rows(const float *const *rows, int64_t C, v8f *restrict out)
{
    int64_t c = 0;
#ifdef DISTDYN_SHUFFLE
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
    for (; c + LANES <= C; c += LANES) {
        v8f r[LANES], t[LANES], s[LANES];
        for (int l = 0; l < LANES; l++)
            memcpy(&r[l], rows[l] + c, sizeof(v8f));
        for (int l = 0; l < LANES; l += 2) {
            t[l] = SHUF(r[l], r[l + 1], 0, 8, 1, 9, 4, 12, 5, 13);
            t[l + 1] = SHUF(r[l], r[l + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        for (int l = 0; l < LANES; l += 4) {
            s[l] = SHUF(t[l], t[l + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            s[l + 1] = SHUF(t[l], t[l + 2], 2, 3, 10, 11, 6, 7, 14, 15);
            s[l + 2] = SHUF(t[l + 1], t[l + 3], 0, 1, 8, 9, 4, 5, 12, 13);
            s[l + 3] = SHUF(t[l + 1], t[l + 3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
        for (int l = 0; l < 4; l++) {
            out[c + l] = SHUF(s[l], s[l + 4], 0, 1, 2, 3, 8, 9, 10, 11);
            out[c + l + 4] = SHUF(s[l], s[l + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        }
    }
#undef SHUF
#endif
    for (; c < C; c++)
        for (int l = 0; l < LANES; l++)
            out[c][l] = rows[l][c];
}

/* #(row[c] < t), or #(row[c] <= t) with `or_equal` (NaN in neither). */
static int32_t count_below(const float *row, int64_t C, float t, int or_equal)
{
    int32_t n = 0;
    for (int64_t c = 0; c < C; c++)
        n += or_equal ? row[c] <= t : row[c] < t;
    return n;
}

/* #(v < t) (#(v <= t) with `or_equal`) for each token of a block: lanes of re (tokens 0..7), im (8..15). */
DISTDYN_INLINE void count_block(const v8f *restrict re, const v8f *restrict im, int64_t C, float t, int or_equal,
                                v8i *n_re, v8i *n_im)
{
    const v8f tv = (v8f){0} + t;
    v8i a = {0}, b = {0};
    if (or_equal)
        for (int64_t c = 0; c < C; c++) {
            a -= re[c] <= tv; /* true is -1 */
            b -= im[c] <= tv;
        }
    else
        for (int64_t c = 0; c < C; c++) {
            a -= re[c] < tv;
            b -= im[c] < tv;
        }
    *n_re = a, *n_im = b;
}

/* The entropies of a block's `count` tokens (rows[l], and transposed in re, im) when the data's
 * bounds span few bins (entropy_init), as on a range widened by another layer's outliers: counted
 * by comparisons with those bins' edges, 16 tokens at once, no scatter: bin b holds
 * #(v < edges[b+1]) - #(v < edges[b]), the last bin #(v <= hi) - #(v < edges[bins-1]). The same
 * counts as row_entropy, so the same entropy up to the order of the final sum; a token with values in
 * [lo, hi] outside those bins (wrong bounds) goes to row_entropy. */
DISTDYN_INLINE void narrow_entropy(entropy_ctx *e, const v8f *re, const v8f *im, const float *const *rows,
                                   int64_t count, double *out)
{
    const int64_t C = e->C, bins = e->bins, first = e->first, last = e->last;
    const double *nlog2n = e->nlog2n;
    double s[2 * LANES] = {0.0};
    v8i start_re, start_im, prev_re, prev_im;
    count_block(re, im, C, e->edges[first], 0, &start_re, &start_im);
    prev_re = start_re, prev_im = start_im;
    for (int64_t b = first; b <= last; b++) {
        v8i n_re, n_im;
        count_block(re, im, C, e->edges[b + 1], b == bins - 1, &n_re, &n_im);
        for (int64_t l = 0; l < count; l++)
            s[l] += nlog2n[l < LANES ? n_re[l] - prev_re[l] : n_im[l - LANES] - prev_im[l - LANES]];
        prev_re = n_re, prev_im = n_im;
    }
    for (int64_t l = 0; l < count; l++) {
        const int32_t start = l < LANES ? start_re[l] : start_im[l - LANES];
        const int32_t inside = (l < LANES ? prev_re[l] : prev_im[l - LANES]) - start;
        if (inside != C) { /* values below or above those bins must be outside [lo, hi] */
            const int32_t under = first == 0 ? start : count_below(rows[l], C, e->edges[0], 0);
            const int32_t upto = last == bins - 1 ? inside + start : count_below(rows[l], C, e->edges[bins], 1);
            if (upto - under != inside) {
                out[l] = row_entropy(e, rows[l]);
                continue;
            }
        }
        out[l] = (double)inside / (double)C * e->log2c - s[l] / (double)C;
    }
}

/* Each token's entropy on the range of `e`. */
DISTDYN_INLINE void block_entropy(entropy_ctx *e, const v8f *re, const v8f *im, const float *const *rows,
                                  int64_t count, double *out)
{
    if (e->narrow)
        narrow_entropy(e, re, im, rows, count, out);
    else
        for (int64_t l = 0; l < count; l++)
            out[l] = row_entropy(e, rows[l]);
}

/* Images [i0, i1) of x [images, N, C] (float32): per token the entropy (block_entropy) and sum |x|
 * (in channel order), and per image the sum over its N positions of |FFT over channels| in
 * bins 0..C/2 -> out_spec [images, C/2 + 1] (float64, not divided by C) and the sum over its
 * positions of |x| per channel -> out_chan [images, C]. With `edges2` (else NULL) also each token's
 * entropy on that second histogram range -> out_entropy2 (same bins). `bounds` (or NULL): the least
 * and greatest value of x, a hint that only chooses how the entropies are counted.
 */
DISTDYN_CLONES
int token_metrics_f32(const float *x, int64_t i0, int64_t i1, int64_t N, int64_t C, const float *edges,
                      int64_t bins, const double *nlog2n, double *out_entropy, double *out_abs_sum, double *out_spec,
                      const float *edges2, double *out_entropy2, double *out_chan, const float *bounds)
{
    if (C < 1 || bins < 1)
        return -2;
    const int64_t K = C / 2 + 1, block = 2 * LANES;
    entropy_ctx e, e2;
    e2.counts = NULL, e2.idx = NULL;
    fft_plan pl;
    pl.passes = 0;
    v8f *buf = NULL;
    double *acc = NULL, *chan = NULL;
    int status = -1;
    if (entropy_init(&e, C, edges, bins, nlog2n, bounds) != 0 || plan_init(&pl, C) != 0)
        goto done;
    if (edges2 != NULL && entropy_init(&e2, C, edges2, bins, nlog2n, bounds) != 0)
        goto done;
    /* four [C] buffers (ping-pong, real and imaginary), the radix scratch, two [K] for |A|^2, |B|^2,
     * a row of C zeros */
    if (posix_memalign((void **)&buf, 64, (size_t)(4 * C + 2 * pl.max_r + 2 * K + C / LANES + 1) * sizeof(v8f)) != 0) {
        buf = NULL;
        goto done;
    }
    acc = malloc((size_t)K * LANES * sizeof(double));
    chan = malloc((size_t)C * sizeof(double));
    if (acc == NULL || chan == NULL)
        goto done;
    v8f *re = buf, *im = buf + C, *re2 = buf + 2 * C, *im2 = buf + 3 * C, *vr = buf + 4 * C, *vi = vr + pl.max_r;
    v8f *pa = vi + pl.max_r, *pb = pa + K;
    float *zeros = (float *)(pb + K);
    memset(zeros, 0, (size_t)C * sizeof(float));
    for (int64_t img = i0; img < i1; img++) {
        memset(acc, 0, (size_t)K * LANES * sizeof(double));
        memset(chan, 0, (size_t)C * sizeof(double));
        for (int64_t n0 = 0; n0 < N; n0 += block) {
            const int64_t t0 = img * N + n0, count = N - n0 < block ? N - n0 : block;
            /* the next block's rows are contiguous: ask for them now, they arrive while this one is worked on */
            const char *next = (const char *)(x + (t0 + count) * C);
            const int64_t left = (i1 * N - t0 - count) * C, ahead = (left < block * C ? left : block * C) * 4;
            for (int64_t off = 0; off < ahead; off += 64)
                __builtin_prefetch(next + off);
            /* tokens 0..7 of the block into the real parts, 8..15 into the imaginary parts;
             * missing tokens are zeros, whose spectrum adds nothing */
            const float *rows[2 * LANES];
            for (int64_t l = 0; l < block; l++)
                rows[l] = l < count ? x + (t0 + l) * C : zeros;
            transpose_rows(rows, C, re);
            transpose_rows(rows + LANES, C, im);
            block_entropy(&e, re, im, rows, count, out_entropy + t0);
            if (edges2 != NULL)
                block_entropy(&e2, re, im, rows, count, out_entropy2 + t0);
            /* sum |x| of each token, in channel order: one lane per token, so it vectorises */
            double abs_sum[2 * LANES] = {0.0};
            const float *fr = (const float *)re, *fi = (const float *)im;
            for (int64_t c = 0; c < C; c++)
                for (int64_t l = 0; l < LANES; l++) {
                    abs_sum[l] += fabs((double)fr[c * LANES + l]);
                    abs_sum[LANES + l] += fabs((double)fi[c * LANES + l]);
                }
            for (int64_t l = 0; l < count; l++)
                out_abs_sum[t0 + l] = abs_sum[l];
            for (int64_t l = 0; l < count; l++) { /* sum |x| per channel: along the rows, so it vectorises */
                const float *restrict r = x + (t0 + l) * C;
                double *restrict ch = chan;
                for (int64_t c = 0; c < C; c++)
                    ch[c] += fabs((double)r[c]);
            }
            v8f *zr = re, *zi = im, *wr = re2, *wi = im2;
            for (int64_t p = 0; p < pl.passes; p++) {
                fft_pass_run(&pl.pass[p], C, zr, zi, wr, wi, vr, vi);
                v8f *tr = zr, *ti = zi;
                zr = wr, zi = wi, wr = tr, wi = ti;
            }
            for (int64_t k = 0; k < K; k++) { /* |2A_k|^2 and |2B_k|^2 */
                const int64_t m = k ? C - k : 0;
                const v8f ar = zr[k] + zr[m], ai = zi[k] - zi[m], br = zr[k] - zr[m], bi = zi[k] + zi[m];
                pa[k] = ar * ar + ai * ai;
                pb[k] = br * br + bi * bi;
            }
            const float *sa = (const float *)pa, *sb = (const float *)pb;
            for (int64_t j = 0; j < K * LANES; j++)
                acc[j] += (double)(sqrtf(sa[j]) + sqrtf(sb[j]));
        }
        for (int64_t k = 0; k < K; k++) {
            const double *a = acc + k * LANES;
            out_spec[img * K + k] = 0.5 * (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
        }
        memcpy(out_chan + img * C, chan, (size_t)C * sizeof(double));
    }
    status = 0;
done:
    entropy_free(&e);
    entropy_free(&e2);
    plan_free(&pl);
    free(buf);
    free(acc);
    free(chan);
    return status;
}
