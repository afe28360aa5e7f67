//! `pheap`: inspect, query, load, dump, check, copy and compact a heap file.
//!
//! Built on the library's public API only. Exit status: 0 success, 1 "no" (a missing key, an
//! unsound heap), 2 an error (one line on stderr).

#![forbid(unsafe_code)]

mod args;
mod dump;
mod python;

use args::*;
use dump::*;

use pheap::prelude::*;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pheap::{Durability, Error, Heap, Kind, Map, MapMut, WriteTxn};

/// What ends a command early: a "no" (status 1), an error (status 2), or a reader that went
/// away (`dump | head`: not an error).
pub(crate) enum Fail {
    No(String),
    Err(String),
    Pipe,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        match e {
            Error::Io(e) => e.into(),
            // Messages in the tool's words, not the library's calls.
            Error::Exists { path } => {
                Fail::Err(format!("{} exists; pass --force to replace it", path.display()))
            }
            Error::MultiPart { parts, .. } => Fail::Err(format!(
                "the value has {parts} out-of-line parts; `pheap dump` shows every part"
            )),
            Error::ReadersFull { max } => Fail::Err(format!(
                "all {max} reader slots are in use by live read transactions; retry once some end"
            )),
            e => Fail::Err(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Fail::Pipe;
        }
        Fail::Err(e.to_string())
    }
}

/// An I/O error on `path`, naming it.
pub(crate) fn at(path: &Path) -> impl Fn(std::io::Error) -> Fail + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Fail::Pipe,
        _ => Fail::Err(format!("{}: {e}", path.display())),
    }
}

pub(crate) type Res<T = ()> = Result<T, Fail>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::No(msg)) => {
            eprintln!("pheap: {msg}");
            ExitCode::from(1)
        }
        Err(Fail::Err(msg)) => {
            eprintln!("pheap: {msg}");
            ExitCode::from(2)
        }
        Err(Fail::Pipe) => ExitCode::SUCCESS,
    }
}

fn run(cli: Cli) -> Res {
    let quiet = cli.quiet;
    match cli.cmd {
        Cmd::Stat { file, map, json, enc } => stat(&file, &enc.decode_all(&map)?, json),
        Cmd::Get { at, enc, python } => get(at, &enc, python),
        Cmd::Put { at, value, value_file, enc, lock } => put(at, value, value_file, &enc, &lock),
        Cmd::Rm { at, enc, lock } => rm(at, &enc, &lock),
        Cmd::Keys { file, map, plain, enc, python } => keys(&file, &map, plain, python, &enc),
        Cmd::Count { file, map } => count(&file, &map),
        Cmd::Dump { file, output, python } => dump(&file, output.as_deref(), python, quiet),
        Cmd::Load { file, input, batch, lock } => {
            load(&file, input.as_deref(), batch, &lock, quiet)
        }
        Cmd::Check { file } => check(&file, quiet),
        Cmd::Copy { file, dest, force } => copy(&file, &dest, force, quiet),
        Cmd::Seal { file, dest } => seal(&file, &dest, quiet),
        Cmd::Publish { file, dest } => publish(&file, &dest, quiet),
        Cmd::Compact { file, lock } => compact(&file, &lock, quiet),
        Cmd::Prefetch { file, map } => prefetch(&file, &map, quiet),
        Cmd::Readers { file, json } => readers(&file, json),
    }
}

/// `pheap get`: one value to standard output.
fn get(at: Target, enc: &Encoding, python: bool) -> Res {
    let heap = open_read(&at.file)?;
    let (path, key) = at.resolve(enc)?;
    let rx = heap.begin_read()?;
    let Some(map) = rx.map_path(&path)? else {
        return Err(Fail::No(format!("no such map: {}", show_path(enc, &path))));
    };
    if python {
        let Some(v) = map.get_value(&key)? else {
            return Err(Fail::No(format!("key not found: {}", enc.show(&key))));
        };
        println!("{}", render(&v)?);
        return Ok(());
    }
    match map.get(&key)? {
        Some(v) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&enc.encode(v))?;
            if std::io::stdout().is_terminal() || enc.hex || enc.base64 {
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        None => Err(Fail::No(format!("key not found: {}", enc.show(&key)))),
    }
}

