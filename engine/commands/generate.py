"""`python -m engine generate`: Pythia 8 events with a detector response -> DIR/<process>/ parts."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.config import from_dict, load_yaml
from engine.data.canonical.selection import load_selection
from engine.data.generation.detector import DetectorConfig
from engine.data.generation.processes import PROCESSES, check_energy, get_process
from engine.data.tasks import add_executor_arguments, add_slice_arguments, executor_spec, task_slice
from engine.errors import InputError
from engine.files import writable_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.data.generation.generate import DEFAULT_TASK_EVENTS

    parser.add_argument("--process", required=True, metavar="P",
                        help=f"one of: {', '.join(PROCESSES)}")
    parser.add_argument("--events", required=True, type=int, metavar="N",
                        help="rows to write: events (or large-radius jets) passing the selection")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (the parts go into DIR/<process>/)")
    parser.add_argument("--ecm", type=float, default=None, metavar="GEV",
                        help="centre-of-mass energy (default: 7000, or 13000 for hbb/qcd)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--task-events", type=int, default=DEFAULT_TASK_EVENTS, metavar="K",
                        help=f"accepted rows per task, each seeded from (seed, task) and written to its "
                             f"own part (default {DEFAULT_TASK_EVENTS})")
    parser.add_argument("--selection", default="madrazo2017",
                        help="madrazo2017 (default), ochoa2023, none, or a YAML file")
    parser.add_argument("--detector", default=None, metavar="FILE.yaml",
                        help="detector response (default: configs/detector/default.yaml values)")
    parser.add_argument("--pileup", type=float, default=None, metavar="MU",
                        help="overlay Poisson(MU) minimum-bias interactions on each event "
                             "(default 0: none)")
    parser.add_argument("--pileup-profile", default=None, metavar="ERA",
                        help=f"pileup of an LHC era: {', '.join(_profile_help())} "
                             f"(instead of --pileup)")
    parser.add_argument("--pileup-library", default=None, metavar="DIR",
                        help="folder of the pileup library (default: OUT/.pileup)")
    parser.add_argument("--pileup-library-events", type=int, default=2000, metavar="N",
                        help="minimum-bias events in the pileup library (default 2000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(parser)
    add_slice_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from engine.data.generation.runner import format_summary, generate

    job = build_job(args)
    spec, tasks = executor_spec(args), task_slice(args)
    out = writable_folder(Path(args.out))
    summary = generate(job, out, spec, tasks, progress=False if args.no_progress else None,
                       library_folder=args.pileup_library)
    print("\n".join(format_summary(summary, job.process)))
    return 0


def build_job(args: argparse.Namespace):
    """Validate the options into a GenerateJob (InputError on anything wrong)."""
    from engine.data.generation.generate import GenerateJob

    process = get_process(args.process)
    if args.events <= 0:
        raise InputError("--events", f"must be a positive number of events, got {args.events}")
    if args.task_events <= 0:
        raise InputError("--task-events", f"must be at least 1, got {args.task_events}")
    if args.seed < 0:
        raise InputError("--seed", f"must be >= 0, got {args.seed}")
    ecm = process.ecm_gev if args.ecm is None else args.ecm
    if not ecm > 0:
        raise InputError("--ecm", f"must be a positive energy in GeV, got {args.ecm}")
    check_energy(process, ecm)
    detector = (DetectorConfig() if args.detector is None
                else from_dict(DetectorConfig, load_yaml(args.detector), "detector"))
    return GenerateJob(process=process.name, events=args.events, ecm_gev=float(ecm), seed=args.seed,
                       selection=load_selection(args.selection), detector=detector,
                       task_events=args.task_events, pileup=pileup_config(args, float(ecm)))


def _profile_help() -> list[str]:
    from engine.data.generation.pileup import PROFILES

    return [f"{name} (mean {era.mu:g}, sigma_z {era.sigma_z_mm:g} mm)" for name, era in PROFILES.items()]


def pileup_config(args: argparse.Namespace, ecm_gev: float):
    """The PileupConfig of --pileup / --pileup-profile, or None for no pileup (InputError if bad)."""
    from engine.data.generation.pileup import PROFILES, PileupConfig, check_mu, era_for

    if args.pileup is not None and args.pileup_profile is not None:
        raise InputError("--pileup", "give either --pileup MU or --pileup-profile ERA, not both")
    if args.pileup_library_events <= 0:
        raise InputError("--pileup-library-events", f"must be at least 1, got {args.pileup_library_events}")
    if args.pileup_profile is not None:
        if args.pileup_profile not in PROFILES:
            raise InputError("--pileup-profile", f"unknown profile '{args.pileup_profile}' "
                                                 f"(known: {', '.join(PROFILES)})")
        era = PROFILES[args.pileup_profile]
        return PileupConfig(mu=era.mu, sigma_z_mm=era.sigma_z_mm, profile=args.pileup_profile,
                            library_events=args.pileup_library_events)
    if args.pileup is not None:
        check_mu(args.pileup)
    if not args.pileup:
        return None
    return PileupConfig(mu=args.pileup, sigma_z_mm=era_for(ecm_gev).sigma_z_mm,
                        library_events=args.pileup_library_events)
