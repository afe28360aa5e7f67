//! `pheap`: inspect, query, load, dump, check, copy and compact a heap file.
//!
//! Built on the library's public API only. Exit status: 0 success, 1 "no" (a missing key, an
//! unsound heap), 2 an error (one line on stderr).

#![forbid(unsafe_code)]

mod python;

use pheap::prelude::*;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pheap::{Durability, Error, Heap, Kind, Map, MapMut, Value, WriteTxn};

#[derive(Parser)]
#[command(
    name = "pheap",
    version,
    about = "Inspect, query, load, dump, check, copy and compact a pheap heap file"
)]
struct Cli {
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Format version, sizes, entries, transactions, readers and a writer in progress; with
    /// --map, the entries of one sub-map by kind.
    Stat {
        /// The heap file.
        file: PathBuf,
        /// A sub-map to describe: one --map per level, from the top.
        #[arg(short, long = "map", value_name = "NAME")]
        map: Vec<String>,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        enc: Encoding,
    },
    /// Print the value of KEY (status 1 if it is missing).
    Get {
        #[command(flatten)]
        at: Target,
        /// Render keys and values the Python package wrote as Python shows them
        /// (`{'name': 'a'}`, `<pickled module.Class>`: nothing is unpickled).
        #[arg(long)]
        python: bool,
        #[command(flatten)]
        enc: Encoding,
    },
    /// Set KEY to VALUE; creates the heap, and the sub-maps named by --map, if missing.
    Put {
        #[command(flatten)]
        at: Target,
        /// The value (see --hex, --base64); `-` or omitted: standard input.
        #[arg(conflicts_with = "value_file")]
        value: Option<String>,
        /// Read the value from this file, byte for byte.
        #[arg(long, value_name = "PATH")]
        value_file: Option<PathBuf>,
        #[command(flatten)]
        enc: Encoding,
        #[command(flatten)]
        lock: Lock,
    },
    /// Remove KEY, and everything in it if it is a map (status 1 if it is missing).
    Rm {
        #[command(flatten)]
        at: Target,
        #[command(flatten)]
        enc: Encoding,
        #[command(flatten)]
        lock: Lock,
    },
    /// The keys of the top-level map (or of --map), one per line, in hash order; sub-maps end
    /// with a `/` marker unless --plain.
    Keys {
        /// The heap file.
        file: PathBuf,
        /// The sub-map to list: one --map per level, from the top.
        #[arg(short, long = "map", value_name = "NAME")]
        map: Vec<String>,
        /// Keys only, with no marker.
        #[arg(long)]
        plain: bool,
        /// Render keys and values the Python package wrote as Python shows them
        /// (`{'name': 'a'}`, `<pickled module.Class>`: nothing is unpickled).
        #[arg(long)]
        python: bool,
        #[command(flatten)]
        enc: Encoding,
    },
    /// The number of entries of the top-level map (or of --map).
    Count {
        /// The heap file.
        file: PathBuf,
        /// The sub-map to count: one --map per level, from the top.
        #[arg(short, long = "map", value_name = "NAME")]
        map: Vec<String>,
    },
    /// Every entry, sub-maps included, as JSON lines: {"key": TEXT, "value": TEXT}, with
    /// "key_base64" / "value_base64" for bytes that are not UTF-8; an entry of a sub-map names
    /// its map's path in "map" (a list of keys, each TEXT or {"base64": ...}); a sub-map is
    /// {"key": ..., "kind": "map"}; a tagged value has "tag"; out-of-line parts are "parts".
    Dump {
        /// The heap file.
        file: PathBuf,
        /// Write to this file instead of standard output (`-`: standard output). Never onto a
        /// heap file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Add "python" (the value) and "key_python" fields: what the Python package wrote, as
        /// Python shows it (`load` ignores them).
        #[arg(long)]
        python: bool,
    },
    /// Insert the entries of a dump (standard input, or --input); creates the heap if missing.
    /// All or nothing: one transaction, durable at the end; a bad line leaves the heap as it was.
    Load {
        /// The heap file.
        file: PathBuf,
        /// Read the dump from this file.
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Commit every N entries instead (streaming input larger than memory wants it): on an
        /// error, what was committed before stays, and its count is printed.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        batch: Option<u64>,
        #[command(flatten)]
        lock: Lock,
    },
    /// The full integrity walk, every sub-map and part (status 0 only when the heap is sound
    /// and opened at its newest commit; 1 when it is unsound, or a newer commit was passed
    /// over).
    Check {
        /// The heap file.
        file: PathBuf,
    },
    /// A consistent, compacted copy of the latest commit, taken while the heap is in use. DEST
    /// `-` writes the copy to standard output.
    Copy {
        /// The heap file.
        file: PathBuf,
        /// Where the copy goes (must not exist, unless --force).
        dest: PathBuf,
        /// Replace DEST if it exists (a regular file that no process has open as a heap).
        #[arg(long)]
        force: bool,
    },
    /// Move live records out of the file's tail and give it back, online.
    Compact {
        /// The heap file.
        file: PathBuf,
        #[command(flatten)]
        lock: Lock,
    },
    /// Live read transactions of every process, and the space each holds back.
    Readers {
        /// The heap file.
        file: PathBuf,
        /// One JSON object per reader (pid, transaction, bytes held back), one per line, for
        /// scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Where a key lives.
#[derive(Args)]
struct Target {
    /// The heap file.
    file: PathBuf,
    /// The key (see --hex, --base64); or --key-file.
    #[arg(required_unless_present = "key_file")]
    key: Option<String>,
    /// Read the key from this file (`-`: standard input), byte for byte: for keys too long for
    /// the command line. (`put FILE --key-file K VALUE` then takes VALUE as the value.)
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The sub-map the key is in: one --map per level, from the top (`--map users --map
    /// alice`). Names are taken as the key is (--hex, --base64).
    #[arg(short, long = "map", value_name = "NAME")]
    map: Vec<String>,
}

/// How KEY and VALUE arguments (and `get`'s output) are written.
#[derive(Args)]
struct Encoding {
    /// Keys, map names and values given (and `get`'s value printed) as hexadecimal bytes:
    /// `--hex 00ff` is the two bytes 0x00 0xff.
    #[arg(long, conflicts_with = "base64")]
    hex: bool,
    /// As --hex, in base64.
    #[arg(long)]
    base64: bool,
}

#[derive(Args)]
struct Lock {
    /// Wait for another process's write transaction instead of failing.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    timeout: Option<f64>,
}

/// What ends a command early: a "no" (status 1), an error (status 2), or a reader that went
/// away (`dump | head`: not an error).
enum Fail {
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
fn at(path: &Path) -> impl Fn(std::io::Error) -> Fail + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Fail::Pipe,
        _ => Fail::Err(format!("{}: {e}", path.display())),
    }
}

type Res<T = ()> = Result<T, Fail>;

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
        Cmd::Compact { file, lock } => compact(&file, &lock, quiet),
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

impl Target {
    /// The map path and the key, decoded.
    fn resolve(&self, enc: &Encoding) -> Res<(Vec<Vec<u8>>, Vec<u8>)> {
        let key = match (&self.key, &self.key_file) {
            (None, Some(f)) => read_all(f)?,
            (Some(k), None) => enc.decode(k, "key")?,
            (Some(_), Some(_)) => return Err(Fail::Err("give KEY or --key-file, not both".into())),
            (None, None) => return Err(Fail::Err("no key given".into())),
        };
        Ok((enc.decode_all(&self.map)?, key))
    }
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
        "copied {} entries (transaction {}) to {}: {}",
        s.entries,
        s.source_txn_id,
        dest.display(),
        size(s.file_size)
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

impl Encoding {
    fn decode_all(&self, names: &[String]) -> Res<Vec<Vec<u8>>> {
        names.iter().map(|n| self.decode(n, "map name")).collect()
    }