/// `pheap put`: one value, from the command line, a file or standard input.
fn put(
    mut at: Target,
    mut value: Option<String>,
    value_file: Option<PathBuf>,
    enc: &Encoding,
    lock: &Lock,
) -> Res {
    if at.key_file.is_some() && value.is_none() {
        // With --key-file, the first word after FILE is the value.
        value = at.key.take();
    }
    let (path, key) = at.resolve(enc)?;
    let value = match (value, value_file) {
        (_, Some(f)) => read_all(&f)?,
        (Some(v), None) if v != "-" => enc.decode(&v, "value")?,
        // A forgotten value would wait silently for a terminal's input.
        (None, None) if std::io::stdin().is_terminal() => {
            return Err(Fail::Err(
                "no VALUE: give it after the key, with --value-file, or on standard input (`-`)"
                    .into(),
            ));
        }
        _ => read_all(Path::new("-"))?,
    };
    let heap = open_write(&at.file, true)?;
    let mut tx = begin_write(&heap, &at.file, lock)?;
    tx.map_mut_path(&path)?.insert(&key, &value)?;
    tx.commit()?;
    Ok(())
}

/// `pheap rm`: one key.
fn rm(at: Target, enc: &Encoding, lock: &Lock) -> Res {
    let (path, key) = at.resolve(enc)?;
    let heap = open_write(&at.file, false)?;
    let mut tx = begin_write(&heap, &at.file, lock)?;
    if tx.map_path(&path)?.is_none() || !tx.map_mut_path(&path)?.remove(&key)? {
        return Err(Fail::No(format!("key not found: {}", enc.show(&key))));
    }
    tx.commit()?;
    Ok(())
}

