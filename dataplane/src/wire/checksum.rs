//! The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
//!
//! The sum is byte-order independent (RFC 1071 §2(B)), so words are loaded in native order,
//! four bytes at a time into 64-bit accumulators (no carry handling inside the loop), and the
//! folded result is swapped to network order once at the end.
//! Partial sums compose: `accumulate` over consecutive slices, each starting at an even offset
//! of the checksummed message, then `finish`.

use std::net::Ipv4Addr;

/// Adds `data` to a running sum. `data` must start at an even offset of the message; an odd
/// final byte is padded with a zero byte, so only the last slice may have odd length.
#[inline]
pub fn accumulate(acc: u64, data: &[u8]) -> u64 {
    // Two independent accumulators over 8-byte blocks keep the adds in parallel (and let the
    // loop vectorise); 32-bit words in 64-bit sums cannot overflow below 2^32 words.
    let (mut a, mut b) = (acc, 0u64);
    let mut blocks = data.chunks_exact(8);
    for w in &mut blocks {
        a += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
        b += u64::from(u32::from_ne_bytes([w[4], w[5], w[6], w[7]]));
    }
    let mut acc = a + b;
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut pair = words.remainder().chunks_exact(2);
    for p in &mut pair {
        acc += u64::from(u16::from_ne_bytes([p[0], p[1]]));
    }
    if let [last] = pair.remainder() {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    acc
}

/// Folds a running sum to 16 bits and returns it in host order (not complemented).
#[inline]
pub fn fold(acc: u64) -> u16 {
    // 64 → 33 → 32 bits, then 32 → 17 → 16 bits (+1): each step adds the carries back in.
    let mut s = (acc & 0xffff_ffff) + (acc >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    // The sum was taken over native-order words: bring it to network (numeric) order.
    u16::from_be(s as u16)
}

/// The checksum to store for a message whose running sum (checksum field zero) is `acc`.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The checksum of `data` (with its checksum field zeroed), ready for `to_be_bytes`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// Whether a message that contains its own checksum field sums to all ones (valid).
///
/// Folding a positive sum gives a value in 1..=0xffff congruent to it modulo 0xffff
/// (2^16 ≡ 1), so it folds to all ones exactly when it is a non-zero multiple of 0xffff: one
/// multiply-and-shift (the compiler's division by a constant) instead of five dependent folds,
/// on every received frame.
#[inline]
pub fn verify(acc: u64) -> bool {
    acc != 0 && acc.is_multiple_of(0xffff)
}

/// The running sum of the IPv4 pseudo-header used by UDP (RFC 768) and TCP.
#[inline]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u64 {
    let s = src.octets();
    let d = dst.octets();
    let l = length.to_be_bytes();
    accumulate(
        0,
        &[
            s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], 0, protocol, l[0], l[1],
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook RFC 1071 loop, one big-endian word at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn test_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn test_known_ipv4_header() {
        // A well-known header whose checksum is 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(accumulate(0, &hdr)));
    }

    #[test]
    fn test_fold_handles_every_carry() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x1_0000), u16::from_be(1));
    }

    #[test]
    fn test_all_zero_message_does_not_verify() {
        assert!(!verify(accumulate(0, &[0u8; 20])));
    }

    #[test]
    fn test_verify_is_folding_to_all_ones_at_the_edges() {
        for acc in [
            0,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x2_fffd,
            0xffff_ffff,
            u64::MAX,
        ] {
            assert_eq!(verify(acc), fold(acc) == 0xffff, "{acc:#x}");
        }
    }

    proptest! {
        #[test]
        fn prop_verify_is_folding_to_all_ones(acc in any::<u64>(), small in 0u64..0x40_0000) {
            prop_assert_eq!(verify(acc), fold(acc) == 0xffff);
            prop_assert_eq!(verify(small), fold(small) == 0xffff);
            let multiple = small / 0xffff * 0xffff;
            prop_assert_eq!(verify(multiple), fold(multiple) == 0xffff);
        }

        #[test]
        fn prop_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn prop_partial_sums_compose(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let acc = accumulate(accumulate(0, &data[..cut]), &data[cut..]);
            prop_assert_eq!(finish(acc), reference(&data));
        }
    }
}
