"""``cblas_?gemm`` called from numba code at an address known only at run time.

NumPy's BLAS is found when the program runs (:mod:`~portaconv.primitives.numpy_products`), so a
kernel cannot name it as a global (numba would bake the address into its on-disk cache). The
kernels take the function's address as a plain int argument instead, and call it through
:func:`cblas_gemm` (docs/performance.md, "seventh session", on why not a ctypes function).
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba.extending import intrinsic

__all__ = ["cblas_gemm"]


@intrinsic
def cblas_gemm(typingctx, address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """``cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`` of the
    BLAS function at ``address`` (an int), single or double by ``alpha``'s type, from numba code.

    The integers are passed as OpenBLAS's 64-bit interface takes them (flags 32-bit, sizes 64-bit)
    and the matrices as addresses (64-bit integers: the same register as a pointer in the x86-64
    and AArch64 calling conventions).
    """
    if not isinstance(alpha, numba.types.Float) or beta != alpha:
        return None
    signature = numba.types.void(address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        real = context.get_value_type(signature.args[7])
        kinds = [i32, i32, i32, i64, i64, i64, real, i64, i64, i64, i64, real, i64, i64]
        values = [
            value if kind is real
            else context.cast(builder, value, argument, numba.types.int32 if kind is i32 else numba.types.int64)
            for value, argument, kind in zip(args[1:], signature.args[1:], kinds)
        ]
        function = ir.FunctionType(ir.VoidType(), kinds).as_pointer()
        builder.call(builder.inttoptr(context.cast(builder, args[0], signature.args[0], numba.types.int64), function), values)
        return context.get_dummy_value()

    return signature, codegen