    fn decode(&self, s: &str, what: &str) -> Res<Vec<u8>> {
        if self.hex {
            from_hex(s).ok_or_else(|| Fail::Err(format!("the {what} is not hexadecimal: {s}")))
        } else if self.base64 {
            B64.decode(s).map_err(|e| Fail::Err(format!("the {what} is not base64 ({e}): {s}")))
        } else {
            Ok(s.as_bytes().to_vec())
        }
    }

    fn encode(&self, b: &[u8]) -> Vec<u8> {
        if self.hex {
            to_hex(b).into_bytes()
        } else if self.base64 {
            B64.encode(b).into_bytes()
        } else {
            b.to_vec()
        }
    }

    fn show(&self, b: &[u8]) -> String {
        String::from_utf8_lossy(&self.encode(b)).into_owned()
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
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
        println!("{v}");
        return Ok(());
    }
    println!("file              {}", file.display());
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

/// One JSON-lines field pair: "NAME": text, or "NAME_base64": base64 when not UTF-8.
fn field(out: &mut Vec<u8>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            out.extend_from_slice(format!("\"{name}\":").as_bytes());
            out.extend_from_slice(serde_json::to_string(s).expect("a string").as_bytes());
        }
        Err(_) => {
            out.extend_from_slice(format!("\"{name}_base64\":\"").as_bytes());
            out.extend_from_slice(B64.encode(b).as_bytes());
            out.push(b'"');
        }
    }
}

/// Refuse to write a dump over a heap file (the one being dumped, or any other): opening it for
/// writing would truncate a file that processes may have mapped.
fn dump_destination(p: &Path) -> Res {
    let mut head = [0u8; 8];
    let is_heap = std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == pheap::FILE_MAGIC);
    if is_heap {
        return Err(Fail::Err(format!(
            "{}: refused: it is a heap file, and a dump would overwrite it; choose another output",
            p.display()
        )));
    }
    Ok(())
}

