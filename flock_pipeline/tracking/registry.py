"""Round models in the MLflow model registry: one run and one model version per round.

Each version carries both an MLflow pytorch model (servable, browsable in the UI) and the
canonical safetensors bytes whose sha256 was committed on chain, so what the marketplace serves
can be checked against what the contract settled.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flock_pipeline.errors import FlockError
from flock_pipeline.models.networks import build_network
from flock_pipeline.serialization import Weights, canonical_bytes, from_bytes
from flock_pipeline.tracking.errors import TrackingError

__all__ = [
    "ARCHITECTURE_TAG",
    "HASH_TAG",
    "ROUND_TAG",
    "WEIGHTS_ARTIFACT",
    "ModelRegistry",
    "ModelVersionRef",
]

WEIGHTS_ARTIFACT = "weights/model.safetensors"
"""Run artifact holding the canonical safetensors bytes of a round model."""
HASH_TAG = "flock.weights_hash"
"""Run and version tag: ``0x`` + sha256 of the weights artifact (the on-chain content hash)."""
ARCHITECTURE_TAG = "flock.architecture"
"""Run and version tag: the network name, so a version can be rebuilt with ``build_network``."""
ROUND_TAG = "flock.round"
"""Run and version tag: the round number that produced the model."""

_DB_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql"}
_HTTP_SCHEMES = {"http", "https"}
_PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version and the run that produced it."""

    registered_name: str
    version: str
    run_id: str


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's INFO chatter and warnings (env inference, signatures) say nothing a user needs."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _using(tracking_uri: str) -> Iterator[None]:
    """The fluent API (``log_model``) reads MLflow's global URI; point it at ours meanwhile."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = previous


def _check_sqlite(uri: str) -> None:
    """MLflow silently creates missing folders for a SQLite file; refuse a path that is wrong."""
    path_part = uri[len("sqlite://") :].split("?", 1)[0]
    if not path_part.startswith("/") or path_part in ("/", "/:memory:"):
        raise TrackingError(
            f"tracking URI {uri!r} is not a SQLite file URI: use sqlite:////absolute/path/mlflow.db"
        )
    db = Path(unquote(path_part[1:]))  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
    folder = db.parent if db.is_absolute() else Path.cwd() / db.parent
    if not folder.is_dir():
        raise TrackingError(
            f"cannot open tracking URI {uri!r}: folder {folder} does not exist; create it or "
            "fix the path"
        )
    if not os.access(folder, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(f"cannot open tracking URI {uri!r}: {db} is not writable")


def _check_http(uri: str) -> None:
    """One quick request: MLflow's own client would retry an unreachable server for minutes."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered; a missing /health route is not our problem
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"cannot reach the MLflow tracking server {uri!r}: {reason}; start it "
            "(mlflow server) or fix the tracking URI"
        ) from None


def _pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's own inference imports the model in a subprocess (~6 s)."""
    wanted = ("torch", "safetensors")
    return [f"{name}=={importlib.metadata.version(name)}" for name in wanted]


def preload_model_flavor() -> threading.Thread:
    """Import ``mlflow.pytorch`` in a background thread: it imports Lightning and, through it,
    ``torch._dynamo`` (seconds of CPU), and a process that logs models but trains none (the
    coordinator of participants on their own workers) would otherwise pay that inside its
    first round's model version. A failure is left to the import in ``log_round_model``."""

    def load() -> None:
        with contextlib.suppress(Exception):
            import mlflow.pytorch  # noqa: F401

    thread = threading.Thread(target=load, name="flock-mlflow-pytorch", daemon=True)
    thread.start()
    return thread


