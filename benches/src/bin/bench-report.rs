//! Prints one line per side-by-side comparison from the criterion results of the last
//! `cargo bench -p heartgate-benches` run: `name  heartgate_ops_per_s  peer_ops_per_s
//! ratio  target`. Each criterion group holds a `heartgate/...` benchmark and one or more
//! peers measured in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Targets from the foundation issue: (group, peer function, minimum ratio).
const TARGETS: &[(&str, &str, f64)] = &[
    ("ES256_issue", "ring", 0.90),
    ("ES256_validate", "ring", 0.90),
    ("ES256_validate", "jsonwebtoken", 1.00),
    ("EdDSA_issue", "ring", 0.90),
    ("EdDSA_validate", "ring", 0.90),
    ("EdDSA_validate", "jsonwebtoken", 1.00),
    ("cache_hit_2threads", "bare_dashmap", 0.80),
];

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.ends_with("new") && p.join("estimates.json").is_file() {
                out.push(p);
            } else {
                collect(&p, out);
            }
        }
    }
}

fn read(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// (group, function id, value) → operations per second.
fn ops_per_second(dir: &Path) -> Option<(String, String, String, f64)> {
    let bench = read(&dir.join("benchmark.json"))?;
    let est = read(&dir.join("estimates.json"))?;
    let mean_ns = est["mean"]["point_estimate"].as_f64()?;
    let elements = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
    Some((
        bench["group_id"].as_str()?.to_owned(),
        bench["function_id"].as_str().unwrap_or("").to_owned(),
        bench["value_str"].as_str().unwrap_or("").to_owned(),
        elements * 1e9 / mean_ns,
    ))
}

fn main() {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion");
    let mut dirs = Vec::new();
    collect(&root, &mut dirs);
    let mut groups: BTreeMap<String, Vec<(String, String, f64)>> = BTreeMap::new();
    for d in dirs {
        if let Some((g, f, v, ops)) = ops_per_second(&d) {
            groups.entry(g).or_default().push((f, v, ops));
        }
    }
    if groups.is_empty() {
        eprintln!(
            "no criterion results under {}; run `cargo bench -p heartgate-benches` first",
            root.display()
        );
        std::process::exit(1);
    }
    println!(
        "{:<44} {:>20} {:>16} {:>7}  target",
        "name", "heartgate_ops_per_s", "peer_ops_per_s", "ratio"
    );
    let mut missed = 0;
    for (group, benches) in &groups {
        let Some((_, hv, h)) = benches.iter().find(|(f, _, _)| f == "heartgate") else {
            continue;
        };
        for (f, v, p) in benches.iter().filter(|(f, _, _)| f != "heartgate") {
            let ratio = h / p;
            let target = TARGETS
                .iter()
                .find(|(g, peer, _)| g == group && peer == f)
                .map(|(_, _, min)| {
                    if ratio >= *min {
                        format!(">= {min:.2} ok")
                    } else {
                        missed += 1;
                        format!(">= {min:.2} MISSED")
                    }
                })
                .unwrap_or_default();
            let name = format!("{group}: {hv} vs {f}/{v}");
            println!("{name:<44} {h:>20.0} {p:>16.0} {ratio:>7.2}  {target}");
        }
    }
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
}
