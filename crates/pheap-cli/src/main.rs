//! `pheap`: inspect, query, load, dump, check, copy and compact a heap file.
//!
//! Built on the library's public API only. Exit status: 0 success, 1 "no" (a missing key, an
//! unsound heap), 2 an error (one line on stderr).

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pheap::{Durability, Error, Heap, WriteTxn};

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
    /// Format version, sizes, entries, transactions and readers.
    Stat {
        file: PathBuf,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the value of KEY (status 1 if it is missing).
    Get {
        file: PathBuf,
        key: String,
        #[command(flatten)]
        enc: Encoding,
    },
    /// Set KEY to VALUE (or to standard input when VALUE is omitted); creates the heap if missing.
    Put {
        file: PathBuf,
        key: String,
        value: Option<String>,
        #[command(flatten)]
        enc: Encoding,
        #[command(flatten)]
        lock: Lock,
    },
    /// Remove KEY (status 1 if it is missing).
    Rm {
        file: PathBuf,
        key: String,
        #[command(flatten)]
        enc: Encoding,
        #[command(flatten)]
        lock: Lock,
    },
    /// Every entry as JSON lines: {"key": TEXT, "value": TEXT}, with "key_base64" / "value_base64"
    /// for bytes that are not UTF-8.
    Dump {
        file: PathBuf,
        /// Write to this file instead of standard output (`-`: standard output). Never onto a
        /// heap file.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Insert the entries of a dump (standard input, or --input); creates the heap if missing.
    /// All or nothing: one transaction, durable at the end; a bad line leaves the heap as it was.
    Load {
        file: PathBuf,
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Commit every N entries instead (streaming input larger than memory wants it): on an
        /// error, what was committed before stays, and its count is printed.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        batch: Option<u64>,
        #[command(flatten)]
        lock: Lock,
    },
    /// The full integrity walk (status 0 only when the heap is sound and opened at its newest
    /// commit; 1 when it is unsound, or a newer commit was passed over).
    Check { file: PathBuf },
    /// A consistent, compacted copy of the latest commit, taken while the heap is in use. DEST
    /// `-` writes the copy to standard output.
    Copy {
        file: PathBuf,
        dest: PathBuf,
        /// Replace DEST if it exists (a regular file that no process has open as a heap).
        #[arg(long)]
        force: bool,
    },
    /// Move live records out of the file's tail and give it back, online.
    Compact {
        file: PathBuf,
        #[command(flatten)]
        lock: Lock,
    },
    /// Live read transactions of every process, and the space each holds back.
    Readers {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// How KEY and VALUE arguments (and `get`'s output) are written.
#[derive(Args)]
struct Encoding {
    /// Hexadecimal.
    #[arg(long, conflicts_with = "base64")]
    hex: bool,
    /// Base64.
    #[arg(long)]
    base64: bool,
}

#[derive(Args)]
struct Lock {
    /// Wait for another process's write transaction instead of failing.
    #[arg(long)]
    wait: bool,
}

/// What ends a command early: a "no" (status 1) or an error (status 2).
enum Fail {
    No(String),
    Err(String),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Err(e.to_string())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        Fail::Err(e.to_string())
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
    }
}

fn run(cli: Cli) -> Res {
    let quiet = cli.quiet;
    match cli.cmd {
        Cmd::Stat { file, json } => stat(&file, json),
        Cmd::Get { file, key, enc } => {
            let heap = open_read(&file)?;
            let key = enc.decode(&key, "key")?;
            let rx = heap.begin_read()?;
            match rx.get(&key)? {
                Some(v) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&enc.encode(v))?;
                    if std::io::stdout().is_terminal() || enc.hex || enc.base64 {
                        out.write_all(b"\n")?;
                    }
                    Ok(())
                }
                None => Err(Fail::No(format!("key not found: {}", enc.show(&key)))),
            }
        }
        Cmd::Put { file, key, value, enc, lock } => {
            let key = enc.decode(&key, "key")?;
            let value = match value {
                Some(v) => enc.decode(&v, "value")?,
                None => {
                    let mut v = Vec::new();
                    std::io::stdin().read_to_end(&mut v)?;
                    v
                }
            };
            let heap = open_write(&file, true)?;
            let mut tx = begin_write(&heap, &file, lock.wait)?;
            tx.insert(&key, &value)?;
            tx.commit()?;
            Ok(())
        }
        Cmd::Rm { file, key, enc, lock } => {
            let key = enc.decode(&key, "key")?;
            let heap = open_write(&file, false)?;
            let mut tx = begin_write(&heap, &file, lock.wait)?;
            if !tx.remove(&key)? {
                return Err(Fail::No(format!("key not found: {}", enc.show(&key))));
            }
            tx.commit()?;
            Ok(())
        }
        Cmd::Dump { file, output } => dump(&file, output.as_deref(), quiet),
        Cmd::Load { file, input, batch, lock } => {
            load(&file, input.as_deref(), batch, lock.wait, quiet)
        }
        Cmd::Check { file } => check(&file, quiet),
        Cmd::Copy { file, dest, force } => copy(&file, &dest, force, quiet),
        Cmd::Compact { file, lock } => {
            let heap = open_write(&file, false)?;
            if !lock.wait {
                // Fail now rather than in the middle: compaction takes the lock many times.
                drop(begin_write(&heap, &file, false)?);
            }
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
            Ok(())
        }
        Cmd::Readers { file, json } => readers(&file, json),
    }
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
        e => e.into(),
    }
}

