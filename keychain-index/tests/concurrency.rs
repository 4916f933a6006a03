//! Readers never wait for a writer, and see a token's items all or none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::{card, cert, key, token};
use keychain_index::{KeychainIndex, Query};
use token_core::{Item, KeyUsage};

const BIG: usize = 10_000;

fn big_token_items() -> Vec<Item> {
    (0..BIG / 2)
        .flat_map(|i| {
            let seed = 1_000_000 + i as u64;
            [
                Item::Key(key(&format!("k{i}"), "bulk key", seed, KeyUsage::SIGN)),
                Item::Certificate(cert(
                    &format!("c{i}"),
                    seed,
                    &format!("Device {i}"),
                    "Bulk CA",
                    1,
                )),
            ]
        })
        .collect()
}

#[test]
fn a_reader_keeps_going_and_sees_all_or_none_of_a_10000_item_token() {
    let index = KeychainIndex::new();
    for t in 0..50u64 {
        index.insert_token(
            token(&format!("piv:{t:04}")),
            card(t * 10, &format!("Holder {t}")),
        );
    }
    let big = token("hsm:big");
    let items = big_token_items();
    assert_eq!(items.len(), BIG);

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let (index, stop, progress, big) =
            (index.clone(), stop.clone(), progress.clone(), big.clone());
        thread::spawn(move || {
            let mut partial = Vec::new();
            let mut seen_full = 0u32;
            while !stop.load(Ordering::Acquire) {
                // A small query, answered while the writer is busy.
                assert_eq!(index.count(&Query::keys().token(token("piv:0007"))), 3);
                // The big token through its shard, and through the global label index.
                let by_token = index.count(&Query::new().token(big.clone()));
                let by_label = index.count(&Query::keys().label("bulk key"));
                let by_issuer = index.count(&Query::certificates().issuer_common_name("Bulk CA"));
                for (what, n, all) in [
                    ("token", by_token, BIG),
                    ("label", by_label, BIG / 2),
                    ("issuer", by_issuer, BIG / 2),
                ] {
                    if n != 0 && n != all {
                        partial.push(format!("{what}: {n} of {all}"));
                    }
                }
                if by_token == BIG {
                    seen_full += 1;
                }
                progress.fetch_add(1, Ordering::AcqRel);
            }
            (partial, seen_full)
        })
    };

    let mut windows = Vec::new();
    for round in 0..3 {
        // The reader's progress across the insertion, then across the removal.
        let before = progress.load(Ordering::Acquire);
        index.insert_token(big.clone(), items.clone());
        let during_insert = progress.load(Ordering::Acquire) - before;
        assert!(index.contains_token(&big));
        // Give the reader time to see the token whole.
        let seen = progress.load(Ordering::Acquire);
        while progress.load(Ordering::Acquire) < seen + 2 {
            thread::yield_now();
        }
        let before = progress.load(Ordering::Acquire);
        index.remove_token(&big);
        let during_remove = progress.load(Ordering::Acquire) - before;
        windows.push((round, during_insert, during_remove));
    }
    stop.store(true, Ordering::Release);
    let (partial, seen_full) = reader.join().unwrap();

    assert!(
        partial.is_empty(),
        "a query saw part of a token: {partial:?}"
    );
    assert!(seen_full > 0, "the reader never saw the big token");
    // The insertion of 10,000 items takes long enough for a reader that never waits to
    // finish queries meanwhile.
    assert!(
        windows.iter().all(|&(_, insert, _)| insert > 0),
        "the reader made no progress while the writer inserted: {windows:?}"
    );

    // After all that, the index is exact and the removed token's postings were swept.
    assert!(!index.contains_token(&big));
    assert_eq!(index.len(), 50 * 6);
    assert_eq!(index.count(&Query::keys().label("bulk key")), 0);
    let mem = index.memory();
    assert!(
        mem.dead_postings < 2 * BIG,
        "dead postings were not swept: {mem:?}"
    );
}

#[test]
fn a_reader_holding_a_reference_keeps_its_view() {
    let index = KeychainIndex::new();
    let t = token("piv:keep");
    index.insert_token(t.clone(), card(1, "Ivan"));
    let item = index.first(&Query::identities()).unwrap();
    index.remove_token(&t);
    assert!(index.is_empty());
    // The reference reads what the index had when it was made.
    assert_eq!(item.label(), "Ivan");
    assert_eq!(item.key().unwrap().label, "PIV Authentication");
}

#[test]
fn concurrent_writers_are_serialised() {
    let index = KeychainIndex::new();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let index = index.clone();
            thread::spawn(move || {
                for i in 0..25u64 {
                    let t = token(&format!("w{w}:{i}"));
                    index.insert_token(t.clone(), card(w * 1000 + i * 10, "X"));
                    if i % 2 == 0 {
                        index.remove_token(&t);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(index.token_ids().len(), 4 * 12);
    assert_eq!(index.len(), 4 * 12 * 6);
    assert_eq!(index.count(&Query::identities()), 4 * 12 * 2);
}
