//! Time the native index calculator over a JSON Lines file of events, fed in batches of
//! 10,000 as the service and the benchmark feed it: `cargo run --release
//! --no-default-features --example index_bench -- EVENTS.jsonl [ROUNDS]`.

use std::time::Instant;

use gpux_native::index::IndexCalculator;

/// `protocol.events.EVENT_TYPES` and `index.events.PREFIX_BYTES` when this was written (an
/// event of a type missing here stops the run as an unknown type).
const EVENT_TYPES: [&[u8]; 24] = [
    b"instrument_listed",
    b"instrument_closed",
    b"deposited",
    b"withdrawn",
    b"withdrawal_rejected",
    b"order_accepted",
    b"order_rejected",
    b"trade",
    b"order_canceled",
    b"order_amended",
    b"order_reduced",
    b"cancel_rejected",
    b"amend_rejected",
    b"deposit_rejected",
    b"command_rejected",
    b"capacity_issued",
    b"issue_rejected",
    b"delivery_assigned",
    b"delivery_settled",
    b"bond_released",
    b"report_rejected",
    b"strip_accepted",
    b"strip_rejected",
    b"strip_done",
];
const PREFIX_BYTES: usize = 21;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = std::fs::read(&args[1]).expect("events file");
    let records: Vec<&[u8]> = events.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let rounds: usize = args.get(2).map_or(3, |r| r.parse().expect("rounds"));
    for _ in 0..rounds {
        let mut calculator = IndexCalculator::new(&EVENT_TYPES, PREFIX_BYTES);
        let start = Instant::now();
        let mut values = 0;
        for batch in records.chunks(10_000) {
            values += calculator.feed(batch).expect("a log the index follows").len();
        }
        let total_s = start.elapsed().as_secs_f64();
        println!(
            "{} events, {values} values: {:.3} s, {:.0} ns/event",
            records.len(),
            total_s,
            total_s * 1e9 / records.len() as f64
        );
    }
}
