"""``python -m workbench.mitigate <run folder> --remedy balance align project wise``: try remedies, audit, compare."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from workbench.audit import AuditSpecError
from workbench.data import DataError
from workbench.mitigate.interpolate import DEFAULT_ALPHAS
from workbench.mitigate.projection import DEFAULT_CALIBRATION, SPANS
from workbench.mitigate.run import REMEDIES, RemedySettings, mitigate
from workbench.models import ModelLoadError
from workbench.pipeline import dashboard_command
from workbench.report.mitigation import MITIGATION_DIR, MITIGATION_SUMMARY
from workbench.train import LossNotFinite, OutOfMemory, use_cpu_threads
from workbench.train.balance import BALANCE_METHODS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workbench.mitigate",
        description="Try fairness remedies on a fine-tuning run; each variant goes to <run>/variants/<remedy>/ and is "
                    "audited beside the fine-tuned candidate on the same images and bootstrap resamples.",
    )
    p.add_argument("run", help="run folder written by a recipe (runs/<recipe>-<strategy>-<time>)")
    p.add_argument("--remedy", nargs="+", default=list(REMEDIES), choices=REMEDIES,
                   help="remedies to try (default: all): balance = balanced fine-tuning, align = distribution-alignment "
                        "regularizer, project = training-free debiasing projection, wise = fairness-aware WiSE-FT")
    p.add_argument("--audit", default=None, help="audit definition (default: the run's own, from config.json)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: those of the run's audit)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: that of the run's audit)")
    b = p.add_argument_group("balance / align (re-run the run's recipe configuration with these flags)")
    b.add_argument("--balance-groups", nargs="+", default=[], help="group columns to balance (default: the audit's attributes)")
    b.add_argument("--balance-by-label", action="store_true", help="balance group x label cells instead of groups")
    b.add_argument("--balance-method", choices=BALANCE_METHODS, default="",
                   help="reweight (default): the plain shuffle with each pair's loss weighted by its cell's share; "
                        "resample: equal cells per epoch (small cells' pairs repeated)")
    b.add_argument("--align-weight", type=float, default=RemedySettings.align_weight,
                   help=f"weight of the alignment regularizer (default {RemedySettings.align_weight})")
    b.add_argument("--align-attributes", nargs="+", default=[], help="group columns to align (default: the audit's attributes)")
    j = p.add_argument_group("project (Chuang et al. 2023)")
    j.add_argument("--project-attributes", nargs="+", default=[], help="attributes to project out (default: all of the audit's)")
    j.add_argument("--project-templates", nargs="+", default=[],
                   help="attribute-only prompt templates with {group} (default: the audit's group-prompt wording, "
                        "else 'a photo of a {group} person')")
    j.add_argument("--project-lambda", type=float, default=DEFAULT_CALIBRATION,
                   help=f"calibration weight: how strongly prompt pairs differing only in the group are pulled together "
                        f"(0: plain projection; default {DEFAULT_CALIBRATION:g})")
    j.add_argument("--project-span", choices=SPANS, default=SPANS[0],
                   help="what is projected out: differences = the directions between the groups of each prompt set "
                        "(default); prompts = the prompts' whole span, as in the paper (also removes what they share)")
    w = p.add_argument_group("wise")
    w.add_argument("--wise-alpha", nargs="+", type=float, default=[],
                   help="mixing weights to try (default: the run's --wise-alpha, else "
                        f"{' '.join(f'{a:g}' for a in DEFAULT_ALPHAS)})")
    p.add_argument("--seeds", type=int, default=1,
                   help="training runs per fine-tuning remedy, and of the candidate's configuration (default 1); with "
                        "2 or more, balance and align are judged by the mean of their runs against the candidate's, "
                        "with run-to-run variation in the interval")
    p.add_argument("--cpu-threads", type=int, default=None, help="CPU threads (default: every available core)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = RemedySettings(
        balance_groups=tuple(args.balance_groups), balance_by_label=args.balance_by_label,
        balance_method=args.balance_method,
        align_weight=args.align_weight, align_attributes=tuple(args.align_attributes),
        project_attributes=tuple(args.project_attributes), project_templates=tuple(args.project_templates),
        project_calibration=args.project_lambda, project_span=args.project_span, wise_alphas=tuple(args.wise_alpha),
        seeds=args.seeds,
    )
    try:
        use_cpu_threads(args.cpu_threads)
        summary = mitigate(args.run, args.remedy, settings, audit=args.audit, n_boot=args.n_boot, seed=args.seed)
    except (LossNotFinite, OutOfMemory) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, AuditSpecError, DataError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\nmitigation summary: {args.run}/{MITIGATION_DIR}/{MITIGATION_SUMMARY}")
    print(f"next: {shlex.join(dashboard_command(args.run))}   (view: Mitigation)")
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
