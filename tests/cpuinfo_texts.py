"""/proc/cpuinfo texts of the CPU models seen here and one of each other kind, for the CPU tests."""

# The first processor of /proc/cpuinfo on four machines (flags shortened to what matters).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse sse2 avx fma avx2 bmi2 sha_ni vaes

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: not the first processor
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx fma avx2 avx512f avx512dq avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
NEOVERSE = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd0c
"""
ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512_vnni avx512_bf16 avx_vnni
"""
