"""Genesis validation, canonical encoding and Network ID."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore import genesis as g
from meshcore.genesis import Genesis, GenesisError

PEER_A = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
PEER_B = "12D3KooWNJVT7JrP87fF5T42TbrkUFLrfdrNguE9ufDFnotKEvj9"

DOC = f"""
name = "StorageNet"
genesis_time = 2026-01-01T00:00:00Z
bootstrap_port = 8080

[token]
name = "STORE"
symbol = "STR"
allocations = [{{ account = "{PEER_A}", amount = 500 }}]

[rewards.split]
uptime = 40
tasks = 40
governance = 20

[[plugins]]
name = "storage"

[[validators]]
peer_id = "{PEER_B}"
"""


def base() -> dict[str, object]:
    return {"name": "StorageNet", "genesis_time": "2026-01-01T00:00:00Z",
            "token": {"name": "STORE", "symbol": "STR"}}


# The canonical encoding of DOC, written out by hand from docs/genesis.md:
# compact JSON, sorted keys, every default explicit, time in UTC whole seconds.
CANONICAL = (
    '{"bootstrap":[],"bootstrap_port":8080,"format":1,"genesis_time":"2026-01-01T00:00:00Z",'
    '"governance":{"mutable":["governance.proposal_stake","governance.quorum_percent",'
    '"governance.threshold_percent","governance.veto_percent",'
    '"governance.voting_period_seconds","rewards.emission_per_epoch","rewards.epoch_seconds",'
    '"rewards.split"],"proposal_stake":100000000,"quorum_percent":33,"threshold_percent":50,'
    '"veto_percent":33,"voting_period_seconds":604800},"name":"StorageNet",'
    '"plugins":[{"name":"storage","version":""}],"rewards":{"emission_per_epoch":1000000000,'
    '"epoch_seconds":3600,"split":{"governance":20,"tasks":40,"uptime":40}},'
    f'"token":{{"allocations":[{{"account":"{PEER_A}","amount":500}}],"decimals":6,'
    '"name":"STORE","symbol":"STR"},'
    f'"validators":[{{"peer_id":"{PEER_B}","weight":1}}]}}'
)


def test_canonical_encoding_is_as_documented() -> None:
    assert g.canonical_bytes(g.loads(DOC)) == CANONICAL.encode()


def test_network_id_is_stable_across_runs_and_versions() -> None:
    # A fixed document must keep its ID forever: networks are named by it.
    # Computed here from the documented rule, not by the code under test.
    digest = hashlib.sha256(b"mesh/genesis/v1\x00" + CANONICAL.encode()).digest()[:16]
    expected = "net_" + base64.b32encode(digest).decode().rstrip("=").lower()
    assert g.loads(DOC).network_id == expected == "net_pbveuy5e75bdsw3e25x4g2rviy"


def test_a_penalties_table_at_its_defaults_changes_nothing_and_other_values_do() -> None:
    assert g.loads(DOC + "\n[penalties]\nfailed_task_bps = 1000\n").network_id \
        == g.loads(DOC).network_id  # networks made before the table keep their ID
    harsh = g.loads(DOC + "\n[penalties]\nfailed_task_bps = 2500\n")
    assert harsh.penalties == g.PenaltyPolicy(failed_task_bps=2500)
    assert b',"penalties":{"failed_task_bps":2500},"plugins":' in g.canonical_bytes(harsh)
    assert harsh.network_id != g.loads(DOC).network_id
    assert g.loads(g.dumps(harsh)) == harsh
    for table, why in [("failed_task_bps = 10001", r"^penalties\.failed_task_bps: must be"),
                       ("failed_task_bps = -1", r"^penalties\.failed_task_bps: must be"),
                       ("equivocation_bps = 1", r"^penalties\.equivocation_bps")]:
        with pytest.raises(GenesisError, match=why):
            g.loads(DOC + f"\n[penalties]\n{table}\n")
    # Governance may change it where the genesis says so; `network init` says so.
    assert "penalties.failed_task_bps" in g.MUTABLE_PATHS
    assert "penalties.failed_task_bps" not in g.loads(DOC).governance.mutable


def test_a_plugins_settings_are_canonical_and_named_in_errors() -> None:
    plain = g.loads(DOC)
    assert g.loads(DOC.replace('name = "storage"', 'name = "storage"\nsettings = {}')) == plain
    tuned = g.loads(DOC + '\n[plugins.settings]\nn = 8\nk = 4\nlabel = "cold"\n'
                          'tiers = [{ name = "hot", copies = 3 }]\n')
    (storage,) = tuned.plugins
    assert storage.settings == {"k": 4, "n": 8, "label": "cold",
                                "tiers": [{"name": "hot", "copies": 3}]}
    assert b'"plugins":[{"name":"storage","settings":{"k":4,"label":"cold","n":8,' \
        in g.canonical_bytes(tuned)
    assert tuned.network_id != plain.network_id
    assert g.loads(g.dumps(tuned)) == tuned
    for table, why in [("k = 1.5", r"^plugins\[0\]\.settings\.k: must be an integer, string"),
                       ("K = 4", r"^plugins\[0\]\.settings: 'K' is not a setting name"),
                       ("at = 2026-01-01T00:00:00Z", r"settings\.at: must be an integer"),
                       (f"blob = \"{'x' * 5000}\"", r"^plugins\[0\]\.settings: is over 4096")]:
        with pytest.raises(GenesisError, match=why):
            g.loads(DOC + f"\n[plugins.settings]\n{table}\n")


def test_network_id_has_documented_shape() -> None:
    network_id = g.loads(DOC).network_id
    assert network_id.startswith("net_")
    assert len(network_id) == 4 + 26
    assert set(network_id[4:]) <= set("abcdefghijklmnopqrstuvwxyz234567")


def test_formatting_comments_and_order_do_not_change_the_id() -> None:
    reordered = f"""
