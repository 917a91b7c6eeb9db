"""Benchmark: ncscope's streaming NC1 against the dense d×d method on the same features.

Synthetic class-structured features (N samples, K classes, dimension d) are generated
batch by batch from a fixed seed; both methods see identical batches. Only the NC work is
timed (generation is excluded). Each (method, d) runs in a fresh process so its peak
resident memory can be read; "extra MB" is the peak minus the process's resident memory
just before the NC work starts.

The dense methods stream Σ_W = ZᵀZ/N as a d×d float64 matrix and form Σ_B = M̃ᵀM̃/K
(d×d), then take either a rank-(K−1) eigen pseudo-inverse (``dense-eigh``, the fastest
dense variant) or ``torch.linalg.pinv`` (``dense-pinv``: the SVD pseudo-inverse the anchors
run — rhubarbwu's ``pinv`` metric; scipy ``pinv`` in Su et al.'s code), and Tr(Σ_W Σ_B⁺).
They are skipped where their d×d matrices would not fit in memory, or above
``--dense-max-d`` (their O(d³) time).

Usage: ``python benchmarks/bench_nc1.py [--dims 512 4096 16384 65536] [--threads 1]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import time


def _batches(n: int, k: int, d: int, batch: int, seed: int, buf=None):
    """Yield (features, labels); the features live in ONE reused buffer ``buf`` filled in
    place, so generating data adds nothing to the resident memory after the first batch."""
    import torch

    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=g) * 2.0
    buf = torch.empty(batch, d) if buf is None else buf
    for start in range(0, n, batch):
        y = torch.arange(start, min(n, start + batch)) % k
        h = buf[: len(y)]
        torch.randn(h.shape, generator=g, out=h)
        h.mul_(0.5)
        for c in range(k):
            idx = (y == c).nonzero().flatten()
            h.index_add_(0, idx, means[c].expand(len(idx), d))
        yield h, y


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run(method: str, n: int, k: int, d: int, batch: int, threads: int, q) -> None:
    import torch

    from ncscope import NCStats

    torch.set_num_threads(threads)
    # Warm up allocator and kernels on a tiny problem, then measure from here.
    warm = NCStats(k)
    data = list(_batches(4 * k, k, 8, 2 * k, 0))
    for h, y in data:
        warm.update(h, y)
    for h, y in data:
        warm.update_measured(h, y)
    warm.compute()
    buf = torch.zeros(batch, d)  # the input batch buffer is not "extra" memory
    base = _rss_mb()
    elapsed = 0.0
    if method == "ncscope":
        stats = NCStats(k)
        for h, y in _batches(n, k, d, batch, 1, buf):
            t0 = time.perf_counter()
            stats.update(h, y)
            elapsed += time.perf_counter() - t0
        for h, y in _batches(n, k, d, batch, 1, buf):
            t0 = time.perf_counter()
            stats.update_measured(h, y)
            elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        nc1 = stats.compute()["nc1"]
        elapsed += time.perf_counter() - t0
    else:
        sums = torch.zeros(k, d, dtype=torch.float64)
        counts = torch.zeros(k, dtype=torch.float64)
        for h, y in _batches(n, k, d, batch, 1, buf):
            t0 = time.perf_counter()
            sums.index_add_(0, y, h.double())
            counts += torch.bincount(y, minlength=k)
            elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        means = sums / counts[:, None]
        centred = means - sums.sum(0) / counts.sum()
        sigma_w = torch.zeros(d, d, dtype=torch.float64)
        elapsed += time.perf_counter() - t0
        for h, y in _batches(n, k, d, batch, 1, buf):
            t0 = time.perf_counter()
            z = h.double() - means[y]
            sigma_w.addmm_(z.T, z)
            elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        sigma_w /= n
        sigma_b = centred.T @ centred / k
        if method == "dense-eigh":  # the best dense variant: rank-(K-1) eigen pseudo-inverse
            evals, evecs = torch.linalg.eigh(sigma_b)
            lam, vec = evals[-(k - 1) :], evecs[:, -(k - 1) :]
            nc1 = float(torch.trace(sigma_w @ (vec / lam) @ vec.T))
        else:  # what the anchors run: an SVD pseudo-inverse of the d×d Σ_B (torch.linalg.pinv)
            nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=False)))
        elapsed += time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((elapsed, max(peak - base, 0.0), nc1))


def measure(method: str, n: int, k: int, d: int, batch: int, threads: int):
    """Run one (method, d) in a fresh process; return (seconds, extra peak MB, NC1)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run, args=(method, n, k, d, batch, threads, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{method} at d={d} failed (exit code {p.exitcode})")
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dims", type=int, nargs="+", default=[512, 4096, 16384, 65536])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dense-max-d", type=int, default=4096, help="skip dense above this d")
    ap.add_argument("--mem-gb", type=float, default=None, help="memory budget for dense")
    args = ap.parse_args()
    mem_gb = args.mem_gb or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    import torch

    print(
        f"# bench_nc1  {dt.date.today()}  {platform.machine()} {os.cpu_count()} cores "
        f"{mem_gb:.0f} GiB  torch {torch.__version__}  threads={args.threads}  "
        f"N={args.n} K={args.k} batch={args.batch}"
    )
    print("| d | ncscope s | ncscope extra MB | dense eigh (rank K−1): time, extra MB, "
          "speed-up | dense pinv (anchors): time, extra MB, speed-up | max NC1 rel. diff |")
    print("|---|---|---|---|---|---|")
    for d in args.dims:
        t_fast, m_fast, nc_fast = measure("ncscope", args.n, args.k, d, args.batch, args.threads)
        dense_gb = 3 * d * d * 8 / 2**30  # Σ_W, Σ_B and eigh workspace, float64
        if dense_gb > 0.8 * mem_gb:
            why = f"skipped: needs ~{dense_gb:.0f} GiB"
        elif d > args.dense_max_d:
            why = f"skipped: O(d³) > --dense-max-d {args.dense_max_d}"
        else:
            why = ""
        if why:
            print(f"| {d} | {t_fast:.3f} | {m_fast:.0f} | {why} | | |")
            continue
        cells = []
        rels = []
        for method in ("dense-eigh", "dense-pinv"):
            t_d, m_d, nc_d = measure(method, args.n, args.k, d, args.batch, args.threads)
            rels.append(abs(nc_fast - nc_d) / abs(nc_d))
            cells.append(f"{t_d:.2f} s, {m_d:.0f} MB, {t_d / t_fast:.0f}×")
        print(f"| {d} | {t_fast:.3f} | {m_fast:.0f} | {cells[0]} | {cells[1]} | "
              f"{max(rels):.1e} |")


if __name__ == "__main__":
    main()