fn dump(file: &Path, output: Option<&Path>, python: bool, quiet: bool) -> Res {
    let heap = open_read(file)?;
    let rx = heap.begin_read()?;
    let (sink, bar): (Box<dyn Write>, _) = match output.filter(|p| *p != Path::new("-")) {
        Some(p) => {
            dump_destination(p)?;
            let f = std::fs::File::create(p).map_err(at(p))?;
            (Box::new(f), counter(quiet, Some(rx.len()? as u64), "dumping"))
        }
        None => (Box::new(std::io::stdout().lock()), ProgressBar::hidden()),
    };
    let mut d =
        Dumper { out: BufWriter::with_capacity(1 << 20, sink), line: Vec::new(), n: 0, python };
    let mut path = Vec::new();
    for (i, item) in rx.iter().enumerate() {
        let (k, v) = item?;
        d.entry(rx.as_map()?, &mut path, k, v)?;
        if i % 4096 == 0 {
            bar.set_position(i as u64);
        }
    }
    d.out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// A value as the Python package's user sees it (`--python`).
fn render(v: &Value<'_>) -> Res<String> {
    let parts = v.parts().collect::<pheap::Result<Vec<_>>>()?;
    python::value(v.kind(), v.inline(), &parts)
        .map_err(|e| Fail::Err(format!("not a value the Python package wrote: {e}")))
}

/// Writes dump lines.
struct Dumper<W: Write> {
    out: W,
    line: Vec<u8>,
    n: u64,
    /// Add the "python" and "key_python" renderings.
    python: bool,
}

impl<W: Write> Dumper<W> {
    /// The line of `key` -> `value` of `map` (at `path`), and a sub-map's entries after it.
    fn entry(&mut self, map: Map<'_>, path: &mut Vec<Vec<u8>>, key: &[u8], v: Value<'_>) -> Res {
        let line = &mut self.line;
        line.clear();
        line.push(b'{');
        if !path.is_empty() {
            line.extend_from_slice(b"\"map\":[");
            for (i, k) in path.iter().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                json_bytes(line, k);
            }
            line.extend_from_slice(b"],");
        }
        field(line, "key", key);
        match v.kind() {
            Kind::Map => line.extend_from_slice(b",\"kind\":\"map\""),
            kind => {
                line.push(b',');
                // A long value that `insert` stored out of line is written as plain bytes (it
                // loads back the same way); any other shape part by part.
                let whole = match v.bytes() {
                    Ok(b) if v.part_count() == 0 || b.len() >= pheap::OUT_OF_LINE_MIN => Some(b),
                    _ => None,
                };
                field(line, "value", whole.unwrap_or(v.inline()));
                if let Kind::Tagged(t) = kind {
                    line.extend_from_slice(format!(",\"tag\":{t}").as_bytes());
                }
                if whole.is_none() {
                    line.extend_from_slice(b",\"parts\":[");
                    for (i, p) in v.parts().enumerate() {
                        if i > 0 {
                            line.push(b',');
                        }
                        json_bytes(line, p?);
                    }
                    line.push(b']');
                }
                if self.python {
                    let text = render(&v).unwrap_or_else(|e| match e {
                        Fail::No(m) | Fail::Err(m) => format!("<{m}>"),
                        Fail::Pipe => String::new(),
                    });
                    line.extend_from_slice(b",\"python\":");
                    line.extend_from_slice(
                        serde_json::to_string(&text).expect("a string").as_bytes(),
                    );
                }
            }
        }
        if self.python {
            line.extend_from_slice(b",\"key_python\":");
            let text = python::key(key);
            line.extend_from_slice(serde_json::to_string(&text).expect("a string").as_bytes());
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)?;
        self.n += 1;
        if v.kind() == Kind::Map {
            if path.len() >= pheap::MAX_NESTING {
                return Err(Error::NestingTooDeep { max: pheap::MAX_NESTING }.into());
            }
            let sub = map.map(key)?.ok_or_else(|| Fail::Err("a sub-map vanished".into()))?;
            path.push(key.to_vec());
            for item in sub.iter() {
                let (k, v) = item?;
                self.entry(sub, path, k, v)?;
            }
            path.pop();
        }
        Ok(())
    }
}

