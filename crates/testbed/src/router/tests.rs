//! Unit tests of packet parsing and the delay heap.

use super::*;

#[test]
fn destination_of_v4_v6_and_garbage() {
    let mut v4 = [0u8; 20];
    v4[0] = 0x45;
    v4[16..20].copy_from_slice(&[198, 18, 0, 7]);
    assert_eq!(destination(&v4), Some("198.18.0.7".parse().unwrap()));
    let mut v6 = [0u8; 40];
    v6[0] = 0x60;
    v6[24..40].copy_from_slice(&"fd77::a:1".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(destination(&v6), Some("fd77::a:1".parse().unwrap()));
    assert_eq!(destination(&v6[..30]), None);
    assert_eq!(destination(&[]), None);
    assert_eq!(destination(&[0x15; 40]), None);
}

#[test]
fn heap_pops_by_due_then_arrival() {
    let p = |due_us, seq| {
        Reverse(Pending {
            due: Duration::from_micros(due_us),
            seq,
            src: 0,
            dst: 1,
            data: vec![],
        })
    };
    let mut heap: BinaryHeap<_> = [p(5, 3), p(5, 1), p(2, 9), p(5, 2)].into_iter().collect();
    let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|Reverse(p)| p.seq)).collect();
    assert_eq!(order, [9, 1, 2, 3]);
}
