//! pheap as an object store: `Frob { foo: 9, bar: 23 }` records stored as typed, zero-copy
//! records in a sub-map; a 1 GiB `f64` matrix written in place with `insert_with` and read back
//! in a fresh process as `&[f64]` (open to first element timed, every value checked); nested maps
//! listed. Prints what it did and how long each step took.
//!
//! `cargo run --release --example objects [PATH] [MATRIX_MIB]` (default: a temporary file, 1024)

use pheap::prelude::*;
use std::process::Command;
use std::time::Instant;

use pheap::{Heap, Kind};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The founding wish's record: `d[x] = Frob(foo=9, bar=23)`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
#[repr(C)]
struct Frob {
    foo: u64,
    bar: u64,
}

/// Element `i` of the matrix.
fn cell(i: usize) -> f64 {
    (i as f64).sqrt() * 0.5 + (i % 7) as f64
}

fn ms(t: Instant) -> String {
    format!("{:.1} ms", t.elapsed().as_secs_f64() * 1e3)
}

fn main() -> pheap::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--read") {
        return read(&args[2], args[3].parse().expect("a size"));
    }
    let dir = tempfile::tempdir()?;
    let path = match args.get(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => dir.path().join("objects.pheap"),
    };
    let mib: usize = args.get(2).map_or(1024, |s| s.parse().expect("MATRIX_MIB: a number"));
    let _ = std::fs::remove_file(&path);
    let heap = Heap::open(&path)?;

    // 1. Typed records in a sub-map, and maps nested below it.
    let t = Instant::now();
    let mut tx = heap.begin_write()?;
    {
        let mut frobs = tx.map_mut("frobs")?;
        for x in 0..100_000u64 {
            frobs.insert_as(x.to_le_bytes(), &Frob { foo: 9, bar: 23 + x })?;
        }
    }
    let mut users = tx.map_mut("users")?;
    for name in ["alice", "bob"] {
        let mut user = users.map_mut(name)?;
        user.insert("email", format!("{name}@example.com"))?;
        user.map_mut("prefs")?.insert("theme", "dark")?;
    }
    tx.commit()?;
    println!(
        "wrote 100,000 Frob records in map \"frobs\" and 2 users with nested prefs: {}",
        ms(t)
    );

    // 2. A large matrix written straight into its place in the heap.
    let n = mib << 17; // f64s in MIB mebibytes
    let t = Instant::now();
    let mut tx = heap.begin_write()?;
    tx.map_mut("arrays")?.insert_with("matrix", n * 8, |buf| {
        for (i, c) in buf.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&cell(i).to_le_bytes());
        }
    })?;
    tx.commit()?;
    println!("wrote a {mib} MiB f64 matrix with insert_with and committed it durably: {}", ms(t));
    drop(heap);

    // 3. A fresh process opens the heap and reads it in place.
    let out = Command::new(std::env::current_exe()?)
        .args(["--read", &path.to_string_lossy(), &n.to_string()])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the reading process failed");
    println!("heap file: {:.1} MiB", std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64);
    Ok(())
}

/// The fresh process: open, first element, the whole matrix checked, records and maps listed.
fn read(path: &str, n: usize) -> pheap::Result<()> {
    let t = Instant::now();
    let heap = Heap::options().create(false).open(path)?;
    let rx = heap.begin_read()?;
    let arrays = rx.map("arrays")?.expect("the arrays map");
    let matrix: &[f64] = arrays.get_as("matrix")?.expect("the matrix");
    let first = matrix[0];
    let open_to_first = t.elapsed();
    println!(
        "fresh process: open to first element {:.3} ms (matrix of {} f64 at a 64-byte aligned address: {})",
        open_to_first.as_secs_f64() * 1e3,
        matrix.len(),
        (matrix.as_ptr() as usize).is_multiple_of(64)
    );
    assert_eq!(first, cell(0));
    let t = Instant::now();
    assert_eq!(matrix.len(), n);
    let bad = matrix.iter().enumerate().filter(|&(i, &x)| x != cell(i)).count();
    assert_eq!(bad, 0, "matrix values differ");
    let gib_s = (n * 8) as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64;
    println!("checked every value of the matrix in place: {} ({gib_s:.1} GiB/s)", ms(t));

    let t = Instant::now();
    let frobs = rx.map("frobs")?.expect("the frobs map");
    let (n, mut sum) = (frobs.len()? as u64, 0u64);
    for x in 0..n {
        let f: &Frob = frobs.get_as(x.to_le_bytes())?.expect("a record");
        assert_eq!(f.foo, 9);
        sum += f.bar - 23;
    }
    assert_eq!(sum, (0..n).sum());
    println!("read {n} Frob records as &Frob (no copy, no decoding): {}", ms(t));
    println!("d[42] = {:?}", frobs.get_as::<Frob>(42u64.to_le_bytes())?.expect("present"));

    println!("maps:");
    list(rx.as_map()?, 1)?;
    heap.check()?;
    println!("integrity walk: sound");
    Ok(())
}

/// Print the maps under `map`, indented, with their sizes.
fn list(map: pheap::Map<'_>, depth: usize) -> pheap::Result<()> {
    let mut names = Vec::new();
    for item in map.iter() {
        let (k, v) = item?;
        if v.kind() == Kind::Map {
            names.push((k, v.map_len().unwrap_or(0)));
        }
    }
    names.sort();
    for (k, len) in names {
        println!("{}{} ({len} entries)", "  ".repeat(depth), String::from_utf8_lossy(k));
        list(map.map(k)?.expect("a map"), depth + 1)?;
    }
    Ok(())
}
