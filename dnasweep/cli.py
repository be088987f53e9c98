"""The `dnasweep` command. Thin: parses arguments, calls into the library, maps errors to exit
codes (2 for bad input, with every problem listed). Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import json
import os
import sys

from dnasweep import flags
from dnasweep.errors import ConfigError, Problem, raise_if

DEFAULT_ROOT = "runs/sweeps"  # where sweeps go, and where commands look a NAME up


def _train(args: argparse.Namespace) -> int:
    from dnasweep.config import load_trial
    from dnasweep.config.trial import planned_steps
    from dnasweep.train.loop import run_trial
    from dnasweep.train.report import ConsoleReporter

    overrides = list(args.overrides)
    fix = "name the trial's output directory, e.g. --out runs/mytrial"
    if args.out is not None:  # `--out ''` was skipped, and the trial went to the default out_dir
        raise_if([flags.dir_problem(args.out, "--out", "output directory", fix)], "train")
        # a path, quoted: as bare YAML, 'exp #2' lost its '#2' and 'off' became False
        overrides.append(f"out_dir={json.dumps(args.out)}")
    cfg = load_trial(args.config, overrides)
    if args.out is None:  # out_dir from the file or an override: os.makedirs failed on it with a traceback
        raise_if([flags.dir_problem(cfg.out_dir, "out_dir", "output directory", fix.replace("--out ", "out_dir="))],
                 args.config)
    console = None if args.quiet else ConsoleReporter(planned_steps(cfg))
    result = run_trial(cfg, console, resume=not args.no_resume)
    if result.already_done:  # even with --quiet: this command trained nothing, its numbers are not new
        budget = "train.time_limit_s" if result.step < planned_steps(cfg) else "train.max_steps"
        print(f"{result.reason}: the metrics are that checkpoint's, re-evaluated. Raise {budget} to train "
              f"further, or pass --no-resume to start over; outputs in {result.out_dir}", file=sys.stderr)
    elif not args.quiet:
        print(f"{result.status}: {result.reason}; outputs in {result.out_dir}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    return 0 if result.status == "completed" else 1


def _validate(args: argparse.Namespace) -> int:
    from dnasweep.config import load_trial, read_yaml
    from dnasweep.model import nominal

    bad_samples = [Problem("--samples", f"must be >= 1, got {args.samples}", "e.g. --samples 200; leave the flag "
                           "out to sample no points")] if args.samples is not None and args.samples < 1 else []

    # A search space has base:/search:/objectives:; a trial config has none of them (model:, train:, ...).
    if not {"base", "search", "objectives"} & set(read_yaml(args.config) or {}):
        if args.smoke:  # it was ignored: the trial was checked as it is
            bad_samples.append(Problem("--smoke", f"{args.config} is a trial config, which has no smoke: section",
                                       "drop --smoke; a search space's smoke: overlay is what --smoke applies"))
        if args.samples is not None:  # it would be ignored: a trial config has no points to sample
            bad_samples = [q for q in bad_samples if q.key != "--samples"]
            bad_samples.append(Problem("--samples", f"{args.config} is a trial config, which has no search: to "
                                       "sample points from", "drop --samples; it samples a search space's points"))
        try:
            cfg = load_trial(args.config, list(args.overrides))
        except ConfigError as e:  # the flags' problems with the file's, at once
            raise ConfigError([*bad_samples, *e.problems], e.source) from None
        raise_if(bad_samples, args.config)
        n = nominal(cfg.model)
        print(f"{args.config}: valid trial ({cfg.model.kind} {cfg.model.task}, {n.params_total:,} parameters, "
              f"{n.params_active:,.0f} active per token, {n.flops_per_token:,.0f} forward FLOPs per token nominal)")
        return 0
    from dnasweep.space import space_warnings, summarize

    space = _load_space(args.config, list(args.overrides), args.smoke, bad_samples)
    print(summarize(space))
    for w in space_warnings(space):
        print(f"warning: {w}", file=sys.stderr)
    if args.samples:
        from dnasweep.space.sample import check_samples

        report = check_samples(space, args.samples, seed=space.sampler.seed)
        print(report.text())
        if report.invalid:
            print(f"error: {report.invalid} of {args.samples} sampled points break a rule of the trial config: each "
                  "would be a failed trial. Add a when: to the dimension that causes it (see the rule above)",
                  file=sys.stderr)
            return 2
    return 0


def _run(args: argparse.Namespace) -> int:
    import datetime

    if args.resume and not args.name:  # the name would be SPACE-DATE-TIME: a new sweep, not the one meant
        raise ConfigError([Problem("--resume", "needs --name: without it the sweep is named SPACE-DATE-TIME, a new "
                                   "sweep, and nothing is resumed",
                                   f"dnasweep resume NAME (the names: dnasweep ls --root {args.root}), or add "
                                   "--name NAME")], "run")
    space = _load_space(args.space, list(args.overrides), args.smoke, flags.sweep_flag_problems(args, root=True))
    stem = os.path.splitext(os.path.basename(args.space))[0]
    name = args.name or f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import is_sweep_dir

    sweep_dir = os.path.join(args.root, name)
    if args.resume and is_sweep_dir(sweep_dir):
        _same_storage(sweep_dir, args.storage)
        _same_space(sweep_dir, space)
        print(f"resuming {sweep_dir} with the space it was started with", file=sys.stderr)
        return _resume_in(sweep_dir, args)
    return _finish(lambda: run_sweep(space, name, root=args.root, address=args.address, storage=args.storage,
                                     autoscaling=args.autoscaling or None,
                                     tracking_uri=args.tracking_uri, analyze=False if args.no_analyze else None),
                   sweep_dir, args)


def _load_space(path: str, overrides: list[str], smoke: bool, flag_problems: list[Problem] | None = None):
    """load_space, and with `smoke` a ConfigError when there is no smoke: overlay to apply (in the
    file, or set by smoke.* overrides): --smoke then silently ran the full sweep. `flag_problems`
    (the command's other flags) are raised with the file's, all at once."""
    flag_problems = flag_problems or []
    from dnasweep.config import read_yaml
    from dnasweep.space import load_space

    problem = Problem("--smoke", f"{path} has no smoke: section, so --smoke would run the full sweep",
                      "add an overlay for a fast run, e.g. smoke: {budget: {trials: 2}, base: {train: {max_steps: "
                      "20}}}, or drop --smoke")
    try:
        space = load_space(path, overrides, smoke=smoke)
    except ConfigError as e:  # every problem at once: the file's, and (judged from the file) the missing overlay
        if smoke and e.problems[0].key not in ("<file>", "<root>") and not read_yaml(path).get("smoke") and not any(
                o.split("=", 1)[0].split(".")[0] == "smoke" for o in overrides):
            raise ConfigError([*flag_problems, *e.problems, problem], e.source) from None
        raise ConfigError([*flag_problems, *e.problems], e.source) from None
    more = [problem] if smoke and not space.config.smoke else []  # the overlay as applied, smoke.* overrides too
    raise_if([*flag_problems, *more], path)
    return space


def _same_space(sweep_dir: str, space) -> None:
    """ConfigError listing every setting in which `space` (the file and overrides given to `run
    --resume`) differs from the sweep's own: resuming goes on with the sweep's, and would drop them."""
    from dnasweep.config.load import flatten
    from dnasweep.errors import ConfigError, Problem
    from dnasweep.sweep.study import read_space

    old, new = (flatten(s.to_dict()["config"]) for s in (read_space(sweep_dir), space))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        raise ConfigError([Problem(k, f"is {new.get(k)!r} here but {old.get(k)!r} in the sweep: resuming goes on "
                                   "with the sweep's", "drop the change (or --smoke), or start another sweep: --name")
                           for k in differ], f"run --resume {sweep_dir}")


def _same_storage(sweep_dir: str, given: str | None) -> None:
    """ConfigError when `run --resume` is given a storage (--storage or $DNASWEEP_STORAGE) other than
    the one the sweep was started with: resuming keeps the sweep where it is, and would ignore it."""
    from dnasweep.sweep.storage import SETTINGS
    from dnasweep.sweep.study import read_json

    env = "" if given else " (from $DNASWEEP_STORAGE)"
    given = given or os.environ.get("DNASWEEP_STORAGE") or None
    saved = (read_json(os.path.join(sweep_dir, SETTINGS)) or {}).get("storage")
    if given and given.rstrip("/") != (saved or "").rstrip("/"):
        was = f"--storage {saved}" if saved else f"no --storage (it is kept in {sweep_dir} only)"
        raise ConfigError([Problem("--storage", f"is {given!r}{env}, but the sweep was started with {was}: "
                                   "resuming goes on where the sweep is kept",
                                   ("unset DNASWEEP_STORAGE" if env else "drop --storage") + " to resume it there, "
                                   "or start another sweep with another --name")], f"run --resume {sweep_dir}")


def _resume(args: argparse.Namespace) -> int:
    # --root matters for a URI (where its local copy goes); for a NAME, _locate checks it
    flags.sweep_flags(args, "resume", root="://" in args.sweep)
    return _resume_in(args.sweep if "://" in args.sweep else _sweep_arg(args.sweep, args.root), args)


def _resume_in(sweep_dir: str, args: argparse.Namespace) -> int:
    from dnasweep.sweep.runner import resume_sweep

    return _finish(lambda: resume_sweep(sweep_dir, address=args.address, tracking_uri=args.tracking_uri,
                                        analyze=False if args.no_analyze else None, root=args.root,
                                        autoscaling=args.autoscaling or None), sweep_dir, args)


def _locate(arg: str, root: str, found, key: str, fix: str, source: str, normalize: bool = False) -> str:
    """ARG as a path, else under --root (a name as `dnasweep ls` prints it): the first place that
    `found` accepts wins over one that merely exists. Neither there: exit 2 saying so (a directory
    that is not a sweep is refused later, with its reason)."""
    if not os.path.isabs(arg) and not os.path.exists(arg) and (problem := flags.root_problem(root)):
        raise ConfigError([problem], source)  # said as is: "nor does FILE/NAME" hid that --root is a file
    candidates = [arg] + ([] if os.path.isabs(arg) else [os.path.join(root, arg)])
    candidates = [os.path.normpath(c) for c in candidates] if normalize else candidates
    hit = next((c for c in candidates if found(c)), None) or next((c for c in candidates if os.path.exists(c)), None)
    if hit is None:
        raise ConfigError([Problem(key, f"{arg} does not exist" + "".join(f", nor does {c}" for c in candidates[1:]),
                                   fix)], source)
    return hit


def _sweep_arg(arg: str, root: str) -> str:
    """SWEEP as a path or as a name under --root; a sweep wins over a plain directory."""
    from dnasweep.sweep.study import is_sweep_dir

    return _locate(arg, root, is_sweep_dir, "SWEEP",
                   f"pass a sweep directory, or a name that `dnasweep ls --root {root}` lists", "dnasweep")


def _finish(go, sweep_dir: str, args: argparse.Namespace) -> int:
    """Run a sweep; print its front (exit 1 when no trial completed), or how to continue it when it
    was stopped (exit 130)."""
    from dnasweep.sweep.cluster import library_output
    from dnasweep.sweep.study import format_front, is_sweep_dir, read_space

    library_output(args.verbose)
    try:
        result = go()
    except KeyboardInterrupt:  # a second Ctrl-C: Ray Tune's last saved state is still there
        if "://" in sweep_dir or is_sweep_dir(sweep_dir):  # `resume` of a sweep in object storage: its URI
            print(f"\ninterrupted; continue with: dnasweep resume {sweep_dir}", file=sys.stderr)
        else:  # stopped before the sweep's study existed (the runner removes what it had written)
            print(f"\ninterrupted before the sweep started: nothing was created in {sweep_dir}; run the same "
                  "command again", file=sys.stderr)
        return 130
    if result.interrupted:
        return 130  # the runner printed the resume command
    print(format_front(result, read_space(result.sweep_dir)))
    if result.n_complete == 0:  # nothing to show: a sweep, not a result
        print(f"error: no trial completed ({result.n_failed} failed, {result.n_pruned} pruned): see each trial's "
              "fail_reason in MLflow or SWEEP/trials/ID/attempts.log", file=sys.stderr)
        return 1
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from dnasweep.sweep.study import is_sweep_dir as is_sweep  # imports no ray/optuna/mlflow at module level

    # the flags first, all at once: --examples 0 silently meant the default, -5 an error about other keys
    p = [] if args.examples is None or args.examples >= 1 else [
        Problem("--examples", f"must be >= 1, got {args.examples}", "e.g. --examples 64, or leave the flag out for "
                "the default (256 sequences / every held-out image)")]
    p += flags.device_problems(args.device) + flags.tracking_problems(args.tracking_uri)
    if args.out is not None and (q := flags.dir_problem(args.out, "--out", "report directory", "name a directory for "
                                                   "the reports, or leave the flag out for TRIAL/analysis")):
        p.append(q)
    raise_if(p, "analyze")

    def in_sweep(t: str) -> bool:  # a sweep, SWEEP/TRIAL (a trial id or Optuna number) or SWEEP/trials/ID
        parent = os.path.dirname(t)
        return is_sweep(t) or is_sweep(parent) or (os.path.basename(parent) == "trials"
                                                   and is_sweep(os.path.dirname(parent)))

    # TARGET as given, else under --root (a sweep name as `dnasweep ls` prints it, or NAME/TRIAL)
    target = _locate(args.target, args.root, in_sweep, "TARGET", "pass a trial directory (its out_dir), a sweep "
                     "directory or name (see dnasweep ls), or SWEEP/TRIAL", "analyze", normalize=True)
    parent = os.path.dirname(target)
    if in_sweep(target):
        from dnasweep.sweep.analysis import analyze_in_sweep, front_dirs, trial_dir

        if is_sweep(target):
            sweep, dirs = target, front_dirs(target)
        else:
            sweep = parent if is_sweep(parent) else os.path.dirname(parent)
            dirs = [trial_dir(sweep, os.path.basename(target))]
        for r in analyze_in_sweep(sweep, dirs, max_examples=args.examples, uri=args.tracking_uri, out_dir=args.out,
                                  device=args.device):
            print(r["summary"]["text"], "\n")
        return 0
    from dnasweep.analyze.trial import analyze_trial

    summary, out = analyze_trial(target, args.out, args.examples, args.device)
    print(summary["text"])
    print(f"report: {os.path.join(out, 'report.html')}")
    return 0


def _pareto(args: argparse.Namespace) -> int:
    from dnasweep.sweep.reference import blocks, frontier_keys, on_frontier, rung_status
    from dnasweep.sweep.study import format_front, load_sweep

    result, space = load_sweep(_sweep_arg(args.sweep, args.root))
    if args.json:  # the front's rows, and the dense reference ladder's rungs (their results) when there is one
        on = frontier_keys(result.reference)
        print(json.dumps({"front": result.front, "reference": [
                          {**{k: r.get(k) for k in ("d_model", "dense_layers", "result", "reused")},
                           "blocks": blocks(r), "status": rung_status(r), "frontier": on_frontier(r, on)}
                          for r in result.reference],
                          "counts": {"complete": result.n_complete, "pruned": result.n_pruned,
                                     "failed": result.n_failed, "abandoned": result.n_abandoned}}))
    else:
        print(format_front(result, space, wide=args.wide))
    return 0


def _ui(args: argparse.Namespace) -> int:
    from dnasweep.sweep.ui import serve

    return serve(_sweep_arg(args.sweep, args.root))


def _ls(args: argparse.Namespace) -> int:
    from dnasweep.sweep.study import list_sweeps

    if not os.path.exists(args.root) and args.root == DEFAULT_ROOT:  # nothing run from here yet
        print(f"no sweeps under {args.root} (it does not exist yet: dnasweep run makes it)")
        return 0
    if not os.path.exists(args.root):  # a typo said "no sweeps under ROOT", as an empty root does
        raise ConfigError([Problem("--root", f"{args.root} does not exist", "pass the directory the sweeps were run "
                                   "under (dnasweep run --root ROOT; default runs/sweeps)")], "ls")
    raise_if([flags.root_problem(args.root)], "ls")
    rows = list_sweeps(args.root)
    if not rows:
        print(f"no sweeps under {args.root}")
    for r in rows:
        if "unreadable" in r:
            print(f"{r['name']:<40} unreadable: {_why_unreadable(os.path.join(args.root, r['name']), r['unreadable'])}")
            continue
        # Optuna trials stay RUNNING when the driver stops: a live sweep's and a stopped one's look alike,
        # unless the runner marked the sweep stopped (Ctrl-C, SIGTERM; a SIGKILL marks nothing)
        state = ("running" if not r["running"] else "stopped (resume to continue)" if r.get("stopped_at")
                 else "running or stopped")
        print(f"{r['name']:<40} {r['complete']:>4}/{r['budget']} complete  {r['pruned']:>3} pruned  "
              f"{r['failed']:>3} failed  {r['running']:>3} {state}"
              + (f"  {r['abandoned']} abandoned" if r["abandoned"] else ""))
    return 0


def _why_unreadable(sweep_dir: str, error: str) -> str:
    """What `open_study` says is wrong with a sweep `list_sweeps` could not read, and its fix."""
    from dnasweep.sweep.study import open_study

    try:
        open_study(sweep_dir, "ls")
    except ConfigError as e:
        return "; ".join(p.message + (f" (fix: {p.fix})" if p.fix else "") for p in e.problems)
    except Exception:  # noqa: BLE001, S110 - another failure: list_sweeps's own text says it
        pass
    return f"{error} (was the directory renamed? its Optuna study keeps the name it was started with)"


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local cluster)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SWEEP/mlflow.db)")
    p.add_argument("--no-analyze", action="store_true", help="skip the reports on the Pareto-front trials at the end")
    p.add_argument("--autoscaling", action="store_true", help="no node holds a trial yet: ask Ray's autoscaler for "
                   "one and wait (default: $DNASWEEP_AUTOSCALING=1; else refuse)")
    p.add_argument("--verbose", action="store_true", help="also print Ray's, Tune's and MLflow's own messages")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnasweep", description="Sweeps and NAS for Distributed Neural Architectures.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one trial from a trial config or a search space's base")
    t.add_argument("config", help="trial YAML, or search-space YAML (its base: is trained)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=200")
    t.add_argument("--out", help="output directory (same as out_dir=...)")
    t.add_argument("--json", action="store_true", help="print the final metrics as one JSON line")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    t.set_defaults(fn=_train)
    v = sub.add_parser("validate", help="check a config: every problem at once, exit code 2 if any")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--smoke", action="store_true", help="apply the file's smoke: overlay first")
    v.add_argument("--samples", type=int, default=None, metavar="N",
                   help="also apply N seeded random points; exit 2 if any breaks a rule of the trial config")
    v.set_defaults(fn=_validate)
    r = sub.add_parser("run", help="run a sweep: trials on Ray, chosen by Optuna against the objectives")
    r.add_argument("space", help="search-space YAML")
    r.add_argument("overrides", nargs="*", help="dotted overrides of the file, e.g. budget.trials=4 base.train.lr=1e-3")
    r.add_argument("--smoke", action="store_true", help="apply the file's smoke: overlay (fast CPU run)")
    r.add_argument("--name", help="sweep name (default: SPACE-DATE-TIME)")
    r.add_argument("--root", default=DEFAULT_ROOT, help="directory holding sweep directories")
    r.add_argument("--resume", action="store_true", help="if sweep --name exists, continue it instead of refusing "
                   "(needs --name)")
    r.add_argument("--storage", help="object store that keeps the sweep for multi-node runs, e.g. s3://BUCKET/sweeps "
                   "(default: $DNASWEEP_STORAGE, else ROOT only)")
    _cluster_flags(r)
    r.set_defaults(fn=_run)
    rs = sub.add_parser("resume", help="continue a stopped sweep (Ctrl-C, SIGTERM, killed driver) to its budget")
    rs.add_argument("sweep", help="sweep directory (runs/sweeps/NAME), its name under --root, or its object-store "
                    "URI (s3://BUCKET/sweeps/NAME)")
    rs.add_argument("--root", default=DEFAULT_ROOT, help="directory holding sweep directories (a NAME is looked up "
                    "there; the local copy of a sweep resumed from a URI goes there)")
    _cluster_flags(rs)
    rs.set_defaults(fn=_resume)
    a = sub.add_parser("analyze", help="routing report (paths, power law, specialisation, compute) of trained trials")
    a.add_argument("target", help="trial directory, SWEEP/TRIAL (Ray id or Optuna number), or a sweep (its front); "
                   "SWEEP may be a name under --root")
    a.add_argument("--root", default=DEFAULT_ROOT, help="directory holding sweep directories")
    a.add_argument("--out", help="report directory (default: TRIAL/analysis; for a sweep's front, OUT/ID each)")
    a.add_argument("--examples", type=int, help="held-out sequences / images to run, >= 1 (default: 256 / all)")
    a.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a.add_argument("--tracking-uri", help="MLflow store of a sweep (default: $MLFLOW_TRACKING_URI, else the one the "
                   "sweep logged to)")
    a.set_defaults(fn=_analyze)
    pf = sub.add_parser("pareto", help="the current Pareto front of a sweep (running or finished)")
    pf.add_argument("sweep", help="sweep directory (runs/sweeps/NAME) or its name under --root")
    pf.add_argument("--root", default=DEFAULT_ROOT, help="directory holding sweep directories")
    pf.add_argument("--json", action="store_true", help="print the front (and the dense reference) as JSON")
    pf.add_argument("--wide", action="store_true", help="every sampled value and the Ray trial id as columns")
    pf.set_defaults(fn=_pareto)
    u = sub.add_parser("ui", help="MLflow UI and optuna-dashboard on a sweep (127.0.0.1, free ports; Ctrl-C stops "
                       "both)")
    u.add_argument("sweep", help="sweep directory (runs/sweeps/NAME) or its name under --root")
    u.add_argument("--root", default=DEFAULT_ROOT, help="directory holding sweep directories")
    u.set_defaults(fn=_ui)
    ls = sub.add_parser("ls", help="sweeps under a root directory, with trial counts")
    ls.add_argument("--root", default=DEFAULT_ROOT)
    ls.set_defaults(fn=_ls)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the flags (argparse leaves those over)
    bad = [a for a in extra if "=" not in a or a.startswith("-") or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        from dnasweep.plugins import load_plugins
        load_plugins()  # $DNASWEEP_PLUGINS: routers (and the like) registered from outside the package
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `dnasweep train`: its checkpoint is where the same command goes on
        print("\ninterrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dnasweep pareto SWEEP | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would raise again
        return 0


if __name__ == "__main__":
    sys.exit(main())
