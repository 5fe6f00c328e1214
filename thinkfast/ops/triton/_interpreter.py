"""Test-speed shim for the Triton interpreter (TRITON_INTERPRET=1, CPU).

The interpreter evaluates `tl.associative_scan` with a user combine function one
element at a time in Python (one combine call per element of the tile), which makes
the selective-scan kernels take seconds per tiny call.  `vectorise_interpreter_scan()`
replaces that evaluator with one that walks the scan axis and combines whole slices
at once: the same left-to-right composition, evaluated by the same combine function,
so the kernel code under test is unchanged.  It only touches the interpreter; compiled
GPU kernels never see it.
"""

from __future__ import annotations

import numpy as np


def vectorise_interpreter_scan() -> bool:
    try:
        from triton.runtime import interpreter
        import triton.language as tl
    except Exception:  # pragma: no cover - no triton
        return False
    ops = getattr(interpreter, "ScanOps", None)
    if ops is None or getattr(ops, "_thinkfast_vectorised", False):
        return ops is not None

    def generic_scan(self, input):
        datas = [arg.handle.data for arg in input]
        axis = self.axis
        length = datas[0].shape[axis]
        outs = [np.empty_like(d) for d in datas]

        def sl(i):
            idx = [slice(None)] * datas[0].ndim
            idx[axis] = slice(i, i + 1)
            return tuple(idx)

        acc = [d[sl(0)] for d in datas]
        for o, a in zip(outs, acc):
            o[sl(0)] = a
        for i in range(1, length):
            acc_t = tuple(self.to_tensor(a, arg.dtype) for a, arg in zip(acc, input))
            cur_t = tuple(self.to_tensor(d[sl(i)], arg.dtype) for d, arg in zip(datas, input))
            ret = self.combine_fn.fn(*acc_t, *cur_t)
            ret = ret if isinstance(ret, tuple) else (ret,)
            acc = [r.handle.data if isinstance(r, tl.core.tensor) else r for r in ret]
            for o, a in zip(outs, acc):
                o[sl(i)] = a
        return [self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input)]

    ops.generic_scan = generic_scan
    ops._thinkfast_vectorised = True
    return True
