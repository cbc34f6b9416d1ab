/* MS-SSIM of image planes (uint8 or float64) in one pass per scale: ganeval's optional compiled CPU kernel.
 *
 * Same arithmetic as ganeval/msssim.py (_moment_stack, _ssim_and_cs_of_moments, box_downsample), fused so that
 * the four Gaussian-filtered maps never leave the cache: per plane and scale, a horizontal 'valid' pass writes
 * the row-filtered s, d, s², d² (s = x + y − 2·centre, d = x − y), and a vertical pass filters them and adds up
 * r = Vd/(Vs + Vd + 2·C2) and q = B/(A + B + 2·C1) (cs_map = 1 − 2r, lum_map = 1 − 2q) and q·r over the valid
 * outputs. Then s and d are box-averaged 2×2 (odd last row/column dropped) for the next scale. Python turns the
 * sums into means. Compiled on first use by ganeval/native.py; plain C99, vectorised by the compiler. */
#include <stdint.h>
#include <stdlib.h>

#define MAX_TAPS 11

/* Row-filtered moments of rows [0, h) of s and d (h × w) into hs, hd, hs2, hd2 (h × wo each). */
#define HORIZONTAL(TAPS)                                                                                         \
    for (int64_t i = 0; i < h; i++) {                                                                            \
        const double *sr = s + i * w, *dr = d + i * w;                                                           \
        for (int64_t j = 0; j < w; j++) { s2row[j] = sr[j] * sr[j]; d2row[j] = dr[j] * dr[j]; }                  \
        double *restrict a = hs + i * wo, *restrict b = hd + i * wo;                                             \
        double *restrict a2 = hs2 + i * wo, *restrict b2 = hd2 + i * wo;                                         \
        _Pragma("omp simd")                                                                                      \
        for (int64_t j = 0; j < wo; j++) {                                                                       \
            double x0 = 0.0, x1 = 0.0, x2 = 0.0, x3 = 0.0;                                                       \
            for (int64_t t = 0; t < (TAPS); t++) {                                                               \
                x0 += g[t] * sr[j + t]; x1 += g[t] * dr[j + t];                                                  \
                x2 += g[t] * s2row[j + t]; x3 += g[t] * d2row[j + t];                                            \
            }                                                                                                    \
            a[j] = x0; b[j] = x1; a2[j] = x2; b2[j] = x3;                                                        \
        }                                                                                                        \
    }

/* Column-filter the row-filtered moments and add up r, q and q·r over the valid outputs. */
#define VERTICAL(TAPS)                                                                                           \
    for (int64_t i = 0; i < ho; i++) {                                                                           \
        _Pragma("omp simd reduction(+:sum_r, sum_q, sum_qr)")                                                    \
        for (int64_t j = 0; j < wo; j++) {                                                                       \
            double ms = 0.0, md = 0.0, es = 0.0, ed = 0.0;                                                       \
            for (int64_t t = 0; t < (TAPS); t++) {                                                               \
                int64_t o = (i + t) * wo + j;                                                                    \
                ms += g[t] * hs[o]; md += g[t] * hd[o]; es += g[t] * hs2[o]; ed += g[t] * hd2[o];                \
            }                                                                                                    \
            double vs = es - ms * ms, vd = ed - md * md, den_r = vs + vd + 2.0 * c2;                             \
            double mu = ms + 2.0 * centre, big_a = mu * mu, big_b = md * md;                                     \
            double den_q = big_a + big_b + 2.0 * c1, inverse = 1.0 / (den_r * den_q); /* one division */         \
            double r = vd * den_q * inverse, q = big_b * den_r * inverse;                                        \
            sum_r += r; sum_q += q; sum_qr += q * r;                                                             \
        }                                                                                                        \
    }

