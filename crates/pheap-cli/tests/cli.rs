//! The real `pheap` binary: every subcommand, the dump/load round trip on random binary data,
//! the error cases, and `check` finding planted corruption.

use pheap::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
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
    rx.iter().map(|r| r.map(|(k, v)| (k.to_vec(), v.bytes().unwrap().to_vec())).unwrap()).collect()
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
    let mut x = SmallRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    {
        let heap = pheap::Heap::open(&a).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..3000u64 {
            let klen = x.random_range(0..40);
            let mut k: Vec<u8> = (0..klen).map(|_| x.random::<u8>()).collect();
            k.extend_from_slice(&i.to_le_bytes()); // unique
            let vlen = match i % 100 {
                0 => 100_000,
                1 => 0,
                _ => x.random_range(0..300),
            };
            let v: Vec<u8> = if i % 3 == 0 {
                "text \u{e9}\"\\\n".repeat(vlen / 8 + 1).into_bytes()
            } else {
                (0..vlen).map(|_| x.random::<u8>()).collect()
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
        tx.insert(i.to_be_bytes(), vec![i as u8; 100 + (i % 300) as usize]).unwrap();
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
        tx.remove(i.to_be_bytes()).unwrap();
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
        .stdout(predicate::str::contains("copied 6667 entries"))
        .stdout(predicate::str::contains("rebuilt compactly"));
    pheap().arg("copy").arg(&f).arg(&d).assert().code(2).stderr(predicate::str::contains("exists"));
    pheap().arg("copy").arg("--force").arg(&f).arg(&d).assert().success();
    assert_eq!(contents(&f), contents(&d));
    let before = std::fs::metadata(&f).unwrap().len();
    pheap().arg("compact").arg(&f).assert().success().stdout(predicate::str::contains("->"));
    assert!(std::fs::metadata(&f).unwrap().len() < before * 2 / 3);
    pheap().arg("check").arg(&f).assert().success().stdout(predicate::str::contains("sound"));
    // A compacted heap is mostly live: copied by pages.
    let e = dir.path().join("e.pheap");
    pheap()
        .arg("copy")
        .arg(&f)
        .arg(&e)
        .assert()
        .success()
        .stdout(predicate::str::contains("by pages"));
    assert_eq!(contents(&f), contents(&e));
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
            tx.insert(i.to_be_bytes(), b"ordinary").unwrap();
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

/// A heap of `n` entries `key{i}` -> 150 bytes, built through the library.
fn build(path: &Path, n: u32) {
    let heap = pheap::Heap::open(path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..n {
        tx.insert(format!("key{i}").as_bytes(), [i as u8; 150]).unwrap();
    }
    tx.commit().unwrap();
}

/// Reliability issue, item 1: a damaged record is an error with status 2, never wrong bytes.
#[test]
fn get_on_a_damaged_record_fails_instead_of_printing_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.pheap");
    build(&f, 2000);
    pheap()
        .arg("put")
        .arg(&f)
        .args(["needle", "0123456789abcdefghij0123456789"])
        .assert()
        .success();
    let mut b = std::fs::read(&f).unwrap();
    let at = b.windows(10).position(|w| w == b"abcdefghij").unwrap();
    b[at + 3] ^= 0x20;
    std::fs::write(&f, &b).unwrap();
    pheap()
        .arg("get")
        .arg(&f)
        .arg("needle")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("leaf checksum mismatch"));
    pheap().arg("get").arg(&f).arg("key7").assert().success();
    pheap().arg("check").arg(&f).assert().code(1);
    pheap().arg("dump").arg(&f).assert().code(2);
}

/// Item 2: `dump -o` onto the heap being dumped (or any heap) is refused; the heap is intact.
#[test]
fn dump_never_overwrites_a_heap() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pheap"), dir.path().join("b.pheap"));
    build(&a, 100);
    build(&b, 10);
    for out in [&a, &b] {
        pheap()
            .arg("dump")
            .arg(&a)
            .arg("-o")
            .arg(out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("refused: it is a heap file"));
    }
    assert_eq!(contents(&a).len(), 100);
    assert_eq!(contents(&b).len(), 10);
    let out = pheap().arg("dump").arg(&a).args(["-o", "-"]).assert().success();
    assert_eq!(out.get_output().stdout.iter().filter(|&&c| c == b'\n').count(), 100);
    pheap().arg("check").arg(&a).assert().success();
}

/// Item 3: writes through two hard-linked names are refused, and the heap stays sound.
#[test]
fn hard_linked_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pheap"), dir.path().join("b.pheap"));
    build(&a, 10);
    std::fs::hard_link(&a, &b).unwrap();
    for f in [&a, &b] {
        pheap()
            .arg("put")
            .arg(f)
            .args(["k", "v"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("hard links"));
    }
    std::fs::remove_file(&b).unwrap();
    pheap().arg("check").arg(&a).assert().success();
    assert_eq!(contents(&a).len(), 10);
}

/// Items 4 and 5: with a writer holding the heap, a second writer after the lock file was
/// deleted, and a `copy --force` onto it, are refused; the first writer's commit stays.
#[test]
fn a_deleted_lock_file_and_a_copy_onto_a_heap_in_use_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.pheap"), dir.path().join("dst.pheap"));
    build(&src, 5);
    build(&dst, 3);
    let writer = pheap::Heap::open(&dst).unwrap();
    let mut tx = writer.begin_write().unwrap();
    tx.insert(b"acked", b"yes").unwrap();
    std::fs::remove_file(dir.path().join("dst.pheap-lock")).unwrap();
    pheap()
        .arg("put")
        .arg(&dst)
        .args(["other", "writer"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("different lock file"));
    pheap()
        .arg("copy")
        .arg("--force")
        .arg(&src)
        .arg(&dst)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in use"));
    tx.commit().unwrap();
    drop(writer);
    let m = contents(&dst);
    assert_eq!(m.get(&b"acked"[..]).map(|v| &v[..]), Some(&b"yes"[..]));
    assert!(!m.contains_key(&b"other"[..]));
    pheap().arg("check").arg(&dst).assert().success();
}

/// Item 6: `--force` onto a symbolic link is refused (the link stays a link); `-` is standard
/// output, for `copy` as for `dump`.
#[test]
fn copy_to_a_link_is_refused_and_dash_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (src, target) = (dir.path().join("src.pheap"), dir.path().join("target"));
    build(&src, 50);
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    pheap()
        .arg("copy")
        .arg("--force")
        .arg(&src)
        .arg(&link)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("symbolic link").and(predicate::str::contains("`-`")));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let out = pheap().current_dir(dir.path()).arg("copy").arg(&src).arg("-").assert().success();
    assert!(!dir.path().join("-").exists(), "copy - wrote a file named -");
    let copied = dir.path().join("copied.pheap");
    std::fs::write(&copied, &out.get_output().stdout).unwrap();
    assert_eq!(contents(&copied), contents(&src));
}

