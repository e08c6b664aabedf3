"""The torch backend never allocates an N x N tensor: its largest allocation is O(N x chunk).

Measured with torch.profiler(profile_memory=True): each profiled op reports the bytes it allocated
itself (``self_cpu_memory_usage``); the maximum over ops bounds the largest single allocation from above
(an op that allocates several tensors counts their sum). The negative control (chunk = N) shows the
measurement does catch an N x N allocation.
"""

import torch
from torch.profiler import ProfilerActivity, profile

from workbench.kernels import attention_with_stats


def _max_alloc_bytes(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_torch_backend_peak_allocation_is_o_n_chunk():
    n, chunk = 4096, 128
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, n, 16, generator=g)
    k = torch.randn(1, 1, n, 16, generator=g)
    v = torch.randn(1, 1, n, 16, generator=g)
    limit = n * n * 4 // 8  # an eighth of one fp32 N x N matrix (one head)

    def run(ch):
        return lambda: attention_with_stats(q, k, v, scale=0.25, backend="torch", chunk=ch, pool=64)

    small = _max_alloc_bytes(run(chunk))
    # largest expected: scores [B, Hq, chunk, N] fp32 = 1*2*128*4096*4 = 4 MiB
    assert small <= 1 * 2 * chunk * n * 4, small
    assert small < limit, (small, limit)
    big = _max_alloc_bytes(run(n))  # negative control: one chunk = the whole N x N score matrix
    assert big >= n * n * 4, big
