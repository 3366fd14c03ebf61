/*
 * C references for the kernel benchmark: the same escape-time loop as
 * fraktal.render.kernel, written twice in C.
 *
 * Both functions fill out[j * width + i] with the smooth count of pixel
 * (re[i], im[j]) and return the useful iterations: for each pixel the
 * iteration n at which |z_n| > R was first seen, or max_iter if it never was.
 * The rule is the textbook one: at iteration n test |z_n|**2 > R**2, and only
 * then step z <- z**2 + c. With the benchmark's flags (-ffp-contract=off) the
 * arithmetic is the kernel's, operation for operation, so all three
 * contenders must return the same iterations and the same float32 values.
 *
 * scalar_escape_time: one pixel at a time, the loop every textbook shows.
 *
 * avx2_escape_time: VECTORS AVX2 registers of 4 doubles iterated together, so
 * that VECTORS independent dependency chains hide the latency of each step.
 * Every iteration tests every lane; when a lane escapes, or runs out of
 * iterations, its pixel is written and the lane takes the next pixel of the
 * image, so no lane idles while others work. Between refills the loop runs
 * at most as many iterations as the lane closest to max_iter has left, which
 * takes the max_iter test out of the inner loop.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define BAILOUT_SQUARED (1024.0 * 1024.0)
#define VECTORS 4
#define LANES (4 * VECTORS)

static float smooth_count(int64_t n, double magnitude_squared)
{
    double ratio = log(magnitude_squared) / log(BAILOUT_SQUARED);
    double mu = (double)n + 1.0 - log2(ratio);
    return (float)(mu > 0.0 ? mu : 0.0);
}

int64_t scalar_escape_time(const double *re, int64_t width, const double *im,
                           int64_t height, int64_t max_iter, float *out)
{
    int64_t total = 0;
    for (int64_t j = 0; j < height; j++) {
        for (int64_t i = 0; i < width; i++) {
            double cr = re[i], ci = im[j], x = 0.0, y = 0.0;
            float value = -1.0f;
            int64_t n;
            for (n = 0; n < max_iter; n++) {
                double x2 = x * x, y2 = y * y;
                if (x2 + y2 > BAILOUT_SQUARED) {
                    value = smooth_count(n, x2 + y2);
                    break;
                }
                y = 2.0 * x * y + ci;
                x = x2 - y2 + cr;
            }
            out[j * width + i] = value;
            total += n;
        }
    }
    return total;
}

struct lanes {
    double cr[LANES], ci[LANES], x[LANES], y[LANES];
    int64_t steps[LANES], pixel[LANES];
};

/* Give lane k the next pixel, or park it on c = 0 with pixel -1. */
static int64_t take_pixel(struct lanes *s, int k, int64_t next, int64_t pixels,
                          const double *re, int64_t width, const double *im)
{
    s->x[k] = 0.0;
    s->y[k] = 0.0;
    s->steps[k] = 0;
    if (next < pixels) {
        s->cr[k] = re[next % width];
        s->ci[k] = im[next / width];
        s->pixel[k] = next;
        return next + 1;
    }
    s->cr[k] = 0.0;
    s->ci[k] = 0.0;
    s->pixel[k] = -1;
    return next;
}

/* Iterate every lane until one escapes or `budget` iterations have run. */
static int64_t run(struct lanes *s, int64_t budget)
{
    const __m256d limit = _mm256_set1_pd(BAILOUT_SQUARED);
    __m256d cr[VECTORS], ci[VECTORS], x[VECTORS], y[VECTORS];
    for (int v = 0; v < VECTORS; v++) {
        cr[v] = _mm256_loadu_pd(s->cr + 4 * v);
        ci[v] = _mm256_loadu_pd(s->ci + 4 * v);
        x[v] = _mm256_loadu_pd(s->x + 4 * v);
        y[v] = _mm256_loadu_pd(s->y + 4 * v);
    }

    int64_t t;
    for (t = 0; t < budget; t++) {
        __m256d x2[VECTORS], y2[VECTORS];
        __m256d out = _mm256_setzero_pd();
        for (int v = 0; v < VECTORS; v++) {
            x2[v] = _mm256_mul_pd(x[v], x[v]);
            y2[v] = _mm256_mul_pd(y[v], y[v]);
            __m256d magnitude = _mm256_add_pd(x2[v], y2[v]);
            out = _mm256_or_pd(out, _mm256_cmp_pd(magnitude, limit, _CMP_GT_OQ));
        }
        if (_mm256_movemask_pd(out))
            break;
        for (int v = 0; v < VECTORS; v++) {
            __m256d twice_x = _mm256_add_pd(x[v], x[v]);
            y[v] = _mm256_add_pd(_mm256_mul_pd(twice_x, y[v]), ci[v]);
            x[v] = _mm256_add_pd(_mm256_sub_pd(x2[v], y2[v]), cr[v]);
        }
    }

    for (int v = 0; v < VECTORS; v++) {
        _mm256_storeu_pd(s->x + 4 * v, x[v]);
        _mm256_storeu_pd(s->y + 4 * v, y[v]);
    }
    return t;
}

int64_t avx2_escape_time(const double *re, int64_t width, const double *im,
                         int64_t height, int64_t max_iter, float *out)
{
    struct lanes s;
    int64_t pixels = width * height, next = 0, total = 0;
    for (int k = 0; k < LANES; k++)
        next = take_pixel(&s, k, next, pixels, re, width, im);

    for (;;) {
        int64_t budget = INT64_MAX;
        for (int k = 0; k < LANES; k++)
            if (s.pixel[k] >= 0 && max_iter - s.steps[k] < budget)
                budget = max_iter - s.steps[k];
        if (budget == INT64_MAX)
            return total;

        int64_t t = run(&s, budget);
        for (int k = 0; k < LANES; k++) {
            if (s.pixel[k] < 0)
                continue;
            s.steps[k] += t;
            double magnitude = s.x[k] * s.x[k] + s.y[k] * s.y[k];
            if (s.steps[k] >= max_iter) {
                /* z_max_iter is never tested, as in the textbook loop */
                out[s.pixel[k]] = -1.0f;
                total += max_iter;
            } else if (magnitude > BAILOUT_SQUARED) {
                out[s.pixel[k]] = smooth_count(s.steps[k], magnitude);
                total += s.steps[k];
            } else {
                continue;
            }
            next = take_pixel(&s, k, next, pixels, re, width, im);
        }
    }
}