/// Item 7: `load` is all or nothing by default; `--batch N` keeps what it committed and says so.
#[test]
fn a_failed_load_loads_nothing_unless_batched() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("l.pheap");
    build(&f, 3);
    let mut input = String::new();
    for i in 0..2500 {
        input.push_str(&format!("{{\"key\":\"n{i}\",\"value\":\"v{i}\"}}\n"));
    }
    input.push_str("{\"key\": oops}\n");
    pheap().arg("load").arg(&f).write_stdin(input.clone()).assert().code(2).stderr(
        predicate::str::contains("line 2501").and(predicate::str::contains("nothing was loaded")),
    );
    assert_eq!(contents(&f).len(), 3);
    pheap()
        .arg("load")
        .arg(&f)
        .args(["--batch", "1000"])
        .write_stdin(input)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the 2000 entries committed before it are kept"));
    assert_eq!(contents(&f).len(), 3 + 2000);
}

/// Item 8: a damaged newest meta slot is named by `stat` and `check` (status 1), not "sound".
#[test]
fn a_fallback_to_an_older_commit_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.pheap");
    build(&f, 10);
    pheap().arg("put").arg(&f).args(["last", "commit"]).assert().success();
    let mut b = std::fs::read(&f).unwrap();
    let txn =
        |b: &[u8], s: usize| u64::from_le_bytes(b[4096 * s + 8..4096 * s + 16].try_into().unwrap());
    let newest = (1..4).max_by_key(|&s| txn(&b, s)).unwrap();
    b[4096 * newest + 40] ^= 0x01;
    std::fs::write(&f, &b).unwrap();
    pheap().arg("get").arg(&f).arg("last").assert().code(1);
    pheap().arg("check").arg(&f).assert().code(1).stdout(predicate::str::contains("sound")).stderr(
        predicate::str::contains("newer commit passed over")
            .and(predicate::str::contains("damaged")),
    );
    pheap().arg("stat").arg(&f).assert().success().stdout(predicate::str::contains("passed over"));
    let out = pheap().arg("stat").arg("--json").arg(&f).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["skipped_commits"].as_array().unwrap().len(), 1);
}

