"""The plumbing :class:`PolicyBase` owns (server-list changes, restored state held until the
first decision) and the registry read from the policy classes."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from perllm.domain import ClusterView, Decision, RouterRequest
from perllm.errors import InputError
from perllm.policies import registry
from perllm.policies.base import PolicyBase, PolicyConfig
from perllm.policies.registry import BUILT_IN, ENTRIES, REGISTRY, PolicyEntry, make_policy
from perllm.testing import StaticView


class CountingPolicy(PolicyBase):
    """Records every hook call, and learns a count of decisions per server count."""

    name: ClassVar[str] = "counting"
    summary: ClassVar[str] = "records its hooks"

    def __init__(self, config: PolicyConfig, seed: int) -> None:
        super().__init__(config, seed)
        self.calls: list[tuple[str, Any]] = []
        self.decisions = 0

    def on_servers(self, view: ClusterView) -> None:
        self.calls.append(("on_servers", len(view.servers)))

    def on_begin(self, n_servers: int) -> None:
        self.calls.append(("on_begin", n_servers))

    def apply_state(self, state: dict[str, Any]) -> None:
        self.calls.append(("apply_state", state))
        self.decisions = int(state["decisions"])

    def learned_state(self) -> dict[str, Any]:
        return {"decisions": self.decisions}

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        self.calls.append(("decide", request.id))
        self.decisions += 1
        return Decision(server=0)


def _policy() -> CountingPolicy:
    return CountingPolicy(PolicyConfig(), 0)


def test_tables_are_built_before_the_first_decision_and_again_when_the_servers_change(
    paper_view: StaticView, request_factory: Any
) -> None:
    policy = _policy()
    policy.select(request_factory(0), paper_view)
    policy.select(request_factory(1), paper_view)  # the same server list: nothing rebuilt
    assert policy.calls == [("on_servers", 6), ("on_begin", 6), ("decide", 0), ("decide", 1)]
    policy.calls.clear()
    smaller = StaticView(paper_view.servers[:4], paper_view.links)
    policy.select(request_factory(2), smaller)
    # Rebuilt for the new list; the learned statistics are made once only.
    assert policy.calls == [("on_servers", 4), ("decide", 2)]
    equal_copy = StaticView(tuple(list(smaller.servers)), paper_view.links)
    policy.calls.clear()
    policy.select(request_factory(3), equal_copy)  # another object: rebuilt
    assert policy.calls == [("on_servers", 4), ("decide", 3)]


def test_restored_state_is_held_until_the_first_decision_then_applied(
    paper_view: StaticView, request_factory: Any
) -> None:
    policy = _policy()
    saved = {"decisions": 41}
    policy.restore(saved)
    assert policy.calls == []  # held: the number of servers is not known yet
    assert policy.state() == saved  # and reported as it was given
    policy.select(request_factory(0), paper_view)
    assert policy.calls == [
        ("on_servers", 6),
        ("on_begin", 6),
        ("apply_state", saved),
        ("decide", 0),
    ]
    assert policy.state() == {"decisions": 42}
    policy.calls.clear()
    policy.restore({"decisions": 7})  # after the first decision: applied at once
    assert policy.calls == [("apply_state", {"decisions": 7})]
    assert policy.state() == {"decisions": 7}


def test_begin_sizes_the_statistics_early_and_only_once(paper_view: StaticView) -> None:
    policy = _policy()
    policy.restore({"decisions": 3})
    policy.begin(6)  # as a replica adopting shared statistics does, before any decision
    policy.begin(6)
    assert policy.calls == [("on_begin", 6), ("apply_state", {"decisions": 3})]
    assert policy.state() == {"decisions": 3}


def test_a_fresh_policy_reports_its_empty_learned_state() -> None:
    assert _policy().state() == {"decisions": 0}


@pytest.mark.parametrize("name", ["cs-ucb", "ucb1", "epsilon-greedy", "feasible-energy"])
def test_a_learning_policy_applies_state_restored_before_its_first_decision(
    name: str, paper_view: StaticView, request_factory: Any, feedback_factory: Any
) -> None:
    teacher = make_policy(name, seed=1)
    for i in range(60):
        request = request_factory(i, cls=("a", "b")[i % 2])
        decision = teacher.select(request, paper_view)
        teacher.observe(feedback_factory(request, decision, energy_j=1.0 + decision.server))
    saved = json.loads(json.dumps(teacher.state()))
    pupil = make_policy(name, seed=1)
    pupil.restore(saved)
    assert pupil.state() == saved
    request = request_factory(1000, cls="a")
    pupil.select(request, paper_view)
    teacher.select(request, paper_view)
    assert json.loads(json.dumps(pupil.state())) == json.loads(json.dumps(teacher.state()))


def test_cs_ucb_rebuilds_its_server_table_for_a_new_server_list(
    paper_view: StaticView, request_factory: Any
) -> None:
    policy: Any = make_policy("cs-ucb")
    policy.select(request_factory(0), paper_view)
    first = policy.table
    policy.select(request_factory(1), paper_view)
    assert policy.table is first
    copy = tuple(list(paper_view.servers))  # equal, but another list
    policy.select(request_factory(2), StaticView(copy, paper_view.links))
    assert policy.table is not first


def test_the_registry_is_read_from_the_policy_classes() -> None:
    assert [entry.name for entry in ENTRIES] == [policy.name for policy in BUILT_IN]
    for policy, entry in zip(BUILT_IN, ENTRIES, strict=True):
        assert entry == PolicyEntry(
            policy.name, policy.summary, policy.config_type, policy, policy.clairvoyant
        )
        assert REGISTRY[policy.name] is entry
        assert isinstance(make_policy(policy.name), policy)
    assert {e.name for e in ENTRIES if e.clairvoyant} == {"oracle", "planner"}


class _FakePoint:
    def __init__(self, name: str, value: object) -> None:
        self.name, self.value, self._loaded = name, f"fake:{name}", value

    def load(self) -> object:
        return self._loaded


class PinConfig(PolicyConfig):
    server: int = 0


class PinPolicy(PolicyBase):
    name: ClassVar[str] = "pin"
    summary: ClassVar[str] = "every request to one server"
    config_type: ClassVar[type[PolicyConfig]] = PinConfig
    config: PinConfig

    def decide(self, request: RouterRequest, view: ClusterView) -> Decision:
        return Decision(server=self.config.server)


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(value: object) -> None:
        monkeypatch.setattr(registry, "entry_points", lambda group: [_FakePoint("pin", value)])
        registry.plugins.cache_clear()

    yield install
    registry.plugins.cache_clear()


def test_a_plugin_may_register_its_policy_class(
    fake_plugins: Any, paper_view: StaticView, request_factory: Any
) -> None:
    fake_plugins(PinPolicy)
    entry = registry.lookup("pin")
    assert (entry.summary, entry.config, entry.factory) == (
        "every request to one server",
        PinConfig,
        PinPolicy,
    )
    assert make_policy("pin", {"server": 2}).select(request_factory(), paper_view).server == 2


def test_a_plugin_class_without_a_name_is_named_not_skipped(fake_plugins: Any) -> None:
    class Nameless(PolicyBase):
        pass

    fake_plugins(Nameless)
    with pytest.raises(InputError, match=r"policy plugin 'pin' \(fake:pin\): .* has no name"):
        make_policy("pin")