/// Bytes as one JSON value: a string if UTF-8, else {"base64": ...}.
fn json_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => out.extend_from_slice(serde_json::to_string(s).expect("a string").as_bytes()),
        Err(_) => {
            out.extend_from_slice(b"{\"base64\":\"");
            out.extend_from_slice(B64.encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
}

/// The bytes of a JSON value written by [`json_bytes`].
fn from_json_bytes(v: &serde_json::Value, what: &str, at: usize) -> Res<Vec<u8>> {
    let bad =
        || Fail::Err(format!("line {at}: {what} is neither a string nor {{\"base64\": ...}}"));
    if let Some(s) = v.as_str() {
        return Ok(s.as_bytes().to_vec());
    }
    let s = v.get("base64").and_then(|b| b.as_str()).ok_or_else(bad)?;
    B64.decode(s).map_err(|e| Fail::Err(format!("line {at}: {what}: {e}")))
}

/// The bytes of field NAME of a dump line (NAME or NAME_base64).
fn take(obj: &serde_json::Map<String, serde_json::Value>, name: &str, at: usize) -> Res<Vec<u8>> {
    let bad = |what: &str| Fail::Err(format!("line {at}: {what}"));
    if let Some(v) = obj.get(name) {
        return Ok(v.as_str().ok_or_else(|| bad(&format!("\"{name}\" is not a string")))?.into());
    }
    let b = obj.get(&format!("{name}_base64")).ok_or_else(|| bad(&format!("no \"{name}\"")))?;
    let s = b.as_str().ok_or_else(|| bad(&format!("\"{name}_base64\" is not a string")))?;
    B64.decode(s).map_err(|e| bad(&format!("\"{name}_base64\": {e}")))
}

fn load(file: &Path, input: Option<&Path>, batch: Option<u64>, lock: &Lock, quiet: bool) -> Res {
    let (source, total): (Box<dyn Read>, Option<u64>) = match input {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(at(p))?;
            let len = f.metadata().map_err(at(p))?.len();
            (Box::new(f), Some(len))
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let created = !file.exists();
    let heap =
        Heap::options().durability(Durability::None).open(file).map_err(|e| open_error(file, e))?;
    let bar = counter(quiet, total, "loading");
    let mut load = Load { heap: &heap, file, lock, batch, tx: None, n: 0, committed: 0 };
    let res = load.lines(source, &bar, total);
    bar.finish_and_clear();
    let Load { tx, n, committed, .. } = load;
    let res = res.and_then(|()| {
        // One durable commit ends the load (and makes earlier batches durable with it).
        let mut tx = match tx {
            Some(tx) => tx,
            None => begin_write(&heap, file, lock)?,
        };
        tx.set_durability(Durability::Immediate);
        Ok(tx.commit()?)
    });
    match res {
        Ok(()) => {
            if !quiet {
                eprintln!("loaded {n} entries into {}", file.display());
            }
            Ok(())
        }
        Err(Fail::Pipe) => Err(Fail::Pipe),
        Err(Fail::Err(msg) | Fail::No(msg)) => {
            let kept = if committed == 0 && created {
                // A heap this load made and left empty: nothing stays behind.
                let lock_file = heap.lock_file().to_owned();
                drop(heap);
                let _ = std::fs::remove_file(&lock_file);
                let _ = std::fs::remove_file(file);
                "nothing was loaded, and no heap was left".to_owned()
            } else if committed == 0 {
                "nothing was loaded".to_owned()
            } else {
                heap.checkpoint()?;
                format!("the {committed} entries committed before it are kept")
            };
            Err(Fail::Err(format!("{msg}; {kept}")))
        }
    }
}

/// A load in progress: the open transaction, entries read, entries committed (with `--batch`).
struct Load<'a> {
    heap: &'a Heap,
    file: &'a Path,
    lock: &'a Lock,
    batch: Option<u64>,
    tx: Option<WriteTxn>,
    n: u64,
    committed: u64,
}

impl Load<'_> {
    fn lines(&mut self, source: Box<dyn Read>, bar: &ProgressBar, total: Option<u64>) -> Res {
        let mut reader = BufReader::with_capacity(1 << 20, source);
        let (mut line, mut at, mut read) = (String::new(), 0, 0u64);
        loop {
            line.clear();
            let got = reader.read_line(&mut line)?;
            if got == 0 {
                return Ok(());
            }
            at += 1;
            read += got as u64;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| Fail::Err(format!("line {at}: {e}")))?;
            let obj =
                v.as_object().ok_or_else(|| Fail::Err(format!("line {at}: not an object")))?;
            let tx = match &mut self.tx {
                Some(tx) => tx,
                slot => slot.insert(begin_write(self.heap, self.file, self.lock)?),
            };
            load_line(obj, tx, at)?;
            self.n += 1;
            if self.n.is_multiple_of(4096) {
                bar.set_position(if total.is_some() { read } else { self.n });
            }
            if self.batch.is_some_and(|b| self.n.is_multiple_of(b)) {
                self.tx.take().expect("open").commit()?;
                self.committed = self.n;
            }
        }
    }
}