/// Item 9: a refused open leaves no lock file; a lock file made by root belongs to the heap's
/// owner.
#[test]
fn refused_opens_leave_nothing_and_lock_files_keep_the_owner() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a heap at all").unwrap();
    pheap().arg("stat").arg(&junk).assert().code(2);
    pheap().arg("get").arg(&junk).arg("k").assert().code(2);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    pheap().arg("stat").arg(&empty).assert().code(2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "a refused open left a file");
    let f = dir.path().join("o.pheap");
    build(&f, 1);
    std::fs::remove_file(dir.path().join("o.pheap-lock")).unwrap();
    let _ = std::os::unix::fs::chown(&f, Some(65534), Some(65534));
    pheap().arg("stat").arg(&f).assert().success();
    let (h, l) = (
        std::fs::metadata(&f).unwrap(),
        std::fs::metadata(dir.path().join("o.pheap-lock")).unwrap(),
    );
    assert_eq!((l.uid(), l.gid(), l.mode() & 0o777), (h.uid(), h.gid(), h.mode() & 0o666));
}

/// Every entry at every level, as (map path, key, kind, inline, parts).
type Deep = Vec<(Vec<Vec<u8>>, Vec<u8>, pheap::Kind, Vec<u8>, Vec<Vec<u8>>)>;

fn deep(path: &Path) -> Deep {
    fn walk(map: pheap::Map<'_>, path: &mut Vec<Vec<u8>>, out: &mut Deep) {
        for r in map.iter() {
            let (k, v) = r.unwrap();
            let parts = v.parts().map(|p| p.unwrap().to_vec()).collect();
            out.push((path.clone(), k.to_vec(), v.kind(), v.inline().to_vec(), parts));
            if v.kind() == pheap::Kind::Map {
                path.push(k.to_vec());
                walk(map.map(k).unwrap().unwrap(), path, out);
                path.pop();
            }
        }
    }
    let heap = pheap::Heap::options().create(false).open(path).unwrap();
    let rx = heap.begin_read().unwrap();
    let mut out = Vec::new();
    walk(rx.as_map().unwrap(), &mut Vec::new(), &mut out);
    out.sort();
    out
}

