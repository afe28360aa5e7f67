//! The real `pheap` binary: every subcommand, the dump/load round trip on random binary data,
//! the error cases, and `check` finding planted corruption.

use std::collections::BTreeMap;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

fn pheap() -> Command {
    Command::cargo_bin("pheap").unwrap()
}

fn contents(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let heap = pheap::Heap::options().create(false).open(path).unwrap();
    let rx = heap.begin_read().unwrap();
    rx.iter().map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
}

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn put_get_rm_in_text_hex_and_base64() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.pheap");
    pheap().arg("put").arg(&f).args(["hello", "world"]).assert().success();
    pheap().arg("get").arg(&f).arg("hello").assert().success().stdout("world");
    pheap().arg("put").arg(&f).args(["--hex", "00ff", "0102"]).assert().success();
    pheap().arg("get").arg(&f).args(["--hex", "00ff"]).assert().success().stdout("0102\n");
    pheap().arg("get").arg(&f).args(["--base64", "AP8="]).assert().success().stdout("AQI=\n");
    pheap().arg("put").arg(&f).arg("piped").write_stdin(vec![0u8, 1, 2, 255]).assert().success();
    pheap().arg("get").arg(&f).args(["piped"]).assert().success().stdout(&[0u8, 1, 2, 255][..]);
    pheap().arg("get").arg(&f).arg("nope").assert().code(1).stderr("pheap: key not found: nope\n");
    pheap().arg("rm").arg(&f).arg("hello").assert().success();
    pheap()
        .arg("rm")
        .arg(&f)
        .arg("hello")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not found"));
    pheap()
        .arg("get")
        .arg(&f)
        .args(["--hex", "zz"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not hexadecimal"));
    let m = contents(&f);
    assert_eq!(m.len(), 2);
    assert_eq!(m[&vec![0u8, 255]], vec![1u8, 2]);
}

#[test]
fn dump_and_load_round_trip_random_binary_data() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pheap"), dir.path().join("b.pheap"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    {
        let heap = pheap::Heap::open(&a).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..3000u64 {
            let klen = (rng(&mut x) % 40) as usize;
            let mut k: Vec<u8> = (0..klen).map(|_| rng(&mut x) as u8).collect();
            k.extend_from_slice(&i.to_le_bytes()); // unique
            let vlen = match i % 100 {
                0 => 100_000,
                1 => 0,
                _ => (rng(&mut x) % 300) as usize,
            };
            let v: Vec<u8> = if i % 3 == 0 {
                "text \u{e9}\"\\\n".repeat(vlen / 8 + 1).into_bytes()
            } else {
                (0..vlen).map(|_| rng(&mut x) as u8).collect()
            };
            tx.insert(&k, &v).unwrap();
        }
        tx.insert(b"", b"empty key").unwrap();
        tx.commit().unwrap();
    }
    let dump = pheap().arg("dump").arg(&a).assert().success().get_output().stdout.clone();
    assert_eq!(dump.iter().filter(|&&c| c == b'\n').count(), 3001);
    pheap().arg("load").arg(&b).write_stdin(dump.clone()).assert().success();
    assert_eq!(contents(&a), contents(&b), "load(dump(a)) differs from a");
    // To a file and back from a file.
    let out = dir.path().join("dump.jsonl");
    pheap().arg("dump").arg(&b).arg("-o").arg(&out).assert().success().stdout("");
    let c = dir.path().join("c.pheap");
    pheap().arg("load").arg(&c).arg("--input").arg(&out).assert().success();
    assert_eq!(contents(&a), contents(&c));
    // A malformed line names itself.
    pheap()
        .arg("load")
        .arg(&c)
        .write_stdin("{\"key\":\"k\",\"value\":\"v\"}\n{\"key\":1}\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2"));
}

