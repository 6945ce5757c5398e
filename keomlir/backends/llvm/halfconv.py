"""Half-precision data (float16, bfloat16): its LLVM storage types and the conversions
between storage and float32 arithmetic, scalar or vector.

Half data is read in half precision, computed in float32 and rounded once when written.
A conversion is LLVM's `fpext` / `fptrunc` where the target converts with instructions
(`hardware`: F16C or AVX512-FP16 on x86, every AArch64, the GPU); elsewhere
LLVM would call compiler-rt helpers that a JIT-loaded kernel cannot link (`__extendhfsf2`,
`__truncsfbf2`...), so the conversion is written here with integer operations: exact
(widening), rounded to nearest even (narrowing), and vectorized like any other code.
bfloat16 -> float32 is always the 16-bit shift it is (LLVM emits the same; x86 has no
instruction for it).
A float64 accumulator is rounded to half through float32 rounded to odd (`to_odd_float`):
float32 keeps 13 more bits than float16 and 16 more than bfloat16, so the two roundings
give the correctly rounded result, as one rounding of the float64 value would.
"""

from __future__ import annotations

from llvmlite import ir
from llvmlite.ir import types as _types

from ..launch import HALF  # stored in 16 bits, computed in float32


class BFloatType(_types._BaseFloatType):
    """LLVM's `bfloat` (llvmlite has no class for it): only stored, extended and truncated
    here, never a constant."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"

    def format_constant(self, value):
        raise TypeError("bfloat constants are not emitted")


BFloatType._create_instance()

STORAGE = {"float16": ir.HalfType(), "bfloat16": BFloatType(), "float32": ir.FloatType(),
           "float64": ir.DoubleType()}
_I16, _I32 = ir.IntType(16), ir.IntType(32)


def arithmetic(dtype):
    """The dtype data of `dtype` is computed in: float32 for half data, else itself."""
    return "float32" if dtype in HALF else dtype


def hardware(target, dtype):
    """Whether LLVM converts between float32 and `dtype` data with instructions on `target`
    (else with a library call: software here)."""
    if target.kind == "gpu" or target.triple.startswith(("aarch64", "arm64")):
        return True  # (AArch64: FCVT for half; BFCVT with +bf16, else LLVM's own inline integer code)
    if not target.triple.startswith("x86_64"):
        return False
    # float32 -> bfloat16 is software on every x86: AVX512-BF16's VCVTNEPS2BF16 flushes subnormal
    # inputs and results to zero (measured on Zen 4: every float32 below 2^-126 became 0), and a
    # kernel narrows only its outputs, once a row, where the instruction would save nothing measurable
    return dtype == "float16" and (target.has("f16c") or target.has("avx512fp16"))


def _like(value, scalar):
    """`scalar` type with `value`'s vector shape."""
    return ir.VectorType(scalar, value.type.count) if isinstance(value.type, ir.VectorType) else scalar


def _const(value, scalar, v):
    return ir.Constant(_like(value, scalar), v) if not isinstance(value.type, ir.VectorType) else \
        ir.Constant(_like(value, scalar), [ir.Constant(scalar, v)] * value.type.count)


def extend(b, value, dtype, target):
    """float32 values (scalar or vector) of `value`, `dtype` data in its storage type: exact."""
    if dtype not in HALF:
        return value
    if dtype == "bfloat16" or not hardware(target, dtype):
        return _soft_extend(b, value, dtype)
    return b.fpext(value, _like(value, ir.FloatType()))


def narrow(b, value, dtype, target):
    """`value` (float32, scalar or vector) as `dtype` data in its storage type, rounded to nearest even."""
    if dtype not in HALF:
        return value
    if hardware(target, dtype):
        return b.fptrunc(value, _like(value, STORAGE[dtype]))
    return _soft_narrow(b, value, dtype)