#[test]
fn maps_kinds_and_parts_round_trip_through_dump_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pheap"), dir.path().join("b.pheap"));
    {
        let heap = pheap::Heap::open(&a).unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert("plain", "v").unwrap();
        tx.insert("big", vec![7u8; 10_000]).unwrap();
        let mut users = tx.map_mut("users").unwrap();
        users.insert([0xffu8, 0], "binary key").unwrap();
        let mut alice = users.map_mut("alice").unwrap();
        alice
            .insert_parts(
                "pickle",
                pheap::Kind::Tagged(3),
                b"head",
                &[&[1u8; 5000], &[2u8; 10], b""],
            )
            .unwrap();
        alice.insert_parts("small-part", pheap::Kind::Bytes, b"", &[b"tiny"]).unwrap();
        alice.map_mut([0x81u8]).unwrap(); // an empty map with a binary name
        alice.map_mut([0x80u8]).unwrap().insert("in a binary-named map", "x").unwrap();
        tx.commit().unwrap();
    }
    let dump = pheap().arg("dump").arg(&a).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(dump.clone()).unwrap();
    assert!(text.contains("\"kind\":\"map\""), "{text}");
    assert!(text.contains("\"tag\":3"));
    assert!(text.contains("\"map\":[\"users\",\"alice\"]"));
    assert!(text.contains("{\"base64\":"));
    pheap().arg("load").arg(&b).write_stdin(dump).assert().success();
    assert_eq!(deep(&a), deep(&b), "load(dump(a)) differs from a");
    pheap().arg("check").arg(&b).assert().success().stdout(predicate::str::contains("parts"));
}

#[test]
fn paths_of_maps_keys_count_and_stat_per_map() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.pheap");
    pheap()
        .arg("put")
        .arg(&f)
        .args(["--map", "users", "--map", "alice", "theme", "dark"])
        .assert()
        .success();
    pheap().arg("put").arg(&f).args(["-m", "users", "bob", "b"]).assert().success();
    pheap().arg("put").arg(&f).args(["top", "t"]).assert().success();
    pheap()
        .arg("get")
        .arg(&f)
        .args(["-m", "users", "-m", "alice", "theme"])
        .assert()
        .success()
        .stdout("dark");
    pheap()
        .arg("get")
        .arg(&f)
        .arg("users")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("holds a map, not bytes"));
    pheap()
        .arg("put")
        .arg(&f)
        .args(["-m", "top", "k", "v"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("holds bytes, not a map"));
    pheap().arg("get").arg(&f).args(["-m", "nobody", "k"]).assert().code(1);
    pheap().arg("count").arg(&f).assert().success().stdout("2\n");
    pheap().arg("count").arg(&f).args(["-m", "users"]).assert().success().stdout("2\n");
    let keys = pheap()
        .arg("keys")
        .arg(&f)
        .args(["-m", "users"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let mut keys: Vec<&str> = std::str::from_utf8(&keys).unwrap().lines().collect();
    keys.sort();
    assert_eq!(keys, ["alice/", "bob"]);
    pheap().arg("stat").arg(&f).args(["-m", "users"]).assert().success().stdout(
        predicate::str::contains("maps            1")
            .and(predicate::str::contains("entries           2")),
    );
    // Removing a map removes everything in it.
    pheap().arg("rm").arg(&f).arg("users").assert().success();
    pheap().arg("count").arg(&f).assert().success().stdout("1\n");
    pheap().arg("rm").arg(&f).args(["-m", "users", "bob"]).assert().code(1);
}

#[test]
fn keys_and_values_from_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.pheap");
    let long_key = vec![b'k'; 2 << 20]; // too long for an argument list
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &long_key[..1 << 20]).unwrap();
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, [9u8; 3000]).unwrap();
    pheap()
        .arg("put")
        .arg(&f)
        .arg("--key-file")
        .arg(&key_file)
        .arg("--value-file")
        .arg(&value_file)
        .assert()
        .success();
    pheap()
        .arg("get")
        .arg(&f)
        .arg("--key-file")
        .arg(&key_file)
        .assert()
        .success()
        .stdout(&[9u8; 3000][..]);
    pheap()
        .arg("put")
        .arg(&f)
        .args(["--key-file", "-", "from-arg"])
        .write_stdin("stdin-key")
        .assert()
        .success();
    pheap().arg("get").arg(&f).arg("stdin-key").assert().success().stdout("from-arg");
    // `-` is standard input, as elsewhere.
    pheap().arg("put").arg(&f).args(["dash", "-"]).write_stdin("piped").assert().success();
    pheap().arg("get").arg(&f).arg("dash").assert().success().stdout("piped");
    pheap()
        .arg("put")
        .arg(&f)
        .arg("--key-file")
        .arg(dir.path().join("missing"))
        .arg("v")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing"));
}

