//! The tables (Markdown, into `docs/benchmarks.md` between the compare markers) and the chart
//! of ratios (`docs/compare.png`).

use std::fmt::Write as _;
use std::path::Path;

use crate::workload::{BATCH, BATCHES, SINGLES};
use crate::{MODES, Results};

const BEGIN: &str =
    "<!-- compare:begin (written by crates/pheap-compare; edits here are overwritten) -->";
const END: &str = "<!-- compare:end -->";
const PEERS: [&str; 4] = ["LMDB", "redb", "sled", "HashMap"];
const MIB: f64 = 1048576.0;

/// Median and spread of a set of samples.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    /// Bounds of the spread: the whole range for fewer than [`QUARTILES_FROM`] samples, else
    /// the quartiles (one stall of a shared machine should not hide how tight twenty other
    /// samples are).
    low: f64,
    high: f64,
}

const QUARTILES_FROM: usize = 8;

fn stat(mut xs: Vec<f64>) -> Option<Stat> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (xs.len() - 1) as f64;
        let i = pos.floor() as usize;
        xs[i] + (xs[(i + 1).min(xs.len() - 1)] - xs[i]) * pos.fract()
    };
    let (low, high) =
        if xs.len() < QUARTILES_FROM { (xs[0], xs[xs.len() - 1]) } else { (at(0.25), at(0.75)) };
    Some(Stat { median: at(0.5), low, high })
}

impl Stat {
    /// Half the spread as a share of the median: the ± beside each figure.
    fn spread(&self) -> f64 {
        (self.high - self.low) / 2.0 / self.median.max(f64::MIN_POSITIVE) * 100.0
    }
}

/// A workload figure of `store` in `mode` (the in-memory map stands for both modes).
fn run_stat(r: &Results, store: &str, mode: &str, key: &str) -> Option<Stat> {
    let mode = if store == "HashMap" { MODES[0] } else { mode };
    let runs = r.runs.get(&format!("{store}/{mode}"))?;
    stat(runs.iter().filter_map(|f| f.get(key).copied()).collect())
}

/// Open plus first get, measured in the child.
fn resume_stat(r: &Results, key: &str, part: fn(&crate::resume::Sample) -> f64) -> Option<Stat> {
    stat(r.resume.get(key)?.iter().map(part).collect())
}

fn open_get(s: &crate::resume::Sample) -> f64 {
    s.open + s.get
}

fn secs(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.2} s")
    } else if x >= 1e-3 {
        format!("{:.1} ms", x * 1e3)
    } else if x >= 1e-6 {
        format!("{:.1} us", x * 1e6)
    } else {
        format!("{:.0} ns", x * 1e9)
    }
}

fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 10.0 {
        format!("{x:.1}x")
    } else if x >= 0.01 {
        format!("{x:.2}x")
    } else {
        format!("{x:.1e}x")
    }
}

struct Phase {
    key: &'static str,
    name: String,
    /// Operations the phase's time is divided by for the per-operation figure.
    ops: usize,
    unit: &'static str,
}

fn phases(n: usize) -> Vec<Phase> {
    let total = n + SINGLES + BATCHES * BATCH;
    let p = |key, name: String, ops, unit| Phase { key, name, ops, unit };
    vec![
        p("bulk_load", format!("bulk load, {n} keys in one transaction"), n, "key"),
        p("single", format!("{SINGLES} single-key transactions"), SINGLES, "txn"),
        p("batch", format!("{BATCHES} transactions of {BATCH} keys"), BATCHES * BATCH, "key"),
        p("len", "len()".into(), 1, "call"),
        p("read_1t", format!("random reads of all {total} keys, 1 thread"), total, "key"),
        p("read_2t", "same, 2 threads (wall time)".into(), total, "key"),
        p("remove", format!("remove {} keys in one transaction", n / 2), n / 2, "key"),
    ]
}

