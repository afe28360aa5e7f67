//! The command line: commands, their arguments, and how keys and values are written on it.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};

use crate::*;

#[derive(Parser)]
#[command(
    name = "pheap",
    version,
    about = "Inspect, query, load, dump, check, copy and compact a pheap heap file"
)]
pub(crate) struct Cli {
    /// No progress bars.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
    /// A sealed copy of the latest commit: read-only for good, opened without a lock file or any
    /// lock, described by a digest (printed) that `pheap check` verifies; what a publication
    /// ships.
    Seal {
        /// The heap file.
        file: PathBuf,
        /// Where the sealed copy goes (must not exist).
        dest: PathBuf,
    },
    /// Publish a sealed copy of the latest commit into a directory, for many processes and
    /// machines to open (`pheap.Published` in Python): the copy as DIGEST.pheap, then
    /// manifest.json naming it, replaced atomically. Unchanged content writes nothing. Object
    /// stores (s3://, gs://, ...) are published from Python (`pheap.publish`).
    Publish {
        /// The heap file.
        file: PathBuf,
        /// The publication's directory: a path or a file:// URL (created if missing).
        dest: String,
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
    /// Bring the whole heap into the page cache at the disk's sequential speed (or one sub-map's
    /// records, with --map): what a server runs after a reboot, before its first lookups.
    Prefetch {
        /// The heap file.
        file: PathBuf,
        /// Only this sub-map (and the maps inside it): one --map per level, from the top.
        #[arg(short, long = "map", value_name = "NAME")]
        map: Vec<String>,
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
pub(crate) struct Target {
    /// The heap file.
    pub(crate) file: PathBuf,
    /// The key (see --hex, --base64); or --key-file.
    #[arg(required_unless_present = "key_file")]
    pub(crate) key: Option<String>,
    /// Read the key from this file (`-`: standard input), byte for byte: for keys too long for
    /// the command line. (`put FILE --key-file K VALUE` then takes VALUE as the value.)
    #[arg(long, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
    /// The sub-map the key is in: one --map per level, from the top (`--map users --map
    /// alice`). Names are taken as the key is (--hex, --base64).
    #[arg(short, long = "map", value_name = "NAME")]
    pub(crate) map: Vec<String>,
}

/// How KEY and VALUE arguments (and `get`'s output) are written.
#[derive(Args)]
pub(crate) struct Encoding {
    /// Keys, map names and values given (and `get`'s value printed) as hexadecimal bytes:
    /// `--hex 00ff` is the two bytes 0x00 0xff.
    #[arg(long, conflicts_with = "base64")]
    pub(crate) hex: bool,
    /// As --hex, in base64.
    #[arg(long)]
    pub(crate) base64: bool,
}

#[derive(Args)]
pub(crate) struct Lock {
    /// Wait for another process's write transaction instead of failing.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub(crate) timeout: Option<f64>,
}

impl Target {
    /// The map path and the key, decoded.
    pub(crate) fn resolve(&self, enc: &Encoding) -> Res<(Vec<Vec<u8>>, Vec<u8>)> {
        let key = match (&self.key, &self.key_file) {
            (None, Some(f)) => read_all(f)?,
            (Some(k), None) => enc.decode(k, "key")?,
            (Some(_), Some(_)) => return Err(Fail::Err("give KEY or --key-file, not both".into())),
            (None, None) => return Err(Fail::Err("no key given".into())),
        };
        Ok((enc.decode_all(&self.map)?, key))
    }
}

impl Encoding {
    pub(crate) fn decode_all(&self, names: &[String]) -> Res<Vec<Vec<u8>>> {
        names.iter().map(|n| self.decode(n, "map name")).collect()
    }

    pub(crate) fn decode(&self, s: &str, what: &str) -> Res<Vec<u8>> {
        if self.hex {
            from_hex(s).ok_or_else(|| Fail::Err(format!("the {what} is not hexadecimal: {s}")))
        } else if self.base64 {
            B64.decode(s).map_err(|e| Fail::Err(format!("the {what} is not base64 ({e}): {s}")))
        } else {
            Ok(s.as_bytes().to_vec())
        }
    }

    pub(crate) fn encode(&self, b: &[u8]) -> Vec<u8> {
        if self.hex {
            to_hex(b).into_bytes()
        } else if self.base64 {
            B64.encode(b).into_bytes()
        } else {
            b.to_vec()
        }
    }

    pub(crate) fn show(&self, b: &[u8]) -> String {
        String::from_utf8_lossy(&self.encode(b)).into_owned()
    }
}

pub(crate) fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
