"""One configuration schema for the CLI, Prefect deployment parameters and params.yaml.

Values come, lowest priority first, from the defaults below, a YAML file, environment variables
(``FLOCK_`` prefix, ``__`` between levels: ``FLOCK_TRAINING__LOCAL_EPOCHS=2``) and CLI overrides.
Unknown keys and wrong types are errors, never silently ignored.
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flock_pipeline.attacks.spec import AttackSpec, check_attacks
from flock_pipeline.errors import ConfigError, FlockError

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "AggregationConfig",
    "CentralDPConfig",
    "ChainConfig",
    "DataConfig",
    "DataSchema",
    "FeatureDtype",
    "FlockConfig",
    "ModelConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "ScreenConfig",
    "StorageConfig",
    "TrackingConfig",
    "TrainingConfig",
    "VoteConfig",
    "format_validation_error",
    "load_config",
]


FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


FeatureDtype = Literal["float32", "int64"]
"""float32: what the built-in models train on; int64: integer codes (token ids, categories) for
a model named by a dotted path that embeds them."""

_Dim = Annotated[int, Field(ge=1)]


class DataSchema(BaseModel):
    """The data every participant's folder must hold for one task (``data.folder_schema``; the
    built-in data sets' and the task's are in ``flock_pipeline.data.schema``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_shape: tuple[_Dim, ...] = Field(
        min_length=1, max_length=8, description="shape of one sample, e.g. [1, 28, 28]"
    )
    dtype: FeatureDtype = Field(
        "float32", description="dtype the model takes; a folder's files may hold any dtype that "
        "casts to it without changing a value",
    )  # fmt: skip
    num_classes: int = Field(ge=2, le=100_000, description="labels are 0 .. num_classes - 1")
    class_names: tuple[str, ...] | None = Field(
        None, description="name of each class, in label order; Parquet labels may be names"
    )
    min_samples: int = Field(1, ge=1, description="fewest training samples a folder may hold")
    value_range: tuple[float, float] | None = Field(
        None, description="[low, high] every feature value must lie in; None: any finite value"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataSchema:
        names = self.class_names
        if names is not None:
            if len(names) != self.num_classes:
                raise ValueError(
                    f"class_names lists {len(names)} names for {self.num_classes} classes"
                )
            if any(not n.strip() for n in names) or len(set(names)) != len(names):
                raise ValueError("class_names must be distinct and non-empty")
        if self.value_range is not None:
            low, high = self.value_range
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"value_range must be finite with low < high, got {low}, {high}")
        return self

    @property
    def num_features(self) -> int:
        """Values in one sample (the length of a Parquet ``features`` list)."""
        return math.prod(self.feature_shape)

    def label_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names is not None else str(label)

    @classmethod
    def for_dataset(cls, name: str, min_samples: int = 1) -> DataSchema:
        """The schema of a built-in data set (``mnist5k``, ``digits``, ``fashion_mnist``): what
        ``flock_pipeline.data.load_dataset`` returns, without loading it."""
        from flock_pipeline.data.schema import schema_for_dataset

        return schema_for_dataset(name, min_samples)


class DataConfig(_Section):
    dataset: Literal["mnist5k", "digits", "fashion_mnist"] = "mnist5k"
    fashion_mnist_dir: Path = FASHION_MNIST_DEFAULT_DIR
    test_fraction: float = Field(0.2, gt=0, lt=1, description="global test share (no test split)")
    holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="each participant's held-out share"
    )
    max_samples: int | None = Field(None, gt=0, description="cap on training pool (None: all)")
    validation: Literal["holdout", "shared"] = Field(
        "holdout",
        description="what voters score on: each its own held-out split, or the task's shared, "
        "class-balanced validation set (held back by the task creator: from the samples "
        "max_samples leaves unused, else from the training pool)",
    )
    validation_per_class: int = Field(
        100, ge=1, description="samples of every class in the shared validation set"
    )
    folder_schema: DataSchema | None = Field(
        None,
        description="what every participant's own data folder must hold (docs/data.md); None: "
        "the schema of the built-in dataset, with partition.min_samples as the fewest samples",
    )