/* sums[0, 1, 2] += Σ r, Σ q, Σ q·r of one scale of one plane (a window of `taps` ≤ MAX_TAPS taps). */
static void one_scale(const double *restrict s, const double *restrict d, int64_t h, int64_t w,
                      const double *window, int64_t taps, double centre, double c1, double c2,
                      double *restrict work, double *sums) {
    int64_t wo = w - taps + 1, ho = h - taps + 1;
    double *restrict hs = work, *restrict hd = hs + h * wo, *restrict hs2 = hd + h * wo;
    double *restrict hd2 = hs2 + h * wo, *restrict s2row = hd2 + h * wo, *restrict d2row = s2row + w;
    double g[MAX_TAPS];  /* a local copy: no aliasing with the buffers, so the taps stay in registers */
    for (int64_t t = 0; t < taps; t++) g[t] = window[t];
    double sum_r = 0.0, sum_q = 0.0, sum_qr = 0.0;
    if (taps == MAX_TAPS) {  /* the common case: a constant trip count lets the compiler vectorise over j */
        HORIZONTAL(MAX_TAPS)
        VERTICAL(MAX_TAPS)
    } else {
        HORIZONTAL(taps)
        VERTICAL(taps)
    }
    sums[0] += sum_r; sums[1] += sum_q; sums[2] += sum_qr;
}

/* 2×2 box average of an h × w plane into (h/2) × (w/2), in box_downsample's order of additions. */
static void downsample(const double *src, int64_t h, int64_t w, double *dst) {
    int64_t ho = h / 2, wo = w / 2;
    for (int64_t i = 0; i < ho; i++) {
        const double *top = src + 2 * i * w, *bottom = top + w;
        for (int64_t j = 0; j < wo; j++)
            dst[i * wo + j] = ((top[2 * j] + bottom[2 * j]) + (top[2 * j + 1] + bottom[2 * j + 1])) * 0.25;
    }
}

/* For each of `planes` pairs of h × w planes x, y (values in [0, 255]; uint8 when bytes ≠ 0, else float64) and
 * each of `scales` scales: sums[(p·scales + j)·3 + {0, 1, 2}] = Σ r, Σ q, Σ q·r.
 * windows: scales × MAX_TAPS taps (row j holds the sizes[j] taps of scale j), sizes[j] ≤ min(MAX_TAPS, h_j, w_j)
 * with h_j = h / 2^j. Returns 0, or −1 when out of memory. */
int msssim_planes(const void *x, const void *y, int64_t bytes, int64_t planes, int64_t h, int64_t w,
                  int64_t scales, const double *windows, const int64_t *sizes, double centre, double c1, double c2,
                  double *sums) {
    double *planes_sd = malloc(sizeof(double) * 2 * (2 * h * w));  /* s, d at this scale; s, d at the next */
    double *work = malloc(sizeof(double) * (4 * h * w + 2 * w));
    if (!planes_sd || !work) { free(planes_sd); free(work); return -1; }
    for (int64_t p = 0; p < planes; p++) {
        double *s = planes_sd, *d = s + h * w, *s_next = d + h * w, *d_next = s_next + h * w;
        if (bytes) {
            const uint8_t *xp = (const uint8_t *)x + p * h * w, *yp = (const uint8_t *)y + p * h * w;
            for (int64_t i = 0; i < h * w; i++) {
                double xv = xp[i], yv = yp[i];
                s[i] = (xv + yv) - 2.0 * centre; d[i] = xv - yv;
            }
        } else {
            const double *xp = (const double *)x + p * h * w, *yp = (const double *)y + p * h * w;
            for (int64_t i = 0; i < h * w; i++) { s[i] = (xp[i] + yp[i]) - 2.0 * centre; d[i] = xp[i] - yp[i]; }
        }
        int64_t hj = h, wj = w;
        for (int64_t j = 0; j < scales; j++) {
            double *out = sums + (p * scales + j) * 3;
            out[0] = out[1] = out[2] = 0.0;
            one_scale(s, d, hj, wj, windows + j * MAX_TAPS, sizes[j], centre, c1, c2, work, out);
            if (j + 1 < scales) {
                downsample(s, hj, wj, s_next);
                downsample(d, hj, wj, d_next);
                double *swap_s = s, *swap_d = d;
                s = s_next; d = d_next; s_next = swap_s; d_next = swap_d;
                hj /= 2; wj /= 2;
            }
        }
    }
    free(planes_sd);
    free(work);
    return 0;
}
