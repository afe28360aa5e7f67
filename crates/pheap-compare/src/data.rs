//! The workload's keys and values: random keys from a fixed seed, each value derived from its
//! key so that a reader can check what it got without holding the values in memory (only the
//! keys are kept, so the harness's own footprint stays small beside the stores').

/// The seed of every key stream (the one redb's benchmark uses).
const SEED: u64 = 3;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes key `i` of a stream of `out.len()`-byte keys.
pub fn key_at(i: usize, out: &mut [u8]) {
    let mut state = splitmix(SEED ^ (i as u64).wrapping_mul(0xd6e8_feb8_6659_fd93));
    for chunk in out.chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// `count` keys of `key_len` bytes, values of `value_len` bytes.
pub struct Data {
    keys: Vec<u8>,
    key_len: usize,
    value_len: usize,
}

impl Data {
    pub fn new(count: usize, key_len: usize, value_len: usize) -> Data {
        assert!(value_len <= 256 && key_len > 0);
        let mut keys = vec![0u8; count * key_len];
        for (i, key) in keys.chunks_mut(key_len).enumerate() {
            key_at(i, key);
        }
        Data { keys, key_len, value_len }
    }

    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * self.key_len..][..self.key_len]
    }

    /// The value of key `i`, written into `buf`.
    pub fn value<'b>(&self, i: usize, buf: &'b mut [u8; 256]) -> &'b [u8] {
        value_of(self.key(i), &mut buf[..self.value_len]);
        &buf[..self.value_len]
    }

    /// Whether `value` is the value of `key` (length, first and last byte: enough to catch a
    /// wrong or torn record while touching the value as a user would).
    pub fn check(&self, key: &[u8], value: &[u8]) -> bool {
        check(key, value, self.value_len)
    }
}

pub fn value_of(key: &[u8], out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        *b = key[j % key.len()] ^ j as u8;
    }
}

pub fn check(key: &[u8], value: &[u8], value_len: usize) -> bool {
    let last = value_len - 1;
    value.len() == value_len
        && value[0] == key[0]
        && value[last] == key[last % key.len()] ^ last as u8
}