fn begin_write(heap: &Heap, file: &Path, wait: bool) -> Res<WriteTxn> {
    if wait {
        return Ok(heap.begin_write()?);
    }
    match heap.try_begin_write() {
        Err(Error::WriteInProgress) => {
            let who = heap.last_writer_pid().map_or(String::new(), |p| format!(" (process {p})"));
            Err(Fail::Err(format!(
                "{} is locked by a writer{who}; retry, or pass --wait",
                file.display()
            )))
        }
        r => Ok(r?),
    }
}

impl Encoding {
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

fn stat(file: &Path, json: bool) -> Res {
    let heap = open_read(file)?;
    let s = heap.stats()?;
    let readers = heap.readers()?;
    if json {
        let v = serde_json::json!({
            "file": file.display().to_string(),
            "format_version": pheap::FORMAT_VERSION,
            "file_size": s.file_size,
            "used_size": s.used_size,
            "live_bytes": s.live_bytes,
            "free_bytes": s.free_bytes,
            "pending_bytes": s.pending_bytes,
            "held_by_readers": s.held_by_readers,
            "entries": s.entries,
            "txn_id": s.txn_id,
            "durable_txn_id": s.durable_txn_id,
            "oldest_reader": s.oldest_reader,
            "readers": readers.len(),
            "boot_id_known": s.boot_id_known,
            "skipped_commits": s.skipped_commits.iter().map(|k| serde_json::json!({
                "slot": k.slot, "txn_id": k.txn_id, "reason": k.reason,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("file              {}", file.display());
    println!("format version    {}", pheap::FORMAT_VERSION);
    println!("file size         {} ({} bytes)", size(s.file_size), s.file_size);
    println!("in use            {}", size(s.used_size));
    println!("live              {}", size(s.live_bytes));
    println!(
        "free              {} (still held: {}, of which for readers: {})",
        size(s.free_bytes),
        size(s.pending_bytes),
        size(s.held_by_readers)
    );
    println!("entries           {}", s.entries);
    println!("transaction       {} (last durable: {})", s.txn_id, s.durable_txn_id);
    match s.oldest_reader {
        Some(t) => {
            println!("readers           {} (oldest snapshot: transaction {t})", readers.len())
        }
        None => println!("readers           0"),
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

fn dump(file: &Path, output: Option<&Path>, quiet: bool) -> Res {
    let heap = open_read(file)?;
    let rx = heap.begin_read()?;
    let (sink, bar): (Box<dyn Write>, _) = match output.filter(|p| *p != Path::new("-")) {
        Some(p) => {
            dump_destination(p)?;
            (Box::new(std::fs::File::create(p)?), counter(quiet, Some(rx.len() as u64), "dumping"))
        }
        None => (Box::new(std::io::stdout().lock()), ProgressBar::hidden()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let mut line = Vec::with_capacity(512);
    for (i, item) in rx.iter().enumerate() {
        let (k, v) = item?;
        line.clear();
        line.push(b'{');
        field(&mut line, "key", k);
        line.push(b',');
        field(&mut line, "value", v.bytes()?);
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
        if i % 4096 == 0 {
            bar.set_position(i as u64);
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
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

fn load(file: &Path, input: Option<&Path>, batch: Option<u64>, wait: bool, quiet: bool) -> Res {
    let (source, total): (Box<dyn Read>, Option<u64>) = match input {
        Some(p) => {
            let f = std::fs::File::open(p)?;
            let len = f.metadata()?.len();
            (Box::new(f), Some(len))
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let heap = Heap::options().durability(Durability::None).open(file)?;
    let bar = counter(quiet, total, "loading");
    let mut load = Load { heap: &heap, file, wait, batch, tx: None, n: 0, committed: 0 };
    let res = load.lines(source, &bar, total);
    bar.finish_and_clear();
    let Load { tx, n, committed, .. } = load;
    let res = res.and_then(|()| {
        // One durable commit ends the load (and makes earlier batches durable with it).
        let mut tx = match tx {
            Some(tx) => tx,
            None => begin_write(&heap, file, wait)?,
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
        Err(Fail::Err(msg) | Fail::No(msg)) => {
            let kept = if committed == 0 {
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
    wait: bool,
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
            let (k, val) = (take(obj, "key", at)?, take(obj, "value", at)?);
            let tx = match &mut self.tx {
                Some(tx) => tx,
                slot => slot.insert(begin_write(self.heap, self.file, self.wait)?),
            };
            tx.insert(&k, &val)?;
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
        "{}: sound. Transaction {}: {} entries ({} leaves, {} nodes, every checksum and hash path), {} runs, live {} and free {} as recorded, every page accounted for",
        file.display(),
        r.txn_id,
        r.entries,
        r.leaves,
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
