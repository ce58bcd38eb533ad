"""Learned statistics as additive totals, so that several routers can pool what they learn.

A policy that learns only sums (counts, sums of observations, sums of squares) can expose them
as a flat mapping ``name -> total`` (:class:`SharedStatistics`). Such totals merge by addition:
what two routers learned from disjoint sets of requests is exactly the sum of their totals,
whatever the order the observations came in, and every statistic the policy derives from them
(means, standard deviations, confidence bounds, expected lengths) is a function of the totals.
The names are stable across processes: they use service-class *names* and server *indices*
(never a process's own row numbering), so the same statistic has the same name everywhere.

``shared_stats()`` gives the totals now; ``adopt_shared_stats(totals, n_servers)`` replaces the
learned statistics by ``totals`` (absent names are zero) for a cluster of ``n_servers``,
recomputing what derives from them. What is
not a sum (pending pulls, requests placed and not yet back) is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "SharedStatistics",
    "add_totals",
    "arm_bandit_state",
    "arm_bandit_totals",
    "check_cs_ucb_state",
    "cs_ucb_state",
    "cs_ucb_totals",
    "subtract_totals",
]

Totals = dict[str, float]

_LOG_RATIO_STATS = ("count", "total", "total_sq")
_LENGTH_STATS = ("sum", "count", "log_count", "log_sum", "log_sq")
_REWARD_STATS = ("sum", "count")


@runtime_checkable
class SharedStatistics(Protocol):
    """A policy whose learned state is additive totals (see the module docstring)."""

    def shared_stats(self) -> dict[str, float]: ...

    def adopt_shared_stats(self, totals: Mapping[str, float], n_servers: int) -> None: ...


def add_totals(a: Mapping[str, float], b: Mapping[str, float]) -> Totals:
    """``a + b`` name by name (absent names are zero)."""
    out = dict(a)
    for name, value in b.items():
        out[name] = out.get(name, 0.0) + value
    return out


def subtract_totals(a: Mapping[str, float], b: Mapping[str, float]) -> Totals:
    """``a - b`` name by name, without the names whose difference is zero up to rounding
    (a total rebuilt from a sum differs from it in the last bits only)."""
    out: Totals = {}
    for name in a.keys() | b.keys():
        x, y = a.get(name, 0.0), b.get(name, 0.0)
        diff = x - y
        if abs(diff) > 1e-12 * max(1.0, abs(x), abs(y)):
            out[name] = diff
    return out


# --- CS-UCB -----------------------------------------------------------------------------------
# Names: ``t|CROWDED|SERVER|STAT|CLASS`` (time corrections), ``e|SERVER|STAT`` (energy
# corrections), ``l|STAT|CLASS`` (output lengths); the class name comes last so that it may
# hold any character.


class _LogRatioTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: list[list[float]]
    total: list[list[float]]
    total_sq: list[list[float]]


class _LengthTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sum: dict[str, float] = {}
    count: dict[str, int] = {}
    log_count: dict[str, int] = {}
    log_sum: dict[str, float] = {}
    log_sq: dict[str, float] = {}


class _CsUcbState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = "cs-ucb"
    n_servers: int = Field(ge=1)
    classes: dict[str, int]
    times: _LogRatioTotals
    energy: _LogRatioTotals
    lengths: _LengthTotals = _LengthTotals()


def check_cs_ucb_state(state: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (one line) unless ``state`` has the layout of a CS-UCB ``state()``:
    the fields above, every row of ``n_servers`` finite numbers, each class's two time rows."""
    if not state:
        return  # a policy that never decided saves nothing
    try:
        parsed = _CsUcbState.model_validate(state)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"CS-UCB state: {where}: {first['msg']}") from None
    for part in ("times", "energy"):
        totals = getattr(parsed, part)
        for stat in _LOG_RATIO_STATS:
            rows = getattr(totals, stat)
            if any(len(row) != parsed.n_servers for row in rows):
                raise ValueError(
                    f"CS-UCB state: {part}.{stat}: a row without {parsed.n_servers} servers"
                )
            if not all(math.isfinite(v) for row in rows for v in row):
                raise ValueError(
                    f"CS-UCB state: {part}.{stat}: a value that is not a finite number"
                )
    rows = len(parsed.times.count)
    if any(not 0 <= 2 * row + 1 < rows for row in parsed.classes.values()):
        raise ValueError("CS-UCB state: classes: a class without its two rows of times")