#[test]
fn stat_readers_copy_compact_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.pheap");
    let heap = pheap::Heap::open(&f).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..20_000u32 {
        tx.insert(&i.to_be_bytes(), &vec![i as u8; 100 + (i % 300) as usize]).unwrap();
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap(); // a live reader of this process
    let out =
        pheap().arg("stat").arg("--json").arg(&f).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["entries"], 20_000);
    assert_eq!(v["readers"], 1);
    assert_eq!(v["oldest_reader"], rx.txn_id());
    assert_eq!(v["durable_txn_id"], v["txn_id"]);
    pheap()
        .arg("stat")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("entries           20000"));
    let out =
        pheap().arg("readers").arg("--json").arg(&f).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["pid"], std::process::id());
    assert_eq!(v[0]["txn_id"], rx.txn_id());
    pheap()
        .arg("readers")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains(std::process::id().to_string()));
    drop(rx);
    pheap().arg("readers").arg(&f).assert().success().stdout("no live read transactions\n");
    // Remove two thirds, then copy (refusing to overwrite) and compact.
    let mut tx = heap.begin_write().unwrap();
    for i in (0..20_000u32).filter(|i| i % 3 != 0) {
        tx.remove(&i.to_be_bytes()).unwrap();
    }
    tx.commit().unwrap();
    drop(heap);
    let d = dir.path().join("d.pheap");
    pheap()
        .arg("copy")
        .arg(&f)
        .arg(&d)
        .assert()
        .success()
        .stdout(predicate::str::contains("copied 6667 entries"));
    pheap().arg("copy").arg(&f).arg(&d).assert().code(2).stderr(predicate::str::contains("exists"));
    pheap().arg("copy").arg("--force").arg(&f).arg(&d).assert().success();
    assert_eq!(contents(&f), contents(&d));
    let before = std::fs::metadata(&f).unwrap().len();
    pheap().arg("compact").arg(&f).assert().success().stdout(predicate::str::contains("->"));
    assert!(std::fs::metadata(&f).unwrap().len() < before * 2 / 3);
    pheap().arg("check").arg(&f).assert().success().stdout(predicate::str::contains("sound"));
    pheap().arg("check").arg(&d).assert().success();
    assert_eq!(contents(&f), contents(&d));
}

#[test]
fn check_finds_planted_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.pheap");
    let marker = b"PLANTED-MARKER-0123456789-PLANTED-MARKER";
    {
        let heap = pheap::Heap::open(&f).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..100u32 {
            tx.insert(&i.to_be_bytes(), b"ordinary").unwrap();
        }
        tx.insert(b"victim", marker).unwrap();
        tx.commit().unwrap();
    }
    pheap().arg("check").arg(&f).assert().success();
    let mut bytes = std::fs::read(&f).unwrap();
    let at = bytes.windows(marker.len()).position(|w| w == marker).unwrap();
    bytes[at + 5] ^= 0x20;
    std::fs::write(&f, &bytes).unwrap();
    pheap()
        .arg("check")
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unsound").and(predicate::str::contains("leaf checksum")))
        .stderr(
            predicate::str::contains(format!("{:#x}", at - at % 8).as_str())
                .or(predicate::str::contains("0x")),
        );
}

#[test]
fn errors_are_one_line_and_a_failing_status() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pheap");
    for cmd in [
        &["stat"][..],
        &["get", "k"],
        &["rm", "k"],
        &["dump"],
        &["check"],
        &["compact"],
        &["readers"],
    ] {
        let a = pheap().arg(cmd[0]).arg(&missing).args(&cmd[1..]).assert().failure();
        let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert_eq!(err.lines().count(), 1, "{cmd:?}: {err}");
        assert!(err.contains("no such heap file"), "{cmd:?}: {err}");
    }
    let junk = dir.path().join("junk.pheap");
    std::fs::write(&junk, b"not a heap at all").unwrap();
    pheap()
        .arg("stat")
        .arg(&junk)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a pheap heap file"));
    pheap().arg("check").arg(&junk).assert().code(1).stderr(predicate::str::contains("unsound"));
    // A writer holds the heap: a clear error naming the process, unless asked to wait.
    let f = dir.path().join("busy.pheap");
    let heap = pheap::Heap::open(&f).unwrap();
    let tx = heap.begin_write().unwrap();
    let pid = std::process::id().to_string();
    for cmd in [&["put", "k", "v"][..], &["rm", "k"], &["compact"]] {
        pheap().arg(cmd[0]).arg(&f).args(&cmd[1..]).assert().code(2).stderr(
            predicate::str::contains("locked by a writer")
                .and(predicate::str::contains(pid.as_str())),
        );
    }
    pheap()
        .arg("load")
        .arg(&f)
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("locked"));
    // Readers are never blocked.
    pheap().arg("stat").arg(&f).assert().success();
    drop(tx);
    pheap().arg("put").arg(&f).args(["k", "v"]).assert().success();
}
