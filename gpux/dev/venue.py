"""The dev venue: every service of `gpux.venue` with the settings of one machine's demo.

Snapshots under the data dir, one confirmation on anvil (which mines a block per
transaction), settlement every two seconds, the price index service (its values served by
the gateway from the venue's database), a gateway clock, room in the operator's rate limit
for the first issues and quotes on all 72 hours, the trading page (with its proof
lookups) on the gateway's port, and the delivery service: on the dev database and log, its
keys under DATA_DIR/delivery/keys, the demo class floors (numpy on a CPU answers the
challenge) and a compressed minute (`delivery_minute_ms`, 1,000 by default: an hour's 60
samples are taken in its first minute), reporting with a `delivery`-role key of account
DELIVERY_ACCOUNT kept in DATA_DIR/delivery/delivery-key.json.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from delivery.classes import demo_floors
from delivery.config import ServiceConfig
from eventlog.port import EventLog
from gateway import store as gateway_store
from gateway.config import GatewayConfig, RateLimit
from gateway.static import StaticSite
from gateway.store import PostgresKeyStore
from gpux.dev.chain import DEV_CHAIN_ID, settler
from gpux.dev.market import FEES_WALLET, service_key
from gpux.dev.site import DevSite
from gpux.venue import SettlementParts, Venue, VenueConfig
from index.service import IndexServiceConfig
from ledger.projector import ProjectorConfig
from matching_engine.config import EngineConfig
from settlement.chain import Contracts, dev_account
from settlement.deposits import WatcherConfig
from settlement.submitter import SubmitterConfig

CONFIRMATIONS = 1  # as deep as a dev chain gets without waiting for further traffic
SETTLEMENT_BATCH_INTERVAL_MS = 2000
DEPOSIT_POLL_INTERVAL_MS = 500
CLOCK_INTERVAL_MS = 1000
SNAPSHOT_EVERY_COMMANDS = 20_000
DELIVERY_ACCOUNT = "gpux.delivery"
DELIVERY_MINUTE_MS = 1_000  # an hour measured in its first minute
# How often the delivery service looks for windows to probe: a small part of the compressed
# minute, so that an hour assigned at its close (a clock tick after its start) is probed
# from its first minutes.
DELIVERY_SCHEDULE_INTERVAL_MS = 250


def delivery_keys_dir(data_dir: Path) -> Path:
    """Where the delivery service keeps its CA, signer and prober keys."""
    return data_dir / "delivery" / "keys"


def dev_role_limits() -> dict[str, RateLimit]:
    """The gateway's limits, with room for the demo operator's first issues and quotes on all
    72 hours at once: an issue (1 token) and a mass quote of one ask (2 tokens) each."""
    limits = dict(GatewayConfig().role_limits)
    limits["operator"] = RateLimit(per_second=50, burst=300)
    return limits


async def dev_venue(event_log: EventLog, contracts: Contracts, *, data_dir: Path,
                    database_url: str, host: str, port: int, metrics_port: int,
                    delivery_minute_ms: int = DELIVERY_MINUTE_MS
                    ) -> tuple[Venue, PostgresKeyStore]:
    """The dev venue, not started, and its key store (migrated); the key store and the
    trading page's database pool close with the venue."""
    await gateway_store.migrate(database_url)
    key_store = await PostgresKeyStore.open(database_url)
    try:
        delivery_key = await service_key(key_store, data_dir / "delivery" / "delivery-key.json",
                                         DELIVERY_ACCOUNT, "delivery")
    except BaseException:
        await key_store.close()
        raise
    config = VenueConfig(
        engine=EngineConfig(snapshot_dir=data_dir / "snapshots",
                            snapshot_every_commands=SNAPSHOT_EVERY_COMMANDS),
        gateway=GatewayConfig(host=host, port=port, clock_interval_ms=CLOCK_INTERVAL_MS,
                              role_limits=dev_role_limits(), eip712_chain_id=DEV_CHAIN_ID,
                              index_database_url=database_url,
                              delivery_database_url=database_url),
        database_url=database_url,
        ledger=ProjectorConfig(),
        settlement=SettlementParts(
            contracts=contracts, settler=settler(),
            fee_address=dev_account(FEES_WALLET).address,
            watcher=WatcherConfig(confirmations=CONFIRMATIONS,
                                  poll_interval_ms=DEPOSIT_POLL_INTERVAL_MS),
            submitter=SubmitterConfig(confirmations=CONFIRMATIONS,
                                      batch_interval_ms=SETTLEMENT_BATCH_INTERVAL_MS)),
        index=IndexServiceConfig(),
        delivery=ServiceConfig(keys_dir=delivery_keys_dir(data_dir),
                               minute_ms=delivery_minute_ms, floors=demo_floors(),
                               schedule_interval_ms=DELIVERY_SCHEDULE_INTERVAL_MS),
        delivery_api_key=(delivery_key.key_id, delivery_key.private_key),
        metrics_port=metrics_port,
    )
    proof_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    site = DevSite(StaticSite.from_directory(), proof_pool, contracts)
    venue = Venue(event_log, config, key_store=key_store,
                  process_request=site.process_request)  # type: ignore[arg-type]
    venue.close_on_stop(key_store.close)
    venue.close_on_stop(proof_pool.close)
    return venue, key_store
