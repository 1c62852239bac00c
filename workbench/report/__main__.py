"""python -m workbench.report <run folder> [--audit NAME] [--out DIR]"""

from __future__ import annotations

import argparse
import sys

from workbench.report import HTML_FILE, MODEL_CARD_FILE, REPORT_DIR, ResultsError, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.report",
                                     description=f"Write {HTML_FILE} (self-contained review report) and "
                                                 f"{MODEL_CARD_FILE} (Hugging Face model-card section) for a run.")
    parser.add_argument("run", help="run folder (holding audit/<name>/summary.json) or an audit results folder")
    parser.add_argument("--audit", default=None, help="audit name when the run holds several (default: newest)")
    parser.add_argument("--out", default=None, help=f"output folder (default: <run>/{REPORT_DIR})")
    args = parser.parse_args(argv)
    try:
        html_path, card_path = write_report(args.run, audit=args.audit, out_dir=args.out)
    except (ResultsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {html_path}")
    print(f"wrote {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
