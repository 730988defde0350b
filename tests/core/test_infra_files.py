"""The container and cluster files in infra/ cannot be run here (no Docker engine, no cluster),
so their structure is checked against what the project itself accepts: the services the
stack needs, the CLI commands and options they run, the pinned versions, every required
variable documented in the example environment file, and no secret in any of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flock_pipeline.faces.cli import app

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _compose() -> dict:  # type: ignore[type-arg]
    data: dict = yaml.safe_load((INFRA / "docker-compose.yml").read_text())  # type: ignore[type-arg]
    return data


def test_compose_has_every_service_of_the_stack_with_health_checks() -> None:
    services = _compose()["services"]
    assert {"postgres", "prefect", "mlflow", "minio", "anvil", "coordinator",
            "participant"} <= set(services)  # fmt: skip
    for name in ("postgres", "prefect", "mlflow", "minio"):
        assert "healthcheck" in services[name], name
    prefect_db = services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://")
    mlflow = services["mlflow"]["command"]
    assert mlflow[mlflow.index("--backend-store-uri") + 1].startswith("postgresql")
    assert mlflow[mlflow.index("--artifacts-destination") + 1].startswith("s3://")


def test_compose_pins_the_locked_prefect_version() -> None:
    lock = (INFRA.parent / "requirements.lock").read_text()
    (version,) = re.findall(r"^prefect==(\S+)$", lock, re.M)
    assert _compose()["services"]["prefect"]["image"].startswith(f"prefecthq/prefect:{version}-")


def test_every_required_variable_is_in_the_example_environment_and_no_secret_is_committed() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (INFRA / "stack.env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, re.M))
    assert required <= documented, required - documented
    values = dict(re.findall(r"^(\w+)=(.*)$", example, re.M))
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOCK_CHAIN_PRIVATE_KEY",
                "FLOCK_PARTICIPANT_KEY"):  # fmt: skip
        assert values[key] == "", key
    for path in INFRA.rglob("*"):
        if path.is_file():
            assert not re.search(r"0x[0-9a-fA-F]{64}", path.read_text()), path


def _accepts(argv: list[str]) -> None:
    """The CLI parses ``argv`` (with --help appended it would only show help; instead check
    every option is one the command declares)."""
    out = CliRunner().invoke(app, [*argv[:2], "--help"] if argv[0] == "participant"
                             else [argv[0], "--help"])  # fmt: skip
    assert out.exit_code == 0, out.output
    for option in (a for a in argv if a.startswith("--")):
        assert option in out.output, (argv, option)


def test_the_commands_the_containers_run_are_commands_the_cli_has() -> None:
    services = _compose()["services"]
    _accepts(services["coordinator"]["command"])
    _accepts(services["participant"]["command"])
    manifests = [d for p in sorted((INFRA / "k8s").glob("*.yaml"))
                 for d in yaml.safe_load_all(p.read_text())]  # fmt: skip
    kinds = {d["kind"] for d in manifests}
    assert {"Namespace", "ConfigMap", "StatefulSet", "Deployment"} <= kinds
    for doc in manifests:
        assert doc["apiVersion"] and doc["metadata"]["name"]
    (participants,) = [d for d in manifests if d["kind"] == "StatefulSet"]
    (container,) = participants["spec"]["template"]["spec"]["containers"]
    script = container["args"][0].split()
    start = script.index("participant")
    _accepts([o for o in script[start:] if not o.startswith('"')])
    (coordinator,) = [d for d in manifests if d["kind"] == "Deployment"]
    _accepts(coordinator["spec"]["template"]["spec"]["containers"][0]["args"])


def test_the_local_stack_script_runs_the_stack_module() -> None:
    script = (INFRA / "local-stack.sh").read_text()
    assert "-m flock_pipeline.faces.stack" in script
    assert (INFRA / "local-stack.sh").stat().st_mode & 0o111


def test_the_stack_refuses_a_service_it_does_not_have_by_name(tmp_path: Path) -> None:
    from flock_pipeline.faces import stack

    with pytest.raises(stack.StackError, match="no stack service redis; the services: postgres"):
        stack.up(tmp_path, services=("prefect", "redis"))
    assert stack.status(tmp_path) == {}  # nothing was started