def _soft_extend(b, value, dtype):
    bits = b.bitcast(value, _like(value, _I16))
    word = b.zext(bits, _like(value, _I32))
    c = lambda v: _const(value, _I32, v)  # noqa: E731
    f32 = _like(value, ir.FloatType())
    if dtype == "bfloat16":  # bfloat16 is the high half of a float32
        return b.bitcast(b.shl(word, c(16)), f32)
    sign = b.shl(b.and_(word, c(0x8000)), c(16))
    mag = b.and_(word, c(0x7FFF))
    # normal numbers: the exponent rebased (15 -> 127); Inf and NaN: the exponent all ones;
    # subnormals and zero: the 10-bit significand times 2^-24 (exact)
    normal = b.add(b.shl(mag, c(13)), c((127 - 15) << 23))
    special = b.or_(b.shl(mag, c(13)), c(0x7F800000))
    small = b.bitcast(b.fmul(b.uitofp(mag, f32), _const(value, ir.FloatType(), 2.0 ** -24)), _like(value, _I32))
    out = b.select(b.icmp_unsigned(">=", mag, c(0x7C00)), special, normal)
    out = b.select(b.icmp_unsigned("<", mag, c(0x400)), small, out)
    return b.bitcast(b.or_(out, sign), f32)


def _soft_narrow(b, value, dtype):
    i32 = _like(value, _I32)
    c = lambda v: _const(value, _I32, v)  # noqa: E731
    x = b.bitcast(value, i32)
    if dtype == "bfloat16":
        # round to nearest even on the bits (right for subnormals and overflow to Inf too); NaN kept quiet
        rounded = b.add(b.add(x, c(0x7FFF)), b.and_(b.lshr(x, c(16)), c(1)))
        nan = b.fcmp_unordered("uno", value, value)
        out = b.select(nan, b.or_(x, c(0x400000)), rounded)
        return b.bitcast(b.trunc(b.lshr(out, c(16)), _like(value, _I16)), _like(value, STORAGE[dtype]))
    sign = b.and_(x, c(0x80000000))
    mag = b.xor(x, sign)
    # |x| >= 2^16: Inf, or a quiet NaN
    big = b.select(b.icmp_unsigned(">", mag, c(0x7F800000)), c(0x7E00), c(0x7C00))
    # |x| < 2^-14 (half subnormals): the float32 sum with 0.5, whose ulp is half's 2^-24, rounds to
    # nearest even; its significand is then the result
    f32 = _like(value, ir.FloatType())
    half_const = _const(value, ir.FloatType(), 0.5)
    small = b.sub(b.bitcast(b.fadd(b.bitcast(mag, f32), half_const), i32), c(0x3F000000))
    # normal: the exponent rebased and the 13 dropped bits rounded to nearest even (a carry
    # into the exponent is right, up to Inf)
    odd = b.and_(b.lshr(mag, c(13)), c(1))
    normal = b.lshr(b.add(b.add(mag, c(((15 - 127) << 23) + 0xFFF)), odd), c(13))
    out = b.select(b.icmp_unsigned(">=", mag, c(0x47800000)), big, normal)
    out = b.select(b.icmp_unsigned("<", mag, c(0x38800000)), small, out)
    out = b.or_(out, b.lshr(sign, c(16)))
    return b.bitcast(b.trunc(out, _like(value, _I16)), _like(value, STORAGE[dtype]))


def to_odd_float(b, value):
    """float64 `value` (scalar or vector) as float32 rounded to odd: truncated toward zero, the
    last bit set where that lost anything (NaN stays NaN, beyond float32's range: its largest)."""
    f32 = _like(value, ir.FloatType())
    f = b.fptrunc(value, f32)
    back = b.fpext(f, value.type)
    fabs = _fabs(b, value.type)
    i32 = _like(value, _I32)
    bits = b.bitcast(f, i32)
    up = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [value]))  # rounded away from zero
    bits = b.select(up, b.sub(bits, _const(value, _I32, 1)), bits)
    inexact = b.zext(b.fcmp_unordered("!=", back, value), i32)
    return b.bitcast(b.or_(bits, inexact), f32)


def _fabs(b, ty):
    suffix = f"v{ty.count}f64" if isinstance(ty, ir.VectorType) else "f64"
    name = f"llvm.fabs.{suffix}"
    fn = b.module.globals.get(name)
    return fn or ir.Function(b.module, ir.FunctionType(ty, [ty]), name)
