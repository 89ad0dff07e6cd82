"""`gpux trade`: place and cancel orders, watch a book live, see balances, run the bots.

    gpux trade instruments
    gpux trade place SYMBOL buy 3 --price 2.15 [--tif gtc] [--post-only] [--cid ID]
    gpux trade cancel ID | cancel-all [--instrument SYMBOL] | amend ID [--price P] [--quantity Q]
    gpux trade orders [--instrument SYMBOL] | balances | time
    gpux trade issue --instrument SYMBOL --node NODE --quantity Q [--issue-id ID]
    gpux trade deliveries
    gpux trade ssh-key add FILE          register an SSH public key (e.g. ~/.ssh/id_ed25519.pub)
    gpux trade access [--issue ID] [--identity ~/.ssh/id_ed25519]   certificates + ssh lines
    gpux trade quality [--operator A]    every operator's measured delivery record
    gpux trade strip --gpu H100-SXM-80GB --region eu-west --from 2026-12-05T12:00 --hours 6
                     --quantity 8 --max-total 96 [--side buy|sell] [--quote] [--cid ID]
    gpux trade index --gpu H100-SXM-80GB --region eu-west [--from ISO --to ISO]
    gpux trade book SYMBOL [--depth 10] [--duration-s 30]
    gpux trade market-maker ... | operator ...   (see sdk.bots)

Connects to --url (default $GPUX_URL or ws://127.0.0.1:8765) and logs in with an API key
($GPUX_KEY_ID and $GPUX_PRIVATE_KEY, or --key-id / --private-key) or a wallet
($GPUX_WALLET_KEY or --wallet-key); `instruments`, `book`, `index`, `quality` and `time`
need no login. Times (`--from`, `--to`) are ISO 8601, UTC unless they name a zone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sdk.access import write_access
from sdk.book import LocalBook
from sdk.client import Client, ClientError, RequestFailed
from sdk.signing import ApiKey, Credentials, Wallet
from wsapi.messages import (
    IndexMessage,
    IndexPoint,
    NodeQuality,
    OperatorQuality,
    OrderResult,
    StripLeg,
)

console = Console()
PUBLIC_COMMANDS = frozenset({"instruments", "book", "time", "index", "quality"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpux trade", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("GPUX_URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--key", default=os.environ.get("GPUX_KEY"), metavar="KEY_ID:PRIVATE_KEY",
                        help="an API key as `gpux gateway add-key` prints it (login:)")
    parser.add_argument("--key-id", default=os.environ.get("GPUX_KEY_ID"))
    parser.add_argument("--private-key", default=os.environ.get("GPUX_PRIVATE_KEY"))
    parser.add_argument("--wallet-key", default=os.environ.get("GPUX_WALLET_KEY"))
    parser.add_argument("--chain-id", type=int, default=1, help="EIP-712 chain id of wallets")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("instruments", help="list instruments and their specs")
    listing.add_argument("--status", choices=("open", "closed", "all"), default="open")
    commands.add_parser("time", help="server and engine time")
    place = commands.add_parser("place", help="place an order")
    place.add_argument("instrument")
    place.add_argument("side", choices=("buy", "sell"))
    place.add_argument("quantity", type=int)
    place.add_argument("--price", help="limit price (omit for a market order)")
    place.add_argument("--tif", choices=("gtc", "ioc", "fok", "gtd"))
    place.add_argument("--expire-at-ns", type=int)
    place.add_argument("--post-only", action="store_true")
    place.add_argument("--stp", choices=("cancel_newest", "cancel_oldest", "cancel_both",
                                         "decrement"))
    place.add_argument("--cid", help="client order id (default: generated)")
    cancel = commands.add_parser("cancel", help="cancel an order by client order id")
    cancel.add_argument("client_order_id")
    cancel_all = commands.add_parser("cancel-all", help="cancel every open order")
    cancel_all.add_argument("--instrument")
    amend = commands.add_parser("amend", help="change an order's price or total quantity")
    amend.add_argument("client_order_id")
    amend.add_argument("--price")
    amend.add_argument("--quantity", type=int)
    orders = commands.add_parser("orders", help="open orders")
    orders.add_argument("--instrument")
    commands.add_parser("balances", help="available and held per asset")
    issue = commands.add_parser(
        "issue", help="bond GPU-hours of a node and get their tokens (operator, market_maker)")
    issue.add_argument("--instrument", required=True, help="a deliverable instrument")
    issue.add_argument("--node", required=True, help="the node id that will deliver")
    issue.add_argument("--quantity", required=True, type=int, help="GPU-hours")
    issue.add_argument("--issue-id", help="unique for all time (default: generated); "
                                          "give the same one to retry safely")
    commands.add_parser("deliveries", help="the account's issues and assignments")
    strip = commands.add_parser(
        "strip", help="buy or sell the same GPU-hours in consecutive hours, all or nothing")
    strip.add_argument("--gpu", required=True, help="GPU class, e.g. H100-SXM-80GB")
    strip.add_argument("--region", required=True)
    strip.add_argument("--from", dest="start", required=True, type=_instant,
                       help="the first hour, e.g. 2026-12-05T12:00")
    strip.add_argument("--hours", required=True, type=int, help="consecutive hours (2-168)")
    strip.add_argument("--quantity", required=True, type=int, help="GPU-hours in each hour")
    strip.add_argument("--side", choices=("buy", "sell"), default="buy")
    strip.add_argument("--max-total", help="a buy's limit: USDC of notional over every hour")
    strip.add_argument("--min-total", help="a sell's limit: USDC of notional over every hour")
    strip.add_argument("--quote", action="store_true",
                       help="only show what it would cost now, leg by leg; trade nothing")
    strip.add_argument("--cid", help="client order id, at most 59 characters (default: "
                                     "generated)")
    index = commands.add_parser("index", help="the GPU-hour price index of a class")
    index.add_argument("--gpu", required=True)
    index.add_argument("--region", required=True)
    index.add_argument("--from", dest="start", type=_instant,
                       help="history from then (default: the latest value only)")
    index.add_argument("--to", dest="end", type=_instant, help="history up to then (now)")
    ssh_key = commands.add_parser("ssh-key", help="register an SSH public key for delivery")
    ssh_key_commands = ssh_key.add_subparsers(dest="ssh_key_command", required=True)
    ssh_key_add = ssh_key_commands.add_parser("add", help="register a public key file")
    ssh_key_add.add_argument("file", type=Path, help="an OpenSSH public key, e.g. "
                                                     "~/.ssh/id_ed25519.pub")
    access = commands.add_parser(
        "access", help="the certificates and ssh lines of the account's assigned nodes")
    access.add_argument("--issue", help="only this issue id's assignment")
    access.add_argument("--identity", type=Path,
                        help="the private key registered (its .pub beside it): the "
                             "certificates and known_hosts files are written next to it")
    quality = commands.add_parser("quality", help="every operator's measured delivery record")
    quality.add_argument("--operator", help="only this operator's record, node by node")
    book = commands.add_parser("book", help="watch a book live")
    book.add_argument("instrument")
    book.add_argument("--depth", type=int, default=10)
    book.add_argument("--duration-s", type=float, help="stop after this long")
    commands.add_parser("market-maker", help="run the market maker bot", add_help=False)
    commands.add_parser("operator", help="run the operator quoter bot", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    bots = {"market-maker": "sdk.bots.market_maker", "operator": "sdk.bots.operator_quoter"}
    for name, module_name in bots.items():
        if name in args_list:
            import importlib

            index = args_list.index(name)
            result: int = importlib.import_module(module_name).main(args_list[index + 1:])
            return result
    args = build_parser().parse_args(args_list)
    credentials = None if args.command in PUBLIC_COMMANDS else _credentials(args)
    try:
        return asyncio.run(_run(args, credentials))
    except RequestFailed as error:
        console.print(f"[red]refused[/red]: {error}")
        return 1
    except (ClientError, OSError) as error:
        console.print(f"[red]error[/red]: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


def _credentials(args: argparse.Namespace) -> Credentials:
    if args.key:
        key_id, _, private_key = args.key.partition(":")
        if not key_id or not private_key:
            raise SystemExit("gpux trade: --key takes KEY_ID:PRIVATE_KEY")
        return ApiKey(key_id, private_key)
    if args.key_id and args.private_key:
        return ApiKey(args.key_id, args.private_key)
    if args.wallet_key:
        return Wallet(args.wallet_key, chain_id=args.chain_id)
    raise SystemExit("gpux trade: give --key KEY_ID:PRIVATE_KEY (or set GPUX_KEY, or "
                     "GPUX_KEY_ID and GPUX_PRIVATE_KEY, or GPUX_WALLET_KEY)")


async def _run(args: argparse.Namespace, credentials: Credentials | None) -> int:
    handlers: dict[str, Callable[[Client, argparse.Namespace], Awaitable[int]]] = {
        "instruments": _instruments, "time": _time, "place": _place, "cancel": _cancel,
        "cancel-all": _cancel_all, "amend": _amend, "orders": _orders, "balances": _balances,
        "book": _book, "issue": _issue, "deliveries": _deliveries, "strip": _strip,
        "index": _index, "ssh-key": _ssh_key, "access": _access, "quality": _quality,
    }
    async with Client(args.url, credentials=credentials, reconnect=args.command == "book") \
            as client:
        return await handlers[args.command](client, args)


async def _instruments(client: Client, args: argparse.Namespace) -> int:
    table = Table("symbol", "gpu", "region", "delivery (UTC)", "hours", "tick", "fees m/t",
                  "bond/GPU-hour", "status", title="instruments")
    for spec in await client.instruments(status=args.status):
        table.add_row(spec.symbol, spec.gpu, spec.region, _utc(spec.delivery_start),
                      str(spec.delivery_hours), spec.tick_size,
                      f"{spec.maker_fee_bps}/{spec.taker_fee_bps}",
                      spec.bond_per_gpu_hour or "", spec.status)
    console.print(table)
    return 0


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")


async def _time(client: Client, args: argparse.Namespace) -> int:
    now = await client.server_time()
    console.print(f"server {now.server_time_ns} ns, engine {now.engine_time_ns} ns, "
                  f"event seq {now.event_seq}")
    return 0


def _print_result(result: OrderResult) -> int:
    color = {"accepted": "green", "rejected": "red"}.get(result.status, "yellow")
    details = {k: v for k, v in (("order_id", result.order_id), ("price", result.price),
                                 ("instrument", result.instrument), ("node", result.node_id),
                                 ("quantity", result.quantity), ("bond", result.bond),
                                 ("canceled", result.canceled),
                                 ("remaining", result.remaining_quantity),
                                 ("reason", result.reason)) if v is not None}
    text = " ".join(f"{k}={v}" for k, v in details.items())
    console.print(f"[{color}]{result.status}[/{color}] {result.op} "
                  f"{result.client_order_id or result.issue_id or ''} {text}")
    return 0 if result.status == "accepted" else 1


async def _place(client: Client, args: argparse.Namespace) -> int:
    return _print_result(await client.new_order(
        args.instrument, args.side, args.quantity, args.price, client_order_id=args.cid,
        time_in_force=args.tif, expire_at=args.expire_at_ns, post_only=args.post_only,
        stp=args.stp))


async def _cancel(client: Client, args: argparse.Namespace) -> int:
    return _print_result(await client.cancel_order(args.client_order_id))


async def _cancel_all(client: Client, args: argparse.Namespace) -> int:
    return _print_result(await client.mass_cancel(args.instrument))


async def _amend(client: Client, args: argparse.Namespace) -> int:
    return _print_result(await client.amend_order(args.client_order_id, args.price,
                                                  args.quantity))


async def _orders(client: Client, args: argparse.Namespace) -> int:
    table = Table("client order id", "order id", "instrument", "side", "price", "quantity",
                  "filled", "remaining", title="open orders")
    for order in await client.open_orders(args.instrument):
        table.add_row(order.client_order_id, order.order_id or "", order.instrument or "",
                      order.side or "", order.price or "market", str(order.quantity),
                      str(order.filled_quantity), str(order.remaining_quantity))
    console.print(table)
    return 0


async def _balances(client: Client, args: argparse.Namespace) -> int:
    table = Table("asset", "available", "held", title=f"balances of {client.login.account}"
                  if client.login else "balances")
    for asset, balance in sorted((await client.balances()).items()):
        table.add_row(asset, str(balance.available), str(balance.held))
    console.print(table)
    return 0


async def _issue(client: Client, args: argparse.Namespace) -> int:
    return _print_result(await client.issue_capacity(args.instrument, args.node, args.quantity,
                                                     issue_id=args.issue_id))


async def _deliveries(client: Client, args: argparse.Namespace) -> int:
    deliveries = await client.deliveries()
    account = client.login.account if client.login else ""
    issues = Table("issue id", "instrument", "node", "quantity", "bonded", "bond", "status",
                   title=f"issues of {account}")
    for issue in deliveries.issues:
        issues.add_row(issue.issue_id, issue.instrument, issue.node_id, str(issue.quantity),
                       str(issue.bonded_quantity), issue.bond, issue.status)
    assignments = Table("hour (UTC)", "instrument", "issue id", "node", "issuer", "holder",
                        "quantity", "status", "delivered", "compensation",
                        title=f"assignments of {account}")
    for item in deliveries.assignments:
        delivered = "" if item.delivered_ppm is None else f"{item.delivered_ppm / 10_000:g}%"
        assignments.add_row(_utc(item.delivery_start), item.instrument, item.issue_id,
                            item.node_id, item.issuer, item.holder, str(item.quantity),
                            item.status, delivered, item.compensation or "")
    console.print(issues)
    console.print(assignments)
    return 0


async def _ssh_key(client: Client, args: argparse.Namespace) -> int:
    try:
        line = args.file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as error:
        raise SystemExit(f"gpux trade ssh-key add: cannot read {args.file}: {error}") from None
    result = await client.register_ssh_key(line)
    console.print(f"{'registered' if result.added else 'already registered'}: "
                  f"{result.fingerprint}")
    return 0


async def _access(client: Client, args: argparse.Namespace) -> int:
    items = await client.delivery_access(args.issue)
    if not items:
        console.print("no assignments")
        return 0
    if args.identity is not None:
        try:
            lines = write_access(items, args.identity.expanduser())
        except ValueError as error:
            raise SystemExit(f"gpux trade access: {error}") from None
        for line in lines:
            window = f"{_utc(line.window_start)} .. {_utc(line.window_end)}"
            console.print(f"[bold]{line.issue_id}[/bold] node {line.node_id}, {window}")
            console.print(f"  {line.ssh_command or line.waiting_for}", soft_wrap=True)
        return 0
    for item in items:
        window = f"{_utc(item.window_start)} .. {_utc(item.window_end)}"
        console.print(f"[bold]{item.issue_id}[/bold] node {item.node_id}, {window}")
        if item.pending:
            console.print("  certificate pending: register an SSH key (`gpux trade ssh-key "
                          "add`); the delivery service issues one within seconds")
        elif item.ssh_command is None:
            console.print(f"  node {item.node_id} is not registered yet")
        else:
            console.print(f"  {item.ssh_command}", soft_wrap=True)
            console.print("  (give --identity to write the certificate and known_hosts "
                          "files the line names)")
    return 0


async def _quality(client: Client, args: argparse.Namespace) -> int:
    records = await client.quality(args.operator)
    table = Table("operator / node", "hours", "GPU-hours", "delivered", "share",
                  "100% / 99 / 95 / 90 / 75 / <75", "ratio p10/p50/p90", "incidents",
                  title="quality record")
    for record in records:
        table.add_row(*_quality_row(record.operator, record))
        if args.operator is not None:
            for node in record.nodes:
                table.add_row(*_quality_row(f"  {node.node_id} ({node.gpu}, {node.region})",
                                            node))
    console.print(table)
    return 0


def _quality_row(name: str, record: OperatorQuality | NodeQuality) -> list[str]:
    ratios = record.throughput_ratio_percentiles
    shown = "-" if ratios is None else " / ".join(
        f"{value:.2f}" for value in (ratios.p10, ratios.p50, ratios.p90))
    return [name, str(record.hours), str(record.gpu_hours_assigned),
            f"{record.gpu_hours_delivered / 1_000_000:g}",
            f"{record.delivered_share_ppm / 10_000:g}%",
            " / ".join(str(count) for count in record.delivered_share_histogram.values()),
            shown, str(record.incidents_count)]


def _instant(text: str) -> int:
    """An ISO 8601 time (UTC unless it names a zone) as ns since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time like 2026-12-05T12:00: "
                                         f"{text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def _strip_limit(args: argparse.Namespace) -> str | None:
    """The strip's limit_total: a buy's --max-total or a sell's --min-total (a quote may go
    without one)."""
    wanted, other = ("max_total", "min_total") if args.side == "buy" else \
        ("min_total", "max_total")
    flag, other_flag = (f"--{name.replace('_', '-')}" for name in (wanted, other))
    if getattr(args, other) is not None:
        raise SystemExit(f"gpux trade strip: a {args.side} takes {flag}, not {other_flag}")
    limit: str | None = getattr(args, wanted)
    if limit is None and not args.quote:
        raise SystemExit(f"gpux trade strip: a {args.side} needs {flag} (or --quote)")
    return limit


