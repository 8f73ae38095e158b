/* loopspec.dropout's parity masks in one loop: Threefry-2x32-20 (loopspec/dropout.py is the
 * specification, tests/test_dropout.py compares them bit for bit). Built once by the system C compiler
 * and loaded with ctypes (loopspec/dropout_kernel.py). Each block stays in registers from counter to mask
 * value; the mask is written directly. uint32 arithmetic wraps, as the specification's. */
#include <stdint.h>

#define ROTL(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
#define ROUND(r) x0 += x1; x1 = ROTL(x1, r) ^ x0;
/* loopspec.dropout.ROTATIONS: groups of four rounds 1, 3, 5 and 2, 4 */
#define FIRST_FOUR ROUND(13) ROUND(15) ROUND(26) ROUND(6)
#define SECOND_FOUR ROUND(17) ROUND(29) ROUND(16) ROUND(24)
#define KEY_PARITY 0x1BD11BDAu

/* Words x0, x1 of block `block` of the row whose counter word 0 is `first` (already plus k0). */
#define THREEFRY(first, block)                                                   \
    uint32_t x0 = (first), x1 = (uint32_t)(block) + k1;                          \
    FIRST_FOUR x0 += k1; x1 += k2 + 1u;                                          \
    SECOND_FOUR x0 += k2; x1 += k0 + 2u;                                         \
    FIRST_FOUR x0 += k0; x1 += k1 + 3u;                                          \
    SECOND_FOUR x0 += k1; x1 += k2 + 4u;                                         \
    FIRST_FOUR x0 += k2; x1 += k0 + 5u;

/* out[i, j] = scale if word j % 2 of threefry2x32((k0, k1), (counters[i], j / 2)) >= keep_from, else 0,
 * for i < rows and j < size. The full blocks in one loop without a branch, so the compiler vectorises it
 * (3 ns a word instead of 10, measured with gcc -O3); an odd size's last word after it. */
#define FILL(NAME, T)                                                                                   \
    void NAME(uint32_t k0, uint32_t k1, const uint64_t *counters, int64_t rows, int64_t size,           \
              uint32_t keep_from, double scale, T *out) {                                               \
        const uint32_t k2 = k0 ^ k1 ^ KEY_PARITY;                                                       \
        const T kept = (T)scale, dropped = (T)0;                                                        \
        for (int64_t i = 0; i < rows; i++) {                                                            \
            T *row = out + i * size;                                                                    \
            const uint32_t first = (uint32_t)counters[i] + k0;                                          \
            for (int64_t block = 0; block < size / 2; block++) {                                        \
                THREEFRY(first, block)                                                                  \
                row[2 * block] = x0 >= keep_from ? kept : dropped;                                      \
                row[2 * block + 1] = x1 >= keep_from ? kept : dropped;                                  \
            }                                                                                           \
            if (size % 2) {                                                                             \
                THREEFRY(first, size / 2)                                                               \
                row[size - 1] = x0 >= keep_from ? kept : dropped;                                       \
            }                                                                                           \
        }                                                                                               \
    }

FILL(fill_float32, float)
FILL(fill_float64, double)
