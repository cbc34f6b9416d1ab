/* The loops of celebahq.legacy_pillow in C, bit for bit the same numbers (see that module for the arithmetic).
 *
 * Every function reproduces one numpy step value for value: the same float32 / double operations in the same
 * order for each output value (the loops only visit outputs in another order, which does not change any of
 * them). Built without -ffast-math and with -ffp-contract=off (gancore.native), so no sum is reassociated and
 * no product is fused into an FMA. Images are uint8 or float32, row-major [rows][cols][channels], contiguous.
 * Each function returns 0, or 1 when it cannot allocate its scratch memory.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Resample.c clip8: (int) truncation toward zero, then 0 .. 255. */
static inline uint8_t clip8(float value) {
    if (value <= 0.0f) return 0;
    if (value >= 255.0f) return 255;
    return (uint8_t)(int)value;
}

static inline int64_t clamp_index(int64_t index, int64_t size) {
    return index < size ? index : size - 1;  /* past the window the weight is 0 (Resample.c stops there) */
}

/* One ANTIALIAS pass along the rows axis: out[o][k] = clip8(0.5 + sum_t in[first[o] + t][k] * weights[o][t]),
 * float32 products and sums in tap order. in: [in_rows][line]; out: [out_rows][line]. */
int legacy_resample_rows(const uint8_t *in, int64_t in_rows, int64_t line, const int64_t *first,
                         const float *weights, int64_t kmax, int64_t out_rows, uint8_t *out) {
    float *acc = malloc((size_t)line * sizeof(float));
    if (!acc) return 1;
    for (int64_t o = 0; o < out_rows; o++) {
        for (int64_t k = 0; k < line; k++) acc[k] = 0.5f;
        for (int64_t t = 0; t < kmax; t++) {
            const uint8_t *src = in + clamp_index(first[o] + t, in_rows) * line;
            const float w = weights[o * kmax + t];
            for (int64_t k = 0; k < line; k++) acc[k] += (float)src[k] * w;
        }
        uint8_t *dst = out + o * line;
        for (int64_t k = 0; k < line; k++) dst[k] = clip8(acc[k]);
    }
    free(acc);
    return 0;
}

/* out[x][y][c] = in[y][x][c] for uint8 [rows][cols][channels], in tiles (a pass along the columns runs as one
 * along the rows of the transposed image: the same sums, vectorised). */
int legacy_transpose(const uint8_t *in, int64_t rows, int64_t cols, int64_t channels, uint8_t *out) {
    const int64_t tile = 64;
    for (int64_t y0 = 0; y0 < rows; y0 += tile) {
        const int64_t y1 = y0 + tile < rows ? y0 + tile : rows;
        for (int64_t x0 = 0; x0 < cols; x0 += tile) {
            const int64_t x1 = x0 + tile < cols ? x0 + tile : cols;
            for (int64_t x = x0; x < x1; x++) {
                uint8_t *dst = out + (x * rows + y0) * channels;
                const uint8_t *src = in + (y0 * cols + x) * channels;
                for (int64_t y = y0; y < y1; y++, dst += channels, src += cols * channels) {
                    for (int64_t c = 0; c < channels; c++) dst[c] = src[c];
                }
            }
        }
    }
    return 0;
}

/* Geometry.c quad_transform + bilinear_filter32RGB: output (x, y) samples the source at
 * ((a0 + a1 x) + a2 y) + (a3 x) y, (a4 ...) in double (the per-column products and sums computed once: the same
 * roundings), black outside [0, W) x [0, H), truncated. A missing next row (y + 1 outside) gives v2 = v1 in the C
 * code: reading the clipped row again does the same. transposed: write out[x][y] instead of out[y][x] (the
 * column pass of the following resize then runs along rows). Tiles of QUAD_TILE x QUAD_TILE outputs, each row of
 * a tile in two loops: its coordinates (no branch: outside pixels get 0 before the floor), then its samples. */