# a comment
bootstrap_port = 8080
[[validators]]
weight = 1
peer_id = "{PEER_B}"
[[plugins]]
version = ""
name = "storage"
[token]
symbol = "STR"
decimals = 6
name = "STORE"
allocations = [{{ amount = 500, account = "{PEER_A}" }}]
[rewards]
split = {{ governance = 20, tasks = 40, uptime = 40 }}
"""
    with_header = 'name = "StorageNet"\ngenesis_time = 2026-01-01T01:00:00+01:00\n' + reordered
    assert g.loads(with_header).network_id == g.loads(DOC).network_id


def test_dumps_round_trips() -> None:
    genesis = g.loads(DOC)
    assert g.loads(g.dumps(genesis)) == genesis
    assert genesis.network_id in g.dumps(genesis)


# One change of meaning per entry; each must give a new ID.
CHANGES = [
    lambda x: dataclasses.replace(x, name="StorageNet2"),
    lambda x: dataclasses.replace(x, genesis_time=x.genesis_time + dt.timedelta(seconds=1)),
    lambda x: dataclasses.replace(x, bootstrap_port=8081),
    lambda x: dataclasses.replace(x, token=dataclasses.replace(x.token, symbol="STX")),
    lambda x: dataclasses.replace(x, token=dataclasses.replace(x.token, decimals=7)),
    lambda x: dataclasses.replace(x, token=dataclasses.replace(x.token, allocations=())),
    lambda x: dataclasses.replace(x, rewards=dataclasses.replace(x.rewards, epoch_seconds=60)),
    lambda x: dataclasses.replace(x, rewards=dataclasses.replace(
        x.rewards, split=g.RewardSplit(41, 39, 20))),
    lambda x: dataclasses.replace(x, governance=dataclasses.replace(
        x.governance, quorum_percent=34)),
    lambda x: dataclasses.replace(x, token=dataclasses.replace(x.token, community_pool=5)),
    lambda x: dataclasses.replace(x, plugins=()),
    lambda x: dataclasses.replace(x, validators=(g.Validator(PEER_B, 2),)),
    lambda x: dataclasses.replace(x, bootstrap=(f"/ip4/10.0.0.1/tcp/8080/p2p/{PEER_A}",)),
]


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_of_meaning_changes_the_id(change: object) -> None:
    original = g.loads(DOC)
    changed = change(original)  # type: ignore[operator]
    assert changed != original
    assert changed.network_id != original.network_id


@given(st.text(min_size=1, max_size=64).filter(lambda s: s.strip() == s and s.strip()))
def test_distinct_names_give_distinct_ids(name: str) -> None:
    try:
        genesis = g.from_dict({**base(), "name": name})
    except GenesisError:
        return  # control characters etc. are refused, which is fine
    other = dataclasses.replace(genesis, name=genesis.name + "x")
    assert genesis.network_id != other.network_id


def test_unicode_names_are_normalised() -> None:
    composed = g.from_dict({**base(), "name": "Caf\u00e9"})
    decomposed = g.from_dict({**base(), "name": "Cafe\u0301"})
    assert composed.network_id == decomposed.network_id


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "a\nb"}, "name"),
    ({"token": {"name": "STORE", "symbol": "st"}}, "token.symbol"),
    ({"token": {"name": "STORE", "symbol": "S"}}, "token.symbol"),
    ({"token": {"name": "STORE", "symbol": "STR", "decimals": 19}}, "token.decimals"),
    ({"token": {"name": "", "symbol": "STR"}}, "token.name"),
    ({"token": {"name": "STORE", "symbol": "STR", "color": "red"}}, "token.color"),
    ({"colour": 1}, "colour"),
    ({"token": {"name": "STORE", "symbol": "STR", "community_pool": -1}}, "token.community_pool"),
    ({"rewards": {"split": {"uptime": 50, "tasks": 40, "governance": 20}}}, "rewards.split"),
    ({"rewards": {"split": {"uptime": 40, "tasks": 40, "gov": 20}}}, "rewards.split"),
    ({"rewards": {"epoch_seconds": 0}}, "rewards.epoch_seconds"),
    ({"rewards": {"epoch_seconds": "60"}}, "rewards.epoch_seconds"),
    ({"governance": {"mutable": ["token.symbol"]}}, "governance.mutable"),
    ({"plugins": [{"name": "Storage"}]}, "plugins[0].name"),
    ({"plugins": [{"name": "storage", "version": ">=banana"}]}, "plugins[0].version"),
    ({"plugins": [{"name": "storage"}, {"name": "storage"}]}, "plugins[1].name"),
    ({"validators": [{"peer_id": "not-a-peer"}]}, "validators[0].peer_id"),
    ({"bootstrap": ["/ip4/1.2.3.4/tcp/1"]}, "bootstrap[0]"),
    ({"bootstrap_port": 0}, "bootstrap_port"),
    ({"genesis_time": "2026-01-01T00:00:00"}, "genesis_time"),
    ({"genesis_time": "yesterday"}, "genesis_time"),
    ({"format": 2}, "format"),
])
def test_invalid_values_are_refused_naming_the_field(changes: dict[str, object],
                                                     field: str) -> None:
    with pytest.raises(GenesisError) as caught:
        g.from_dict({**base(), **changes})
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")


def test_missing_required_fields_are_named() -> None:
    for missing in ("name", "genesis_time"):
        data = base()
        del data[missing]
        with pytest.raises(GenesisError, match=f"^{missing}: is required"):
            g.from_dict(data)


def test_a_community_pool_counts_in_the_id_only_when_there_is_one() -> None:
    # Networks made before token.community_pool existed keep their ID.
    assert b"community_pool" not in g.canonical_bytes(g.loads(DOC))
    pooled = g.loads(DOC.replace('symbol = "STR"', 'symbol = "STR"\ncommunity_pool = 900'))
    assert pooled.token.community_pool == 900
    assert b'"community_pool":900' in g.canonical_bytes(pooled)
    assert g.loads(g.dumps(pooled)) == pooled


def test_the_spot_check_rate_counts_in_the_id_only_when_it_is_not_the_default() -> None:
    # Networks with a market table made before spot_check_bps existed keep their ID.
    priced = g.loads(DOC + "\n[market]\nbase_price = 20\n")
    assert priced.market.spot_check_bps == 1000
    assert b"spot_check_bps" not in g.canonical_bytes(priced)
    assert b"spot_check_bps" not in g.canonical_bytes(g.loads(DOC))
    checked = g.loads(DOC + "\n[market]\nspot_check_bps = 2500\n")
    assert b'"spot_check_bps":2500' in g.canonical_bytes(checked)
    assert g.loads(g.dumps(checked)) == checked
    with pytest.raises(GenesisError, match=r"^market\.spot_check_bps: must be between 0"):
        g.loads(DOC + "\n[market]\nspot_check_bps = 10001\n")
    # Governance may change it where the genesis lets it.
    tables = g.RewardPolicy(), g.GovernanceParams(), g.PenaltyPolicy(), g.MarketPolicy()
    assert g.changed_params(*tables, {"market.spot_check_bps": 5000})[3] == \
        g.MarketPolicy(spot_check_bps=5000)
    assert "market.spot_check_bps" in g.MUTABLE_PATHS
    assert "market.spot_check_bps" not in g.DEFAULT_MUTABLE


def test_changed_params_reads_each_value_by_the_genesis_rules() -> None:
    tables = g.RewardPolicy(), g.GovernanceParams(), g.PenaltyPolicy(), g.MarketPolicy()
    new_rewards, new_governance, new_penalties, new_market = g.changed_params(*tables, {
        "rewards.split": {"uptime": 50, "tasks": 30, "governance": 20},
        "governance.quorum_percent": 40, "penalties.failed_task_bps": 2500,
        "market.target_units": 5000})
    assert (new_rewards.split, new_governance.quorum_percent) == (g.RewardSplit(50, 30, 20), 40)
    assert new_penalties == g.PenaltyPolicy(failed_task_bps=2500)
    assert new_market == g.MarketPolicy(target_units=5000)
    assert new_rewards.emission_per_epoch == tables[0].emission_per_epoch
    with pytest.raises(GenesisError, match=r"^governance\.quorum_percent: must be between"):
        g.changed_params(*tables, {"governance.quorum_percent": 101})
    with pytest.raises(GenesisError, match=r"^penalties\.failed_task_bps: must be between"):
        g.changed_params(*tables, {"penalties.failed_task_bps": 10_001})
    with pytest.raises(GenesisError, match=r"^market\.max_change_bps: must be between"):
        g.changed_params(*tables, {"market.max_change_bps": 0})
    with pytest.raises(GenesisError, match=r"^token\.symbol: is not a parameter governance"):
        g.changed_params(*tables, {"token.symbol": "X"})
    with pytest.raises(GenesisError, match=r"^market\.base_price: is not a parameter"):
        g.changed_params(*tables, {"market.base_price": 5})


def test_invalid_toml_is_refused() -> None:
    with pytest.raises(GenesisError, match="not valid TOML"):
        g.loads("name = ")


def test_parse_split() -> None:
    assert g.parse_split("uptime:40,tasks:40,governance:20") == g.RewardSplit(40, 40, 20)
    assert g.parse_split("tasks:100") == g.RewardSplit(0, 100, 0)
    for bad in ("uptime:40,tasks:40", "uptime:40;tasks:60", "uptime:x", "up:100",
                "uptime:50,uptime:50"):
        with pytest.raises(GenesisError):
            g.parse_split(bad)


def test_parse_plugin() -> None:
    assert g.parse_plugin("storage") == g.RequiredPlugin("storage", "")
    assert g.parse_plugin("storage>=1.0,<2").version == "<2,>=1.0"
    with pytest.raises(GenesisError):
        g.parse_plugin("Storage!")


def test_genesis_is_frozen() -> None:
    genesis: Genesis = g.loads(DOC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        genesis.name = "other"  # type: ignore[misc]
