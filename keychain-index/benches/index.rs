//! The keychain index against SQLite, on 1,000,000 items over 10,000 tokens.
//!
//! Each token holds 50 keys (P-256, 20-byte key IDs, labels as PIV, OpenPGP and soft tokens
//! name them) and 50 certificates (real DER: subject, issuer among 16 CAs, serial, the SPKI of
//! one of the keys). SQLite holds the same items in memory with the same columns and indexes,
//! queried through prepared statements: that is how keychains are usually stored. Both run in
//! one group per operation, so each line reads as a ratio.
//!
//! ```text
//! cargo bench -p keychain-index -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Insertion and removal need a token to insert or remove in every iteration; that setup is
//! untimed, and each sample times at most a few real operations (scaled to the iterations
//! criterion asked for), so the slow setup does not multiply with criterion's iteration counts.
//! Sweeps of dead postings that a removal triggers are inside the timed removal.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/der.rs"]
mod der;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use keychain_index::{KeychainIndex, Query};
use rusqlite::{params, Connection};
use token_core::{
    CertificateInfo, CertificateItem, Constraint, Item, KeyItem, KeyType, KeyUsage, ObjectId,
    PublicKey, TokenId,
};

const TOKENS: usize = 10_000;
const PER_TOKEN: usize = 100;
const TARGETS: usize = 100_000;
const BIG: usize = 10_000;

// --- Realistic items ---------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

const DRIVERS: [&str; 4] = ["piv", "openpgp", "soft", "hsm"];
const KEY_LABELS: [&str; 8] = [
    "PIV Authentication",
    "Digital Signature",
    "Key Management",
    "Card Authentication",
    "Signature key",
    "Encryption key",
    "Authentication key",
    "Retired Key Management",
];
const FIRST: [&str; 8] = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi",
];
const LAST: [&str; 8] = [
    "Martin", "Nguyen", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tanaka",
];

fn token_id(t: usize) -> TokenId {
    let driver = DRIVERS[t % DRIVERS.len()];
    TokenId::new(driver, &format!("{:016x}", mix(t as u64))).unwrap()
}

/// The object ID of item `j` of token `t`: a PIV-style data object tag, or a 16-byte record
/// ID as soft tokens use.
fn object_id(t: usize, j: usize) -> ObjectId {
    let j = j as u16;
    match t % DRIVERS.len() {
        0 | 1 => ObjectId::new([0x5F, 0xC1, (j >> 8) as u8, j as u8]),
        _ => {
            let a = mix(((t as u64) << 20) ^ u64::from(j));
            let b = mix(a ^ 0x55);
            let mut id = a.to_be_bytes().to_vec();
            id.extend_from_slice(&b.to_be_bytes());
            ObjectId::new(id)
        }
    }
}

/// `n` items for token `t`: `n / 2` keys and a certificate for each.
fn items(t: usize, n: usize) -> Vec<Item> {
    let holder = format!("{} {}", FIRST[t % 8], LAST[(t / 8) % 8]);
    let mut out = Vec::with_capacity(n);
    for j in 0..n / 2 {
        let seed = ((t as u64) << 24) | j as u64;
        let point = der::ec_point(seed);
        let usage = match j % 3 {
            0 => KeyUsage::SIGN,
            1 => KeyUsage::DECRYPT | KeyUsage::DERIVE,
            _ => KeyUsage::SIGN | KeyUsage::DERIVE,
        };
        let label = if j < KEY_LABELS.len() {
            KEY_LABELS[j].to_owned()
        } else {
            format!("{} {} {j}", KEY_LABELS[j % KEY_LABELS.len()], holder)
        };
        let spki = der::spki_p256(&point);
        out.push(Item::Key(KeyItem::new(
            object_id(t, 2 * j),
            label,
            PublicKey {
                key_type: KeyType::EcP256,
                raw: point,
            },
            usage,
            Constraint::Pin,
        )));
        let cn = format!("{holder} {t:05} {j:02}");
        let ca = format!("Example Issuing CA {}", t % 16);
        let der = der::certificate(
            &mix(seed ^ 0xC0FFEE).to_be_bytes()[1..],
            &der::name(&ca, Some("Example Corp")),
            &der::name(&cn, Some("Example Corp")),
            &spki,
        );
        out.push(Item::Certificate(CertificateItem {
            object_id: object_id(t, 2 * j + 1),
            label: cn,
            der,
        }));
    }
    out
}

