//! A randomized test of the log against an in-memory model: random appends (single records,
//! multi-record and multi-partition), reads from random offsets, clean restarts and simulated
//! power losses (flush=batch, so every acknowledged record must survive). Prints its seed.

use std::sync::Arc;

use weir_log::sim::SimStorage;
use weir_log::{Log, Offset, PartitionId, Record};

use crate::common::{cfg, opts_with, Rng};

#[test]
fn random_operations_match_the_model() -> anyhow::Result<()> {
    let mut rng = Rng::from_env("random_operations_match_the_model");
    let mut sim = SimStorage::new();
    let partitions = 3u32;
    let open =
        |sim: &SimStorage| Log::open_with("/m", opts_with(Arc::new(sim.clone()))).expect("open");
    let mut log = open(&sim);
    log.create_topic(
        "t",
        partitions,
        cfg(&["segment.bytes=1500", "index.interval.bytes=200"]),
    )?;
    let mut model: Vec<Vec<String>> = vec![Vec::new(); partitions as usize];
    for step in 0..600 {
        match rng.below(100) {
            0..=59 => {
                let p = rng.below(u64::from(partitions)) as u32;
                let n = 1 + rng.below(5) as usize;
                let recs: Vec<Record> = (0..n)
                    .map(|i| {
                        let v = format!("s{step}-{i}-{}", "x".repeat(rng.below(60) as usize));
                        Record::keyed(format!("k{}", rng.below(7)), v)
                    })
                    .collect();
                let ack = log.append("t", PartitionId(p), &recs)?;
                assert_eq!(
                    ack.base_offset,
                    Offset(model[p as usize].len() as i64),
                    "step {step}"
                );
                model[p as usize].extend(recs.iter().map(|r| {
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
                }));
            }
            60..=89 => {
                let p = rng.below(u64::from(partitions)) as usize;
                let len = model[p].len() as u64;
                let from = rng.below(len + 1);
                let f = log.read(
                    "t",
                    PartitionId(p as u32),
                    Offset(from as i64),
                    1 + rng.below(3000) as usize,
                )?;
                let got: Vec<(i64, String)> = f
                    .records()
                    .map(|r| {
                        r.map(|r| {
                            (
                                r.offset.0,
                                String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                if from < len {
                    assert!(
                        !got.is_empty(),
                        "step {step}: read at {from} of {len} returned nothing"
                    );
                }
                for (off, v) in got {
                    assert_eq!(&model[p][off as usize], &v, "step {step}: offset {off}");
                    assert!(off >= from as i64);
                }
            }
            90..=94 => {
                drop(log);
                log = open(&sim);
            }
            _ => {
                sim = sim.crash(rng.below(300) as usize, rng.below(2) == 0);
                drop(log);
                log = open(&sim);
            }
        }
    }
    for (p, want) in model.iter().enumerate() {
        assert_eq!(&crate::common::values(&log, "t", p as u32), want);
    }
    Ok(())
}
