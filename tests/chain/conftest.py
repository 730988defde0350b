"""Fixtures for the chain tests: each backend, deployed contracts, four funded participants.

`chain` is parametrized over the in-process py-evm chain and a real anvil started on loopback
for the session (stopped by PID at the end), so every lifecycle test runs on both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chain_world import TOKEN, World

from flock_pipeline.chain import AllianceClient, Chain, deploy, dev_signers, in_process
from flock_pipeline.chain.anvil import AnvilNode

BACKENDS = ["py-evm", "anvil"]


@pytest.fixture(scope="session")
def anvil_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    node = AnvilNode(tmp_path_factory.mktemp("flock"), port=0)
    node.up()
    yield node
    node.down()


@pytest.fixture(scope="module", params=BACKENDS)
def chain(request: pytest.FixtureRequest) -> Chain:
    if request.param == "py-evm":
        return in_process()
    node: AnvilNode = request.getfixturevalue("anvil_node")
    return node.chain()


@pytest.fixture(scope="module")
def world(chain: Chain) -> World:
    """Shared by a module's tests: each test opens its own tasks, so they stay independent."""
    deployer, keeper, *people = dev_signers(chain, 6)
    deployment = deploy(chain, deployer)
    creator = AllianceClient(chain, deployment, deployer)
    for signer in people:
        creator.mint(signer.address, 100_000 * TOKEN)
    creator.mint(deployer.address, 1_000_000 * TOKEN)
    world = World(
        chain=chain,
        creator=creator,
        keeper=creator.as_signer(keeper),
        people=[creator.as_signer(s) for s in people],
    )
    for client in [creator, *world.people]:  # one standing allowance keeps the tests short
        client.tx.send(client.token.functions.approve(deployment.alliance, 2**255), client.signer)
    return world
