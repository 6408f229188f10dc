/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as Linux's lib/crc32c
 * computes it: crc32c_raw(reg, p, n) runs the register `reg` over n bytes with
 * no initial or final inversion. Callers choose the convention:
 *
 *   standard CRC-32C (iSCSI, crypto API "crc32c"): ~crc32c_raw(~0, p, n)
 *       check value of "123456789" = 0xE3069283
 *   persistent-data dm_bm_checksum:  crc32c_raw(~0, p, n) ^ salt
 *       (thin-metadata.md §2.1; "123456789" gives 0x1CF96D7C)
 *   dm-integrity crc32c keyed with le32 k: ~crc32c_raw(k, p, n)
 *       (integrity.md §3.8)
 */
#ifndef DMKIT_CRC32C_H
#define DMKIT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Builds the tables; must run once before any other call (idempotent, thread safe). */
void crc32c_init(void);

/* Fastest implementation this CPU has (SSE4.2 when present). */
uint32_t crc32c_raw(uint32_t reg, const uint8_t *p, size_t n);

/* The portable slicing-by-8 implementation, whatever the CPU. */
uint32_t crc32c_raw_table(uint32_t reg, const uint8_t *p, size_t n);

/* 1 when crc32c_raw uses the SSE4.2 crc32 instruction. */
int crc32c_hardware(void);

#endif
