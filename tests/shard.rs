//! Shard routing (DESIGN §2.11): the test vectors, and doubling n splitting every shard in two.

use std::num::NonZeroU32;

fn n(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn the_design_documents_test_vectors() {
    let vectors: [(&str, u64, [u32; 5]); 5] = [
        ("", 0x2d06800538d394c2, [0, 0, 0, 1, 11]),
        ("757365722f3432", 0xd0c8b56705d1a786, [0, 1, 2, 5, 52]),
        ("6974656d2f303030303030303030303261", 0xba1ff48e8133f66b, [0, 1, 2, 5, 46]),
        ("ff00ff", 0x2e5b600d4594b58f, [0, 0, 0, 1, 11]),
        ("fe800000000000002a", 0xe98c57e9a8ad6e6b, [0, 1, 2, 6, 58]),
    ];
    for (hex, h, shards) in vectors {
        let key = unhex(hex);
        assert_eq!(xxhash_rust::xxh3::xxh3_64(&key), h, "{hex}");
        let got: Vec<u32> = [1, 2, 3, 7, 64].iter().map(|&k| pheap::shard_of(&key, n(k))).collect();
        assert_eq!(got, shards, "{hex}");
    }
}

#[test]
fn doubling_n_splits_shard_i_into_2i_and_2i_plus_1_and_shards_are_even() {
    for sets in [1u32, 3, 7, 64, 1000] {
        let mut counts = vec![0u32; sets as usize];
        for i in 0..20_000u32 {
            let key = format!("user/{i}");
            let s = pheap::shard_of(key.as_bytes(), n(sets));
            assert!(s < sets);
            counts[s as usize] += 1;
            let split = pheap::shard_of(key.as_bytes(), n(2 * sets));
            assert!(split == 2 * s || split == 2 * s + 1, "{key}: {s} of {sets} -> {split}");
        }
        let mean = 20_000.0 / f64::from(sets);
        if sets <= 64 {
            assert!(
                counts.iter().all(|&c| (f64::from(c) - mean).abs() < 0.15 * mean + 10.0),
                "{counts:?}"
            );
        }
    }
    assert!(pheap::shard_of(b"any", n(u32::MAX)) < u32::MAX);
}