// --- SQLite ------------------------------------------------------------------------------

const SCHEMA: &str = "
    CREATE TABLE items (
        rowid INTEGER PRIMARY KEY,
        token_id TEXT NOT NULL,
        class INTEGER NOT NULL,
        object_id BLOB NOT NULL,
        label TEXT,
        key_id BLOB,
        usage INTEGER,
        key_type INTEGER,
        subject BLOB,
        issuer BLOB,
        subject_cn TEXT,
        issuer_cn TEXT,
        serial BLOB,
        data BLOB
    );";

/// The same indexes as the keychain index: by name (token, class, object), key ID, label,
/// subject, issuer and their common names.
const INDEXES: &str = "
    CREATE UNIQUE INDEX items_name ON items(token_id, class, object_id);
    CREATE INDEX items_key_id ON items(key_id);
    CREATE INDEX items_label ON items(label);
    CREATE INDEX items_subject ON items(subject);
    CREATE INDEX items_issuer ON items(issuer);
    CREATE INDEX items_subject_cn ON items(subject_cn);
    CREATE INDEX items_issuer_cn ON items(issuer_cn);";

const INSERT: &str = "INSERT INTO items (token_id, class, object_id, label, key_id, usage,
    key_type, subject, issuer, subject_cn, issuer_cn, serial, data)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// Inserts a token's items, extracting the certificate columns as the index does.
fn sql_insert(db: &Connection, token: &TokenId, items: &[Item]) {
    let mut stmt = db.prepare_cached(INSERT).unwrap();
    for item in items {
        match item {
            Item::Key(k) => {
                stmt.execute(params![
                    token.as_str(),
                    0,
                    k.object_id.as_bytes(),
                    k.label,
                    k.key_id,
                    k.usage.bits(),
                    1,
                    None::<Vec<u8>>,
                    None::<Vec<u8>>,
                    None::<String>,
                    None::<String>,
                    None::<Vec<u8>>,
                    k.public_key.as_ref().map(|p| p.raw.as_slice()),
                ])
                .unwrap();
            }
            Item::Certificate(c) => {
                let info = CertificateInfo::parse(&c.der).unwrap();
                let spki = info.subject_public_key_info().unwrap();
                let key_id = PublicKey {
                    key_type: KeyType::EcP256,
                    raw: spki.public_key.to_vec(),
                }
                .key_id();
                stmt.execute(params![
                    token.as_str(),
                    1,
                    c.object_id.as_bytes(),
                    c.label,
                    &key_id[..],
                    0,
                    None::<i64>,
                    info.subject(),
                    info.issuer(),
                    info.subject_common_name(),
                    info.issuer_common_name(),
                    info.serial(),
                    c.der,
                ])
                .unwrap();
            }
            _ => {}
        }
    }
}

fn sql_insert_token(db: &Connection, token: &TokenId, items: &[Item]) {
    db.execute_batch("BEGIN").unwrap();
    sql_insert(db, token, items);
    db.execute_batch("COMMIT").unwrap();
}

fn sql_remove_token(db: &Connection, token: &TokenId) -> usize {
    db.execute_batch("BEGIN").unwrap();
    let n = db
        .prepare_cached("DELETE FROM items WHERE token_id = ?1")
        .unwrap()
        .execute([token.as_str()])
        .unwrap();
    db.execute_batch("COMMIT").unwrap();
    n
}

// --- The fixture -------------------------------------------------------------------------

struct Fixture {
    index: KeychainIndex,
    db: Connection,
    /// Persistent references to random items (resolved by their hint).
    refs: Refs,
    /// The same items' rowids.
    rowids: Vec<i64>,
    /// Persistent references whose hint is stale (made by another index instance).
    stale_refs: Refs,
    /// The same items' names for SQLite's lookup by name.
    names: Vec<(TokenId, u8, Vec<u8>)>,
    /// Key IDs of random items, as queries and as bytes.
    key_id_queries: Vec<Query>,
    key_ids: Vec<Vec<u8>>,
    /// Token+class queries over random tokens.
    token_queries: Vec<Query>,
    token_targets: Vec<TokenId>,
}

