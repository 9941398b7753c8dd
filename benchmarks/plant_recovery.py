"""Plant vs file: closed-loop recovery when the plant's physics differs from the process file.

Prints JSON. Usage::

    python benchmarks/plant_recovery.py [--plant examples/plants/plant_b_hot_bath.toml ...]
        [--process default] [--history 1000] [--explore 0.2] [--batches 300] [--seed 7]
        [--posteriors file,perfect,calibrated] [--rl-timesteps 150000] [--fit nuts]

For each plant (a process file of the file's structure, other physics):

1. simulate ``--history`` historical batches *from the plant* (seed ``seed + 1``,
   past engineers' lever moves on ``--explore`` of them) and fit the causal model
   with the *file* (what a real site does: the data come from the plant);
2. physics for the planner and the rl agent, one run per posterior:
   ``file`` (no calibration: the file's physics), ``perfect`` (``from_values``
   with the plant's true parameters: perfect knowledge, the upper bracket of a
   calibration) and ``calibrated`` (``recovery.calibration.calibrate`` on the
   history, when this version has it);
3. play every agent in closed loop on the flagged batches of ``--batches`` fresh
   batches of the plant (``recovery.evaluate``: same cases, same future noise
   for all), the oracle planning on the plant from the true state;
4. report each agent's recovery as a share of the oracle's, and the planner's own
   P(accept) at its first decision against the plant simulator's P(accept) of the
   same plan from the batch's true state (``--truth-rollouts`` rollouts), per
   0.1-wide bin (target: within 0.05 in every bin with >= 30 decisions).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recovery.agents.base import Agent
from recovery.evaluate import (EVAL_CHUNK, chunk_seed, closed_loop, flagged_cases, physics_difference,
                               summarise_outcomes)
from simulators.definition import load_process
from simulators.process import Simulator

PLANTS = Path(__file__).resolve().parents[1] / "examples" / "plants"
DEFAULT_PLANTS = ("plant_b_hot_bath.toml", "plant_a_soft_rolls.toml", "plant_c_mixed.toml")


@dataclass
class Args:
    plants: list[str]
    process: str | None = None
    history: int = 1000
    explore: float = 0.2
    batches: int = 300
    seed: int = 7
    posteriors: tuple[str, ...] = ("file", "perfect", "calibrated")
    agents: tuple[str, ...] = ("planner", "rl", "heuristic", "none", "oracle")
    rl_timesteps: int = 150_000
    fit: str = "nuts"
    truth_rollouts: int = 256
    workdir: str | None = None


def parse() -> Args:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plant", action="append", help="plant file (repeat; default: the three example plants "
                                                     "of the built-in process)")
    ap.add_argument("--process", default=None)
    ap.add_argument("--history", type=int, default=1000)
    ap.add_argument("--explore", type=float, default=0.2)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--posteriors", default="file,perfect,calibrated")
    ap.add_argument("--agents", default="planner,rl,heuristic,none,oracle")
    ap.add_argument("--rl-timesteps", type=int, default=150_000)
    ap.add_argument("--fit", choices=["nuts", "advi"], default="nuts")
    ap.add_argument("--truth-rollouts", type=int, default=256)
    ap.add_argument("--workdir", help="keep fitted models and calibrations here and reuse them (default: none kept)")
    a = ap.parse_args()
    return Args(a.plant or [str(PLANTS / p) for p in DEFAULT_PLANTS], a.process, a.history, a.explore,
                a.batches, a.seed, tuple(a.posteriors.split(",")), tuple(a.agents.split(",")),
                a.rl_timesteps, a.fit, a.truth_rollouts, a.workdir)


class Named(Agent):
    """An agent under another name (two planners with other physics side by side), which
    records its first proposal on each batch."""

    def __init__(self, inner: Agent, name: str):
        self.inner, self.name, self.needs_truth = inner, name, inner.needs_truth
        self.first: dict[str, tuple] = {}

    def reset(self) -> None:
        self.inner.reset()

    def _propose(self, situation, seed):
        prop = self.inner._propose(situation, seed)
        self.first.setdefault(situation.batch_id, (situation.step, prop.plan.copy(), prop.p_accept))
        return prop


def fit_model(args: Args, process, world, log: dict):
    from recovery.causal.model import CausalModel, FitConfig

    t = time.perf_counter()
    history = world.simulate(args.history, args.seed + 1, explore=args.explore).observations
    log["simulate_s"] = time.perf_counter() - t
    d = Path(args.workdir) / f"model-{world.process.digest}-{args.history}-{args.seed}-{args.fit}" \
        if args.workdir else None
    if d is not None and (d / "model.json").exists():
        return history, CausalModel.load(d)
    cfg = (FitConfig(method="nuts", draws=500, tune=500, chains=2, seed=args.seed, keep_draws=500)
           if args.fit == "nuts" else FitConfig(method="advi", advi_steps=20000, draws=300, seed=args.seed,
                                                keep_draws=300))
    t = time.perf_counter()
    model = CausalModel(process, config=cfg).fit(history, progress=False)
    log["fit_s"] = time.perf_counter() - t
    if d is not None:
        model.save(d)
    return history, model


def posteriors(args: Args, process, plant, history, log: dict) -> dict:
    from recovery.calibration.posterior import from_values

    out = {}
    for name in args.posteriors:
        if name == "file":
            out[name] = None
        elif name == "perfect":
            out[name] = from_values(process, [physics_difference(process, plant)], method="plant's true values")
        elif name == "calibrated":
            try:
                from recovery.calibration import calibrate
            except ImportError:
                log["calibrated"] = "skipped: recovery.calibration.calibrate is not in this version"
                continue
            from recovery.calibration.posterior import PhysicsPosterior

            # kept beside the fitted model so that several runs (agents, posteriors) on one
            # plant share one calibration instead of re-running it (4-5 min each)
            d = (Path(args.workdir) / f"calibration-{plant.digest}-{process.digest}-{args.history}-{args.seed}"
                 if args.workdir else None)
            t = time.perf_counter()
            if d is not None and PhysicsPosterior.exists(d):
                out[name] = post = PhysicsPosterior.load(d)
                log["calibration_loaded_from"] = str(d)
            else:
                out[name] = post = calibrate(history, process, seed=args.seed)
                log["calibrate_s"] = time.perf_counter() - t
                if d is not None and post.converged:
                    post.save(d)
            log["calibration"] = {"method": post.method, "converged": post.converged, "draws": post.n_draws,
                                  "parameters": len(post.keys),
                                  "informed": sum(p.informed for p in post.parameters),
                                  "failed_checks": [list(c) for c in post.failed_checks()]}
        else:
            raise SystemExit(f"unknown posterior '{name}'; known: file, perfect, calibrated")
    return out


def build_agents(args: Args, process, world, model, posts: dict, log: dict) -> list[Named]:
    from recovery.agents import make_agent
    from recovery.agents.rl import train_policy

    agents = []
    for name in args.agents:
        if name in ("planner", "rl"):
            for pname, post in posts.items():
                if name == "planner":
                    inner = make_agent("planner", world, model=model, process=process, posterior=post)
                else:
                    t = time.perf_counter()
                    policy = train_policy(process, seed=args.seed, total_timesteps=args.rl_timesteps,
                                          posterior=post)
                    log[f"train_rl_{pname}_s"] = time.perf_counter() - t
                    inner = make_agent("rl", world, policy=policy, process=process)
                agents.append(Named(inner, f"{name}[{pname}]"))
        else:
            agents.append(Named(make_agent(name, world, process=process), name))
    return agents



def reliability_bins(p: np.ndarray, q: np.ndarray) -> list[dict]:
    """Predicted P(accept) ``p`` against the simulator's ``q``, in 0.1-wide bins of ``p``
    (the last bin closed): per non-empty bin its size, both means and their gap."""
    bins = []
    for lo in np.round(np.arange(0.0, 1.0, 0.1), 1):
        m = (p >= lo) & ((p < lo + 0.1) if lo < 0.9 else (p <= 1.0))
        if m.any():
            bins.append({"low": float(lo), "n": int(m.sum()), "predicted": float(p[m].mean()),
                         "simulator": float(q[m].mean()), "gap": float(abs(p[m].mean() - q[m].mean()))})
    return bins

def reliability(world: Simulator, cases: dict, agent: Named, n_rollouts: int, seed: int) -> dict:
    """The agent's own P(accept) at its first decision against the plant simulator's
    P(accept) of the same plan from the batch's true state, in 0.1-wide bins."""
    pairs, ids = [], []
    for i, (bid, (step, plan, pa)) in enumerate(agent.first.items()):
        case = cases[bid]
        if pa is None or step != case.detect_step:
            continue
        # each case its own seed: with one seed for all, every case's rollouts share the same
        # future faults, an error (up to 0.02 with 256 rollouts) that no number of cases averages
        ins = world.rollout(case.state, step, plan[None], n_rollouts, seed + 7919 * i, case.conditions)
        pairs.append((float(pa), float(world.process.accepts(ins[0]).mean())))
        ids.append(bid)
    if not pairs:
        return {}
    p, q = np.array(pairs).T
    bins = reliability_bins(p, q)
    big = [b for b in bins if b["n"] >= 30]
    # the decisions themselves, so that runs on several plants or seeds can be pooled per bin
    return {"n": len(p), "predicted": float(p.mean()), "simulator": float(q.mean()), "bins": bins,
            "decisions": [{"batch": b, "predicted": float(x), "simulator": float(y)}
                          for b, x, y in zip(ids, p, q)],
            "max_gap_bins_n30": max((b["gap"] for b in big), default=None),
            "target_within_0.05": all(b["gap"] <= 0.05 for b in big) if big else None}