fn times_table(r: &Results, mode: &str, out: &mut String) {
    let stores: Vec<&str> = ["pheap"].into_iter().chain(PEERS).collect();
    let _ = writeln!(out, "| {mode} | {} |", stores.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(stores.len()));
    for phase in phases(r.n) {
        let base = run_stat(r, "pheap", mode, phase.key);
        let _ = write!(out, "| {} |", phase.name);
        for store in &stores {
            let Some(s) = run_stat(r, store, mode, phase.key) else {
                out.push_str(" - |");
                continue;
            };
            let _ = write!(out, " {}", secs(s.median));
            if phase.ops > 1 {
                let _ = write!(out, "<br>{}/{}", secs(s.median / phase.ops as f64), phase.unit);
            }
            let _ = write!(out, " ±{:.0}%", s.spread());
            if let (Some(b), false) = (base, *store == "pheap") {
                let _ = write!(out, "<br>**{}**", ratio(s.median / b.median));
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
}

fn sizes_table(r: &Results, out: &mut String) {
    let stores = ["pheap", "LMDB", "redb", "sled"];
    let _ = writeln!(out, "| files, MiB (mode) | {} |", stores.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(stores.len()));
    let rows = [
        ("after the load", "size_load"),
        ("after the writes", "size_writes"),
        ("after the removals", "size_removals"),
    ];
    for mode in MODES {
        for (name, key) in rows {
            let base = run_stat(r, "pheap", mode, key);
            let _ = write!(out, "| {name} ({mode}) |");
            for store in stores {
                match (run_stat(r, store, mode, key), base) {
                    (Some(s), Some(b)) if store != "pheap" => {
                        let _ = write!(
                            out,
                            " {:.1}<br>**{}** |",
                            s.median / MIB,
                            ratio(s.median / b.median)
                        );
                    }
                    (Some(s), _) => {
                        let _ = write!(out, " {:.1} |", s.median / MIB);
                    }
                    _ => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
    }
    let _ = write!(out, "| peak RSS of the run, MiB (durable) |");
    for store in stores.iter().copied().chain(["HashMap"]) {
        if store == "HashMap" {
            break;
        }
        match run_stat(r, store, MODES[0], "rss") {
            Some(s) => {
                let _ = write!(out, " {:.0} |", s.median / MIB);
            }
            None => out.push_str(" - |"),
        }
    }
    out.push('\n');
    if let Some(s) = run_stat(r, "HashMap", MODES[0], "rss") {
        let _ = writeln!(
            out,
            "\nThe in-memory HashMap's peak RSS for the same data: {:.0} MiB.",
            s.median / MIB
        );
    }
}

fn resume_table(r: &Results, out: &mut String) {
    let stores = ["pheap", "LMDB", "redb", "sled"];
    let _ =
        writeln!(out, "| spawn → first get (open + get in the child) | {} |", stores.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(stores.len()));
    for (label, _, k, v) in &r.resume_sizes {
        for temp in ["warm", "cold"] {
            let _ = write!(out, "| {label} entries ({k}+{v} B), {temp} |");
            let base = resume_stat(r, &format!("pheap/{label}/{temp}"), open_get);
            for store in stores {
                let key = format!("{store}/{label}/{temp}");
                let (Some(total), Some(og)) =
                    (resume_stat(r, &key, |s| s.total), resume_stat(r, &key, open_get))
                else {
                    out.push_str(" - |");
                    continue;
                };
                let _ = write!(
                    out,
                    " {} ±{:.0}%<br>({} ±{:.0}%)",
                    secs(total.median),
                    total.spread(),
                    secs(og.median),
                    og.spread()
                );
                if let (Some(b), false) = (base, store == "pheap") {
                    let _ = write!(out, "<br>**{}**", ratio(og.median / b.median));
                }
                out.push_str(" |");
            }
            out.push('\n');
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "\n{note}");
    }
    if let Some(f) = resume_stat(r, "floor", |s| s.total) {
        let _ = writeln!(
            out,
            "\nSpawn floor (this program started with nothing to open, to its first line): {} ±{:.0}%.",
            secs(f.median),
            f.spread()
        );
    }
}

fn cold_reads_table(r: &Results, out: &mut String) {
    let stores = ["pheap", "LMDB", "redb", "sled"];
    let _ = writeln!(out, "| size | {} |", stores.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(stores.len()));
    let Some((label, n, k, v)) = r.resume_sizes.first() else { return };
    let get = |store: &str| stat(r.cold_reads.get(&format!("{store}/{label}"))?.clone());
    let _ = write!(out, "| {n} entries ({k}+{v} B) |");
    let base = get("pheap");
    for store in stores {
        let Some(s) = get(store) else {
            out.push_str(" - |");
            continue;
        };
        let _ = write!(out, " {} ±{:.0}%", secs(s.median), s.spread());
        if let (Some(b), false) = (&base, store == "pheap") {
            let _ = write!(out, "<br>**{}**", ratio(s.median / b.median));
        }
        out.push_str(" |");
    }
    out.push('\n');
}

struct Target {
    what: &'static str,
    goal: f64,
    measured: Option<f64>,
    /// The goal is a floor (a speed-up), not a ceiling.
    at_least: bool,
}

/// Median concurrent durable commits per second of `store` with `n` committers of `kind`.
fn commits_stat(r: &Results, store: &str, kind: &str, n: usize) -> Option<Stat> {
    stat(r.committers.get(&format!("{store}/{kind}/{n}"))?.clone())
}

fn ratio_of(r: &Results, mode: &str, key: &str, peer: &str) -> Option<f64> {
    Some(run_stat(r, "pheap", mode, key)?.median / run_stat(r, peer, mode, key)?.median)
}

fn targets(r: &Results) -> Vec<Target> {
    let t = |what, goal, measured| Target { what, goal, measured, at_least: false };
    let floor = |what, goal, measured| Target { what, goal, measured, at_least: true };
    let d = MODES[0];
    let resume = |label: &str, temp: &str, store: &str| {
        resume_stat(r, &format!("{store}/{label}/{temp}"), open_get).map(|s| s.median)
    };
    let (small, large) = match r.resume_sizes.as_slice() {
        [a, b, ..] => (a.0.clone(), b.0.clone()),
        _ => (String::new(), String::new()),
    };
    let growth = |temp: &str| Some(resume(&large, temp, "pheap")? / resume(&small, temp, "pheap")?);
    let vs_lmdb = |temp: &str| Some(resume(&large, temp, "pheap")? / resume(&large, temp, "LMDB")?);
    let cold = |store: &str| stat(r.cold_reads.get(&format!("{store}/{small}"))?.clone());
    let cold_vs = |peer: &str| Some(cold("pheap")?.median / cold(peer)?.median);
    // pheap's time (or size) over a peer's, in a mode: (what, at most, mode, figure, peer).
    // Targets of the write-path issue (16); the earlier ones it raised.
    const RATIOS: [(&str, f64, usize, &str, &str); 13] = [
        ("random reads, 1 thread / LMDB", 0.35, 0, "read_1t", "LMDB"),
        ("random reads, 1 thread / HashMap", 1.0, 0, "read_1t", "HashMap"),
        ("random reads, 2 threads / LMDB", 0.35, 0, "read_2t", "LMDB"),
        ("random reads, 2 threads / HashMap", 1.0, 0, "read_2t", "HashMap"),
        ("bulk load / HashMap, durable (batch API)", 1.0, 0, "bulk_load", "HashMap"),
        ("bulk load / LMDB, no-sync", 0.6, 1, "bulk_load", "LMDB"),
        ("batch writes / LMDB, durable", 0.4, 0, "batch", "LMDB"),
        ("batch writes / LMDB, no-sync", 0.4, 1, "batch", "LMDB"),
        ("removals / LMDB, durable", 0.5, 0, "remove", "LMDB"),
        ("removals / LMDB, no-sync", 0.5, 1, "remove", "LMDB"),
        ("durable single-key commit / redb", 0.6, 0, "single", "redb"),
        ("no-sync single-key commit / LMDB", 0.15, 1, "single", "LMDB"),
        ("file after the load / LMDB", 0.8, 0, "size_load", "LMDB"),
    ];
    let commits = |store: &str, n: usize| commits_stat(r, store, "threads", n).map(|s| s.median);
    let group_own = commits("pheap", 8).zip(commits("pheap", 1)).map(|(a, b)| a / b);
    let group_vs = |peer: &str| commits("pheap", 8).zip(commits(peer, 8)).map(|(a, b)| a / b);
    let mut out: Vec<Target> = RATIOS
        .iter()
        .map(|&(what, goal, mode, key, peer)| t(what, goal, ratio_of(r, MODES[mode], key, peer)))
        .collect();
    out.extend([
        t(
            "pheap's file after the removals / after the writes",
            1.0,
            run_stat(r, "pheap", d, "size_removals")
                .zip(run_stat(r, "pheap", d, "size_writes"))
                .map(|(a, b)| a.median / b.median),
        ),
        t("resume warm, open + get: largest / smallest size", 1.1, growth("warm")),
        t("resume cold, open + get: largest / smallest size", 1.1, growth("cold")),
        t("resume warm at the largest size / LMDB", 1.0, vs_lmdb("warm")),
        t("resume cold at the largest size / LMDB", 1.0, vs_lmdb("cold")),
        t("cold random reads of every key, smallest size / LMDB", 0.8, cold_vs("LMDB")),
        floor("durable commits/s, 8 threads / pheap's 1 thread", 4.0, group_own),
        floor("durable commits/s, 8 threads / LMDB's 8 threads", 3.0, group_vs("LMDB")),
        floor("durable commits/s, 8 threads / redb's 8 threads", 3.0, group_vs("redb")),
    ]);
    out
}

fn committers_table(r: &Results, out: &mut String) {
    let stores = ["pheap", "LMDB", "redb", "sled"];
    let _ = writeln!(out, "| committers | {} |", stores.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(stores.len()));
    for kind in ["threads", "processes"] {
        for n in crate::committers::COUNTS {
            let _ = write!(out, "| {n} {kind} |");
            let base = commits_stat(r, "pheap", kind, n);
            for store in stores {
                let Some(s) = commits_stat(r, store, kind, n) else {
                    out.push_str(" - |");
                    continue;
                };
                let _ = write!(out, " {:.0} ±{:.0}%", s.median, s.spread());
                if let (Some(b), false) = (base, store == "pheap") {
                    // Above 1: pheap commits more per second.
                    let _ = write!(out, "<br>**{}**", ratio(b.median / s.median));
                }
                out.push_str(" |");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "\nEach committer makes durable single-key transactions (24-byte key, 150-byte value) \
         into a fresh store for the whole time; figures are commits per second of all of them \
         together, and in bold pheap's rate as a multiple of the peer's. redb and sled open a \
         store in one process at a time: they have thread rows only."
    );
}

pub fn write(r: &Results, docs: &Path) {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(
        out,
        "Reproduce: `{}` ({}, {} sample{} per figure; each sample of each store in a fresh \
         process, stores in turn). Median of the samples, ±half their range (their \
         interquartile range from {QUARTILES_FROM} samples up) as a share of the median, and in bold each peer's time as a multiple of pheap's in the same run \
         (above 1: pheap is faster). Chart: [compare.png](compare.png); raw samples: \
         [compare.json](compare.json).\n",
        r.command,
        r.date,
        r.samples,
        if r.samples == 1 { "" } else { "s" }
    );
    let _ = writeln!(out, "Machine: {}.\n", r.machine.join("; "));
    let versions: Vec<String> = r.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "Crates: {}.\n", versions.join(", "));
    let _ = writeln!(out, "### Targets\n");
    let _ = writeln!(out, "| pheap / peer | target | measured | |\n|---|---:|---:|---|");
    for t in targets(r) {
        let (measured, verdict) = match t.measured {
            Some(m) if (m >= t.goal) == t.at_least || m == t.goal => (ratio(m), "met"),
            Some(m) => (ratio(m), "**missed**"),
            None => ("-".into(), "not measured"),
        };
        let sign = if t.at_least { "≥" } else { "≤" };
        let _ = writeln!(out, "| {} | {sign} {} | {measured} | {verdict} |", t.what, ratio(t.goal));
    }
    for mode in MODES {
        let _ = writeln!(out, "\n### Times, {mode}\n");
        times_table(r, mode, &mut out);
    }
    if !r.committers.is_empty() {
        let _ =
            writeln!(out, "\n### Concurrent durable commits (group commit), commits per second\n");
        committers_table(r, &mut out);
    }
    let _ = writeln!(out, "\n### Files and memory\n");
    sizes_table(r, &mut out);
    if !r.resume_sizes.is_empty() {
        let _ = writeln!(out, "\n### Resume: a fresh process opens the store and gets one key\n");
        resume_table(r, &mut out);
    }
    if !r.cold_reads.is_empty() {
        let _ = writeln!(
            out,
            "\n### Cold random reads: a fresh process opens the store, its files evicted from the page cache, and reads every key in random order\n"
        );
        cold_reads_table(r, &mut out);
    }
    let _ = writeln!(out, "\n![pheap against its peers](compare.png)\n");
    let _ = write!(out, "{END}");

    let path = docs.join("benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let doc = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{out}{}", &doc[..b], &doc[e + END.len()..]),
        _ => format!("{doc}\n## Against the peers\n\n{out}\n"),
    };
    std::fs::write(&path, doc).unwrap();
    if let Err(e) = chart(r, &docs.join("compare.png")) {
        eprintln!("chart not drawn: {e}");
    }
}

/// Bars of each peer's figure as a multiple of pheap's, log scale, one group per phase.
fn chart(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| "DejaVuSans.ttf is not a usable font")?;

    let (d, ns) = (MODES[0], MODES[1]);
    let large = r.resume_sizes.last().map(|s| s.0.clone()).unwrap_or_default();
    type Get<'a> = Box<dyn Fn(&str) -> Option<f64> + 'a>;
    let ws = |mode: &'static str, key: &'static str| -> Get<'_> {
        Box::new(move |s: &str| run_stat(r, s, mode, key).map(|x| x.median))
    };
    let rs = |temp: &'static str| -> Get<'_> {
        let large = large.clone();
        Box::new(move |s: &str| {
            resume_stat(r, &format!("{s}/{large}/{temp}"), open_get).map(|x| x.median)
        })
    };
    let groups: Vec<(&str, Get)> = vec![
        ("bulk load|durable", ws(d, "bulk_load")),
        ("1-key txn|durable", ws(d, "single")),
        ("1-key txn|no-sync", ws(ns, "single")),
        ("1000-key txn|durable", ws(d, "batch")),
        ("1000-key txn|no-sync", ws(ns, "batch")),
        ("reads|1 thread", ws(d, "read_1t")),
        ("reads|2 threads", ws(d, "read_2t")),
        ("removals|durable", ws(d, "remove")),
        ("file after|load", ws(d, "size_load")),
        ("file after|removals", ws(d, "size_removals")),
        ("resume warm|largest size", rs("warm")),
        ("resume cold|largest size", rs("cold")),
    ];
    let mut bars = Vec::new(); // (group, peer index, ratio)
    for (g, (_, get)) in groups.iter().enumerate() {
        let Some(base) = get("pheap") else { continue };
        for (p, peer) in PEERS.iter().enumerate() {
            if let Some(x) = get(peer) {
                bars.push((g, p, x / base));
            }
        }
    }
    let lo = bars.iter().map(|b| b.2).fold(1.0f64, f64::min) / 1.5;
    let hi = bars.iter().map(|b| b.2).fold(1.0f64, f64::max) * 1.5;

    let root = BitMapBackend::new(path, (1400, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("Each peer's time or size as a multiple of pheap's (log scale; above 1: pheap ahead), N = {}", r.n),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups.len() as f64, (lo..hi).log_scale())?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("peer / pheap")
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(127, 127, 127),
    ];
    for (p, peer) in PEERS.iter().enumerate() {
        let color = colors[p];
        c.draw_series(bars.iter().filter(|b| b.1 == p).map(|&(g, p, x)| {
            let left = g as f64 + 0.1 + p as f64 * 0.2;
            Rectangle::new([(left, lo), (left + 0.18, x)], color.filled())
        }))?
        .label(*peer)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    c.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (groups.len() as f64, 1.0)],
        BLACK.stroke_width(2),
    )))?
    .label("pheap = 1")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(2)));
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    let style = TextStyle::from(("sans-serif", 14)).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Top,
    ));
    for (g, (name, _)) in groups.iter().enumerate() {
        let (x, y) = c.backend_coord(&(g as f64 + 0.5, lo));
        for (i, line) in name.split('|').enumerate() {
            root.draw(&Text::new(line.to_string(), (x, y + 6 + 16 * i as i32), style.clone()))?;
        }
    }
    root.present()?;
    Ok(())
}

