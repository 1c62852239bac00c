"""The audit's bootstrap ranking metrics: prefix scan against the full scan, equality and timing.

``workbench.audit.metrics.ranking_metrics_weighted`` used to take a cumulative sum of the
bootstrap weights over *every* ranked row, shape (B, N), although skew and NDKL at k only
look at the first k resampled positions. It now scans only the shortest prefix of the
ranking that holds at least ``max(k)`` resampled images in every resample (doubling from
4 k); ``full_scan=True`` keeps the old path. Printed: whether both give identical arrays and
both timings.

A second table times one prompt's ranking over the derm audit's three groupings (skin tone:
3 groups, sex: 2, their intersection: 6): one ``ranking_metrics_weighted`` call per grouping
(how the audit called it before) against one ``ranking_metrics_views`` call, which locates
the top-k resampled rows once for all groupings; with NDKL (concept prompts) and skew only
(control prompts, which count the top k without locating each position).

    python bench/ranking_prefix.py --quick
"""

from __future__ import annotations

import argparse
import sys

import benchlib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None, help="image counts (default 1200,4000,16000; quick 1200,4000)")
    parser.add_argument("--n-boot", type=int, default=1000)
    benchlib.add_common_args(parser, quick_help="two sizes, 3 repeats: seconds")
    args = parser.parse_args(argv)
    benchlib.configure(args.threads)
    import numpy as np

    from workbench.audit.bootstrap import stratified_bootstrap_weights
    from workbench.audit.metrics import ranking_metrics_views, ranking_metrics_weighted

    sizes = [int(x) for x in (args.sizes or ("1200,4000" if args.quick else "1200,4000,16000")).split(",")]
    repeats = args.repeats or 3
    ks, targets = [50, 100], [np.full(3, 1 / 3)]
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        codes = rng.integers(0, 3, n)
        strata = codes * 2 + rng.integers(0, 2, n)
        weights = np.vstack([np.ones((1, n), dtype=np.float32), stratified_bootstrap_weights(strata, args.n_boot, 0)])
        order = np.argsort(-rng.standard_normal(n), kind="stable")
        call = dict(order=order, group_codes=codes, n_groups=3, ks=ks, targets=targets, weights=weights)
        raw = benchlib.alternate({"current": lambda: ranking_metrics_weighted(**call, full_scan=True),
                                  "prefix": lambda: ranking_metrics_weighted(**call)}, repeats=repeats)
        (s0, n0), (s1, n1) = raw["current"][0][1], raw["prefix"][0][1]
        cur = benchlib.median(t for t, _ in raw["current"])
        new = benchlib.median(t for t, _ in raw["prefix"])
        rows.append({"images": n, "n_boot": args.n_boot, "current_s": round(cur, 4), "prefix_s": round(new, 4),
                     "speedup": benchlib.ratio(cur, new),
                     "max_abs_diff": float(max(np.nanmax(np.abs(s0 - s1)), np.nanmax(np.abs(n0 - n1)))),
                     "identical": bool(np.array_equal(s0, s1, equal_nan=True) and np.array_equal(n0, n1, equal_nan=True))})
    views_rows = []
    for n in sizes:
        rng = np.random.default_rng(n + 1)
        tone, sex = rng.integers(0, 3, n), rng.integers(0, 2, n)
        views = [(tone, 3, [np.full(3, 1 / 3)]), (sex, 2, [np.full(2, 1 / 2)]), (tone * 2 + sex, 6, [np.full(6, 1 / 6)])]
        weights = np.vstack([np.ones((1, n), dtype=np.float32), stratified_bootstrap_weights(tone * 2 + sex, args.n_boot, 0)])
        order = np.argsort(-rng.standard_normal(n), kind="stable")
        for with_ndkl in (True, False):
            def per_view():
                return [ranking_metrics_weighted(order, c, a, ks, t, weights, with_ndkl=with_ndkl) for c, a, t in views]

            raw = benchlib.alternate({"per_view": per_view,
                                      "shared": lambda: ranking_metrics_views(order, views, ks, weights, with_ndkl=with_ndkl)},
                                     repeats=repeats)
            a, b = raw["per_view"][0][1], raw["shared"][0][1]
            cur = benchlib.median(t for t, _ in raw["per_view"])
            new = benchlib.median(t for t, _ in raw["shared"])
            views_rows.append({"images": n, "n_boot": args.n_boot, "ndkl": with_ndkl, "per_view_s": round(cur, 4),
                               "shared_s": round(new, 4), "speedup": benchlib.ratio(cur, new),
                               "identical": all(np.array_equal(x[0], y[0], equal_nan=True)
                                                and np.array_equal(x[1], y[1], equal_nan=True) for x, y in zip(a, b))})
    benchlib.emit({"benchmark": "ranking_prefix", "machine": benchlib.machine(),
                   "config": {"ks": ks, "repeats": repeats, "threads": args.threads, "quick": args.quick}, "rows": rows,
                   "views": views_rows},
                  args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