#define QUAD_TILE 64
int legacy_quad_bilinear(const uint8_t *in, int64_t height, int64_t width, int64_t channels, const double *a,
                         int64_t out_height, int64_t out_width, int transposed, uint8_t *out) {
    double *columns = malloc((size_t)out_width * 4 * sizeof(double));
    if (!columns) return 1;
    double *px = columns, *qx = columns + out_width, *py = columns + 2 * out_width, *qy = columns + 3 * out_width;
    for (int64_t x = 0; x < out_width; x++) {
        const double xd = (double)x;
        px[x] = a[0] + a[1] * xd;
        qx[x] = a[3] * xd;
        py[x] = a[4] + a[5] * xd;
        qy[x] = a[7] * xd;
    }
    const int64_t line = width * channels;
    const double fw = (double)width, fh = (double)height;
    double dxs[QUAD_TILE], dys[QUAD_TILE];
    int64_t xis[QUAD_TILE], yis[QUAD_TILE];
    int32_t inside[QUAD_TILE];
    for (int64_t ty = 0; ty < out_height; ty += QUAD_TILE) {
        for (int64_t tx = 0; tx < out_width; tx += QUAD_TILE) {
            const int64_t n = tx + QUAD_TILE <= out_width ? QUAD_TILE : out_width - tx;
            for (int64_t y = ty; y < ty + QUAD_TILE && y < out_height; y++) {
                const double yd = (double)y, rx = a[2] * yd, ry = a[6] * yd;
                for (int64_t i = 0; i < n; i++) {  /* the coordinates, branch-free (vectorised) */
                    const double xin = (px[tx + i] + rx) + qx[tx + i] * yd;
                    const double yin = (py[tx + i] + ry) + qy[tx + i] * yd;
                    inside[i] = (xin >= 0.0) & (xin < fw) & (yin >= 0.0) & (yin < fh);
                    const double xs = inside[i] ? xin - 0.5 : 0.0, ys = inside[i] ? yin - 0.5 : 0.0;
                    const double xf = floor(xs), yf = floor(ys);
                    dxs[i] = xs - xf;
                    dys[i] = ys - yf;
                    xis[i] = (int64_t)xf;
                    yis[i] = (int64_t)yf;
                }
                for (int64_t i = 0; i < n; i++) {  /* the samples */
                    const int64_t x = tx + i;
                    uint8_t *dst = out + (transposed ? x * out_height + y : y * out_width + x) * channels;
                    if (!inside[i]) {
                        for (int64_t c = 0; c < channels; c++) dst[c] = 0;
                        continue;
                    }
                    const int64_t xi = xis[i], yi = yis[i];
                    const double dx = dxs[i], dy = dys[i];
                    const int64_t x0 = xi < 0 ? 0 : (xi > width - 1 ? width - 1 : xi);
                    const int64_t x1 = xi + 1 < 0 ? 0 : (xi + 1 > width - 1 ? width - 1 : xi + 1);
                    const int64_t y0 = yi < 0 ? 0 : (yi > height - 1 ? height - 1 : yi);
                    const int64_t y1 = yi + 1 >= 0 && yi + 1 < height ? yi + 1 : y0;
                    const uint8_t *p0 = in + y0 * line + x0 * channels, *p1 = in + y0 * line + x1 * channels;
                    const uint8_t *q0 = in + y1 * line + x0 * channels, *q1 = in + y1 * line + x1 * channels;
                    for (int64_t c = 0; c < channels; c++) {
                        const double v1 = (double)p0[c] + ((double)p1[c] - (double)p0[c]) * dx;
                        const double v2 = (double)q0[c] + ((double)q1[c] - (double)q0[c]) * dx;
                        dst[c] = (uint8_t)(v1 + (v2 - v1) * dy);
                    }
                }
            }
        }
    }
    free(columns);
    return 0;
}

/* scipy.ndimage 'reflect' (d c b a | a b c d | d c b a), any distance from the line. */
static inline int64_t reflect_index(int64_t index, int64_t size) {
    const int64_t period = 2 * size;
    int64_t m = index % period;
    if (m < 0) m += period;
    return m < size ? m : period - 1 - m;
}

/* scipy.ndimage.correlate1d with a symmetric kernel (w[j]: the weight at distance j, 0 <= j <= radius) along the
 * rows axis of uint8 [rows][line] -> float32: in double, centre first, then the pairs from the farthest in. The
 * pair is added as integers, then converted: (double)a + (double)b is exactly (double)(a + b) for bytes. */
int legacy_gaussian_rows(const uint8_t *in, int64_t rows, int64_t line, const double *w, int64_t radius,
                         float *out) {
    double *acc = malloc((size_t)line * sizeof(double));
    if (!acc) return 1;
    for (int64_t y = 0; y < rows; y++) {
        const uint8_t *centre = in + y * line;
        for (int64_t k = 0; k < line; k++) acc[k] = (double)centre[k] * w[0];
        for (int64_t j = radius; j >= 1; j--) {
            const uint8_t *before = in + reflect_index(y - j, rows) * line;
            const uint8_t *after = in + reflect_index(y + j, rows) * line;
            const double wj = w[j];
            for (int64_t k = 0; k < line; k++) acc[k] += (double)((int32_t)before[k] + (int32_t)after[k]) * wj;
        }
        float *dst = out + y * line;
        for (int64_t k = 0; k < line; k++) dst[k] = (float)acc[k];
    }
    free(acc);
    return 0;
}

/* The same along the columns axis of float32 [rows][cols][channels], in place allowed (out may be in). */
int legacy_gaussian_cols(const float *in, int64_t rows, int64_t cols, int64_t channels, const double *w,
                         int64_t radius, float *out) {
    const int64_t line = cols * channels;
    double *ext = malloc((size_t)(cols + 2 * radius) * channels * sizeof(double));
    double *acc = malloc((size_t)line * sizeof(double));
    if (!ext || !acc) {
        free(ext);
        free(acc);
        return 1;
    }
    for (int64_t y = 0; y < rows; y++) {
        const float *row = in + y * line;
        for (int64_t e = 0; e < cols + 2 * radius; e++) {
            const float *src = row + reflect_index(e - radius, cols) * channels;
            for (int64_t c = 0; c < channels; c++) ext[e * channels + c] = (double)src[c];
        }
        const double *centre = ext + radius * channels;
        for (int64_t k = 0; k < line; k++) acc[k] = centre[k] * w[0];
        for (int64_t j = radius; j >= 1; j--) {
            const double *before = centre - j * channels, *after = centre + j * channels;
            const double wj = w[j];
            for (int64_t k = 0; k < line; k++) acc[k] += (before[k] + after[k]) * wj;
        }
        float *dst = out + y * line;
        for (int64_t k = 0; k < line; k++) dst[k] = (float)acc[k];
    }
    free(ext);
    free(acc);
    return 0;
}