def cs_ucb_totals(state: Mapping[str, Any]) -> Totals:
    """The additive totals in a CS-UCB ``state()`` (zeros left out)."""
    out: Totals = {}
    lengths = state.get("lengths", {})
    for stat in _LENGTH_STATS:
        for name, value in lengths.get(stat, {}).items():
            if value:
                out[f"l|{stat}|{name}"] = float(value)
    if "times" not in state or "energy" not in state:
        return out
    times, energy = state["times"], state["energy"]
    for name, row in state.get("classes", {}).items():
        for crowded in (0, 1):
            r = 2 * int(row) + crowded
            for stat in _LOG_RATIO_STATS:
                if r < len(times[stat]):
                    for server, value in enumerate(times[stat][r]):
                        if value:
                            out[f"t|{crowded}|{server}|{stat}|{name}"] = float(value)
    for stat in _LOG_RATIO_STATS:
        for server, value in enumerate(energy[stat][0] if energy[stat] else []):
            if value:
                out[f"e|{server}|{stat}"] = float(value)
    return out


def cs_ucb_state(totals: Mapping[str, float], n_servers: int, classes: list[str]) -> dict[str, Any]:
    """A CS-UCB ``state()`` holding ``totals``; ``classes`` keep their rows, other class names
    found in ``totals`` are added after them. Names for servers beyond ``n_servers`` (another
    cluster's) are ignored."""
    names = list(classes)
    for key in totals:
        name = key.split("|", 4)[-1] if key.startswith("t|") else key.split("|", 2)[-1]
        if key[:2] in ("t|", "l|") and name not in names:
            names.append(name)
    rows = {name: row for row, name in enumerate(names)}
    zeros = [[0.0] * n_servers for _ in range(2 * len(names))]
    times = {stat: [list(r) for r in zeros] for stat in _LOG_RATIO_STATS}
    energy = {stat: [[0.0] * n_servers] for stat in _LOG_RATIO_STATS}
    lengths: dict[str, dict[str, float]] = {stat: {} for stat in _LENGTH_STATS}
    for key, value in totals.items():
        kind = key[:2]
        if kind == "t|":
            crowded, server, stat, name = key[2:].split("|", 3)
            if int(server) < n_servers and stat in times:
                times[stat][2 * rows[name] + int(crowded)][int(server)] = value
        elif kind == "e|":
            server, stat = key[2:].split("|", 1)
            if int(server) < n_servers and stat in energy:
                energy[stat][0][int(server)] = value
        elif kind == "l|":
            stat, name = key[2:].split("|", 1)
            if stat in lengths:
                lengths[stat][name] = round(value) if stat in ("count", "log_count") else value
    return {
        "policy": "cs-ucb",
        "n_servers": n_servers,
        "classes": rows,
        "times": times,
        "energy": energy,
        "lengths": lengths,
    }


# --- arm bandits (ucb1, epsilon-greedy) --------------------------------------------------------
# Names: ``a|ARM|STAT|CLASS`` (finished pulls and reward sums), ``r|STAT|CLASS`` (the reward's
# energy reference: sums and counts of weighted energy per class).

_ARM_STATS = ("count", "reward_sum")


def arm_bandit_totals(arms: Mapping[str, Any] | None, reward: Mapping[str, Any]) -> Totals:
    """The additive totals in an :class:`~perllm.policies.bandit.ArmStats` state and a
    :class:`~perllm.policies.bandit.Reward` state (zeros left out)."""
    out: Totals = {}
    for stat in _REWARD_STATS:
        for name, value in reward.get(stat, {}).items():
            if value:
                out[f"r|{stat}|{name}"] = float(value)
    if not arms:
        return out
    for name, row in arms["classes"].items():
        for stat in _ARM_STATS:
            for arm, value in enumerate(arms[stat][int(row)]):
                if value:
                    out[f"a|{arm}|{stat}|{name}"] = float(value)
    return out


def arm_bandit_state(
    totals: Mapping[str, float], n_arms: int, classes: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arms state, reward state)`` holding ``totals``; ``classes`` keep their rows, other
    class names in ``totals`` come after them. Arms beyond ``n_arms`` are ignored."""
    names = list(classes)
    for key in totals:
        if key.startswith("a|"):
            name = key.split("|", 3)[-1]
            if name not in names:
                names.append(name)
    rows = {name: row for row, name in enumerate(names)}
    arms = {stat: [[0.0] * n_arms for _ in names] for stat in _ARM_STATS}
    reward: dict[str, dict[str, float]] = {stat: {} for stat in _REWARD_STATS}
    for key, value in totals.items():
        if key.startswith("a|"):
            arm, stat, name = key[2:].split("|", 2)
            if int(arm) < n_arms and stat in arms:
                arms[stat][rows[name]][int(arm)] = value
        elif key.startswith("r|"):
            stat, name = key[2:].split("|", 1)
            if stat in reward:
                reward[stat][name] = round(value) if stat == "count" else value
    return {"n_arms": n_arms, "classes": rows, **arms}, reward