class ModelRegistry:
    """One experiment and one registered model in an MLflow tracking server or SQLite file."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment_id: str,
        registered_name: str,
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.registered_name = registered_name

    def __repr__(self) -> str:
        return f"ModelRegistry({self.tracking_uri!r}, {self.registered_name!r})"

    @classmethod
    def open(
        cls, tracking_uri: str | None, data_dir: Path, experiment: str, registered_name: str
    ) -> ModelRegistry:
        """Open (and check) the registry before any training starts.

        ``None`` is the embedded default: ``<data_dir>/mlflow.db`` with artifacts in
        ``<data_dir>/mlartifacts``. A URI that cannot be used raises TrackingError here, fast.
        """
        data_dir = Path(data_dir)
        tracking_uri = cls.check_uri(tracking_uri, data_dir)
        scheme = urlparse(tracking_uri).scheme.lower()
        try:
            with _quiet():
                client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    # A database backend would otherwise put artifacts in ./mlruns of the CWD.
                    location = None
                    if scheme in _DB_SCHEMES or scheme.startswith(tuple(_DB_SCHEMES)):
                        artifacts = (data_dir / "mlartifacts").resolve()
                        artifacts.mkdir(parents=True, exist_ok=True)
                        location = artifacts.as_uri()
                    experiment_id = cls._create_experiment(client, experiment, location)
                else:
                    experiment_id = str(found.experiment_id)
        except MlflowException as exc:
            raise TrackingError(f"cannot open tracking URI {tracking_uri!r}: {exc}") from None
        except Exception as exc:  # SQLAlchemy, network and driver errors all mean the same here
            raise TrackingError(
                f"cannot open tracking URI {tracking_uri!r}: {type(exc).__name__}: {exc}"
            ) from None
        return cls(client, tracking_uri, experiment_id, registered_name)

    @staticmethod
    def check_uri(tracking_uri: str | None, data_dir: Path) -> str:
        """The tracking URI ``open`` would use (``None``: the embedded SQLite file), after the
        quick checks that catch a user's mistake (a SQLite path that cannot be, a server that
        does not answer); raises TrackingError naming the fix. Opening the store itself (for a
        new SQLite file: MLflow's schema migrations, seconds) is left to ``open``."""
        if not tracking_uri:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{(Path(data_dir) / 'mlflow.db').resolve()}"
        scheme = urlparse(tracking_uri).scheme.lower()
        if scheme == "sqlite":
            _check_sqlite(tracking_uri)
        elif scheme in _HTTP_SCHEMES:
            _check_http(tracking_uri)
        return tracking_uri

    @staticmethod
    def _create_experiment(client: MlflowClient, name: str, location: str | None) -> str:
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
            return str(found.experiment_id)

    def log_round_model(
        self,
        *,
        weights: Weights,
        architecture: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        round: int,
        metrics: Mapping[str, float],
        params: Mapping[str, str | int | float],
        tags: Mapping[str, str],
        run_name: str | None = None,
    ) -> ModelVersionRef:
        """Log one round (run, model, weights) and register it as a new version.

        Besides ``tags``, the run and the version get ``flock.round``, ``flock.architecture`` and
        ``flock.weights_hash`` (the content hash of the weights artifact).
        """
        network = build_network(architecture, input_shape, num_classes)
        try:
            network.load_state_dict(weights)
        except RuntimeError as exc:
            raise TrackingError(
                f"weights do not fit a {architecture} for input {input_shape} and {num_classes} "
                f"classes: {exc}"
            ) from None
        network.eval()
        data = canonical_bytes(weights)
        all_tags = {
            **{str(k): str(v) for k, v in tags.items()},
            ROUND_TAG: str(round),
            ARCHITECTURE_TAG: architecture,
            HASH_TAG: "0x" + hashlib.sha256(data).hexdigest(),
        }
        # Batch of 2: torch.export specializes a size-1 batch, and the pt2 model would then
        # accept only single samples.
        example = torch.zeros((2, *input_shape), dtype=torch.float32).numpy()
        try:
            with _quiet(), _using(self.tracking_uri), tempfile.TemporaryDirectory() as tmp:
                with mlflow.start_run(
                    experiment_id=self.experiment_id, run_name=run_name, nested=True
                ) as run:
                    run_id = run.info.run_id
                    mlflow.set_tags(all_tags)
                    mlflow.log_params({str(k): v for k, v in params.items()})
                    mlflow.log_metrics({str(k): float(v) for k, v in metrics.items()}, step=round)
                    weights_file = Path(tmp) / Path(WEIGHTS_ARTIFACT).name
                    weights_file.write_bytes(data)
                    mlflow.log_artifact(str(weights_file), str(Path(WEIGHTS_ARTIFACT).parent))
                    # No serving-input validation: it loads the model back and predicts on
                    # the example (a fifth of the call); the network is our own, built and
                    # loaded above, and the tests load a logged model through models:/.
                    # Imported here: mlflow.pytorch imports Lightning (seconds), which only
                    # a logged model needs.
                    from mlflow import pytorch as mlflow_pytorch

                    info = mlflow_pytorch.log_model(
                        network,
                        name="model",
                        input_example=example,
                        pip_requirements=_pip_requirements(),
                        validate_serving_input=False,
                    )
                version = self._register(run_id, info, all_tags)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot log round {round} to {self.tracking_uri!r}: {exc.message}"
            ) from None
        return ModelVersionRef(self.registered_name, str(version.version), run_id)

    def _register(self, run_id: str, info: Any, tags: Mapping[str, str]) -> Any:
        try:
            self.client.create_registered_model(self.registered_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self.client.create_model_version(
            self.registered_name,
            source=info.model_uri,
            run_id=run_id,
            tags=dict(tags),
            model_id=info.model_id,
        )

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` (e.g. ``champion``) at a version: ``models:/<name>@<alias>``."""
        try:
            self.client.set_registered_model_alias(self.registered_name, alias, str(version))
        except MlflowException as exc:
            raise TrackingError(
                f"cannot set alias {alias!r} of {self.registered_name!r} to version {version}: "
                f"{exc.message}"
            ) from None

    def version_tags(self, version: str) -> dict[str, str]:
        """The tags of one version (a number or an alias)."""
        return {str(k): str(v) for k, v in self._version(version).tags.items()}

    def versions(self) -> list[ModelVersionRef]:
        """Every version of the registered model, oldest first."""
        name = self.registered_name.replace("'", "\\'")
        found: list[Any] = []
        token: str | None = None
        try:
            while True:
                page = self.client.search_model_versions(f"name='{name}'", page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        except MlflowException as exc:
            raise TrackingError(
                f"cannot list versions of {self.registered_name!r}: {exc.message}"
            ) from None
        refs = [ModelVersionRef(self.registered_name, str(v.version), str(v.run_id)) for v in found]
        return sorted(refs, key=lambda ref: int(ref.version))

    def find_version(self, tags: Mapping[str, str]) -> ModelVersionRef | None:
        """The newest version carrying every one of ``tags``, found with one search."""
        name = self.registered_name.replace("'", "\\'")
        clauses = [f"name='{name}'"] + [
            f"tags.`{k}`='{str(v).replace(chr(39), chr(92) + chr(39))}'" for k, v in tags.items()
        ]
        try:
            found = self.client.search_model_versions(" and ".join(clauses), max_results=10)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot search versions of {self.registered_name!r}: {exc.message}"
            ) from None
        refs = [ModelVersionRef(self.registered_name, str(v.version), str(v.run_id)) for v in found]
        return max(refs, key=lambda ref: int(ref.version), default=None)

    def load_weights(self, version_or_alias: str) -> Weights:
        """The canonical weights of a version, checked against its recorded content hash."""
        found = self._version(version_or_alias)
        where = f"{self.registered_name} version {found.version} (run {found.run_id})"
        try:
            with tempfile.TemporaryDirectory() as tmp, _quiet():
                local = self.client.download_artifacts(found.run_id, WEIGHTS_ARTIFACT, tmp)
                data = Path(local).read_bytes()
        except (MlflowException, OSError) as exc:
            raise TrackingError(f"cannot download the weights of {where}: {exc}") from None
        expected = found.tags.get(HASH_TAG)
        actual = "0x" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected.lower() != actual:
            raise TrackingError(
                f"the weights artifact of {where} has content hash {actual}, but the version "
                f"records {expected}: the artifact was changed or corrupted"
            )
        try:
            return from_bytes(data, f"{WEIGHTS_ARTIFACT} of {where}")
        except FlockError as exc:
            raise TrackingError(str(exc)) from None

    def _version(self, version_or_alias: str) -> Any:
        ref = str(version_or_alias)
        try:
            if ref.isdigit():
                return self.client.get_model_version(self.registered_name, ref)
            return self.client.get_model_version_by_alias(self.registered_name, ref)
        except MlflowException:
            kind = "version" if ref.isdigit() else "alias"
            raise TrackingError(
                f"{self.registered_name!r} has no {kind} {ref!r} in {self.tracking_uri}"
            ) from None
