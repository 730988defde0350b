"""A managed local anvil: the default chain, on loopback, its state kept under the data folder.

`up` starts anvil (npm @foundry-rs/anvil-linux-amd64) on 127.0.0.1 with `--state`, so the chain
is loaded from and dumped to <data>/chain/state.json (also every few seconds while running) and
consecutive runs continue the same chain. `down` stops it by the PID recorded in
<data>/chain/anvil.json, letting it dump its state first.

anvil.json also names who started the node. `flock chain up` starts one that runs until
`flock chain down`; a run that finds none starts its own, bound to the run
(``processes.bound_to_parent``): it stops at the run's end and dies with the run even on SIGKILL.
A node whose run ended without stopping it is an orphan, and the next `up` stops it (its state
saved) before starting afresh.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from web3.types import RPCEndpoint

from flock_pipeline.chain.backends import Chain, connect
from flock_pipeline.chain.errors import ChainSetupError
from flock_pipeline.processes import (
    ServerError,
    alive,
    free_port,
    port_free,
    start_server,
    start_ticks,
    stop_process,
)

__all__ = ["ANVIL_CHAIN_ID", "AnvilNode", "AnvilStatus", "find_anvil"]

ANVIL_CHAIN_ID = 31337
GENESIS_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z
BLOCK_INTERVAL = 2  # seconds of chain time per block, as on Base
_NPM_BIN = Path("node_modules") / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
USER_OWNER = "flock chain up"
"""The owner of a node that runs until `flock chain down`."""


def find_anvil() -> Path:
    """The anvil binary: $FLOCK_ANVIL_BIN, node_modules (here, above, source tree), PATH."""
    explicit = os.environ.get("FLOCK_ANVIL_BIN")
    if explicit:
        return Path(explicit)
    for base in (Path.cwd(), *Path.cwd().parents, _PACKAGE_ROOT):
        if (base / _NPM_BIN).is_file():
            return base / _NPM_BIN
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise ChainSetupError("anvil not found; run `make setup` (npm ci) or set FLOCK_ANVIL_BIN")


@dataclass(frozen=True)
class AnvilStatus:
    """What `flock chain status` reports."""

    running: bool
    pid: int | None
    url: str | None
    state_file: str
    block_number: int | None = None
    chain_id: int | None = None
    port: int | None = None
    owner: str | None = None
    """Who started it: `flock chain up` (runs until `flock chain down`) or a run."""
    owner_pid: int | None = None
    """The run that owns it (None for `flock chain up`): the node stops when that run ends."""
    orphaned: bool = False
    """Its run ended without stopping it: the next `up` or `flock chain down` stops it."""


class AnvilNode:
    """One anvil per data folder; its files live in <data_dir>/chain/."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 8545,
        state_interval: int = 5,
        realtime: bool = False,
        block_seconds: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """``realtime``: block time follows the wall clock from now, as on a public chain (no
        fixed genesis, no chain-time steps); ``block_seconds``: mine on an interval then, not
        on each transaction."""
        self.dir = Path(data_dir) / "chain"
        self.port = port
        self.state_interval = state_interval
        self.realtime = realtime
        self.block_seconds = block_seconds
        self.host = host

    @property
    def state_file(self) -> Path:
        """Where the chain state is loaded from and dumped to."""
        return self.dir / "state.json"

    @property
    def info_file(self) -> Path:
        """PID and URL of the running node."""
        return self.dir / "anvil.json"

    def _info(self) -> dict[str, object] | None:
        if not self.info_file.exists():
            return None
        info: dict[str, object] = json.loads(self.info_file.read_text())
        pid, ticks = info.get("pid"), info.get("ticks")
        if isinstance(pid, int) and alive(pid, ticks if isinstance(ticks, int) else None):
            return info
        self.info_file.unlink(missing_ok=True)
        return None

    @staticmethod
    def _orphaned(info: dict[str, object]) -> bool:
        owner_pid, owner_ticks = info.get("owner_pid"), info.get("owner_ticks")
        if not isinstance(owner_pid, int):
            return False
        return not alive(owner_pid, owner_ticks if isinstance(owner_ticks, int) else None)

    def up(
        self, timeout: float = 15.0, owner: str = USER_OWNER, bound: bool = False
    ) -> AnvilStatus:
        """Start anvil unless it already runs for this data folder; wait until it answers.

        ``bound``: the node belongs to this process (``owner`` names it) and dies with it;
        otherwise it runs until `down`. A running node is reused, unless it is an orphan."""
        running = self._info()
        if running is not None and self._orphaned(running):
            self.down()
        elif running is not None:
            return self.status()
        self.dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port if self.port and port_free(self.port, self.host) else None
        for _ in range(2):
            port = fixed or free_port(self.host)
            try:
                return self._start(port, owner, bound, timeout)
            except ChainSetupError:
                # Another server took the free port first (parallel runs): take another.
                if fixed is not None or port_free(port, self.host):
                    raise
        return self._start(free_port(self.host), owner, bound, timeout)

    def _start(self, port: int, owner: str, bound: bool, timeout: float) -> AnvilStatus:
        command = [
            str(find_anvil()),
            "--host", self.host,
            "--port", str(port),
            "--chain-id", str(ANVIL_CHAIN_ID),
            "--state", str(self.state_file),
            "--state-interval", str(self.state_interval),
        ]  # fmt: skip
        restart = self.state_file.exists()
        if not restart and not self.realtime:
            command += ["--timestamp", str(GENESIS_TIMESTAMP)]
        if self.realtime and self.block_seconds:
            command += ["--block-time", str(self.block_seconds)]
        url = f"http://{self.host}:{port}"

        def answers() -> bool:
            try:
                connect(url, kind="anvil", timeout=2.0)
            except ChainSetupError:
                return False
            return True

        try:
            server = start_server(
                "anvil", command, log=self.dir / "anvil.log", ready=answers, port=port,
                host=self.host, url=url, timeout=timeout, bound=bound, own_port=True,
            )  # fmt: skip
        except ServerError as exc:
            raise ChainSetupError(str(exc)) from None
        info: dict[str, object] = {"pid": server.pid, "url": url, "port": port,
                                   "ticks": server.ticks, "owner": owner}  # fmt: skip
        if bound:
            # Also when the binding cannot hold (off the main thread): the record lets the
            # next `up` find the node an ended run left behind.
            info |= {"owner_pid": os.getpid(), "owner_ticks": start_ticks(os.getpid())}
        # Whole or not at all: `flock chain status` and a parallel run read it at any moment.
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.info_file)
        if self.realtime:
            return self.status()
        chain = connect(url, kind="anvil", timeout=2.0)
        # Block time follows the chain, not the wall clock: with a fixed genesis, the same
        # transactions give the same block hashes, hence the same round seeds and roles.
        if restart:
            # A node loaded from its state keeps time by the wall clock, which would jump
            # past every open deadline: resume the clock at the last block's time.
            latest = int(chain.w3.eth.get_block("latest")["timestamp"])
            chain.w3.provider.make_request(RPCEndpoint("anvil_setTime"), [latest])
        chain.w3.provider.make_request(
            RPCEndpoint("anvil_setBlockTimestampInterval"), [BLOCK_INTERVAL]
        )
        return self.status()

    def down(self, timeout: float = 10.0) -> bool:
        """Stop the node by PID (SIGTERM, so it dumps its state); False if none was running."""
        info = self._info()
        if info is None:
            return False
        ticks = info.get("ticks")
        stop_process(int(str(info["pid"])), ticks if isinstance(ticks, int) else None, timeout)
        self.info_file.unlink(missing_ok=True)
        return True

    def status(self) -> AnvilStatus:
        """Whether the node runs, where, and how far its chain is."""
        info = self._info()
        if info is None:
            return AnvilStatus(False, None, None, str(self.state_file))
        url = str(info["url"])
        block: int | None = None
        chain_id: int | None = None
        try:
            chain = connect(url, kind="anvil", timeout=2.0)
            block, chain_id = int(chain.w3.eth.block_number), chain.chain_id
        except ChainSetupError:
            pass
        port, owner, owner_pid = info.get("port"), info.get("owner"), info.get("owner_pid")
        return AnvilStatus(
            True, int(str(info["pid"])), url, str(self.state_file), block, chain_id,
            port=port if isinstance(port, int) else None,
            owner=str(owner) if owner is not None else USER_OWNER,
            owner_pid=owner_pid if isinstance(owner_pid, int) else None,
            orphaned=self._orphaned(info),
        )  # fmt: skip

    def chain(self) -> Chain:
        """A connection to the running node (start it first with up)."""
        info = self._info()
        if info is None:
            raise ChainSetupError("the local chain is not running; start it with `flock chain up`")
        return connect(str(info["url"]), kind="anvil")

    def as_dict(self) -> dict[str, object]:
        """Status as JSON-ready data."""
        return asdict(self.status())