async def _strip(client: Client, args: argparse.Namespace) -> int:
    limit_total = _strip_limit(args)
    try:
        legs = await client.strip_instruments(args.gpu, args.region, args.start, args.hours)
    except ValueError as error:
        console.print(f"[red]error[/red]: {error}")
        return 2
    if args.quote:
        quote = await client.strip_quote(legs, args.side, args.quantity, limit_total)
        console.print(_legs_table(quote.legs, f"quote at event {quote.seq} (not traded)"))
        console.print(f"notional {quote.notional}  fees {quote.fees}  total {quote.total}")
        if quote.reason is not None:
            console.print(f"[red]would be refused[/red]: {quote.reason}")
            return 1
        console.print("[green]would execute now[/green] (the engine decides when it arrives)")
        return 0
    assert limit_total is not None
    result = await client.new_strip_order(legs, args.side, args.quantity, limit_total,
                                          client_order_id=args.cid)
    if not result.accepted:
        console.print(f"[red]{result.status}[/red] new_strip_order "
                      f"{result.client_order_id or ''} reason={result.reason}")
        return 1
    console.print(_legs_table(result.legs, f"strip {result.strip_id} ({result.side} "
                                           f"{result.quantity} x {len(result.legs)} hours)"))
    console.print(f"[green]accepted[/green] notional {result.notional}  fees {result.fees}  "
                  f"total {result.total}")
    return 0


