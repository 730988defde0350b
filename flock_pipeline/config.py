"""One configuration schema for the CLI, Prefect deployment parameters and params.yaml.

Values come, lowest priority first, from the defaults below, a YAML file, environment variables
(``FLOCK_`` prefix, ``__`` between levels: ``FLOCK_TRAINING__LOCAL_EPOCHS=2``) and CLI overrides.
Unknown keys and wrong types are errors, never silently ignored.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

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
from flock_pipeline.errors import ConfigError

__all__ = [
    "FASHION_MNIST_DEFAULT_DIR",
    "AggregationConfig",
    "CentralDPConfig",
    "ChainConfig",
    "DataConfig",
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


class PartitionConfig(_Section):
    scheme: Literal["iid", "dirichlet", "shards"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (label skew)")
    classes_per_participant: int = Field(2, ge=1)
    quantity_alpha: float | None = Field(
        None, description="iid quantity skew; None for equal sizes"
    )
    min_samples: int = Field(10, ge=1)


class ModelConfig(_Section):
    name: Literal["mlp", "cnn"] = "cnn"


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
        "participant may be both); None: min(participants, max(3, participants // 2))",
    )  # fmt: skip
    training_seconds: int = Field(3_600, ge=1, description="training phase length")
    commit_seconds: int = Field(600, ge=1)
    reveal_seconds: int = Field(600, ge=1)


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

    @model_validator(mode="after")
    def _attack_targets(self) -> FlockConfig:
        try:
            check_attacks(self.attacks, [f"p{i}" for i in range(self.participants)])
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def committee(self) -> tuple[int, int]:
        """(expected proposers, expected voters) per round: everyone trains by default while a
        committee votes, since a round that leaves data out learns less."""
        n = self.participants
        proposers = self.chain.proposers_per_round or n
        voters = self.chain.voters_per_round or min(n, max(3, n // 2))
        return proposers, voters

    @property
    def registered_name(self) -> str:
        return self.tracking.registered_name or f"flock-{self.data.dataset}-{self.model.name}"

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