#[test]
fn wait_with_a_timeout_gives_up_and_stat_shows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.pheap");
    let heap = pheap::Heap::open(&f).unwrap();
    let tx = heap.begin_write().unwrap();
    let t = std::time::Instant::now();
    pheap()
        .arg("put")
        .arg(&f)
        .args(["--wait", "--timeout", "0.3", "k", "v"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("gave up after 0.3 s"));
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    pheap()
        .arg("stat")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("a write transaction is in progress"));
    drop(tx);
    pheap()
        .arg("stat")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("writer            none"));
}

#[test]
fn a_closed_pipe_ends_a_dump_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.pheap");
    build(&f, 50_000);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pheap"))
        .arg("dump")
        .arg(&f)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    drop(out); // as `| head` does
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
}

#[test]
fn help_describes_every_argument() {
    for cmd in
        ["get", "put", "rm", "keys", "count", "stat", "dump", "load", "check", "copy", "compact"]
    {
        let out = pheap().arg(cmd).arg("--help").assert().success().get_output().stdout.clone();
        let text = String::from_utf8(out).unwrap();
        let args = text.split("Arguments:").nth(1).map(|a| a.split("Options:").next().unwrap());
        for line in args.unwrap_or("").lines().filter(|l| !l.trim().is_empty()) {
            let described =
                line.trim().split_once(' ').map(|x| x.1).is_some_and(|d| !d.trim().is_empty());
            assert!(described, "{cmd}: {line:?} is not described");
        }
    }
}

/// Issue 24, item 15: a load that makes a new heap and loads nothing (plain JSON records with no
/// "key") leaves no heap and no lock file behind; into an existing heap it leaves the file as it
/// was, its length included.
#[test]
fn a_failed_load_into_a_new_heap_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("new.pheap");
    pheap()
        .arg("load")
        .arg(&f)
        .write_stdin("{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no \"key\"").and(predicate::str::contains("no heap")));
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let old = dir.path().join("old.pheap");
    build(&old, 3);
    let len = std::fs::metadata(&old).unwrap().len();
    let big = format!("{{\"key\":\"big\",\"value\":\"{}\"}}\n{{\"id\": 1}}\n", "x".repeat(3 << 20));
    pheap().arg("load").arg(&old).write_stdin(big).assert().code(2);
    assert_eq!(contents(&old).len(), 3);
    assert_eq!(std::fs::metadata(&old).unwrap().len(), len, "the file grew");
}