/// `pheap keys`: the keys of a map, one per line.
fn keys(file: &Path, map: &[String], plain: bool, python: bool, enc: &Encoding) -> Res {
    let heap = open_read(file)?;
    let path = enc.decode_all(map)?;
    let rx = heap.begin_read()?;
    let Some(m) = rx.map_path(&path)? else {
        return Err(Fail::No(format!("no such map: {}", show_path(enc, &path))));
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for item in m.iter() {
        let (k, v) = item?;
        if python {
            out.write_all(python::key(k).as_bytes())?;
        } else {
            out.write_all(&enc.encode(k))?;
        }
        if v.kind() == Kind::Map && !plain {
            out.write_all(b"/")?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// `pheap count`: the entries of a map.
fn count(file: &Path, map: &[String]) -> Res {
    let heap = open_read(file)?;
    let rx = heap.begin_read()?;
    let path: Vec<Vec<u8>> = map.iter().map(|m| m.as_bytes().to_vec()).collect();
    match rx.map_path(&path)? {
        Some(m) => {
            println!("{}", m.len()?);
            Ok(())
        }
        None => Err(Fail::No(format!("no such map: {}", path_text(&path)))),
    }
}

/// `pheap prefetch`: the whole heap into the page cache, with progress; or one sub-map.
fn prefetch(file: &Path, map: &[String], quiet: bool) -> Res {
    let heap = open_read(file)?;
    let t = std::time::Instant::now();
    let (n, what) = if map.is_empty() {
        let bar = counter(quiet, Some(heap.stats()?.used_size), "prefetching (bytes)");
        let n = heap.prefetch_with(|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })?;
        bar.finish_and_clear();
        (n, file.display().to_string())
    } else {
        let rx = heap.begin_read()?;
        let path: Vec<Vec<u8>> = map.iter().map(|m| m.as_bytes().to_vec()).collect();
        let Some(m) = rx.map_path(&path)? else {
            return Err(Fail::No(format!("no such map: {}", path_text(&path))));
        };
        (m.prefetch()?, format!("{} {}", file.display(), path_text(&path)))
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{what}: {} in the page cache in {secs:.2} s ({}/s)",
        size(n),
        size((n as f64 / secs.max(1e-9)) as u64)
    );
    Ok(())
}

/// `pheap compact`: move records down and give the tail back.
fn compact(file: &Path, lock: &Lock, quiet: bool) -> Res {
    let heap = open_write(file, false)?;
    // Fail (or wait) now rather than in the middle: compaction takes the lock many times.
    drop(begin_write(&heap, file, lock)?);
    let bar = spinner(quiet, "compacting");
    let c = heap.compact()?;
    bar.finish_and_clear();
    println!(
        "{}: {} -> {} ({} moved in {} steps)",
        file.display(),
        size(c.file_size_before),
        size(c.file_size_after),
        size(c.moved_bytes),
        c.steps
    );
    if c.file_size_after > c.file_size_before {
        let held = heap.stats()?.held_by_readers;
        println!(
            "note: the file grew: records were moved while read transactions held the \
             space they left ({} now); it is reused, and the file shrinks, at later \
             commits once those readers end (`pheap readers` lists them)",
            size(held)
        );
    }
    Ok(())
}

/// Every byte of `path` (`-`: standard input).
fn read_all(path: &Path) -> Res<Vec<u8>> {
    let mut v = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut v)?;
    } else {
        v = std::fs::read(path).map_err(at(path))?;
    }
    Ok(v)
}

fn path_text(path: &[Vec<u8>]) -> String {
    path.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>().join(" / ")
}

fn show_path(enc: &Encoding, path: &[Vec<u8>]) -> String {
    path.iter().map(|k| enc.show(k)).collect::<Vec<_>>().join(" / ")
}

fn copy(file: &Path, dest: &Path, force: bool, quiet: bool) -> Res {
    let heap = open_read(file)?;
    let bar = spinner(quiet, "copying");
    if dest == Path::new("-") {
        // Built in a private directory, then streamed: standard output may be a pipe.
        let dir = std::env::temp_dir().join(format!(
            "pheap-copy-{}-{}",
            std::process::id(),
            heap.begin_read()?.txn_id()
        ));
        std::fs::create_dir(&dir)?;
        let tmp = dir.join("copy.pheap");
        let res = (|| -> Res {
            heap.copy_to(&tmp)?;
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut std::fs::File::open(&tmp)?, &mut out)?;
            out.flush()?;
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        bar.finish_and_clear();
        return res;
    }
    let s = if force { heap.copy_to_overwriting(dest) } else { heap.copy_to(dest) };
    bar.finish_and_clear();
    let s = s.map_err(|e| match e {
        Error::Refused { .. } if dest.is_symlink() => {
            Fail::Err(format!("{e} (`-` writes the copy to standard output)"))
        }
        e => e.into(),
    })?;
    if s.stale_removed > 0 && !quiet {
        eprintln!("removed {} temporary files left by killed copies", s.stale_removed);
    }
    println!(
        "copied {} entries (transaction {}) to {}: {}, {}",
        s.entries,
        s.source_txn_id,
        dest.display(),
        size(s.file_size),
        if s.by_pages { "by pages" } else { "rebuilt compactly" }
    );
    Ok(())
}

/// `pheap seal`: a sealed copy, and its digest.
fn seal(file: &Path, dest: &Path, quiet: bool) -> Res {
    let heap = open_read(file)?;
    let bar = spinner(quiet, "sealing");
    let s = heap.seal_to(dest);
    bar.finish_and_clear();
    let s = s?;
    println!(
        "sealed {} entries (transaction {}) to {}: {}, digest {}",
        s.entries,
        s.source_txn_id,
        dest.display(),
        size(s.file_size),
        pheap::digest_hex(&s.digest.unwrap_or_default())
    );
    Ok(())
}

/// `pheap publish`: a sealed copy and its manifest in a directory.
fn publish(file: &Path, dest: &str, quiet: bool) -> Res {
    let dir = match dest.split_once("://") {
        None => PathBuf::from(dest),
        Some(("file", path)) if path.starts_with('/') => PathBuf::from(path),
        Some(("file", _)) => {
            return Err(Fail::Err(format!(
                "DEST {dest}: a file:// URL takes an absolute path (file:///data/v1)"
            )));
        }
        Some((scheme, _)) => {
            return Err(Fail::Err(format!(
                "DEST {dest}: the CLI publishes to a directory (a path or file:// URL); publish \
                 to {scheme}:// from Python: pheap.publish(db, \"{dest}\")"
            )));
        }
    };
    let heap = open_read(file)?;
    let bar = spinner(quiet, "publishing");
    let p = heap.publish_to(&dir);
    bar.finish_and_clear();
    let p = p?;
    let what = match (p.file_written, p.manifest_written) {
        (false, false) => "already published there: nothing written",
        (false, true) => "its file was there already: manifest written",
        _ => "file and manifest written",
    };
    println!(
        "published {} entries to {}: {} ({}), digest {}; {what}",
        p.entries,
        dir.display(),
        p.file,
        size(p.size),
        pheap::digest_hex(&p.digest)
    );
    Ok(())
}

/// A line for each newer commit the heap passed over (empty in normal operation).
fn skipped_lines(skipped: &[pheap::SkippedCommit]) -> Vec<String> {
    skipped
        .iter()
        .map(|s| {
            let txn =
                s.txn_id.map_or("unreadable transaction".into(), |t| format!("transaction {t}"));
            format!("newer commit passed over: meta slot {} ({txn}): {}", s.slot, s.reason)
        })
        .collect()
}

fn open_read(file: &Path) -> Res<Heap> {
    // Read-only users work too (the library falls back to unregistered reading).
    Heap::options().create(false).read_only(true).open(file).map_err(|e| open_error(file, e))
}

fn open_write(file: &Path, create: bool) -> Res<Heap> {
    let opts = Heap::options().create(create).durability(Durability::Immediate).clone();
    opts.open(file).map_err(|e| open_error(file, e))
}

fn open_error(file: &Path, e: Error) -> Fail {
    match e {
        Error::NotFound { .. } => Fail::Err(format!("{}: no such heap file", file.display())),
        // The operating system's error, about this file (issue 24, item 12).
        Error::Io(e) => at(file)(e),
        e => e.into(),
    }
}

fn begin_write(heap: &Heap, file: &Path, lock: &Lock) -> Res<WriteTxn> {
    let began = match (lock.wait, lock.timeout) {
        (_, Some(s)) => {
            let d = Duration::try_from_secs_f64(s).map_err(|_| {
                Fail::Err(format!("--timeout takes a number of seconds >= 0, not {s}"))
            })?;
            heap.begin_write_timeout(d)
        }
        (true, None) => heap.begin_write(),
        (false, None) => heap.try_begin_write(),
    };
    match began {
        Err(Error::WriteInProgress) => {
            let who = heap.last_writer_pid().map_or(String::new(), |p| format!(" (process {p})"));
            let hint = match lock.timeout {
                Some(s) => format!("gave up after {s} s"),
                None => "retry, or pass --wait (and --timeout SECONDS)".into(),
            };
            Err(Fail::Err(format!("{} is locked by a writer{who}; {hint}", file.display())))
        }
        r => Ok(r?),
    }
}

fn size(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..0x10_0000 => format!("{:.1} KiB", b as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        _ => format!("{:.2} GiB", b as f64 / (1 << 30) as f64),
    }
}

fn spinner(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    // Drawn on standard error only when it is a terminal.
    let bar = ProgressBar::new_spinner().with_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn counter(quiet: bool, total: Option<u64>, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({eta})")
                .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.with_message(what.to_owned())
}

/// What one map holds, by kind.
#[derive(Default)]
struct MapSummary {
    entries: u64,
    bytes: u64,
    maps: u64,
    tagged: u64,
    with_parts: u64,
    parts: u64,
    value_bytes: u64,
}

fn summarise(map: Map<'_>) -> Res<MapSummary> {
    let mut s = MapSummary::default();
    for item in map.iter() {
        let (_, v) = item?;
        s.entries += 1;
        match v.kind() {
            Kind::Map => s.maps += 1,
            Kind::Tagged(_) => s.tagged += 1,
            _ => s.bytes += 1,
        }
        if v.part_count() > 0 {
            s.with_parts += 1;
            s.parts += v.part_count() as u64;
        }
        s.value_bytes += v.inline().len() as u64;
        for p in v.parts() {
            s.value_bytes += p?.len() as u64;
        }
    }
    Ok(s)
}

fn stat(file: &Path, path: &[Vec<u8>], json: bool) -> Res {
    let heap = open_read(file)?;
    if !path.is_empty() {
        let rx = heap.begin_read()?;
        let Some(map) = rx.map_path(path)? else {
            return Err(Fail::No(format!("no such map: {}", path_text(path))));
        };
        let m = summarise(map)?;
        if json {
            let v = serde_json::json!({
                "map": path.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
                "entries": m.entries, "bytes": m.bytes, "maps": m.maps, "tagged": m.tagged,
                "values_with_parts": m.with_parts, "parts": m.parts, "value_bytes": m.value_bytes,
            });
            println!("{v}");
            return Ok(());
        }
        println!("map               {}", path_text(path));
        println!("entries           {}", m.entries);
        println!("  bytes           {}", m.bytes);
        println!("  maps            {}", m.maps);
        println!("  tagged          {}", m.tagged);
        println!("with parts        {} ({} out-of-line parts)", m.with_parts, m.parts);
        println!("value bytes       {}", size(m.value_bytes));
        return Ok(());
    }
    let s = heap.stats()?;
    let readers = heap.readers()?;
    let writer = heap.writer_in_progress()?;
    if json {
        // The engine's figures as they are (`Stats` is `Serialize`), and what only the tool adds.
        let mut v = serde_json::to_value(&s).map_err(|e| Fail::Err(e.to_string()))?;
        v["file"] = file.display().to_string().into();
        v["writer_pid"] = writer.into();
        v["sealed_digest"] = heap.digest().map(|d| pheap::digest_hex(&d)).into();
        println!("{v}");
        return Ok(());
    }
    println!("file              {}", file.display());
    if let Some(d) = heap.digest() {
        println!("sealed            digest {} (read-only for good)", pheap::digest_hex(&d));
    }
    if s.format_version == pheap::FORMAT_VERSION {
        println!("format version    {}", s.format_version);
    } else {
        println!(
            "format version    {} (created by an older build; this one reads it and writes version-{} records into it)",
            s.format_version,
            pheap::FORMAT_VERSION
        );
    }
    println!("file size         {} ({} bytes)", size(s.file_size), s.file_size);
    println!("in use            {}", size(s.used_size));
    println!("live              {}", size(s.live_bytes));
    println!(
        "free              {} (still held: {}, of which for readers: {})",
        size(s.free_bytes),
        size(s.pending_bytes),
        size(s.held_by_readers)
    );
    println!("entries           {} (top level; `pheap stat --map NAME` for a sub-map)", s.entries);
    println!("transaction       {} (last durable: {})", s.txn_id, s.durable_txn_id);
    match s.oldest_reader {
        Some(t) => {
            println!("readers           {} (oldest snapshot: transaction {t})", readers.len())
        }
        None => println!("readers           0"),
    }
    match writer {
        Some(0) => println!("writer            a write transaction is in progress"),
        Some(p) => println!("writer            a write transaction is in progress (process {p})"),
        None => println!("writer            none"),
    }
    if !s.boot_id_known {
        println!("note              the boot id is unknown: every commit is made durable");
    }
    for line in skipped_lines(&s.skipped_commits) {
        println!("warning           {line}");
    }
    Ok(())
}

fn readers(file: &Path, json: bool) -> Res {
    let heap = open_read(file)?;
    let list = heap.readers()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|r| {
                serde_json::json!({
                    "pid": r.pid, "txn_id": r.txn_id, "slot": r.slot,
                    "since_ns": r.since_ns, "holds_bytes": r.holds_bytes,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if list.is_empty() {
        println!("no live read transactions");
        return Ok(());
    }
    println!("{:>8} {:>12} {:>10} {:>12}", "pid", "snapshot", "age", "holds back");
    for r in &list {
        let age = now.saturating_sub(r.since_ns) as f64 / 1e9;
        let holds = r.holds_bytes.map_or("?".into(), size);
        println!("{:>8} {:>12} {:>9.1}s {:>12}", r.pid, r.txn_id, age, holds);
    }
    Ok(())
}

fn check(file: &Path, quiet: bool) -> Res {
    let sound = |e: Error| match e {
        Error::Corrupt { .. }
        | Error::Truncated { .. }
        | Error::NotAPheap { .. }
        | Error::UnsupportedVersion { .. } => Fail::No(format!("{}: unsound: {e}", file.display())),
        e => Fail::Err(e.to_string()),
    };
    let heap = Heap::options().create(false).read_only(true).open(file).map_err(sound)?;
    let bar = spinner(quiet, "checking");
    let r = heap.check().map_err(sound)?;
    bar.finish_and_clear();
    println!(
        "{}: sound. Transaction {}: {} entries ({} leaves in {} maps, {} parts, {} nodes, every checksum and hash path), {} runs, live {} and free {} as recorded, every page accounted for",
        file.display(),
        r.txn_id,
        r.entries,
        r.leaves,
        r.maps + 1,
        r.parts,
        r.nodes,
        r.runs,
        size(r.live_bytes),
        size(r.free_bytes)
    );
    let skipped = skipped_lines(&r.skipped_commits);
    if !skipped.is_empty() {
        // Sound, but not at the newest commit: an acknowledged commit may be gone.
        return Err(Fail::No(format!(
            "{}: opened at transaction {}, not at the newest commit: {}",
            file.display(),
            r.txn_id,
            skipped.join("; ")
        )));
    }
    Ok(())
}