def _legs_table(legs: list[StripLeg], title: str) -> Table:
    table = Table("instrument", "filled", "fills (quantity @ price)", "notional", "fees",
                  title=title)
    for leg in legs:
        fills = ", ".join(f"{fill.quantity} @ {fill.price}" for fill in leg.fills)
        table.add_row(leg.instrument, str(leg.filled), fills, leg.notional, leg.fees)
    return table


async def _index(client: Client, args: argparse.Namespace) -> int:
    if args.start is None and args.end is None:
        feed = await client.index(args.gpu, args.region)
        snapshot: IndexMessage = await feed.get(client.request_timeout_s)
        points = snapshot.values
    else:
        points = await client.index_history(args.gpu, args.region, args.start, args.end)
    table = Table("minute (UTC)", "value", "source", "sufficient", "trades", "volume",
                  "instruments", "inputs hash", title=f"index {args.gpu} {args.region}")
    for item in points:
        table.add_row(*_index_row(item))
    console.print(table)
    if not points:
        console.print("no index value published for this class yet")
    return 0


def _index_row(item: IndexPoint) -> list[str]:
    return [item.minute, item.value or "-", item.source, "yes" if item.sufficient else "no",
            str(item.trade_count), str(item.volume), str(item.instrument_count),
            item.inputs_hash[:16]]


def render_book(book: LocalBook, depth: int) -> Any:
    """Return a rich renderable of the book: asks above bids, best prices in the middle."""
    bids, asks = book.levels(depth)
    table = Table("price", "quantity", title=f"{book.instrument}  seq {book.seq}",
                  show_edge=False)
    for price, quantity in reversed(asks):
        table.add_row(Text(price, style="red"), str(quantity))
    table.add_section()
    for price, quantity in bids:
        table.add_row(Text(price, style="green"), str(quantity))
    status = Text(f"checksum {book.checksum()}  updates {book.updates_applied}  "
                  f"resyncs {book.resyncs}", style="dim")
    return Group(table, status)


async def _book(client: Client, args: argparse.Namespace) -> int:
    book = await client.watch_book(args.instrument)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration_s if args.duration_s else None
    with Live(render_book(book, args.depth), console=console, refresh_per_second=10) as live:
        while deadline is None or loop.time() < deadline:
            await asyncio.sleep(0.1)
            live.update(render_book(book, args.depth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
