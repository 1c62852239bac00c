"""Contracts between the parts of the workbench: run folders and audit results.

Everything that crosses a module boundary on disk is named here, so the trainer,
the audit, the dashboard and the report agree on one layout.

Run folder (written by a recipe, read by the audit, dashboard and report)::

    <run>/
      config.json          resolved recipe config + library versions + trust_remote_code
      base_model.json      {"model": <id or folder of the base>, "revision": ...}
      model/               save_pretrained CLIPModel (merged for LoRA) + processor files
      adapter/             LoRA adapter (strategy "lora" only)
      train_log.jsonl      one JSON object per logged step (see TRAIN_LOG_FIELDS)
      zeroshot.json        {"base": {split: acc}, "tuned": {split: acc}, "wise": [{"alpha", split: acc}]}
      run_health.json      warnings about a run that finished but may have gone wrong (RUN_HEALTH_FILE)
      run_failed.json      {"error", "exit_status"} of a run that stopped with checkpoints kept (RUN_FAILED_FILE)
      checkpoints/step_XXXXXXX/   accelerate save_state folders, complete ones only
      audit/<audit name>/  RESULTS_FILE, RESULTS_CSV, SUMMARY_FILE, RANKINGS_FILE, PREDICTIONS_FILE

Results table: long format, one row per (model, audit, metric, attribute, group,
label, prompt, k, target). Columns in RESULT_COLUMNS. ``model`` is a role:
"base", "tuned", "model" (a single model), or "delta" (candidate minus reference, e.g.
tuned minus base, interval from a paired bootstrap on the same resampled rows). Rows that
could not be computed keep value NaN, status "not_computed" and the reason in ``note``.
Rows computed over the control prompts have prompt CONTROL_PANEL.

Summary JSON (SUMMARY_FILE) beside the table (schema_version 2)::

    {"schema_version": 2, "audit": name, "created": iso time,
     "models": {role: {"model": id or folder, "fingerprint": str}},
     "candidate": role judged ("tuned" for a run folder), "reference": role or null,
     "verdict": "pass" | "warn" | "fail" | "inconclusive"   (the candidate's; the reference never decides),
     "headline": one sentence naming the candidate and each failing check,
     "checks": [candidate's check entries, see below],
     "reference_checks": [the absolute checks on the reference: context only],
     "fixed": [sentences: checks the reference failed and the candidate passes],
     "data": {"source": str, "split": str, "fingerprint": str, "n": int},
     "spec": <the audit definition as parsed, with defaults filled in>,
     "bootstrap": {"n_boot": int, "seed": int, "stratified_by": [...]},
     "not_computed": [{"metric", "reason"}], "warnings": [str], "n_tests": int,
     "groups": {attribute: [group, ...]}, "class_labels": [...], "prompts": {...},
     "k": [int], "targets": [str], "conventions": {name: how it is computed},
     "multiple_testing": {"method": "holm", "alpha": float, "families": {family: n}},
     "weat_tests": [...], "delta_significant": [...]}

A check entry: "name", "kind" (absolute | regression | domain | dominance), "metric",
"model" (role; "delta" for regression and domain checks), "model_id", "attribute", "group",
"label", "prompt", "k", "target", "value", "ci_low", "ci_high", "n", "status", "threshold",
"warn_threshold", "direction", "verdict", "reason", "p_value", "p_holm", "worse_group",
"better_group", "direction_text", "sentence", "reference_value", "reference_ci_low",
"reference_ci_high". A check is "fail" when the estimate is past the fail threshold and
significantly past warn after Holm; "warn" when past warn; "inconclusive" when not
computed, when its interval reaches the fail threshold or has zero width, or when a group
is below the audit's minimum size; "pass" otherwise.
"""

from __future__ import annotations

RESULTS_SCHEMA_VERSION = 2

RESULT_COLUMNS: tuple[str, ...] = (
    "model",      # "base" | "tuned" | "delta" | any role name given to run_audit
    "audit",      # audit name from the definition file
    "metric",     # one of METRICS
    "attribute",  # sensitive attribute, "a*b" for an intersection, "" when not per attribute
    "group",      # group value, "" for attribute-level aggregates, OVERALL for the whole set
    "label",      # class name for per-class rows, "" otherwise
    "prompt",     # neutral/concept prompt for skew-type rows, ALL_PROMPTS for aggregates, "" otherwise
    "k",          # top-k cut-off for ranking metrics, 0 otherwise
    "target",     # "uniform" | "data" for ranking metrics, "" otherwise
    "value",
    "ci_low",
    "ci_high",
    "n",          # number of images the value is computed on
    "status",     # "ok" | "small_group" | "not_computed"
    "note",       # reason for a status other than "ok"
)

OVERALL = "__overall__"
ALL_PROMPTS = "__all__"
CONTROL_PANEL = "__controls__"  # prompt of rows computed over the control prompts (control_max_skew_mean, group_dominance)

# Metric name -> description: the vocabulary of the results table's ``metric`` column.
# Declared once by the audit families (workbench/audit/families/), each next to the code
# that computes it, and registered here when workbench.audit is imported (this module
# imports nothing of ours, so the families fill the table rather than this module reading
# them). A process that has not imported the audit sees it empty.
METRICS: dict[str, str] = {}

RESULTS_FILE = "results.parquet"
RESULTS_CSV = "results.csv"
SUMMARY_FILE = "summary.json"
RANKINGS_FILE = "rankings.parquet"  # model, prompt, rank, row, score, <group columns>
PREDICTIONS_FILE = "predictions.parquet"  # model, row, label, predicted, <group columns>

VERDICTS = ("pass", "warn", "fail", "inconclusive")

TRAIN_LOG_FIELDS = ("step", "epoch", "loss", "logit_scale", "lr", "val_accuracy", "samples_per_s")

RUN_CONFIG_FILE = "config.json"
RUN_BASE_FILE = "base_model.json"
RUN_MODEL_DIR = "model"
RUN_ADAPTER_DIR = "adapter"
RUN_TRAIN_LOG = "train_log.jsonl"
RUN_ZEROSHOT_FILE = "zeroshot.json"
RUN_CHECKPOINTS_DIR = "checkpoints"
RUN_AUDIT_DIR = "audit"
RUN_FAILED_FILE = "run_failed.json"  # {"error", "exit_status"}: the run stopped; kept only when it holds checkpoints
RUN_HEALTH_FILE = "run_health.json"  # warnings about a run that finished but may have gone wrong
