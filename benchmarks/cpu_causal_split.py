"""Causal attention on the CPU: can a split of SDPA's causal call beat it? (issue 4's "causal at most 0.6x
einattn's own plain time" target; docs/benchmarks.md, session 20).

PyTorch's CPU FlashAttention kernel computes whole blocks of 512 keys (``kvSplitSize``) for blocks of 256
query rows (``qSplitSize``, 64 or 32 below 768 rows), so its causal call computes every key block up to the
one that holds the diagonal: 6 of 8 block pairs at 1024 tokens (0.75 of the plain call), 20 of 32 at 2048
(0.63), 72 of 128 at 4096 (0.56). Two ways around it, timed side by side with SDPA's plain and causal calls
(B = 1, H = 8, E = 64, float32, medians of 9):

* ``rows``: blocks of ``rb`` query rows, each one SDPA call against the keys up to its last row, with a
  boolean mask on the diagonal (what the torch backend's library kernel does for a sliding window);
* ``halving``: the causal triangle as squares: the diagonal squares of ``w`` rows in one batched causal call,
  then per level one batched plain call over the square below the diagonal of each pair of blocks
  (``_scaled_dot_product_flash_attention_for_cpu`` returns the log-sum-exps), merged by log-sum-exp.

    python benchmarks/cpu_causal_split.py
"""

import statistics
import time

import torch
import torch.nn.functional as F

fa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def timed(fn, *args, rep=9, **kwargs):
    fn(*args, **kwargs)
    fn(*args, **kwargs)
    xs = []
    for _ in range(rep):
        a = time.perf_counter()
        fn(*args, **kwargs)
        xs.append(time.perf_counter() - a)
    return statistics.median(xs) * 1e3


def rows(q, k, v, rb, masks):
    n, outs = q.shape[2], []
    for c in range(0, n, rb):
        w = min(rb, n - c)
        hi = c + w
        if (c, w) not in masks:
            masks[(c, w)] = torch.ones(w, hi, dtype=torch.bool).tril(hi - w)
        outs.append(
            F.scaled_dot_product_attention(q[:, :, c:hi], k[:, :, :hi], v[:, :, :hi], attn_mask=masks[(c, w)])
        )
    return torch.cat(outs, 2)


def halving(q, k, v, w):
    b, h, n, e = q.shape
    f = v.shape[-1]
    sc = e**-0.5
    o, lse = fa(
        q.reshape(b, h * (n // w), w, e),
        k.reshape(b, h * (n // w), w, e),
        v.reshape(b, h * (n // w), w, f),
        0.0,
        True,
        scale=sc,
    )
    o, lse = o.reshape(b, h, n, f).clone(), lse.reshape(b, h, n).clone()
    s = w
    while s < n:
        n2 = n // (2 * s)
        qv = q.view(b, h, n2, 2, s, e)[:, :, :, 1].reshape(b, h * n2, s, e)
        kv = k.view(b, h, n2, 2, s, e)[:, :, :, 0].reshape(b, h * n2, s, e)
        vv = v.view(b, h, n2, 2, s, f)[:, :, :, 0].reshape(b, h * n2, s, f)
        o2, l2 = fa(qv, kv, vv, 0.0, False, scale=sc)
        ov, lv = o.view(b, h, n2, 2, s, f)[:, :, :, 1], lse.view(b, h, n2, 2, s)[:, :, :, 1]
        o2, l2 = o2.view(b, h, n2, s, f), l2.view(b, h, n2, s)
        ln = torch.logaddexp(lv, l2)
        ov.mul_(torch.exp(lv - ln).unsqueeze(-1)).add_(o2 * torch.exp(l2 - ln).unsqueeze(-1))
        lv.copy_(ln)
        s *= 2
    return o


def main():
    torch.manual_seed(0)
    for n in (1024, 2048, 4096):
        q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
        plain = timed(F.scaled_dot_product_attention, q, k, v)
        causal = timed(F.scaled_dot_product_attention, q, k, v, is_causal=True)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        cells = [f"N={n}: plain {plain:.2f} ms, causal {causal:.2f} ({causal / plain:.2f} of plain)"]
        for rb in (128, 256, 512):
            masks = {}
            t = timed(rows, q, k, v, rb, masks)
            err = (rows(q, k, v, rb, masks) - ref).abs().max().item()
            cells.append(f"rows {rb}: {t:.2f} ({t / plain:.2f}, diff {err:.0e})")
        for w in (64, 128, 256):
            t = timed(halving, q, k, v, w)
            err = (halving(q, k, v, w) - ref).abs().max().item()
            cells.append(f"halving {w}: {t:.2f} ({t / plain:.2f}, diff {err:.0e})")
        print("; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
