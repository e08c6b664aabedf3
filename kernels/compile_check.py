"""Compile the Triton kernels for an NVIDIA target without a GPU, and report registers and spills.

``python -m workbench.kernels.compile_check [--arch 90]`` compiles pass A and pass B at the default
configurations (fp16/bf16/fp32, head dims 64/128, causal and not) through Triton's NVIDIA backend and the
``ptxas`` bundled with the triton wheel, then reads the register count and stack (spill) bytes of each
cubin with the bundled ``cuobjdump``. It checks that the block sizes are legal on a GPU (the interpreter
does not: it runs dots with any tile size) and flags register spills, which cost speed.

The kernels are specialised the way the launcher would specialise them for contiguous tensors: unit
head-dim strides and 16-divisible pointers and row strides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

import torch

__all__ = ["compile_pass", "resource_usage", "default_config"]

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def default_config(which: str, d: int, dtype: torch.dtype, pool: int = 64, windowed: bool = False):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) the launcher uses on a GPU for this pass."""
    from . import triton_attention as ta

    d_pad = ta._d_pad(d)
    # the GPU defaults, whatever the interpreter setting of this process
    saved = ta.is_interpreting
    ta.is_interpreting = lambda: False
    try:
        if which == "A":
            return ta._default_a_config(d_pad, dtype, windowed=windowed)
        return ta._default_b_config(pool, d_pad, dtype)
    finally:
        ta.is_interpreting = saved


def compile_pass(
    which: str,
    dtype: torch.dtype,
    d: int,
    *,
    causal: bool = True,
    config=None,
    arch: int = 90,
    windowed: bool = False,
    softcap: bool = False,
):
    """Compile pass ``"A"`` or ``"B"`` for ``cuda:sm_{arch}``; returns the compiled kernel.

    ``windowed``/``softcap`` compile the sliding-window and soft-capped specialisations.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_attention as ta

    if type(ta._pass_a_kernel).__name__ != "JITFunction" or ta.is_interpreting():
        # triton's own library functions are decorated for the interpreter too: use a fresh process
        raise RuntimeError("TRITON_INTERPRET is on in this process; run compile_check in a process without it")
    fn = ta._pass_a_kernel if which == "A" else ta._pass_b_kernel
    bm, bn, warps, stages = config or default_config(which, d, dtype)
    dt = _DTYPE_NAMES[dtype]
    consts = dict(
        HEAD_DIM=d,
        D_PAD=ta._d_pad(d),
        BLOCK_M=bm,
        BLOCK_N=bn,
        CAUSAL=causal,
        DOT_FP32=(dtype == torch.float32),
        WINDOWED=windowed,
        SOFTCAP=softcap,
    )
    for name in fn.arg_names:
        if name.startswith("stride_") and name.endswith("d"):
            consts[name] = 1
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
            continue
        if name in ("Q", "K", "V", "O"):
            sig[name] = f"*{dt}"
        elif name == "AMAX":
            sig[name] = "*i64"
        elif name.isupper():
            sig[name] = "*fp32"
        elif name in ("qk_scale", "cap_log2e"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
        if sig[name].startswith("*") or (name.startswith("stride_") and name[-1] in "bhn"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})


def resource_usage(kernel) -> dict:
    """Registers, stack (spill) bytes and shared memory of a compiled kernel, read from its cubin."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        text = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if m is None:
        raise RuntimeError(f"could not parse cuobjdump output: {text[:300]}")
    return {"registers": int(m.group(1)), "stack_bytes": int(m.group(2)), "shared_bytes": int(kernel.metadata.shared)}


# (pass, dtype, D, causal, windowed, softcap)
QUICK_CASES = [
    ("A", torch.bfloat16, 128, True, False, False),
    ("B", torch.bfloat16, 128, True, False, False),
    ("A", torch.float16, 64, False, False, False),
    ("A", torch.float32, 64, True, False, False),
    ("B", torch.float32, 128, False, False, False),
    ("A", torch.bfloat16, 128, True, True, True),
    ("B", torch.bfloat16, 128, True, True, True),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compile the kernels for sm_XX and report registers/spills")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--quick", action="store_true", help="five representative configurations only")
    ap.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = ap.parse_args(argv)
    if args.quick:
        cases = QUICK_CASES
    else:
        cases = [
            (w, dt, d, c, False, False)
            for w in ("A", "B")
            for dt in (torch.bfloat16, torch.float16, torch.float32)
            for d in (64, 128)
            for c in (True, False)
        ]
        cases += [
            (w, dt, d, True, True, cap)
            for w in ("A", "B")
            for dt in (torch.bfloat16, torch.float16)
            for d in (64, 128)
            for cap in (False, True)
        ]
    rows = []
    if not args.json:
        print(
            "| pass | dtype | D | causal | window | softcap | BLOCK_M x BLOCK_N, warps, stages | registers "
            "| spill (stack) B | shared B |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    for which, dtype, d, causal, windowed, cap in cases:
        cfg = default_config(which, d, dtype, windowed=windowed)
        u = resource_usage(
            compile_pass(which, dtype, d, causal=causal, config=cfg, arch=args.arch, windowed=windowed, softcap=cap)
        )
        rows.append(
            dict(
                which=which, dtype=_DTYPE_NAMES[dtype], d=d, causal=causal, windowed=windowed, softcap=cap, config=list(cfg), **u
            )
        )
        if not args.json:
            print(
                f"| {which} | {_DTYPE_NAMES[dtype]} | {d} | {causal} | {windowed} | {cap} | "
                f"{cfg[0]}x{cfg[1]}, {cfg[2]}, {cfg[3]} | "
                f"{u['registers']} | {u['stack_bytes']} | {u['shared_bytes']} |",
                flush=True,
            )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
