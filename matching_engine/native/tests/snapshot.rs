//! A snapshot restores to a core that writes the same snapshot and goes on to the same
//! events as the core it was taken from; a damaged snapshot is refused or read, never a
//! panic. (tests/property/test_native_snapshots.py holds the bytes to the Python core's.)

use gpux_native::Core;

const SECOND: i64 = 1_000_000_000;

/// Listings, deposits, resting and crossing orders, good-till-date orders (some canceled,
/// some expiring), amends, a strip (and one refused), issues of a deliverable instrument,
/// closes (one with deliveries assigned) and reports: every part of the state a snapshot
/// holds.
fn commands() -> Vec<String> {
    let mut lines = Vec::new();
    for (symbol, delivery_start) in [("H-1", 400), ("H-2", 40)] {
        lines.push(format!(
            r#"{{"type":"list_instrument","ts":1,"symbol":"{symbol}","gpu":"H100","region":"eu","delivery_start":{},"delivery_hours":1,"tick_size":"0.01","max_order_quantity":1000,"maker_fee_bps":10,"taker_fee_bps":20}}"#,
            delivery_start * SECOND
        ));
    }
    lines.push(format!(
        r#"{{"type":"list_instrument","ts":1,"symbol":"D-1","gpu":"H100","region":"eu","delivery_start":{},"delivery_hours":1,"tick_size":"0.01","max_order_quantity":1000,"maker_fee_bps":0,"taker_fee_bps":0,"bond_per_gpu_hour":"1.5"}}"#,
        60 * SECOND
    ));
    for account in ["a", "b", "c"] {
        for (asset, amount) in [("USDC", r#""5000""#), ("H-1", "300"), ("H-2", "300")] {
            lines.push(format!(
                r#"{{"type":"deposit","ts":2,"account":"{account}","asset":"{asset}","amount":{amount}}}"#
            ));
        }
    }
    for (account, issue_id, quantity) in [("a", "i1", 20), ("b", "i2", 5)] {
        lines.push(format!(
            r#"{{"type":"issue_capacity","ts":2,"account":"{account}","issue_id":"{issue_id}","instrument":"D-1","node_id":"n-{account}","quantity":{quantity}}}"#
        ));
    }
    for (account, side) in [("a", "sell"), ("c", "buy")] {
        lines.push(format!(
            r#"{{"type":"new_order","ts":2,"account":"{account}","client_order_id":"d","instrument":"D-1","side":"{side}","order_type":"limit","price":"1","quantity":8}}"#
        ));
    }
    lines.push(r#"{"type":"withdraw","ts":2,"account":"b","asset":"D-1","amount":2}"#.into());
    for hour in 0..2i64 {
        lines.push(format!(
            r#"{{"type":"list_instrument","ts":2,"symbol":"S-{hour}","gpu":"H100","region":"eu","delivery_start":{},"delivery_hours":1,"tick_size":"0.01","max_order_quantity":1000,"maker_fee_bps":10,"taker_fee_bps":20}}"#,
            300 * SECOND + hour * 3600 * SECOND
        ));
        lines.push(format!(
            r#"{{"type":"deposit","ts":2,"account":"a","asset":"S-{hour}","amount":10}}"#
        ));
        for (index, price) in ["1", "1.5"].iter().enumerate() {
            lines.push(format!(
                r#"{{"type":"new_order","ts":2,"account":"a","client_order_id":"s{hour}-{index}","instrument":"S-{hour}","side":"sell","order_type":"limit","price":"{price}","quantity":2}}"#
            ));
        }
    }
    for (client_order_id, quantity) in [("strip", 3), ("too-much", 9)] {
        lines.push(format!(
            r#"{{"type":"new_strip_order","ts":2,"account":"c","client_order_id":"{client_order_id}","side":"buy","instruments":["S-0","S-1"],"quantity":{quantity},"limit_total":"10"}}"#
        ));
    }
    for index in 0..60i64 {
        let account = ["a", "b", "c"][index as usize % 3];
        let side = if index % 2 == 0 { "buy" } else { "sell" };
        let symbol = if index % 5 == 0 { "H-2" } else { "H-1" };
        let price = 100 + (index * 7) % 9 - 4;
        let ts = (3 + index) * SECOND;
        let tif = if index % 4 == 0 {
            format!(r#","time_in_force":"gtd","expire_at":{}"#, ts + (index % 7 + 1) * 5 * SECOND)
        } else {
            String::new()
        };
        lines.push(format!(
            r#"{{"type":"new_order","ts":{ts},"account":"{account}","client_order_id":"o{index}","instrument":"{symbol}","side":"{side}","order_type":"limit","price":"{}.{:02}","quantity":{}{tif}}}"#,
            price / 100,
            price % 100,
            1 + index % 6
        ));
        if index % 9 == 4 {
            let earlier = index - 3; // an order of the same account
            lines.push(format!(
                r#"{{"type":"cancel_order","ts":{ts},"account":"{account}","client_order_id":"o{earlier}"}}"#
            ));
        }
        if index % 11 == 5 {
            lines.push(format!(
                r#"{{"type":"amend_order","ts":{ts},"account":"{account}","client_order_id":"o{index}","new_quantity":9}}"#
            ));
        }
    }
    lines.push(format!(r#"{{"type":"tick","ts":{}}}"#, 90 * SECOND));
    for ppm in [250_000, 0] {
        lines.push(format!(
            r#"{{"type":"delivery_report","ts":{},"issue_id":"i1","holder":"c","delivered_ppm":{ppm},"evidence":"e"}}"#,
            90 * SECOND
        ));
    }
    lines
}

fn batch(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|line| line.bytes().chain([b'\n'])).collect()
}

#[test]
fn the_commands_reach_every_part_of_the_state() {
    let events = String::from_utf8(Core::default().apply_batch(&batch(&commands()))).unwrap();
    for wanted in [
        "\"trade\"",
        "\"expired\"",
        "\"user\"",
        "\"order_amended\"",
        "\"instrument_closed\"",
        "\"delivery_assigned\"",
        "\"delivery_settled\"",
        "\"already_reported\"",
        "\"bond_released\"",
        "\"strip_done\"",
        "\"insufficient_liquidity\"",
    ] {
        assert!(events.contains(wanted), "no {wanted} in the events");
    }
}

#[test]
fn a_restored_core_goes_on_as_the_one_it_was_taken_from() {
    let lines = commands();
    for cut in (0..=lines.len()).step_by(7) {
        let mut original = Core::default();
        original.apply_batch(&batch(&lines[..cut]));
        let snapshot = original.snapshot().expect("amounts within range");
        let mut restored = Core::restore(&snapshot).expect("a good snapshot");
        assert_eq!(restored.snapshot().unwrap(), snapshot, "cut {cut}");
        let rest = batch(&lines[cut..]);
        assert_eq!(restored.apply_batch(&rest), original.apply_batch(&rest), "cut {cut}");
        assert_eq!(restored.snapshot().unwrap(), original.snapshot().unwrap(), "cut {cut}");
        assert_eq!(restored.engine.validate(), Ok(()));
    }
}

#[test]
fn a_damaged_snapshot_is_refused_or_read_never_a_panic() {
    let lines = commands();
    let mut core = Core::default();
    core.apply_batch(&batch(&lines[..lines.len() * 2 / 3]));
    let snapshot = core.snapshot().unwrap();
    for len in 0..snapshot.len() {
        let refused = Core::restore(&snapshot[..len]).err().expect("a cut snapshot is refused");
        assert!(refused.starts_with("snapshot"), "{refused}");
    }
    for position in 0..snapshot.len() {
        for flip in [0x01, 0x10, 0x80, 0xff] {
            let mut damaged = snapshot.clone();
            damaged[position] ^= flip;
            if let Ok(restored) = Core::restore(&damaged) {
                assert_eq!(restored.engine.validate(), Ok(()));
            }
        }
    }
}
