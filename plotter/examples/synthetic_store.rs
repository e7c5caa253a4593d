//! Fills a results store with a synthetic run for the plotter benchmark
//! (`scripts/bench-plotter`): SECONDS × TOPICS rows, each with MSGS messages whose
//! latencies follow a long-tailed distribution, as one collector instance would store them.
//!
//!     cargo run --release --example synthetic_store -- STORE_URL RUN_ID SECONDS TOPICS MSGS

use std::time::Instant;

use iotload_core::recorder::{SecondSamples, second_scratch};
use iotload_core::store::{Batch, RunRecord, TopicSecond};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, run_id, seconds, topics, msgs] = args.as_slice() else {
        return Err("usage: synthetic_store STORE_URL RUN_ID SECONDS TOPICS MSGS".into());
    };
    let (seconds, topics, msgs): (u64, u64, u64) =
        (seconds.parse()?, topics.parse()?, msgs.parse()?);
    let store = iotload_core::store::open(url).await?;
    let start_s = 1_764_000_000u64;
    store
        .put_run(&RunRecord {
            run_id: run_id.clone(),
            component: "collector".into(),
            instance: "bench".into(),
            started_us: start_s * 1_000_000,
            ended_us: (start_s + seconds) * 1_000_000,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            broker: "mqtt://synthetic".into(),
            config: serde_json::json!({"synthetic": true}),
        })
        .await?;
    let clock = Instant::now();
    let mut scratch = second_scratch();
    let mut samples = SecondSamples::default();
    // xorshift: a fixed, dependency-free pseudo-random latency source.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut batch = Vec::with_capacity(10_000);
    for second in start_s..start_s + seconds {
        for topic in 0..topics {
            for _ in 0..msgs {
                // 200 µs base, exponential-ish tail up to ~50 ms.
                let r = next();
                let raw = 200 + (r % 800) + ((r >> 20) % 100 == 0) as u64 * ((r >> 32) % 50_000);
                samples.record(raw, raw + (r >> 40) % 100);
            }
            let (latency_hdr, corrected_hdr) = samples.take_encoded(&mut scratch);
            batch.push(TopicSecond {
                run_id: run_id.clone(),
                topic: format!("iot/{topic}/action"),
                second,
                instance: "bench".into(),
                sent: msgs,
                received: msgs,
                latency_hdr,
                corrected_hdr,
                ..TopicSecond::default()
            });
            if batch.len() == 10_000 {
                store
                    .write(&Batch {
                        id: 0,
                        run_id: run_id.clone(),
                        seconds: std::mem::take(&mut batch),
                        raw: Vec::new(),
                    })
                    .await?;
            }
        }
    }
    store
        .write(&Batch {
            id: 0,
            run_id: run_id.clone(),
            seconds: batch,
            raw: Vec::new(),
        })
        .await?;
    eprintln!(
        "stored {} rows in {:.1} s",
        seconds * topics,
        clock.elapsed().as_secs_f64()
    );
    Ok(())
}
