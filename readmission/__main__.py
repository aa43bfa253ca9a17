"""Command line: every pipeline step without Airflow, calling the same functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from readmission import dataset, logs
from readmission.names import FAMILIES, HAND_REASON, PROFILES
from readmission.settings import get_settings


def _print(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _cmd_locate(args: argparse.Namespace) -> None:
    source = dataset.locate(get_settings(), download=not args.no_download)
    found = {"path": str(source.path), "sha256": source.sha256, "rows": source.rows}
    if args.into is not None:
        found["installed"] = str(dataset.install(source, args.into))
    _print(found)


def _cmd_load_raw(args: argparse.Namespace) -> None:
    from readmission import pipeline, warehouse

    reports = pipeline.load_raw_batches(pipeline.plan_raw_load(limit=args.batches))
    _print(reports)
    print(warehouse.format_summary(pipeline.store_summary()))


def _cmd_clean(args: argparse.Namespace) -> None:
    from readmission import pipeline, warehouse

    _print(pipeline.clean_new_rows(full_refresh=args.full_refresh))
    print(warehouse.format_summary(pipeline.store_summary()))


def _cmd_summary(args: argparse.Namespace) -> None:
    from readmission import pipeline, warehouse

    facts = pipeline.store_summary()
    _print(facts) if args.json else print(warehouse.format_summary(facts))


def _cmd_train(args: argparse.Namespace) -> None:
    from readmission import pipeline

    result = pipeline.train_and_promote(
        families=args.family or None, profile=args.profile, reason=args.reason or HAND_REASON
    )
    _print(result)


def _cmd_model(args: argparse.Namespace) -> None:  # noqa: ARG001
    from readmission import pipeline

    described = pipeline.production_model()
    if described is None:
        sys.exit("no Production model yet: run `python -m readmission train` (or `make run`)")
    _print(described)


def _cmd_rollback(args: argparse.Namespace) -> None:
    from readmission import pipeline

    _print(pipeline.rollback(args.to, reason=args.reason))


def _cmd_challenger(args: argparse.Namespace) -> None:
    from readmission import pipeline

    registry = pipeline.model_registry()
    if args.clear:
        registry.clear_challenger()
    elif args.version:
        reason = (args.reason or "").strip()
        if not reason:
            raise ValueError("setting a challenger needs a reason (--reason TEXT)")
        registry.set_challenger(args.version, reason=reason)
    current = registry.challenger()
    _print({"challenger": None if current is None else current.version})


def _cmd_promote(args: argparse.Namespace) -> None:
    from readmission import pipeline

    _print(pipeline.promote(args.version, reason=args.reason)[0])


def _cmd_history(args: argparse.Namespace) -> None:  # noqa: ARG001
    from readmission import pipeline

    _print(pipeline.model_history())


def _cmd_replay(args: argparse.Namespace) -> None:
    from readmission.ops import replay

    sys.exit(replay.main(holdout_batches=args.holdout_batches))


def _cmd_performance(args: argparse.Namespace) -> None:
    from readmission import performance, pipeline

    if args.measure:
        _print(pipeline.measure_performance())
    rows = pipeline.performance_report()
    if args.json:
        _print([performance.summary_line(r) for r in rows])
    else:
        print(performance.format_report(rows))


def _cmd_retraining(args: argparse.Namespace) -> None:
    from readmission import pipeline

    decision = pipeline.check_retraining(record=False)
    requested = pipeline.retraining_requests()
    if args.json:
        _print({"decision": decision, "requests": requested})
        return
    version = decision["model_version"]
    print(f"Production: v{version}" if version else "Production: none")
    for condition in decision["conditions"]:
        state = "past" if condition["past"] else "ok"
        since = f" since {condition['past_since']}" if condition["past_since"] else ""
        print(f"  {condition['condition']:<12} {state}{since}: {condition['detail']}")
    said = "would request retraining" if decision["request"] else "would not request retraining"
    print(f"a check now {said}: {decision['reason']}")
    for made in requested[:5]:
        print(f"requested {made['requested_at']} (v{made['model_version']}): {made['reason']}")


def _cmd_score(args: argparse.Namespace) -> None:
    from readmission import pipeline

    _print(pipeline.score_batch(explain_factors=not args.no_factors))


def _cmd_care_list(args: argparse.Namespace) -> None:
    from readmission import pipeline

    found = pipeline.care_list(tier=args.tier)
    if args.out is None:
        found.to_csv(sys.stdout, index=False)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    found.to_csv(args.out, index=False)
    print(f"{len(found):,} encounters written to {args.out}", file=sys.stderr)


def _cmd_check_credentials(args: argparse.Namespace) -> None:
    from readmission.ops import credentials

    keys = tuple(args.key) if args.key else credentials.SECRET_KEYS
    sys.exit(credentials.main(keys=keys))


def _cmd_local(args: argparse.Namespace) -> None:
    from readmission.ops import localstack

    sys.exit(localstack.main(serve=not args.no_serve))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m readmission", description=__doc__)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level (default: LOG_LEVEL)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    locate = commands.add_parser("locate", help="find and verify the data file")
    locate.add_argument("--no-download", action="store_true", help="do not download from UCI")
    locate.add_argument(
        "--into",
        type=Path,
        metavar="DIR",
        help="also copy the verified file into DIR (e.g. data/, which the containers mount)",
    )
    locate.set_defaults(run=_cmd_locate)

    load = commands.add_parser("load-raw", help="load the pending batches into raw_data")
    load.add_argument("--batches", type=int, default=0, help="0 = all remaining, N = next N")
    load.set_defaults(run=_cmd_load_raw)

    clean = commands.add_parser("clean", help="clean the raw rows not cleaned yet")
    clean.add_argument("--full-refresh", action="store_true", help="clean every row again")
    clean.set_defaults(run=_cmd_clean)

    summary = commands.add_parser("summary", help="what raw_data and clean_data hold")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.set_defaults(run=_cmd_summary)

    train = commands.add_parser("train", help="train the candidates and promote the best")
    train.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="search profile (default: TRAINING_PROFILE, else full)",
    )
    train.add_argument(
        "--family",
        action="append",
        choices=FAMILIES,
        help="train only this family (repeatable)",
    )
    train.add_argument("--reason", help="why (recorded on the runs and the version)")
    train.set_defaults(run=_cmd_train)

    model = commands.add_parser("model", help="the Production model and its metrics")
    model.set_defaults(run=_cmd_model)

    rollback = commands.add_parser(
        "rollback",
        help="serve an earlier version again (the previous Production one by default)",
        description="Move the production alias and stage back, record why; the API serves the"
        " version within its poll interval. Refused for a version that is not READY or whose"
        " files cannot be loaded.",
    )
    rollback.add_argument("--to", metavar="VERSION", help="the version to serve")
    rollback.add_argument("--reason", required=True, help="why, for the audit trail")
    rollback.set_defaults(run=_cmd_rollback)

    challenger = commands.add_parser(
        "challenger",
        help="show, set or clear the version the API scores in the shadow (API_SHADOW=true)",
    )
    challenger.add_argument("version", nargs="?", help="the version to make the challenger")
    challenger.add_argument("--reason", help="why, for the audit trail")
    challenger.add_argument("--clear", action="store_true", help="no challenger")
    challenger.set_defaults(run=_cmd_challenger)

    promote = commands.add_parser(
        "promote",
        help="serve a version by hand (e.g. one rolled back from, once it is fixed)",
    )
    promote.add_argument("version", help="the version to serve")
    promote.add_argument("--reason", required=True, help="why, for the audit trail")
    promote.set_defaults(run=_cmd_promote)

    history = commands.add_parser("history", help="every move of the production alias")
    history.set_defaults(run=_cmd_history)

    check = commands.add_parser(
        "check-credentials",
        help="refuse well-known or development passwords (READMISSION_DEV_CREDENTIALS=true allows"
        " the development ones)",
    )
    check.add_argument("--key", action="append", help="check only this variable (repeatable)")
    check.set_defaults(run=_cmd_check_credentials)

    replay = commands.add_parser(
        "replay",
        help="the closed loop once in the local mode: serve held-out encounters, load their "
        "outcomes, print realized vs estimated vs test performance",
    )
    replay.add_argument(
        "--holdout-batches", type=int, default=1, help="the last N batches are served first"
    )
    replay.set_defaults(run=_cmd_replay)

    performance = commands.add_parser(
        "performance", help="realized and estimated performance of the served predictions"
    )
    performance.add_argument(
        "--measure", action="store_true", help="join the outcomes now (what the DAG does)"
    )
    performance.add_argument("--json", action="store_true", help="print JSON")
    performance.set_defaults(run=_cmd_performance)

    retraining = commands.add_parser(
        "retraining",
        help="drift and realized performance against the retraining triggers, as a check now "
        "would find them (nothing recorded), and the latest requests",
    )
    retraining.add_argument("--json", action="store_true", help="print JSON")
    retraining.set_defaults(run=_cmd_retraining)

    score = commands.add_parser(
        "score", help="score the clean encounters the Production model has not scored yet"
    )
    score.add_argument("--no-factors", action="store_true", help="skip the explanations (faster)")
    score.set_defaults(run=_cmd_score)

    care = commands.add_parser(
        "care-list",
        help="the Production model's batch scores as CSV, highest risk first (a care team's list)",
    )
    care.add_argument("--tier", choices=["high", "medium", "low"], help="only this risk tier")
    care.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    care.set_defaults(run=_cmd_care_list)

    local = commands.add_parser("local", help="run the embedded local stack (Airflow on 8080)")
    local.add_argument(
        "--no-serve",
        action="store_true",
        help="stop once the pipeline has run instead of serving the UI",
    )
    local.set_defaults(run=_cmd_local)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logs.configure(
        settings.logging.model_copy(update={"level": "DEBUG"}) if args.verbose else settings.logging
    )
    try:
        args.run(args)
    except dataset.DatasetError as exc:
        sys.exit(f"error: {exc}")
    except ValueError as exc:  # schema and parameter errors carry a message for people
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
