//! Time the native core over a JSON Lines file, in parts: `cargo run --release
//! --no-default-features --example bench -- SETUP.jsonl FLOW.jsonl`.

use std::time::Instant;

use gpux_native::decode::Decoder;
use gpux_native::Core;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let setup = std::fs::read(&args[1]).expect("setup file");
    let flow = std::fs::read(&args[2]).expect("flow file");
    let lines = flow.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    let rounds: usize = args.get(3).map_or(3, |r| r.parse().expect("rounds"));
    for _ in 0..rounds {
        let mut decoder = Decoder::default();
        let start = Instant::now();
        let mut count = 0usize;
        for line in flow.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let command = decoder.decode(line);
            count += usize::from(command.ts().is_some());
        }
        let decode_s = start.elapsed().as_secs_f64();
        let mut core = Core::default();
        core.apply_batch(&setup);
        let start = Instant::now();
        let mut size = 0;
        core.apply_batch_into(&flow, |events| size += events.len());
        let total_s = start.elapsed().as_secs_f64();
        println!(
            "{lines} lines ({count} decoded): decode only {:.0} ns/line, all {:.0} ns/line \
             = {:.0} commands/s, {} MB of events",
            decode_s * 1e9 / lines as f64,
            total_s * 1e9 / lines as f64,
            lines as f64 / total_s,
            size / 1_000_000
        );
    }
}
