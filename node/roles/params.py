"""Parameters of the node and its roles, loaded from the [node], [validator], [miner] and
[executor] tables of a config file (every key is documented in configs/*.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeParams:
    role: str = ""  # validator | miner | executor
    data_dir: str = "gpow-data"  # key, ledger, status file; created if missing
    key_file: str = ""  # default: <data_dir>/node.key (created on first start, mode 0600)
    log_level: str = "info"  # debug | info | warning | error
    log_json: bool = False  # one JSON object per log line (for log collectors)
    metrics_port: int = 0  # 0: off; else serve Prometheus text on <metrics_host>:<port>/metrics
    metrics_host: str = "127.0.0.1"  # address the metrics endpoint listens on (0.0.0.0: every interface)
    status_interval_s: float = 1.0  # how often <data_dir>/status.json is rewritten

    def __post_init__(self) -> None:
        if self.role not in ("", "validator", "miner", "executor"):
            raise ValueError(f"role must be validator, miner or executor, not {self.role!r}")


@dataclass
class ValidatorParams:
    challenge_interval_s: float = 20.0  # each executor is challenged about this often
    concurrency: int = 2  # challenges in flight at once (co-scheduled groups count as one)
    samples: int = 32  # k: rows opened per challenge
    b_matrices: int = 4  # m
    n_gpu: int = 8192  # matrix size for GPU executors
    n_cpu: int = 128  # matrix size for CPU executors (development and the harness)
    memory_fill: float = 0.9  # a challenge's pool fills this fraction of the claimed memory
    max_steps: int = 4096  # cap on T for CPU classes (a GPU claim is never capped: it proves its whole memory)
    tolerance: float = 1.5  # measured time may exceed the profile's by this factor for full credit
    rtt_margin_s: float = 0.25  # fixed allowance for the network round trip
    commit_slack_s: float = 2.0  # extra time before a commitment counts as late
    openings_timeout_s: float = 10.0  # from the reveal to the openings
    co_schedule: bool = True  # challenge executors that could share a GPU at the same instant
    profiles_file: str = ""  # default: configs/gpu_profiles.toml shipped with the package
    audit: bool = True  # re-verify a sample of other validators' verdicts
    audits_per_minute: int = 6  # at most this many re-verifications of other validators' verdicts
    ban_seconds: int = 3600  # a false answer bans the executor and its miner this long
    probation_challenges: int = 2  # new executors get this many small challenges first (T <= 32, k/4 but >= 8 samples)


@dataclass
class MinerParams:
    engine: str = "cpu"  # cpu | gpu
    cpu_executors: int = 1  # local CPU executors (engine = cpu)
    cpu_memory_bytes: int = 64 * 1024 * 1024  # memory budget each CPU executor declares and enforces
    gpu_devices: list[int] = field(default_factory=list)  # empty: every visible GPU
    roster_interval_s: float = 10.0  # the signed roster is gossiped this often, and on every change
    heartbeat_timeout_s: float = 15.0  # drop a remote executor after this long without heartbeat
    host_fingerprint: str = ""  # empty: derived from /etc/machine-id; test networks on one machine set one per node
    remote_executors: list[str] = field(
        default_factory=list
    )  # peer ids of remote executors allowed to register (--allow-executor)

    def __post_init__(self) -> None:
        if self.engine not in ("cpu", "gpu"):
            raise ValueError(f"engine must be cpu or gpu, not {self.engine!r}")


@dataclass
class ExecutorParams:
    miner: str = ""  # ws://host:port of the miner to register with
    engine: str = "cpu"
    cpu_memory_bytes: int = 64 * 1024 * 1024
    gpu_device: int = 0  # the CUDA device this executor proves on (engine = "gpu")
    heartbeat_interval_s: float = 3.0  # signed heartbeats to the miner this often
    host_fingerprint: str = ""  # empty: derived from /etc/machine-id

    def __post_init__(self) -> None:
        if self.engine not in ("cpu", "gpu"):
            raise ValueError(f"engine must be cpu or gpu, not {self.engine!r}")


@dataclass
class AdmissionParams:
    """Who may challenge (see node/roles/admission.py); the same table on every node of a network."""

    validators: list[str] = field(default_factory=list)  # static allowlist of validator peer ids
    authority: str = ""  # or: peer id whose signed validator-set messages define the set
    set_file: str = ""  # a signed validator set to load and re-gossip (written by `gpow admission sign`)
    open: bool = False  # admit ANY validator (test networks only; logged as a warning); a node needs a set or this

    def __post_init__(self) -> None:
        if self.open and (self.validators or self.authority):
            raise ValueError("[admission]: open = true admits every validator; leave validators and authority empty with it")
        if self.validators and self.authority:
            raise ValueError("[admission]: give either a static validators list or an authority, not both")


@dataclass
class RoundParams:
    """The challenge schedule (see node/roles/rounds.py); the same table on every node of a network."""

    enabled: bool = False  # false: each validator challenges on its own interval instead
    round_s: float = 60.0  # length of one round
    reveal_window_s: float = 3.0  # beacon reveals are counted this long after the round starts
    jitter_s: float = 10.0  # the challenge instant falls this long at most after the window
    genesis_ms: int = 0  # round 0 starts here (Unix ms)
    window_rounds: int = 10  # agreed scores use the verdicts of this many rounds
    min_validators: int = 3  # an agreed score needs verdicts from this many validators

    def __post_init__(self) -> None:
        if self.reveal_window_s + self.jitter_s >= self.round_s:
            raise ValueError("[rounds]: reveal_window_s + jitter_s must be shorter than round_s")