/// What the tables say about the machine.
pub fn machine(scratch: &Path) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let fs = crate::shell(&format!("stat -f -c %T {}", scratch.display()));
    let rustc = crate::shell("rustc --version");
    vec![
        format!("{cpus} x {model}"),
        format!("{:.0} GiB RAM", mem_kib / MIB),
        format!("Linux {}", kernel.trim()),
        format!("{fs} ({})", scratch.display()),
        rustc,
    ]
}

/// Versions of the stores as locked in the workspace's Cargo.lock.
pub fn versions() -> Vec<(String, String)> {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let lock = std::fs::read_to_string(lock).unwrap_or_default();
    let mut out = Vec::new();
    for name in ["pheap", "heed", "lmdb-master-sys", "redb", "sled"] {
        let needle = format!("name = \"{name}\"\nversion = \"");
        if let Some(i) = lock.find(&needle) {
            let rest = &lock[i + needle.len()..];
            out.push((name.to_string(), rest[..rest.find('"').unwrap_or(0)].to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_range_below_eight_samples_and_the_quartiles_from_eight() {
        let s = stat(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.low, s.high), (2.0, 1.0, 3.0));
        // One stall among eleven tight samples does not widen the spread.
        let mut xs = vec![10.0; 10];
        xs.push(1000.0);
        let s = stat(xs).unwrap();
        assert_eq!((s.median, s.low, s.high), (10.0, 10.0, 10.0));
        let s = stat((1..=9).map(f64::from).collect()).unwrap();
        assert_eq!((s.median, s.low, s.high), (5.0, 3.0, 7.0));
        assert!(stat(Vec::new()).is_none());
    }
}
