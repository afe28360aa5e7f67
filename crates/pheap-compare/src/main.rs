//! pheap against its peers on one workload, in one run:
//!
//! ```text
//! cargo run --release -p pheap-compare            # full: N = 1,000,000, resume at 1M and 10M
//! cargo run --release -p pheap-compare -- --quick # N = 100,000, resume at 100k and 1M
//! ```
//!
//! Every sample of every store runs in a fresh child process of this program (so each store's
//! peak memory is its own and no store warms another's caches), stores in turn within each
//! sample so that the machine's drift spreads over all of them. Writes the tables into
//! `docs/benchmarks.md` (between the `compare` markers), the chart to `docs/compare.png` and
//! the raw samples to `docs/compare.json`; `--report FILE.json` redraws them from saved samples.

// Opening LMDB (heed) and dropping the page cache (posix_fadvise) are unsafe calls; each says why
// it is sound where it is made.
#![allow(unsafe_code)]

mod committers;
mod data;
mod report;
mod resume;
mod stores;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::resume::Sample;
use crate::stores::STORES;
use crate::workload::Figures;

/// Everything one run measured, as saved in `docs/compare.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub command: String,
    pub date: String,
    pub machine: Vec<String>,
    pub versions: Vec<(String, String)>,
    pub n: usize,
    pub samples: usize,
    /// Workload figures by `store/mode`, one per sample.
    pub runs: BTreeMap<String, Vec<Figures>>,
    /// Resume sizes: label, entries, key bytes, value bytes.
    pub resume_sizes: Vec<(String, usize, usize, usize)>,
    /// Resume samples by `store/size/warm|cold`, and `floor`.
    pub resume: BTreeMap<String, Vec<Sample>>,
    /// Seconds to build each resume store (`store/size`), for context.
    pub builds: BTreeMap<String, f64>,
    /// What was left out of this run, and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Concurrent durable commits per second by `store/threads|processes/N`, one per sample.
    #[serde(default)]
    pub committers: BTreeMap<String, Vec<f64>>,
    /// Seconds to read every key in random order in a fresh process, the store's files evicted
    /// from the page cache first, by `store/size` (the first resume size), one per sample.
    #[serde(default)]
    pub cold_reads: BTreeMap<String, Vec<f64>>,
}

pub const MODES: [&str; 2] = ["durable", "no-sync"];

struct Options {
    quick: bool,
    samples: usize,
    stores: Vec<String>,
    resume: bool,
    workload: bool,
    commits: bool,
    scratch: PathBuf,
    docs: PathBuf,
    report: Option<PathBuf>,
    sled_large: bool,
}

fn parse_options(args: &[String]) -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut o = Options {
        quick: false,
        samples: 0,
        stores: STORES.iter().map(|s| s.to_string()).collect(),
        resume: true,
        workload: true,
        commits: true,
        scratch: std::env::temp_dir().join("pheap-compare"),
        docs: root.join("docs"),
        report: None,
        sled_large: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(arg)).clone();
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--samples" => o.samples = value().parse().unwrap_or_else(|_| usage(arg)),
            "--stores" => o.stores = value().split(',').map(str::to_string).collect(),
            "--no-resume" => o.resume = false,
            "--resume-only" => {
                o.workload = false;
                o.commits = false;
            }
            "--no-commits" => o.commits = false,
            "--commits-only" => {
                o.workload = false;
                o.resume = false;
            }
            "--scratch" => o.scratch = value().into(),
            "--docs" => o.docs = value().into(),
            "--report" => o.report = Some(value().into()),
            "--sled-large" => o.sled_large = true,
            _ => usage(arg),
        }
    }
    if o.samples == 0 {
        o.samples = if o.quick { 3 } else { 5 };
    }
    for s in &o.stores {
        if !STORES.contains(&s.as_str()) {
            usage(s);
        }
    }
    o
}

fn usage(arg: &str) -> ! {
    eprintln!(
        "unexpected argument {arg}\n\
         usage: pheap-compare [--quick] [--samples K] [--stores pheap,LMDB,redb,sled,HashMap]\n\
         \x20                    [--no-resume | --resume-only] [--scratch DIR] [--docs DIR]\n\
         \x20                    [--report SAVED.json] [--sled-large]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__run") => return child_run(&args[1..]),
        Some("__build") => return child_build(&args[1..]),
        Some("__resume") => return child_resume(&args[1..]),
        Some("__cold_reads") => return child_cold_reads(&args[1..]),
        Some("__commit") => return child_commit(&args[1..]),
        Some("__commit_threads") => return child_commit_threads(&args[1..]),
        Some("__floor") => {
            println!("0 0");
            return;
        }
        _ => {}
    }
    let options = parse_options(&args);
    let results = match &options.report {
        Some(saved) => serde_json::from_slice(&std::fs::read(saved).unwrap()).unwrap(),
        None => {
            let results = measure(&options, &args);
            save(&results, &options.docs);
            results
        }
    };
    report::write(&results, &options.docs);
    eprintln!("wrote {}", options.docs.join("benchmarks.md").display());
}

