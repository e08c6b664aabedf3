"""GPU-only checks (skipped without CUDA): the compiled Triton kernels against the torch backend."""

import pytest
import torch

from workbench.kernels import attention_with_stats
from workbench.kernels.accuracy import COLUMN_NAMES, STAT_NAMES, make_case, max_errors
from workbench.kernels.reference import reference_attention_with_stats

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
def test_triton_gpu_matches_reference(dtype, causal):
    q, k, v = make_case(1, 4, 2, 333, 333, 64, dtype=dtype, seed=11)
    kw = dict(scale=0.125, causal=causal, first_k=3, window=16, pool=64)
    out, st = attention_with_stats(q.cuda(), k.cuda(), v.cuda(), backend="triton", **kw)
    ref = reference_attention_with_stats(q.double(), k.double(), v.double(), return_probs=True, stats_dtype=torch.float64, **kw)
    err = max_errors(out.cpu(), st.cpu(), *ref)
    # statistics are fp32 from fp32 scores (fp32 inputs use ieee dots): same bounds as the CPU tests
    for name in STAT_NAMES:
        bound = 1e-5 + (2e-6 * float(ref[1].lse.abs().max()) if name == "lse" else 0.0)
        assert err[name] <= bound, (name, err[name])
    for name in COLUMN_NAMES:
        assert err[name] <= 2e-5 + 1e-6 * float(getattr(ref[1], name).abs().max()), (name, err[name])
    # output: p is rounded to the input dtype before the PV matmul on the GPU
    assert err["out"] <= {torch.float32: 5e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}[dtype], err["out"]
    assert err["argmax"] == 0


def test_triton_gpu_matches_torch_backend_long():
    q, k, v = make_case(1, 4, 2, 4096, 4096, 128, dtype=torch.bfloat16, seed=12, special=False)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    kw = dict(scale=128**-0.5, causal=True, first_k=4, window=64, pool=128)
    out_t, st_t = attention_with_stats(q, k, v, backend="triton", **kw)
    out_c, st_c = attention_with_stats(q, k, v, backend="torch", **kw)
    for name in (*STAT_NAMES, *COLUMN_NAMES):
        torch.testing.assert_close(getattr(st_t, name), getattr(st_c, name), atol=1e-4, rtol=1e-4)
    assert (st_t.argmax != st_c.argmax).float().mean() < 1e-3
    torch.testing.assert_close(out_t.float(), out_c.float(), atol=2e-2, rtol=2e-2)