/// Persistent references stored back to back, as a caller would hold them in a buffer.
#[derive(Default)]
struct Refs {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Refs {
    fn push(&mut self, r: &[u8]) {
        self.bytes.extend_from_slice(r);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn build() -> Fixture {
    let started = Instant::now();
    let mut rng = 0x1234_5678_9ABC_DEF0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let targets: Vec<(usize, usize)> = (0..TARGETS)
        .map(|_| {
            let r = next();
            (
                (r % TOKENS as u64) as usize,
                ((r >> 32) % PER_TOKEN as u64) as usize,
            )
        })
        .collect();

    let rss0 = rss_bytes();
    let all: Vec<(TokenId, Vec<Item>)> = (0..TOKENS)
        .map(|t| (token_id(t), items(t, PER_TOKEN)))
        .collect();
    let rss_items = rss_bytes();

    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(SCHEMA).unwrap();
    db.execute_batch("BEGIN").unwrap();
    // Rows are numbered in insertion order: item j of token t is rowid t * 100 + j + 1.
    for (id, items) in &all {
        sql_insert(&db, id, items);
    }
    db.execute_batch("COMMIT").unwrap();
    db.execute_batch(INDEXES).unwrap();
    db.execute_batch("ANALYZE").unwrap();
    let rss_sql = rss_bytes();
    let page_count: i64 = db.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let page_size: i64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();

    // Items of the targets for the stale-hint references (another instance, same names).
    let mut other: std::collections::BTreeMap<usize, Vec<Item>> = Default::default();
    for &(t, j) in &targets {
        if let Some(item) = all[t].1.get(j) {
            other.entry(t).or_default().push(item.clone());
        }
    }
    let names: Vec<(TokenId, u8, Vec<u8>)> = targets
        .iter()
        .map(|&(t, j)| {
            let item = &all[t].1[j];
            let class = if matches!(item, Item::Key(_)) { 0 } else { 1 };
            (
                all[t].0.clone(),
                class,
                item.object_id().as_bytes().to_vec(),
            )
        })
        .collect();
    let key_ids: Vec<Vec<u8>> = targets
        .iter()
        .filter_map(|&(t, j)| match &all[t].1[j & !1] {
            Item::Key(k) => Some(k.key_id.clone()),
            _ => None,
        })
        .collect();
    let rowids: Vec<i64> = targets
        .iter()
        .map(|&(t, j)| (t * PER_TOKEN + j + 1) as i64)
        .collect();
    let (t0, j0) = targets[0];
    let check: Vec<u8> = db
        .query_row(
            "SELECT object_id FROM items WHERE rowid = ?1",
            [rowids[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(check, object_id(t0, j0).as_bytes());

    let rss_before_index = rss_bytes();
    let index = KeychainIndex::new();
    let mut all = all;
    while !all.is_empty() {
        let rest = all.split_off(all.len().saturating_sub(1_000));
        index.insert_tokens(rest);
    }
    let rss_index = rss_bytes();
    let mem = index.memory();

    // References to the targets, by hint.
    let tokens: Vec<TokenId> = (0..TOKENS).map(token_id).collect();
    let mut refs = Refs::default();
    for &(t, j) in &targets {
        let q = if names_class(j) == 0 {
            Query::keys()
        } else {
            Query::certificates()
        };
        let oid = object_id(t, j);
        let item = index
            .query(&q.token(tokens[t].clone()))
            .iter()
            .find(|i| i.object_id() == &oid)
            .unwrap();
        refs.push(&item.persistent_ref());
    }
    let elsewhere = KeychainIndex::new();
    elsewhere.insert_tokens(
        other
            .into_iter()
            .map(|(t, items)| (tokens[t].clone(), items)),
    );
    let mut stale_refs = Refs::default();
    for &(t, j) in &targets {
        let q = if names_class(j) == 0 {
            Query::keys()
        } else {
            Query::certificates()
        };
        let oid = object_id(t, j);
        let item = elsewhere
            .query(&q.token(tokens[t].clone()))
            .iter()
            .find(|i| i.object_id() == &oid)
            .unwrap();
        stale_refs.push(&item.persistent_ref());
    }
    drop(elsewhere);

    let key_id_queries = key_ids.iter().map(|k| Query::new().key_id(k)).collect();
    let token_queries = targets
        .iter()
        .map(|&(t, _)| Query::keys().token(tokens[t].clone()))
        .collect();

    println!();
    println!(
        "fixture: {} items over {} tokens, built in {:.1?}",
        mem.items,
        mem.tokens,
        started.elapsed()
    );
    println!(
        "keychain-index memory: {:.0} B/item for the index structures, {:.0} B/item with the items \
         (counted: {} postings, {:.1} MiB index + {:.1} MiB items)",
        mem.index_bytes_per_item(),
        mem.total_bytes_per_item(),
        mem.postings,
        mem.index_bytes as f64 / (1 << 20) as f64,
        mem.item_bytes as f64 / (1 << 20) as f64,
    );
    println!(
        "resident memory: items as tokens report them +{:.0} B/item; index built on them +{:.0} B/item; \
         SQLite (same items, in memory, 7 indexes) +{:.0} B/item resident, {:.0} B/item in pages",
        (rss_items.saturating_sub(rss0)) as f64 / 1e6,
        (rss_index.saturating_sub(rss_before_index)) as f64 / 1e6,
        (rss_sql.saturating_sub(rss_items)) as f64 / 1e6,
        (page_count * page_size) as f64 / 1e6,
    );
    println!();

    Fixture {
        index,
        db,
        refs,
        rowids,
        stale_refs,
        names,
        key_id_queries,
        key_ids,
        token_queries,
        token_targets: targets.iter().map(|&(t, _)| tokens[t].clone()).collect(),
    }
}

/// Even positions are keys, odd ones certificates.
fn names_class(j: usize) -> u8 {
    (j % 2) as u8
}

/// Times up to `cap` real runs of `routine` (each after an untimed `setup`, followed by an
/// untimed `teardown`) and scales to `iters`.
fn timed<S, R>(
    iters: u64,
    cap: u64,
    mut setup: impl FnMut() -> S,
    mut routine: impl FnMut(S) -> R,
    mut teardown: impl FnMut(R),
) -> Duration {
    let n = iters.clamp(1, cap);
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let s = setup();
        let start = Instant::now();
        let r = routine(s);
        total += start.elapsed();
        teardown(r);
    }
    total.mul_f64(iters as f64 / n as f64)
}

fn benches(c: &mut Criterion) {
    let f = build();
    let db = &f.db;
    let index = &f.index;

    let mut g = c.benchmark_group("resolve persistent reference");
    let mut i = 0;
    g.bench_function("keychain-index", |b| {
        b.iter(|| {
            i = (i + 1) % TARGETS;
            black_box(index.resolve(f.refs.get(i)).unwrap())
        })
    });
    let mut i = 0;
    g.bench_function("sqlite (rowid)", |b| {
        let mut stmt = db
            .prepare_cached("SELECT token_id, class, object_id FROM items WHERE rowid = ?1")
            .unwrap();
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let n = stmt
                .query_row([f.rowids[i]], |r| {
                    Ok(r.get_ref(0)?.as_str()?.len() + r.get_ref(2)?.as_blob()?.len())
                })
                .unwrap();
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("resolve persistent reference, stale hint (by name)");
    let mut i = 0;
    g.bench_function("keychain-index", |b| {
        b.iter(|| {
            i = (i + 1) % TARGETS;
            black_box(index.resolve(f.stale_refs.get(i)).unwrap())
        })
    });
    let mut i = 0;
    g.bench_function("sqlite (token, class, object)", |b| {
        let mut stmt = db
            .prepare_cached(
                "SELECT rowid FROM items WHERE token_id = ?1 AND class = ?2 AND object_id = ?3",
            )
            .unwrap();
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let (t, class, oid) = &f.names[i];
            let rowid: i64 = stmt
                .query_row(params![t.as_str(), class, oid], |r| r.get(0))
                .unwrap();
            black_box(rowid)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("query by token ID and class (50 keys)");
    let mut i = 0;
    g.bench_function("keychain-index", |b| {
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let found = index.query(&f.token_queries[i]);
            debug_assert_eq!(found.len(), PER_TOKEN / 2);
            black_box(found)
        })
    });
    let mut i = 0;
    g.bench_function("sqlite", |b| {
        let mut stmt = db
            .prepare_cached("SELECT rowid FROM items WHERE token_id = ?1 AND class = ?2")
            .unwrap();
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let t = &f.token_targets[i];
            let rows: Vec<i64> = stmt
                .query_map(params![t.as_str(), 0], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            debug_assert_eq!(rows.len(), PER_TOKEN / 2);
            black_box(rows)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("query by key ID (key and certificate)");
    let mut i = 0;
    g.bench_function("keychain-index", |b| {
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let found = index.query(&f.key_id_queries[i]);
            debug_assert_eq!(found.len(), 2);
            black_box(found)
        })
    });
    let mut i = 0;
    g.bench_function("sqlite", |b| {
        let mut stmt = db
            .prepare_cached("SELECT rowid, class FROM items WHERE key_id = ?1")
            .unwrap();
        b.iter(|| {
            i = (i + 1) % TARGETS;
            let rows: Vec<(i64, i64)> = stmt
                .query_map([&f.key_ids[i]], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            debug_assert_eq!(rows.len(), 2);
            black_box(rows)
        })
    });
    g.finish();

    // Writes: a pool of tokens that are not in the index, inserted and removed again.
    let pool: Vec<(TokenId, Vec<Item>)> = (0..16)
        .map(|k| {
            let t = TOKENS + 1 + k;
            (token_id(t), items(t, PER_TOKEN))
        })
        .collect();
    let big = (token_id(TOKENS), items(TOKENS, BIG));

    let mut g = c.benchmark_group("insert a token of 100 items");
    let mut k = 0;
    g.bench_function("keychain-index", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                40,
                || {
                    k = (k + 1) % pool.len();
                    pool[k].clone()
                },
                |(id, items)| {
                    index.insert_token(id.clone(), items);
                    id
                },
                |id| {
                    index.remove_token(&id);
                },
            )
        })
    });
    let mut k = 0;
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                40,
                || {
                    k = (k + 1) % pool.len();
                    &pool[k]
                },
                |(id, items)| {
                    sql_insert_token(db, id, items);
                    id
                },
                |id| {
                    sql_remove_token(db, id);
                },
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("remove a token of 100 items");
    let mut k = 0;
    g.bench_function("keychain-index", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                40,
                || {
                    k = (k + 1) % pool.len();
                    let (id, items) = pool[k].clone();
                    index.insert_token(id.clone(), items);
                    id
                },
                |id| index.remove_token(&id),
                |_| {},
            )
        })
    });
    let mut k = 0;
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                40,
                || {
                    k = (k + 1) % pool.len();
                    let (id, items) = &pool[k];
                    sql_insert_token(db, id, items);
                    id
                },
                |id| assert_eq!(sql_remove_token(db, id), PER_TOKEN),
                |_| {},
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("remove a token of 10,000 items");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function("keychain-index", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                3,
                || {
                    index.insert_token(big.0.clone(), big.1.clone());
                    &big.0
                },
                |id| index.remove_token(id),
                |_| {},
            )
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                3,
                || {
                    sql_insert_token(db, &big.0, &big.1);
                    &big.0
                },
                |id| assert_eq!(sql_remove_token(db, id), BIG),
                |_| {},
            )
        })
    });
    g.finish();

    let mem = index.memory();
    println!(
        "after the runs: {} items, {:.0} B/item index structures, {} dead postings not yet swept",
        mem.items,
        mem.index_bytes_per_item(),
        mem.dead_postings
    );
}

criterion_group!(index_vs_sqlite, benches);
criterion_main!(index_vs_sqlite);