fn measure(o: &Options, args: &[String]) -> Results {
    let n = if o.quick { 100_000 } else { 1_000_000 };
    std::fs::create_dir_all(&o.scratch).unwrap();
    let mut results = Results {
        command: std::iter::once("cargo run --release -p pheap-compare --")
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches(" --")
            .to_string(),
        date: shell("date -u '+%Y-%m-%d %H:%M UTC'"),
        machine: report::machine(&o.scratch),
        versions: report::versions(),
        n,
        samples: o.samples,
        runs: BTreeMap::new(),
        resume_sizes: Vec::new(),
        resume: BTreeMap::new(),
        builds: BTreeMap::new(),
        notes: Vec::new(),
        committers: BTreeMap::new(),
        cold_reads: BTreeMap::new(),
    };
    if o.workload {
        for sample in 0..o.samples {
            for store in &o.stores {
                // The in-memory map has no sync to skip: one run stands for both modes.
                let modes: &[&str] = if store == "HashMap" { &MODES[..1] } else { &MODES };
                for mode in modes {
                    let dir = fresh_dir(&o.scratch, &format!("run-{store}-{mode}"));
                    let out = Command::new(std::env::current_exe().unwrap())
                        .args(["__run", store, mode, &n.to_string()])
                        .arg(&dir)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{store} {mode} failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let figures: Figures = serde_json::from_slice(&out.stdout).unwrap();
                    eprintln!(
                        "sample {}/{} {store:8} {mode:8} load {:.2} s, reads {:.2} s",
                        sample + 1,
                        o.samples,
                        figures["bulk_load"],
                        figures["read_1t"]
                    );
                    results.runs.entry(format!("{store}/{mode}")).or_default().push(figures);
                    std::fs::remove_dir_all(&dir).unwrap();
                }
            }
        }
    }
    if o.commits {
        save(&results, &o.docs);
        measure_committers(o, &mut results);
    }
    if o.resume {
        save(&results, &o.docs); // the workload's samples survive a failure in what follows
        measure_resume(o, &mut results);
    }
    results
}

/// Concurrent durable commits: every store, every count, threads and (where the store allows
/// it) processes; stores in turn within each sample, each run in a fresh directory.
fn measure_committers(o: &Options, results: &mut Results) {
    let secs = if o.quick { 1.0 } else { 2.0 };
    for sample in 0..o.samples {
        for store in o.stores.iter().filter(|s| *s != "HashMap") {
            for n in committers::COUNTS {
                for kind in ["threads", "processes"] {
                    if kind == "processes" && !committers::multi_process(store) {
                        continue;
                    }
                    let dir = fresh_dir(&o.scratch, &format!("commit-{store}"));
                    let rate = if kind == "threads" {
                        let out = Command::new(std::env::current_exe().unwrap())
                            .args(["__commit_threads", store, &n.to_string(), &secs.to_string()])
                            .arg(&dir)
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "{store} committers failed");
                        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap()
                    } else {
                        committers::processes(store, &dir, n, secs)
                    };
                    eprintln!(
                        "sample {}/{} {store:6} {n} {kind:9} {rate:8.0} durable commits/s",
                        sample + 1,
                        o.samples
                    );
                    results.committers.entry(format!("{store}/{kind}/{n}")).or_default().push(rate);
                    std::fs::remove_dir_all(&dir).unwrap();
                }
            }
        }
    }
}

fn save(results: &Results, docs: &Path) {
    std::fs::create_dir_all(docs).unwrap();
    let json = serde_json::to_string_pretty(results).unwrap();
    std::fs::write(docs.join("compare.json"), json).unwrap();
}

