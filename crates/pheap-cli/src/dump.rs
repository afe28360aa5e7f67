//! `pheap dump` and `pheap load`: every entry as JSON lines, and back.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use indicatif::ProgressBar;
use pheap::prelude::*;
use pheap::{Error, Heap, Kind, Map, Value, WriteTxn};

use crate::*;

/// One JSON-lines field pair: "NAME": text, or "NAME_base64": base64 when not UTF-8.
pub(crate) fn field(out: &mut Vec<u8>, name: &str, b: &[u8]) {
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
pub(crate) fn dump_destination(p: &Path) -> Res {
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

pub(crate) fn dump(file: &Path, output: Option<&Path>, python: bool, quiet: bool) -> Res {
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
pub(crate) fn render(v: &Value<'_>) -> Res<String> {
    let parts = v.parts().collect::<pheap::Result<Vec<_>>>()?;
    python::value(v.kind(), v.inline(), &parts)
        .map_err(|e| Fail::Err(format!("not a value the Python package wrote: {e}")))
}

/// Writes dump lines.
pub(crate) struct Dumper<W: Write> {
    pub(crate) out: W,
    pub(crate) line: Vec<u8>,
    pub(crate) n: u64,
    /// Add the "python" and "key_python" renderings.
    pub(crate) python: bool,
}

impl<W: Write> Dumper<W> {
    /// The line of `key` -> `value` of `map` (at `path`), and a sub-map's entries after it.
    pub(crate) fn entry(
        &mut self,
        map: Map<'_>,
        path: &mut Vec<Vec<u8>>,
        key: &[u8],
        v: Value<'_>,
    ) -> Res {
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
pub(crate) fn json_bytes(out: &mut Vec<u8>, b: &[u8]) {
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
pub(crate) fn from_json_bytes(v: &serde_json::Value, what: &str, at: usize) -> Res<Vec<u8>> {
    let bad =
        || Fail::Err(format!("line {at}: {what} is neither a string nor {{\"base64\": ...}}"));
    if let Some(s) = v.as_str() {
        return Ok(s.as_bytes().to_vec());
    }
    let s = v.get("base64").and_then(|b| b.as_str()).ok_or_else(bad)?;
    B64.decode(s).map_err(|e| Fail::Err(format!("line {at}: {what}: {e}")))
}

/// The bytes of field NAME of a dump line (NAME or NAME_base64).
pub(crate) fn take(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    at: usize,
) -> Res<Vec<u8>> {
    let bad = |what: &str| Fail::Err(format!("line {at}: {what}"));
    if let Some(v) = obj.get(name) {
        return Ok(v.as_str().ok_or_else(|| bad(&format!("\"{name}\" is not a string")))?.into());
    }
    let b = obj.get(&format!("{name}_base64")).ok_or_else(|| bad(&format!("no \"{name}\"")))?;
    let s = b.as_str().ok_or_else(|| bad(&format!("\"{name}_base64\" is not a string")))?;
    B64.decode(s).map_err(|e| bad(&format!("\"{name}_base64\": {e}")))
}

pub(crate) fn load(
    file: &Path,
    input: Option<&Path>,
    batch: Option<u64>,
    lock: &Lock,
    quiet: bool,
) -> Res {
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
pub(crate) struct Load<'a> {
    pub(crate) heap: &'a Heap,
    pub(crate) file: &'a Path,
    pub(crate) lock: &'a Lock,
    pub(crate) batch: Option<u64>,
    pub(crate) tx: Option<WriteTxn>,
    pub(crate) n: u64,
    pub(crate) committed: u64,
}

impl Load<'_> {
    pub(crate) fn lines(
        &mut self,
        source: Box<dyn Read>,
        bar: &ProgressBar,
        total: Option<u64>,
    ) -> Res {
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

/// The list of byte strings in field `name` of a dump line (empty when absent), each `what`.
fn byte_list(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    what: &str,
    at: usize,
) -> Res<Vec<Vec<u8>>> {
    let Some(list) = obj.get(name) else { return Ok(Vec::new()) };
    let list =
        list.as_array().ok_or_else(|| Fail::Err(format!("line {at}: \"{name}\" is not a list")))?;
    list.iter().map(|x| from_json_bytes(x, what, at)).collect()
}

/// Insert the entry of one dump line.
pub(crate) fn load_line(
    obj: &serde_json::Map<String, serde_json::Value>,
    tx: &mut WriteTxn,
    at: usize,
) -> Res {
    let bad = |what: &str| Fail::Err(format!("line {at}: {what}"));
    let path = byte_list(obj, "map", "a map name", at)?;
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
    let parts = byte_list(obj, "parts", "a part", at)?;
    let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    map.insert_parts(&k, kind, &val, &parts)?;
    Ok(())
}
