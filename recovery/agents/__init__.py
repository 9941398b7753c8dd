"""Agents that propose lever plans for one batch, behind one interface (``base.Agent``).

``AGENTS`` names every agent the CLI knows; ``make_agent`` builds one.

Layer: imports ``simulators``, ``recovery.data``, ``recovery.causal`` and
``recovery.calibration`` only; ``recovery.recommend``/``evaluate``/``pipeline``
and the shells import it (``recovery.LAYERS``).
"""

from __future__ import annotations

from recovery.agents.base import Agent, LeverBoundError, Proposal, Situation

__all__ = ["AGENTS", "Agent", "LeverBoundError", "Proposal", "Situation", "make_agent", "register_agent"]

AGENTS = ("planner", "rl", "heuristic", "none", "oracle", "planner+measure")

#: Agents built by a higher layer, which this layer names but may not import:
#: ``recovery.voi`` registers "planner+measure" when it is imported.
_REGISTERED: dict = {}


def register_agent(name: str, factory) -> None:
    """Let ``make_agent`` build ``name`` with ``factory(sim, model=, budget=, posterior=)``."""
    _REGISTERED[name] = factory


def make_agent(name: str, sim, *, model=None, policy=None, budget: str = "default", process=None,
               posterior=None) -> Agent:
    """Build an agent by name.

    Parameters
    ----------
    name : str
        One of ``AGENTS``.
    sim : simulators.process.Simulator
        The true simulator (the plant); only the oracle uses it to plan.
    process : Process, optional
        The process file the other agents know (default: ``sim.process``); the
        heuristic takes its sensitivities from it.
    posterior : recovery.calibration.PhysicsPosterior, optional
        Calibrated physics for the planner's rollouts (default: the file's).
    model : fitted causal model, optional
        Needed by ``planner``.
    policy : trained RL policy, optional
        Needed by ``rl``.
    budget : str
        ``"default"`` or ``"tiny"`` (tests).
    """
    if name == "none":
        from recovery.agents.baselines import NoneAgent
        return NoneAgent()
    if name == "heuristic":
        from recovery.agents.baselines import HeuristicAgent
        return HeuristicAgent(sim.process if process is None else process)
    if name == "oracle":
        from recovery.agents.oracle import OracleAgent
        kw = dict(n_rollouts=6, grid=5, n_sweeps=1, n_candidates=8, n_iter=1) if budget == "tiny" else {}
        return OracleAgent(sim, **kw)
    if name == "planner":
        if model is None:
            raise ValueError("the planner needs a fitted causal model")
        from recovery.agents.planner_agent import PlannerAgent
        return PlannerAgent(model, budget=budget, posterior=posterior)
    if name in _REGISTERED:
        return _REGISTERED[name](sim, model=model, budget=budget, posterior=posterior)
    if name == "planner+measure":
        raise ValueError("agent 'planner+measure' is registered by recovery.voi: import it first")
    if name == "rl":
        if policy is None:
            raise ValueError("the rl agent needs a trained policy")
        from recovery.agents.rl import RLAgent
        return RLAgent(policy)
    raise ValueError(f"unknown agent '{name}'; known: {', '.join(AGENTS)}")