fn measure_resume(o: &Options, results: &mut Results) {
    results.resume_sizes = if o.quick {
        vec![("100k".into(), 100_000, 24, 150), ("1M".into(), 1_000_000, 16, 16)]
    } else {
        vec![("1M".into(), 1_000_000, 24, 150), ("10M".into(), 10_000_000, 16, 16)]
    };
    let (warm, cold) = if o.quick { (7, 5) } else { (21, 11) };
    let floor = (0..warm).map(|_| resume::spawn(&["__floor".into()])).collect();
    results.resume.insert("floor".into(), floor);
    for (label, n, key_len, value_len) in results.resume_sizes.clone() {
        for store in o.stores.iter().filter(|s| *s != "HashMap") {
            if store == "sled" && n > 1_000_000 && !o.sled_large {
                results.notes.push(format!(
                    "sled is left out of resume at {label} entries: building it grew sled 0.34 \
                     past 16 GiB of memory by 4M entries, and the kernel killed it at 24 GiB \
                     (`--sled-large` tries anyway)."
                ));
                continue;
            }
            let dir = fresh_dir(&o.scratch, &format!("resume-{store}-{label}"));
            let t = std::time::Instant::now();
            let ok = Command::new(std::env::current_exe().unwrap())
                .args(["__build", store])
                .arg(&dir)
                .args([n, key_len, value_len].map(|x| x.to_string()))
                .status()
                .unwrap();
            assert!(ok.success(), "building {store} {label}");
            let built = t.elapsed().as_secs_f64();
            results.builds.insert(format!("{store}/{label}"), built);
            let args = |j: u64| {
                vec![
                    "__resume".to_string(),
                    store.clone(),
                    dir.display().to_string(),
                    (data_index(j, n)).to_string(),
                    key_len.to_string(),
                    value_len.to_string(),
                ]
            };
            resume::spawn(&args(0)); // warms the page cache and the binary
            let warm_samples = (1..=warm).map(|j| resume::spawn(&args(j))).collect();
            let cold_samples = (1..=cold)
                .map(|j| {
                    resume::evict(&dir);
                    resume::spawn(&args(1000 + j))
                })
                .collect();
            results.resume.insert(format!("{store}/{label}/warm"), warm_samples);
            results.resume.insert(format!("{store}/{label}/cold"), cold_samples);
            if label == results.resume_sizes[0].0 {
                // Every key in random order, from a cold page cache: the read a restarted
                // server does when its whole working set is wanted back.
                let runs = (0..cold.div_ceil(2))
                    .map(|_| {
                        resume::evict(&dir);
                        let out = Command::new(std::env::current_exe().unwrap())
                            .args(["__cold_reads", store])
                            .arg(&dir)
                            .args([n, key_len, value_len].map(|x| x.to_string()))
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "cold reads of {store} {label}");
                        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap()
                    })
                    .collect::<Vec<f64>>();
                eprintln!("cold reads {store:6} {label:4} {runs:.2?} s");
                results.cold_reads.insert(format!("{store}/{label}"), runs);
            }
            eprintln!("resume {store:6} {label:4} built in {built:.1} s");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// The key a resume sample gets: spread over the store, the same for every store.
fn data_index(j: u64, n: usize) -> usize {
    (j.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as usize % n
}

fn fresh_dir(scratch: &Path, name: &str) -> PathBuf {
    let dir = scratch.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shell(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn child_run(args: &[String]) {
    let [store, mode, n, dir] = args else { panic!("__run STORE MODE N DIR") };
    let durable = mode == "durable";
    let n: usize = n.parse().unwrap();
    let figures = with_store!(store.as_str(), S => workload::run::<S>(Path::new(dir), durable, n));
    println!("{}", serde_json::to_string(&figures).unwrap());
}

fn child_build(args: &[String]) {
    let [store, dir, n, key_len, value_len] = args else {
        panic!("__build STORE DIR N KEY_LEN VALUE_LEN")
    };
    let p = |s: &String| s.parse::<usize>().unwrap();
    let (n, key_len, value_len) = (p(n), p(key_len), p(value_len));
    with_store!(store.as_str(), S => resume::build::<S>(Path::new(dir), n, key_len, value_len));
}

fn child_resume(args: &[String]) {
    let [store, dir, index, key_len, value_len] = args else {
        panic!("__resume STORE DIR INDEX KEY_LEN VALUE_LEN")
    };
    let p = |s: &String| s.parse::<usize>().unwrap();
    resume::child(store, Path::new(dir), p(index), p(key_len), p(value_len));
}

fn child_cold_reads(args: &[String]) {
    let [store, dir, n, key_len, value_len] = args else {
        panic!("__cold_reads STORE DIR N KEY_LEN VALUE_LEN")
    };
    let p = |s: &String| s.parse::<usize>().unwrap();
    let (n, key_len, value_len) = (p(n), p(key_len), p(value_len));
    let secs = with_store!(store.as_str(), S => resume::cold_reads::<S>(Path::new(dir), n, key_len, value_len));
    println!("{secs}");
}

fn child_commit(args: &[String]) {
    let [store, who, secs, dir] = args else { panic!("__commit STORE WHO SECS DIR") };
    let (who, secs) = (who.parse().unwrap(), secs.parse().unwrap());
    with_store!(store.as_str(), S => committers::process_child::<S>(Path::new(dir), who, secs));
}

fn child_commit_threads(args: &[String]) {
    let [store, n, secs, dir] = args else { panic!("__commit_threads STORE N SECS DIR") };
    let (n, secs) = (n.parse().unwrap(), secs.parse().unwrap());
    let rate = with_store!(store.as_str(), S => committers::threads::<S>(Path::new(dir), n, secs));
    println!("{rate}");
}