def run_plant(args: Args, path: str) -> dict:
    process = load_process(args.process)
    plant = load_process(path)
    world = Simulator(plant)
    log: dict = {}
    t0 = time.perf_counter()
    history, model = fit_model(args, process, world, log)
    posts = posteriors(args, process, plant, history, log)
    agents = build_agents(args, process, world, model, posts, log)
    outcomes = {a.name: [] for a in agents}
    cases_by_id = {}
    t = time.perf_counter()
    for c in range((args.batches + EVAL_CHUNK - 1) // EVAL_CHUNK):
        n = min(EVAL_CHUNK, args.batches - c * EVAL_CHUNK)
        cs = chunk_seed(args.seed, c)
        cases, _ = flagged_cases(world, n, cs, first_id=c * EVAL_CHUNK + 1)
        for i, case in enumerate(cases):
            cases_by_id[case.batch_id] = case
            for a in agents:
                outcomes[a.name].append(closed_loop(world, case, a, seed=(cs + 7919 * i) % (2**31 - 1),
                                                    process=process))
    log["evaluate_s"] = time.perf_counter() - t
    summary = summarise_outcomes(outcomes, args.batches, args.seed)
    oracle = summary["agents"].get("oracle", {}).get("recovery_rate")
    table = {}
    for a in agents:
        r = summary["agents"][a.name]
        table[a.name] = {"recovery_rate": r["recovery_rate"],
                         "share_of_oracle": r["recovery_rate"] / oracle if oracle else None,
                         "net_value": r["net_value"], "by_fault": r["by_fault"],
                         "own_p_accept": r["calibration"]}
        if a.name.startswith("planner"):
            table[a.name]["p_accept_vs_plant_simulator"] = reliability(world, cases_by_id, a,
                                                                       args.truth_rollouts, args.seed)
    log["total_s"] = time.perf_counter() - t0
    return {"plant": path, "plant_digest": plant.digest, "process": process.source,
            "process_digest": process.digest, "n_flagged": summary["n_flagged"],
            "physics_parameters_differing": len(physics_difference(process, plant)),
            "agents": table, "seconds": log}


def main() -> None:
    args = parse()
    out = {"args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "node": platform.machine()},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "plants": [run_plant(args, p) for p in args.plants]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
