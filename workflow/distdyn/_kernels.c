/* Fused per-token kernels for distdyn.metrics (compiled on first use by distdyn.kernels).
 *
 * The torch path makes a dozen passes over each chunk; these make one, so the metric
 * engine runs at about the speed the dump can be read. Plain C, no Python or torch
 * headers: called through ctypes on contiguous buffers, the GIL released.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One binary, the best code path for the CPU it runs on (GCC function multi-versioning). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DISTDYN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DISTDYN_CLONES
#endif

/* For tokens [t0, t1) of x [tokens, C] (float32, row-major): the Shannon entropy (bits) of
 * each token's `bins`-bin histogram, exactly as np.histogram bins float32 data on the
 * float32 `edges` (bins + 1 of them): bin i holds edges[i] <= v < edges[i+1], the last bin
 * also its right edge, values outside (and NaN) dropped but still counted in p = n / C.
 * nlog2n[k] = k log2 k for k = 0..C. Also the sum of |x| over each token.
 * The bin comes from an arithmetic guess corrected against the edges, so it never depends on
 * the guess's rounding. Scalar on purpose: gathers of the edges are slow on many x86 cores.
 */
DISTDYN_CLONES
int token_entropy_f32(const float *x, int64_t t0, int64_t t1, int64_t C, const float *edges, int64_t bins,
                      const double *nlog2n, double *out_entropy, double *out_abs_sum)
{
    /* four sub-histograms (by channel mod 4), so runs of one bin do not wait on each other's stores */
    int32_t *counts = calloc(4 * (size_t)bins, sizeof(int32_t));
    int32_t *idx = malloc((size_t)C * sizeof(int32_t));
    if (counts == NULL || idx == NULL) {
        free(counts);
        free(idx);
        return -1;
    }
    const float lo = edges[0], hi = edges[bins];
    const float scale = (float)((double)bins / ((double)hi - (double)lo));
    const float top = (float)(bins - 1), nbins = (float)bins;
    const double log2c = log2((double)C);
    /* Float32 rounding moves a value's computed position (in bins) by far less than `tol` from
     * its place among the float32 edges, so a value farther than `tol` from every edge is in bin
     * floor(position) for certain; the others (and values outside the range) are compared
     * against the edges. */
    const double mag = fabs((double)lo) > fabs((double)hi) ? fabs((double)lo) : fabs((double)hi);
    const double tol_d = 8.0 * (double)bins * 1.1920929e-07 * (1.0 + 2.0 * mag / ((double)hi - (double)lo));
    const float tol = tol_d < 0.25 ? (float)tol_d : 2.0f; /* 2: every value takes the exact path */
    for (int64_t t = t0; t < t1; t++) {
        const float *row = x + t * C;
        for (int64_t c = 0; c < C; c++) { /* branch-free, no gathers: vectorised */
            const float v = row[c];
            float g = (v - lo) * scale;
            g = g > 0.0f ? g : 0.0f;
            g = g < nbins ? g : top; /* v == hi lands on 0.0 past an edge: the exact path */
            const int32_t i = (int32_t)g;
            const float f = g - (float)i;
            const int sure = (f >= tol) & (f <= 1.0f - tol) & (v >= lo) & (v <= hi);
            idx[c] = sure ? i : -1;
        }
        int64_t inside = 0;
        for (int64_t c = 0; c < C; c++) {
            int64_t i = idx[c];
            if (i < 0) { /* exact: guess, then compare against the float32 edges */
                const float v = row[c];
                if (!(v >= lo && v <= hi))
                    continue;
                const float g = (v - lo) * scale; /* >= 0 */
                i = g < top ? (int64_t)g : bins - 1;
                while (i > 0 && v < edges[i])
                    i--;
                while (i < bins - 1 && v >= edges[i + 1])
                    i++;
            }
            counts[(c & 3) * bins + i]++;
            inside++;
        }
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            s0 += fabs((double)row[c]);
            s1 += fabs((double)row[c + 1]);
            s2 += fabs((double)row[c + 2]);
            s3 += fabs((double)row[c + 3]);
        }
        for (; c < C; c++)
            s0 += fabs((double)row[c]);
        for (int64_t b = 0; b < bins; b++)
            counts[b] += counts[bins + b] + counts[2 * bins + b] + counts[3 * bins + b];
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        int64_t b = 0;
        for (; b + 4 <= bins; b += 4) {
            a0 += nlog2n[counts[b]];
            a1 += nlog2n[counts[b + 1]];
            a2 += nlog2n[counts[b + 2]];
            a3 += nlog2n[counts[b + 3]];
        }
        for (; b < bins; b++)
            a0 += nlog2n[counts[b]];
        memset(counts, 0, 4 * (size_t)bins * sizeof(int32_t));
        out_entropy[t] = (double)inside / (double)C * log2c - ((a0 + a1) + (a2 + a3)) / (double)C;
        out_abs_sum[t] = (s0 + s1) + (s2 + s3);
    }
    free(counts);
    free(idx);
    return 0;
}

/* For images [i0, i1) of z [images, N, K] complex64 (interleaved re, im): the sum over the
 * N positions of |z| per image and bin -> out [images, K] (float64).
 */
DISTDYN_CLONES
int spectrum_abs_sum_c64(const float *z, int64_t i0, int64_t i1, int64_t N, int64_t K, double *out)
{
    for (int64_t i = i0; i < i1; i++) {
        double *o = out + i * K;
        memset(o, 0, (size_t)K * sizeof(double));
        const float *zi = z + 2 * i * N * K;
        for (int64_t n = 0; n < N; n++) {
            const float *zn = zi + 2 * n * K;
            for (int64_t k = 0; k < K; k++) {
                const float re = zn[2 * k], im = zn[2 * k + 1];
                o[k] += (double)sqrtf(re * re + im * im);
            }
        }
    }
    return 0;
}
