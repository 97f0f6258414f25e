"""The adversaries the harness and the tests run: every attack the network must withstand, each
built from outside the product through the seams ``Node`` accepts (``NodeParts``: answerers,
executor classes, a miner's local executors, role service classes).

This is the one list of adversary kinds: ``gpow harness --cheaters``, its report, its help text and
the tests all read it. A kind may take one argument, ``kind:arg`` (e.g. ``corrupt-rows:0.3``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from node.app.node import NodeParts


@dataclass(frozen=True)
class Adversary:
    kind: str
    role: str  # the role of the node that runs it: "miner", "validator" or "executor" (a remote executor)
    summary: str
    # miner-side kinds: caught when one of its executors gets a failing verdict with a reason
    # starting with one of these; validator-side kinds are judged by the agreed scores instead
    caught_as: tuple[str, ...]
    build: Callable[[str], NodeParts]  # the kind's argument ("" when none) -> the node's parts
    local_executors: int = 1  # a CPU miner running it needs at least this many executors
    cpu_only: bool = False  # rewrites the numpy engine's states: no GPU form
    default_arg: str = ""
    admitted: bool = True  # validator kinds: the network's admitted set lists it
    nodes_from_arg: bool = False  # validator kinds: the argument is how many nodes run it
    lies: bool = (
        False  # validator kinds: its verdicts on the executors drawn for it are lies (the harness sizes min_validators to 2f+1)
    )


def _corrupt_rows(arg: str) -> NodeParts:
    from node.harness.adversaries.engines import CorruptRows

    return NodeParts(answerer=lambda index: CorruptRows(arg) if arg else CorruptRows())


def _zero_chain(arg: str) -> NodeParts:
    from node.harness.adversaries.engines import ZeroChain

    return NodeParts(answerer=lambda index: ZeroChain())


def _partial_pool(arg: str) -> NodeParts:
    from node.harness.adversaries.engines import PartialPool

    return NodeParts(answerer=lambda index: PartialPool(arg) if arg else PartialPool())


def _grind_refs(arg: str) -> NodeParts:
    from node.harness.adversaries.engines import GrindRefs

    return NodeParts(answerer=lambda index: GrindRefs(arg) if arg else GrindRefs())


def _fake_model(arg: str) -> NodeParts:
    from node.harness.adversaries.answerers import FakeModel

    return NodeParts(answerer=lambda index: FakeModel(arg) if arg else FakeModel())


def _replay(arg: str) -> NodeParts:
    from node.harness.adversaries.answerers import ReplayCommitment

    return NodeParts(answerer=lambda index: ReplayCommitment())


def _foreign_key(arg: str) -> NodeParts:
    from node.harness.adversaries.answerers import ForeignKey

    return NodeParts(answerer=lambda index: ForeignKey())


def _relay(arg: str) -> NodeParts:
    from node.harness.adversaries.answerers import Relay

    return NodeParts(answerer=lambda index: Relay())


def _wrong_executor(arg: str) -> NodeParts:
    from node.harness.adversaries.answerers import AnswersForOthers
    from node.harness.adversaries.nodes import MisroutingMiner
    from node.roles.executor import ExecutorService

    return NodeParts(
        executor_class=lambda index: AnswersForOthers if index == 1 else ExecutorService, miner_class=MisroutingMiner
    )


def _shared_gpu(arg: str) -> NodeParts:
    from node.harness.adversaries.nodes import shared_engine_executors

    count = int(arg) if arg.isdigit() else 0
    if count < 2:
        raise ValueError(f"shared-gpu needs at least 2 identities on its one engine, not {count}")
    return NodeParts(local_executors=lambda node: shared_engine_executors(node, count))


def _lying_validator(arg: str) -> NodeParts:
    from node.harness.adversaries.nodes import lying_validator

    return NodeParts(validator_class=lying_validator(arg or "always-fail"))


def _beacon_grinder(arg: str) -> NodeParts:
    from node.harness.adversaries.validators import GrindingAgreement, GrindingValidator

    return NodeParts(validator_class=GrindingValidator, agreement_class=GrindingAgreement)


def _verdict_eraser(arg: str) -> NodeParts:
    from node.harness.adversaries.validators import VerdictEraser

    return NodeParts(validator_class=VerdictEraser)


def _verdict_flood(arg: str) -> NodeParts:
    from node.harness.adversaries.validators import VerdictFlood

    return NodeParts(validator_class=VerdictFlood)


def _early_round(arg: str) -> NodeParts:
    from node.harness.adversaries.validators import EarlyRoundValidator

    return NodeParts(validator_class=EarlyRoundValidator)


def _colluding_validators(arg: str) -> NodeParts:
    from node.harness.adversaries.validators import colluding_validator

    if not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"colluding-validators takes how many collude, e.g. colluding-validators:2, not {arg!r}")
    return NodeParts(validator_class=colluding_validator())


def _judging(name: str):
    """The issue-17 adversaries (node/harness/adversaries/judging.py), imported when built."""

    def build(arg: str) -> NodeParts:
        from node.harness.adversaries import judging as J

        return {
            "cpu-claims-gpu": lambda: NodeParts(answerer=lambda index: J.CpuClaimsGpu()),
            "small-memory-claim": lambda: NodeParts(answerer=lambda index: J.SmallMemoryClaim()),
            "forged-busy": lambda: NodeParts(executor_class=lambda index: J.ForgedBusy),
            "probation-reset": lambda: NodeParts(local_executors=J.probation_reset_executors, miner_class=J.RelistingMiner),
            "busy-lock": lambda: NodeParts(validator_class=J.BusyLockValidator),
            "junk-evidence": lambda: NodeParts(validator_class=J.JunkEvidenceValidator),
            "frame-miner": lambda: NodeParts(answerer=lambda index: J.FrameMiner()),
            "uuid-copy": lambda: NodeParts(miner_class=J.uuid_copy_miner(arg)),
            "slow-sybil": lambda: NodeParts(local_executors=J.slow_sybil_executors),
        }[name]()

    return build


def _unadmitted_validator(arg: str) -> NodeParts:
    from node.harness.adversaries.nodes import SelfAdmittedValidator

    return NodeParts(validator_class=SelfAdmittedValidator)


ADVERSARIES: dict[str, Adversary] = {
    a.kind: a
    for a in [
        Adversary(
            "corrupt-rows",
            "miner",
            "gets a fraction F of each state's rows wrong",
            ("false-proof",),
            _corrupt_rows,
            cpu_only=True,
            default_arg="0.2",
        ),
        Adversary(
            "fake-model",
            "miner",
            "claims a 10x faster GPU model than it runs",
            ("slow-for-profile", "late-commitment"),
            _fake_model,
        ),
        Adversary(
            "partial-pool",
            "miner",
            "keeps a fraction K of the states, recomputes the rest",
            ("slow-for-profile", "late-commitment", "co-scheduled-timeout", "missing-commitment:capacity"),
            _partial_pool,
            cpu_only=True,
            default_arg="0.34",
        ),
        Adversary(
            "grind-refs",
            "miner",
            "rewrites a row per state to steer references into a partial pool",
            (
                "false-proof",
                "slow-for-profile",
                "late-commitment",
                "co-scheduled-timeout",
                "missing-commitment:capacity",
            ),
            _grind_refs,
            cpu_only=True,
        ),
        Adversary("zero-chain", "miner", "commits to all-zero states", ("false-proof",), _zero_chain, cpu_only=True),
        Adversary("replay", "miner", "answers every challenge with its first trace", ("false-proof", "replay"), _replay),
        Adversary(
            "wrong-executor",
            "miner",
            "answers a challenge addressed to another executor",
            ("wrong-executor", "missing-commitment:wrong-executor"),
            _wrong_executor,
            local_executors=2,
        ),
        Adversary("foreign-key", "miner", "signs its answers with a key that is not its own", ("wrong-signer",), _foreign_key),
        Adversary("relay", "miner", "re-issues the challenge to another executor under its own key", ("false-proof",), _relay),
        Adversary(
            "shared-gpu",
            "miner",
            "N executor ids (default 2) backed by one engine and one memory budget",
            ("co-scheduled-timeout", "duplicate-gpu"),
            _shared_gpu,
            local_executors=2,
            default_arg="2",
        ),
        Adversary(
            "lying-validator",
            "validator",
            "an admitted validator that lies in its verdicts (always-pass|always-fail)",
            (),
            _lying_validator,
            default_arg="always-fail",
            lies=True,
        ),
        Adversary(
            "unadmitted-validator", "validator", "a validator outside the admitted set", (), _unadmitted_validator, admitted=False
        ),
        Adversary(
            "beacon-grinder",
            "validator",
            "reads the others' beacon shares, grinds its own and re-commits to draw executors to itself",
            (),
            _beacon_grinder,
        ),
        Adversary(
            "verdict-eraser",
            "validator",
            "publishes failing verdicts under other validators' challenge ids (from BUSYs)",
            (),
            _verdict_eraser,
        ),
        Adversary(
            "verdict-flood",
            "validator",
            "floods verdicts: several per executor and round, made-up executors, far-off rounds",
            (),
            _verdict_flood,
        ),
        Adversary(
            "early-round",
            "validator",
            "challenges every executor for a round just before its beacon is public and never reveals",
            (),
            _early_round,
        ),
        Adversary(
            "colluding-validators",
            "validator",
            "N admitted validators that report the opposite of what they saw",
            (),
            _colluding_validators,
            default_arg="2",
            nodes_from_arg=True,
            lies=True,
        ),
        # issue 17: attacks on judging
        Adversary(
            "cpu-claims-gpu",
            "miner",
            "a CPU engine attesting an NVIDIA H200 (engine cpu)",
            ("claim-mismatch",),
            _judging("cpu-claims-gpu"),
        ),
        Adversary(
            "small-memory-claim",
            "miner",
            "attests an NVIDIA H200 on the GPU engine with 12 GB",
            ("claim-mismatch:memory",),
            _judging("small-memory-claim"),
        ),
        Adversary(
            "forged-busy",
            "miner",
            "answers every challenge BUSY with a challenge it signed itself (throwaway key)",
            ("missing-commitment:busy-unadmitted-issuer", "missing-commitment:busy-in-round", "missing-commitment:busy-too-long"),
            _judging("forged-busy"),
        ),
        Adversary(
            "probation-reset",
            "miner",
            "holds only a probation-sized pool of its claimed memory; leaves and re-joins its roster to stay on probation",
            ("missing-commitment:capacity", "late-commitment", "co-scheduled-timeout"),
            _judging("probation-reset"),
            cpu_only=True,
        ),
        Adversary(
            "busy-lock",
            "validator",
            "sends cheap challenges whose deadlines are a day (or an hour) away, never reveals",
            (),
            _judging("busy-lock"),
            lies=True,
        ),
        Adversary(
            "junk-evidence",
            "validator",
            "gossips false-proof verdicts on everyone with evidence that proves nothing",
            (),
            _judging("junk-evidence"),
            lies=True,
        ),
        Adversary(
            "frame-miner",
            "executor",
            "an outsider's remote executor that registers with an honest miner and answers falsely",
            (),
            _judging("frame-miner"),
        ),
        Adversary(
            "uuid-copy",
            "miner",
            "its executor attests a victim executor's GPU UUID (from the victim's roster)",
            ("duplicate-gpu",),
            _judging("uuid-copy"),
        ),
        Adversary(
            "slow-sybil",
            "miner",
            "4 executor ids on one engine and one memory budget, each claiming all of it",
            ("co-scheduled-timeout", "late-commitment", "duplicate-gpu"),
            _judging("slow-sybil"),
            local_executors=4,
            cpu_only=True,
        ),
    ]
}


def parse_kind(spec: str) -> tuple[Adversary, str]:
    """``kind`` or ``kind:arg`` -> (the adversary, its argument or default); unknown kinds name the known ones."""
    kind, _, arg = spec.strip().partition(":")
    adv = ADVERSARIES.get(kind)
    if adv is None:
        raise ValueError(f"unknown adversary kind {kind!r}; known: {', '.join(ADVERSARIES)}")
    return adv, arg or adv.default_arg


def node_parts(spec: str) -> NodeParts:
    adv, arg = parse_kind(spec)
    return adv.build(arg)
