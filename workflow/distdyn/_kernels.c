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

/* For tokens [t0, t1) of x [tokens, C] (float32, row-major): the Shannon entropy (bits) of
 * each token's `bins`-bin histogram, exactly as np.histogram bins float32 data on the
 * float32 `edges` (bins + 1 of them): bin i holds edges[i] <= v < edges[i+1], the last bin
 * also its right edge, values outside (and NaN) dropped but still counted in p = n / C.
 * nlog2n[k] = k log2 k for k = 0..C. Also the sum of |x| over each token.
 */
int token_entropy_f32(const float *x, int64_t t0, int64_t t1, int64_t C, const float *edges, int64_t bins,
                      const double *nlog2n, double *out_entropy, double *out_abs_sum)
{
    int32_t *counts = calloc((size_t)bins, sizeof(int32_t));
    if (counts == NULL)
        return -1;
    const float lo = edges[0], hi = edges[bins];
    const double scale = (double)bins / ((double)hi - (double)lo);
    const double log2c = log2((double)C);
    for (int64_t t = t0; t < t1; t++) {
        const float *row = x + t * C;
        int64_t inside = 0;
        double abs_sum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            const float v = row[c];
            abs_sum += fabsf(v);
            if (!(v >= lo && v <= hi))
                continue;
            /* a guess by arithmetic, then exact against the float32 edges */
            int64_t i = (int64_t)(((double)v - (double)lo) * scale);
            if (i > bins - 1)
                i = bins - 1;
            while (i > 0 && v < edges[i])
                i--;
            while (i < bins - 1 && v >= edges[i + 1])
                i++;
            counts[i]++;
            inside++;
        }
        double acc = 0.0;
        for (int64_t b = 0; b < bins; b++) {
            acc += nlog2n[counts[b]];
            counts[b] = 0;
        }
        out_entropy[t] = (double)inside / (double)C * log2c - acc / (double)C;
        out_abs_sum[t] = abs_sum;
    }
    free(counts);
    return 0;
}

/* For images [i0, i1) of z [images, N, K] complex64 (interleaved re, im): the sum over the
 * N positions of |z| per image and bin -> out [images, K] (float64).
 */
int spectrum_abs_sum_c64(const float *z, int64_t i0, int64_t i1, int64_t N, int64_t K, double *out)
{
    for (int64_t i = i0; i < i1; i++) {
        double *o = out + i * K;
        memset(o, 0, (size_t)K * sizeof(double));
        const float *zi = z + 2 * i * N * K;
        for (int64_t n = 0; n < N; n++) {
            const float *zn = zi + 2 * n * K;
            for (int64_t k = 0; k < K; k++) {
                const double re = zn[2 * k], im = zn[2 * k + 1];
                o[k] += sqrt(re * re + im * im);
            }
        }
    }
    return 0;
}