class PartitionConfig(_Section):
    scheme: Literal["iid", "dirichlet", "shards"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (label skew)")
    classes_per_participant: int = Field(2, ge=1)
    quantity_alpha: float | None = Field(
        None, description="iid quantity skew; None for equal sizes"
    )
    min_samples: int = Field(10, ge=1)


class ModelConfig(_Section):
    name: str = Field(
        "cnn",
        description="mlp | cnn | package.module:factory (called with the input shape and the "
        "number of classes, returns a torch.nn.Module)",
    )

    @field_validator("name")
    @classmethod
    def _known_or_dotted(cls, value: str) -> str:
        from flock_pipeline.models.custom import check_model_name

        try:
            check_model_name(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class TrainingConfig(_Section):
    local_epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    proximal_mu: float = Field(0.0, ge=0, description="FedProx proximal term; 0 for plain FedAvg")
    timeout_minutes: float = Field(30.0, gt=0, description="limit on one local training (flows)")


class PrivacyConfig(_Section):
    enabled: bool = True
    noise_multiplier: float | None = Field(
        1.0, ge=0, description="DP-SGD noise; ignored when target_epsilon is set"
    )
    target_epsilon: float | None = Field(None, gt=0, description="epsilon to spend per round")
    max_grad_norm: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    epsilon_budget: float | None = Field(
        10.0, gt=0, description="cumulative epsilon a participant may spend; None for no limit"
    )

    @model_validator(mode="after")
    def _noise_source(self) -> PrivacyConfig:
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("privacy is enabled: set noise_multiplier or target_epsilon")
        return self


StrategyName = Literal[
    "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg",
    "krum", "multikrum", "bulyan",
]  # fmt: skip


class CentralDPConfig(_Section):
    """User-level DP of the released models: each proposer clips its update and adds its share
    of the Gaussian noise before it commits; the aggregate adds none."""

    noise_multiplier: float = Field(
        1.0, ge=0, description="σ of the released models, given min_honest honest proposers"
    )
    clip_norm: float = Field(1.0, gt=0, description="initial clip norm when adaptive")
    adaptive: bool = Field(
        False, description="adaptive clipping (Andrew et al. 2021); only with noise_multiplier 0"
    )
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_lr: float = Field(0.2, gt=0)
    min_honest: int = Field(
        1, ge=1,
        description="honest proposers per round the guarantee assumes; each adds σ/√min_honest",
    )  # fmt: skip

    @model_validator(mode="after")
    def _adaptive_without_noise(self) -> CentralDPConfig:
        if self.adaptive and self.noise_multiplier > 0:
            raise ValueError(
                "adaptive clipping needs the fraction of unclipped updates, which noised "
                "updates do not reveal: set adaptive: false (or noise_multiplier: 0 for a test "
                "without privacy)"
            )
        return self


class ScreenConfig(_Section):
    """Checks every update passes before the strategy sees it (free riders and copies are
    penalized; the rest of the flagged are only left out)."""

    enabled: bool | None = Field(
        None, description="None: on, unless central DP is (its guarantee assumes no screen)"
    )
    free_rider_rtol: float | None = Field(1e-7, ge=0, description="|delta| <= rtol*|global|")
    duplicate_rtol: float | None = Field(1e-6, ge=0, description="near-copy of an earlier one")
    max_norm_ratio: float | None = Field(5.0, ge=1, description="|delta| > ratio*median |delta|")
    min_cosine: float | None = Field(0.0, ge=-1, le=1, description="cos(delta, median delta)")
    min_updates: int = Field(3, ge=2, description="updates needed for the two outlier checks")
    min_trust: float | None = Field(
        -1.0, le=0,
        description="exclude a proposer whose earlier contributions average below this, each in "
        "units of its round's mean absolute contribution; None: off",
    )  # fmt: skip
    trust_rounds: int = Field(2, ge=1, description="scored rounds before min_trust applies")


class AggregationConfig(_Section):
    strategy: StrategyName = "fedavg"
    params: dict[str, float | int | bool] = Field(
        {}, description="strategy parameters, e.g. {num_malicious: 1} for krum"
    )
    central_dp: CentralDPConfig | None = Field(None, description="None: no central DP")
    screen: ScreenConfig = ScreenConfig()
    max_weight_share: float = Field(
        0.5,
        description="the most of a sample-weighted rule's weight (FedAvg, FedAvgM, FedOpt) one "
        "update may carry, in (0, 1]; sample counts are self-reported. 0.5: no update outweighs "
        "all the others together",
    )

    @field_validator("max_weight_share")
    @classmethod
    def _share_in_range(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ValueError(f"must be in (0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _central_dp_rule(self) -> AggregationConfig:
        if self.central_dp is not None:
            from flock_pipeline.aggregation.central_dp import refuse_combination

            dp = self.central_dp
            try:
                refuse_combination(self.strategy, dp.noise_multiplier, dp.min_honest, dp.adaptive)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def screening(self) -> bool:
        """Whether the screen runs: explicitly set, or on exactly when central DP is off."""
        return self.screen.enabled if self.screen.enabled is not None else self.central_dp is None


class ChainConfig(_Section):
    url: str | None = Field(
        None, description="JSON-RPC URL; None: the managed local anvil under data_dir/chain"
    )
    stake: int = Field(100, gt=0, description="FLOCK each participant stakes (whole tokens)")
    min_stake: int = Field(50, gt=0, description="stake below which a participant gets no role")
    reward_pool: int = Field(1_000, gt=0, description="FLOCK the task pays out (whole tokens)")
    slash_bps: int = Field(
        1_000, ge=0, le=10_000,
        description="slash rate of a proposer or voter reported as a no-show",
    )  # fmt: skip
    penalty_bps: int = Field(
        10_000, ge=0, le=10_000, description="slash rate for an update the voters flagged"
    )
    voter_slash_bps: int = Field(
        7_000, ge=0, le=10_000,
        description="slash rate for a voter that reveals another aggregate hash (or never reveals)",
    )  # fmt: skip
    finalizer_share_bps: int = Field(1_000, ge=0, le=10_000)
    proposers_per_round: int | None = Field(
        None, ge=1, description="expected proposers per round; None: every participant"
    )
    voters_per_round: int | None = Field(
        None, ge=1,
        description="expected voters per round (drawn independently of the proposers, so a "
        "participant may be both); None: every participant votes, with its stake as its weight "
        "(participants x stake / min_stake, at least participants, so that every stake at or "
        "above min_stake is drawn with certainty): a coalition with less than half of the "
        "voting stake then never holds most of the votes",
    )  # fmt: skip
    training_seconds: int = Field(3_600, ge=1, description="training phase length")
    commit_seconds: int = Field(600, ge=1)
    reveal_seconds: int = Field(600, ge=1)
    key_env: str = Field(
        "FLOCK_CHAIN_PRIVATE_KEY", description="environment variable holding the task "
        "creator's (coordinator's) private key on a chain that is not a dev chain",
    )  # fmt: skip
    log_chunk_blocks: int = Field(
        10_000, ge=1, description="most blocks one eth_getLogs read covers (public RPCs cap "
        "the range); a refused read is retried in halves",
    )  # fmt: skip
    dev: bool | None = Field(
        None, description="whether chain.url is a dev chain (unlocked rich account, minting to "
        "participants, chain-time jumps); None: anvil is one, any other node is not. False "
        "treats an anvil as a public chain: real-time phases, keys from the environment",
    )  # fmt: skip
    deployment: str | None = Field(
        None, description="deployment JSON of contracts already on chain.url (a public chain's "
        "FLOCK token and alliance); None: reuse or deploy under data_dir/chain",
    )  # fmt: skip


class VoteConfig(_Section):
    """How an honest voter judges a round's aggregate (``flock_pipeline.protocol.decision``)."""

    tolerance: float = Field(
        1.0, ge=0,
        description="standard errors of the paired held-out loss difference a voter tolerates "
        "before it rejects an aggregate",
    )  # fmt: skip


class StorageConfig(_Section):
    url: str | None = Field(None, description="None: data_dir/blobs; or a folder; or s3://bucket/p")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO ...)")


class TrackingConfig(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI; None: sqlite in data_dir")
    experiment: str = "flock"
    registered_name: str | None = Field(None, description="None: flock-<dataset>-<model>")


class WorkersConfig(_Section):
    """Participants on their own machines: one Prefect worker each (``flock participant
    start``), triggered by the task flow through ``run_deployment``. Unset ``pool``: every
    participant runs inside the task's own process (the in-process engine)."""

    pool: str | None = Field(
        None, description="Prefect process work pool the participants' workers serve; None: "
        "the in-process engine",
    )  # fmt: skip
    members: list[str] = Field(
        [], description="the participants' addresses, p0 first; only these may stake"
    )
    deadline_seconds: float = Field(
        900, gt=0, description="how long a participant has for one duty before it is a no-show"
    )
    join_seconds: float = Field(
        600, gt=0, description="how long the task waits for every member to stake before round 1"
    )
    quorum: int = Field(
        1, ge=1, description="fewest updates a round votes on; below it the round is void (its "
        "pot carries over) and the task goes on with the next",
    )  # fmt: skip


class RunnerConfig(_Section):
    """Where the in-process engine runs its participants' duties (Prefect task runners)."""

    kind: Literal["sequential", "dask"] = Field(
        "sequential", description="sequential: one duty at a time in the flow's process; "
        "dask: a local Dask cluster (prefect-dask) runs the proposers' training in parallel",
    )  # fmt: skip
    processes: int = Field(2, ge=1, description="Dask worker processes (kind dask)")
    threads_per_process: int = Field(1, ge=1, description="threads per Dask worker (kind dask)")


_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("flock_file_values")


class _FileSource(PydanticBaseSettingsSource):
    """Values of the YAML file being loaded by :func:`load_config` (lowest explicit priority)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_VALUES.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get({}))


class FlockConfig(BaseSettings):
    """The whole configuration of a federated task."""

    model_config = SettingsConfigDict(
        env_prefix="FLOCK_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    task: str | None = Field(
        None, description="task name; None: resume the unfinished task of this config or start one"
    )
    participants: int = Field(4, ge=1)
    rounds: int = Field(3, ge=1)
    seed: int = 0
    data_dir: Path = Field(Path(".flock"), description="all state of the embedded defaults")
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    aggregation: AggregationConfig = AggregationConfig()
    attacks: dict[str, AttackSpec] = Field(
        {}, description="participant id -> attack; unlisted participants are honest"
    )
    chain: ChainConfig = ChainConfig()
    vote: VoteConfig = VoteConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    workers: WorkersConfig = WorkersConfig()
    runner: RunnerConfig = RunnerConfig()

    @model_validator(mode="after")
    def _worker_members(self) -> FlockConfig:
        w = self.workers
        if w.pool is None:
            return self
        if len(w.members) != self.participants:
            raise ValueError(
                f"workers.members lists {len(w.members)} addresses for {self.participants} "
                "participants: list one address per participant (p0 first)"
            )
        bad = [a for a in w.members if not re.fullmatch(r"0x[0-9a-fA-F]{40}", a)]
        if bad:
            raise ValueError(f"workers.members: {bad[0]!r} is not a 0x-prefixed 20-byte address")
        if len({a.lower() for a in w.members}) != len(w.members):
            raise ValueError("workers.members lists an address twice: one per participant")
        return self

    @model_validator(mode="after")
    def _attack_targets(self) -> FlockConfig:
        try:
            check_attacks(self.attacks, [f"p{i}" for i in range(self.participants)])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _model_fits_data(self) -> FlockConfig:
        # A dotted-path model is imported, built and run once on a zero batch here, so a bad
        # one is refused at load, not in the first round. Built-in data sets all fit the
        # built-in models: no need to import the data package (and torch) for those.
        from flock_pipeline.models.custom import check_model, is_dotted_path

        if self.data.folder_schema is None and not is_dotted_path(self.model.name):
            return self
        from flock_pipeline.data.schema import task_schema

        try:
            check_model(self.model.name, task_schema(self), dp=self.privacy.enabled)
        except FlockError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def committee(self) -> tuple[int, int]:
        """(expected proposers, expected voters) per round: by default everyone trains, since a
        round that leaves data out learns less, and everyone votes, since a sampled committee
        is captured by a coalition that happens to hold most of it (docs/protocol.md, committee
        capture). Voter odds are V * stake / total stake and a voter weighs max(stake, total /
        V): with V >= total / min_stake every eligible stake is drawn and weighs itself, which
        V = participants alone gives only while all stakes are equal."""
        n = self.participants
        proposers = self.chain.proposers_per_round or n
        everyone = max(n, -(-n * self.chain.stake // self.chain.min_stake))
        voters = self.chain.voters_per_round or min(everyone, 2**16 - 1)  # votersPerRound: uint16
        return proposers, voters

    @property
    def registered_name(self) -> str:
        model = self.model.name.replace(":", "-")  # MLflow refuses ':' in model names
        return self.tracking.registered_name or f"flock-{self.data.dataset}-{model}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI overrides > environment > YAML file > defaults.
        return (init_settings, env_settings, _FileSource(settings_cls))


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {where}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"training.lr": 0.1}`` into ``{"training": {"lr": 0.1}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> FlockConfig:
    """Defaults < YAML file < env < overrides (dotted keys allowed), validated as one config."""
    values: dict[str, Any] = {}
    explicit: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = loaded
    if overrides:
        explicit = _dotted({k: v for k, v in overrides.items() if v is not None})
    token = _FILE_VALUES.set(values)
    try:
        return FlockConfig(**explicit)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    finally:
        _FILE_VALUES.reset(token)
