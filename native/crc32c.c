/*
 * CRC-32C two ways: slicing-by-8 tables (portable), and the SSE4.2 crc32
 * instruction run on three independent streams whose results are combined
 * with precomputed "shift by N zero bytes" tables, which hides the
 * instruction's 3-cycle latency (the technique of Mark Adler's crc32c.c).
 * The instruction is chosen at run time with __builtin_cpu_supports, so the
 * addon built on one x86-64 machine still runs on one without SSE4.2.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "crc32c.c reads 64-bit words as little-endian"
#endif

#define POLY 0x82F63B78u

static uint32_t slice8[8][256];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

uint32_t crc32c_raw_table(uint32_t crc, const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		crc = slice8[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		n--;
	}
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w = load64(p) ^ crc;
		crc = slice8[7][w & 0xff] ^ slice8[6][(w >> 8) & 0xff] ^
		      slice8[5][(w >> 16) & 0xff] ^ slice8[4][(w >> 24) & 0xff] ^
		      slice8[3][(w >> 32) & 0xff] ^ slice8[2][(w >> 40) & 0xff] ^
		      slice8[1][(w >> 48) & 0xff] ^ slice8[0][w >> 56];
	}
	while (n--)
		crc = slice8[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

/* Stream lengths of the interleaved loop; powers of two (see zeros_op). */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t shift_long[4][256], shift_short[4][256];
static int have_sse42;

/* GF(2) 32x32 matrix times vector: the CRC register as a linear map. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;
	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		square[n] = gf2_times(mat, mat[n]);
}

/* Operator that feeds `len` zero bytes (len a power of two) through the register. */
static void zeros_op(uint32_t *even, size_t len)
{
	uint32_t odd[32];
	uint32_t row = 1;

	odd[0] = POLY; /* one zero bit */
	for (int n = 1; n < 32; n++, row <<= 1)
		odd[n] = row;
	gf2_square(even, odd); /* two zero bits */
	gf2_square(odd, even); /* four zero bits */
	do { /* the first square gives one zero byte, the next two, ... */
		gf2_square(even, odd);
		len >>= 1;
		if (len == 0)
			return;
		gf2_square(odd, even);
		len >>= 1;
	} while (len);
	memcpy(even, odd, sizeof(odd));
}

static void shift_table(uint32_t table[4][256], size_t len)
{
	uint32_t op[32];

	zeros_op(op, len);
	for (uint32_t n = 0; n < 256; n++) {
		table[0][n] = gf2_times(op, n);
		table[1][n] = gf2_times(op, n << 8);
		table[2][n] = gf2_times(op, n << 16);
		table[3][n] = gf2_times(op, n << 24);
	}
}

static inline uint32_t shift(uint32_t table[4][256], uint32_t crc)
{
	return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^
	       table[2][(crc >> 16) & 0xff] ^ table[3][crc >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_raw_sse42(uint32_t crc, const uint8_t *p, size_t n)
{
	uint64_t c0 = crc;

	while (n && ((uintptr_t)p & 7)) {
		c0 = _mm_crc32_u8((uint32_t)c0, *p++);
		n--;
	}
	/* Three streams: c0 over the first third, c1 and c2 from zero over the
	 * others; CRC is linear, so crc(A|B) = shift(crc(A), |B|) ^ crc0(B). */
	while (n >= 3 * LONG_BLOCK) {
		uint64_t c1 = 0, c2 = 0;
		const uint8_t *end = p + LONG_BLOCK;
		do {
			c0 = _mm_crc32_u64(c0, load64(p));
			c1 = _mm_crc32_u64(c1, load64(p + LONG_BLOCK));
			c2 = _mm_crc32_u64(c2, load64(p + 2 * LONG_BLOCK));
			p += 8;
		} while (p < end);
		c0 = shift(shift_long, (uint32_t)c0) ^ (uint32_t)c1;
		c0 = shift(shift_long, (uint32_t)c0) ^ (uint32_t)c2;
		p += 2 * LONG_BLOCK;
		n -= 3 * LONG_BLOCK;
	}
	while (n >= 3 * SHORT_BLOCK) {
		uint64_t c1 = 0, c2 = 0;
		const uint8_t *end = p + SHORT_BLOCK;
		do {
			c0 = _mm_crc32_u64(c0, load64(p));
			c1 = _mm_crc32_u64(c1, load64(p + SHORT_BLOCK));
			c2 = _mm_crc32_u64(c2, load64(p + 2 * SHORT_BLOCK));
			p += 8;
		} while (p < end);
		c0 = shift(shift_short, (uint32_t)c0) ^ (uint32_t)c1;
		c0 = shift(shift_short, (uint32_t)c0) ^ (uint32_t)c2;
		p += 2 * SHORT_BLOCK;
		n -= 3 * SHORT_BLOCK;
	}
	for (; n >= 8; n -= 8, p += 8)
		c0 = _mm_crc32_u64(c0, load64(p));
	while (n--)
		c0 = _mm_crc32_u8((uint32_t)c0, *p++);
	return (uint32_t)c0;
}
#endif /* __x86_64__ */

static void build_tables(void)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t crc = n;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
		slice8[0][n] = crc;
	}
	for (uint32_t n = 0; n < 256; n++)
		for (int k = 1; k < 8; k++)
			slice8[k][n] = (slice8[k - 1][n] >> 8) ^ slice8[0][slice8[k - 1][n] & 0xff];
#if defined(__x86_64__)
	__builtin_cpu_init();
	have_sse42 = __builtin_cpu_supports("sse4.2");
	if (have_sse42) {
		shift_table(shift_long, LONG_BLOCK);
		shift_table(shift_short, SHORT_BLOCK);
	}
#endif
}

void crc32c_init(void)
{
	pthread_once(&init_once, build_tables);
}

int crc32c_hardware(void)
{
#if defined(__x86_64__)
	return have_sse42;
#else
	return 0;
#endif
}

uint32_t crc32c_raw(uint32_t crc, const uint8_t *p, size_t n)
{
#if defined(__x86_64__)
	if (have_sse42)
		return crc32c_raw_sse42(crc, p, n);
#endif
	return crc32c_raw_table(crc, p, n);
}