/// Insert the entry of one dump line.
fn load_line(
    obj: &serde_json::Map<String, serde_json::Value>,
    tx: &mut WriteTxn,
    at: usize,
) -> Res {
    let bad = |what: &str| Fail::Err(format!("line {at}: {what}"));
    let path = match obj.get("map") {
        None => Vec::new(),
        Some(p) => p
            .as_array()
            .ok_or_else(|| bad("\"map\" is not a list"))?
            .iter()
            .map(|k| from_json_bytes(k, "a map name", at))
            .collect::<Res<Vec<_>>>()?,
    };
    let k = take(obj, "key", at)?;
    let mut map: MapMut<'_> = tx.map_mut_path(&path)?;
    match obj.get("kind").map(|k| k.as_str()) {
        None => {}
        Some(Some("map")) => {
            map.map_mut(&k)?;
            return Ok(());
        }
        Some(_) => return Err(bad("\"kind\" is not \"map\"")),
    }
    let val = take(obj, "value", at)?;
    let kind = match obj.get("tag") {
        None => Kind::Bytes,
        Some(t) => Kind::Tagged(
            t.as_u64()
                .and_then(|t| u8::try_from(t).ok())
                .ok_or_else(|| bad("\"tag\" is not 0..=255"))?,
        ),
    };
    let parts = match obj.get("parts") {
        None => Vec::new(),
        Some(p) => p
            .as_array()
            .ok_or_else(|| bad("\"parts\" is not a list"))?
            .iter()
            .map(|p| from_json_bytes(p, "a part", at))
            .collect::<Res<Vec<_>>>()?,
    };
    let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    map.insert_parts(&k, kind, &val, &parts)?;
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
