"""mesh.network.v1.NetworkService: forwards to the node's GenesisView."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.network.v1 import network_pb2, network_pb2_grpc
from meshcore.genesis import Genesis
from meshd.genesis_view import GenesisView
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class NetworkServicer(network_pb2_grpc.NetworkServiceServicer):
    def __init__(self, bridge: TrioBridge, network: GenesisView) -> None:
        self._bridge = bridge
        self._network = network

    async def GetNetwork(self, request: network_pb2.GetNetworkRequest,
                         context: Context) -> network_pb2.GetNetworkResponse:
        info = await unary(context, self._bridge, self._network.info)
        return network_pb2.GetNetworkResponse(
            network_id=info.network_id, genesis=genesis_to_pb(info.genesis),
            genesis_toml=info.genesis_toml, peer_count=info.peer_count,
            routing_table_size=info.routing_table_size)


def genesis_to_pb(genesis: Genesis) -> network_pb2.Genesis:
    genesis_time = Timestamp()
    genesis_time.FromDatetime(genesis.genesis_time)
    token, rewards, gov = genesis.token, genesis.rewards, genesis.governance
    return network_pb2.Genesis(
        format=genesis.format,
        name=genesis.name,
        genesis_time=genesis_time,
        token=network_pb2.Token(
            name=token.name, symbol=token.symbol, decimals=token.decimals,
            allocations=[network_pb2.Allocation(account=a.account, amount=str(a.amount))
                         for a in token.allocations],
            community_pool=str(token.community_pool)),
        rewards=network_pb2.RewardPolicy(
            epoch_seconds=rewards.epoch_seconds,
            emission_per_epoch=str(rewards.emission_per_epoch),
            uptime_percent=rewards.split.uptime, tasks_percent=rewards.split.tasks,
            governance_percent=rewards.split.governance),
        governance=network_pb2.GovernanceParams(
            quorum_percent=gov.quorum_percent, threshold_percent=gov.threshold_percent,
            veto_percent=gov.veto_percent, voting_period_seconds=gov.voting_period_seconds,
            proposal_stake=str(gov.proposal_stake), mutable=gov.mutable),
        plugins=[network_pb2.RequiredPlugin(name=p.name, version=p.version,
                                            settings_json=p.settings_json)
                 for p in genesis.plugins],
        validators=[network_pb2.Validator(peer_id=v.peer_id, weight=v.weight)
                    for v in genesis.validators],
        bootstrap=genesis.bootstrap,
        bootstrap_port=genesis.bootstrap_port,
        penalties=network_pb2.PenaltyPolicy(
            failed_task_bps=genesis.penalties.failed_task_bps),
    )