/// Issue 24, item 15: `put FILE KEY` with the value forgotten, on a terminal, says what it wants
/// instead of waiting for input (a pseudo-terminal made by `script`, where it is installed).
#[test]
fn put_without_a_value_on_a_terminal_says_so() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.pheap");
    let bin = assert_cmd::cargo::cargo_bin("pheap");
    let line = format!("{} put {} k", bin.display(), f.display());
    let out = std::process::Command::new("timeout")
        .args(["10", "script", "-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("no VALUE"), "{shown}");
    // Piped, the value comes from standard input as before.
    pheap().arg("put").arg(&f).arg("k").write_stdin("piped").assert().success();
    pheap().arg("get").arg(&f).arg("k").assert().success().stdout("piped");
}

/// Issue 24, item 12: an operating-system error opening the heap names the file (it said
/// `pheap: Is a directory (os error 21)`).
#[test]
fn os_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let shown = dir.path().display().to_string();
    for cmd in ["stat", "count", "keys"] {
        pheap().arg(cmd).arg(dir.path()).assert().code(2).stderr(predicate::str::contains(&shown));
    }
    pheap().arg("check").arg(dir.path()).assert().code(1).stderr(predicate::str::contains(&shown));
    let put = pheap().arg("put").arg(dir.path()).args(["k", "v"]).assert().code(2);
    put.stderr(predicate::str::contains(&shown));
    // Inside a directory that does not exist: the heap's path, not a temporary file's.
    let deep = dir.path().join("no/such/dir/h.pheap");
    pheap()
        .arg("put")
        .arg(&deep)
        .args(["k", "v"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(deep.display().to_string()));
}

#[test]
fn prefetch_a_heap_or_one_sub_map() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.pheap");
    pheap().arg("put").arg(&f).args(["--map", "users", "u1", "v1"]).assert().success();
    pheap().arg("put").arg(&f).args(["top", "x"]).assert().success();
    pheap()
        .arg("-q")
        .arg("prefetch")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("in the page cache in"));
    pheap().arg("prefetch").arg(&f).args(["--map", "users"]).assert().success().stdout(
        predicate::str::contains("users: ").and(predicate::str::contains("in the page cache")),
    );
    pheap()
        .arg("prefetch")
        .arg(&f)
        .args(["--map", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no such map: nope"));
}

#[test]
fn seal_prints_a_digest_that_stat_shows_and_check_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (f, sealed) = (dir.path().join("a.pheap"), dir.path().join("v1.pheap"));
    pheap().arg("put").arg(&f).args(["k", "v"]).assert().success();
    let out =
        pheap().arg("seal").arg(&f).arg(&sealed).assert().success().get_output().stdout.clone();
    let out = String::from_utf8(out).unwrap();
    let digest = out.trim().rsplit("digest ").next().unwrap().to_string();
    assert_eq!(digest.len(), 32, "{out}");
    pheap()
        .arg("stat")
        .arg(&sealed)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("sealed            digest {digest}")));
    pheap().arg("check").arg(&sealed).assert().success();
    pheap().arg("get").arg(&sealed).arg("k").assert().success().stdout("v");
    assert!(!dir.path().join("v1.pheap-lock").exists());
    pheap()
        .arg("put")
        .arg(&sealed)
        .args(["k", "w"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is sealed"));
    // A flipped byte past the header: the digest no longer matches.
    let mut bytes = std::fs::read(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&sealed, &bytes).unwrap();
    pheap().arg("check").arg(&sealed).assert().failure().stderr(predicate::str::contains("digest"));
    pheap()
        .arg("seal")
        .arg(&f)
        .arg(&sealed)
        .assert()
        .failure()
        .stderr(predicate::str::contains("exists"));
}

#[test]
fn publish_writes_the_sealed_file_and_its_manifest_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.pheap");
    let out = dir.path().join("pub");
    pheap().arg("put").arg(&f).args(["k", "v"]).assert().success();
    let url = format!("file://{}", out.display());
    let first = pheap().arg("publish").arg(&f).arg(&url).assert().success();
    let text = String::from_utf8(first.get_output().stdout.clone()).unwrap();
    assert!(text.contains("file and manifest written"), "{text}");
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let digest = text.rsplit("digest ").next().unwrap().split(';').next().unwrap();
    assert!(manifest.contains(&format!("\"file\": \"{digest}.pheap\"")), "{manifest}");
    pheap().arg("get").arg(out.join(format!("{digest}.pheap"))).arg("k").assert().stdout("v");
    // Unchanged: nothing written; a plain path names the same directory.
    pheap()
        .arg("publish")
        .arg(&f)
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing written"));
    // Object stores are Python's; a relative file:// URL is refused, naming the argument.
    pheap()
        .arg("publish")
        .arg(&f)
        .arg("s3://bucket/v1")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pheap.publish"));
    pheap()
        .arg("publish")
        .arg(&f)
        .arg("file://rel/dir")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("DEST"));
}