/* The k-th smallest (0-based) of n float32 values at stride `stride`, by a two-pass radix select over the bits
 * mapped to an order-preserving unsigned key (any non-NaN value; -0 sorts before +0). */
static int select_kth(const float *values, int64_t n, int64_t stride, int64_t k, float *result) {
    uint32_t *counts = calloc(65536, sizeof(uint32_t));
    if (!counts) return 1;
    uint32_t prefix = 0;
    for (int pass = 0; pass < 2; pass++) {
        memset(counts, 0, 65536 * sizeof(uint32_t));
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, values + i * stride, sizeof bits);
            const uint32_t key = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
            if (pass == 0) counts[key >> 16]++;
            else if ((key >> 16) == prefix) counts[key & 0xffffu]++;
        }
        uint32_t bucket = 0;
        while ((int64_t)counts[bucket] <= k) k -= counts[bucket++];
        prefix = pass == 0 ? bucket : (prefix << 16) | bucket;
    }
    free(counts);
    const uint32_t bits = (prefix & 0x80000000u) ? (prefix & 0x7fffffffu) : ~prefix;
    memcpy(result, &bits, sizeof bits);
    return 0;
}

/* np.median(image, axis=(0, 1)) of float32 [n][channels]: the middle value, or for even n the float32 mean of the
 * two middle values ((a + b) in float32, then / 2, as numpy's mean of them). */
int legacy_channel_median(const float *image, int64_t n, int64_t channels, float *median) {
    for (int64_t c = 0; c < channels; c++) {
        float high, low;
        if (select_kth(image + c, n, channels, n / 2, &high)) return 1;
        if (n % 2) {
            median[c] = high;
            continue;
        }
        if (select_kth(image + c, n, channels, n / 2 - 1, &low)) return 1;
        const float sum = low + high;
        median[c] = sum / 2.0f;
    }
    return 0;
}

/* render.pad_with_blur's mask along one axis: min(i / before, (n - 1 - i) / after) over the sides with a pad,
 * float32 (+inf where neither side has one). */
static void side_distance(int64_t n, int64_t before, int64_t after, float *distance) {
    for (int64_t i = 0; i < n; i++) {
        float d = INFINITY;
        if (before > 0) d = (float)i / (float)before;
        if (after > 0) {
            const float e = (float)(n - 1 - i) / (float)after;
            d = e < d ? e : d;
        }
        distance[i] = d;
    }
}

static inline float clip01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* The two blends of render.pad_with_blur on the padded uint8 image [h][w][channels] (pads left, top, right,
 * bottom). stage 0: blurred <- img + (blurred - img) * clip(mask * 3 + 1, 0, 1), float32 in place.
 * stage 1: out <- uint8(clip(round(blurred + (median[c] - blurred) * clip(mask, 0, 1)), 0, 255)), round half
 * to even (np.round). */
int legacy_pad_blend(const uint8_t *img, float *blurred, int64_t h, int64_t w, int64_t channels, const int64_t *pad,
                     int stage, const float *median, uint8_t *out) {
    float *dist_x = malloc((size_t)w * sizeof(float)), *dist_y = malloc((size_t)h * sizeof(float));
    if (!dist_x || !dist_y) {
        free(dist_x);
        free(dist_y);
        return 1;
    }
    side_distance(w, pad[0], pad[2], dist_x);
    side_distance(h, pad[1], pad[3], dist_y);
    for (int64_t y = 0; y < h; y++) {
        for (int64_t x = 0; x < w; x++) {
            const float d = dist_x[x] < dist_y[y] ? dist_x[x] : dist_y[y];
            const float mask = 1.0f - d;
            const int64_t at = (y * w + x) * channels;
            if (stage == 0) {
                const float m = clip01(mask * 3.0f + 1.0f);
                for (int64_t c = 0; c < channels; c++) {
                    const float v = (float)img[at + c];
                    blurred[at + c] = v + (blurred[at + c] - v) * m;
                }
            } else {
                const float m = clip01(mask);
                for (int64_t c = 0; c < channels; c++) {
                    const float v = blurred[at + c];
                    const float r = rintf(v + (median[c] - v) * m);
                    out[at + c] = r <= 0.0f ? 0 : (r >= 255.0f ? 255 : (uint8_t)r);
                }
            }
        }
    }
    free(dist_x);
    free(dist_y);
    return 0;
}
